"""A self-contained HTML page: inline CSS, images as base64 ``data:`` URIs, links only to
anchors on the page. Every piece of text is escaped."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { font-size: 1.25em; margin-top: 2em;
     border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
nav a { margin-right: 1em; font-size: 0.9em; } .subtitle { color: #666; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.7em; text-align: left; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; display: block; margin: 0.6em 0; }
.missing { color: #8a6d3b; background: #fcf8e3; padding: 0.5em 0.8em; border-radius: 4px; }
.alarm { color: #a94442; background: #f2dede; padding: 0.5em 0.8em; border-radius: 4px;
         margin: 0.4em 0; } .ok { color: #3c763d; }
"""


def data_uri(png: Path) -> str:
    """A PNG file as a ``data:image/png;base64,...`` URI."""
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f'<td class="num">{value:.4g}</td>'
    if isinstance(value, int) and not isinstance(value, bool):
        return f'<td class="num">{value}</td>'
    return f"<td>{html.escape('-' if value is None else str(value))}</td>"


def _anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "section"


class HtmlPage:
    """Build a page section by section, then :meth:`render` or :meth:`write` it."""

    def __init__(self, title: str, subtitle: str = "") -> None:
        self.title = title
        self.subtitle = subtitle
        self.sections: list[tuple[str, str, list[str]]] = []  # (anchor, title, parts)

    def section(self, title: str) -> None:
        anchor = _anchor(title)
        taken = {a for a, _, _ in self.sections}
        suffix = 2
        while anchor in taken:
            anchor, suffix = f"{_anchor(title)}-{suffix}", suffix + 1
        self.sections.append((anchor, title, []))

    def _add(self, part: str) -> None:
        if not self.sections:
            self.section("Overview")
        self.sections[-1][2].append(part)

    def paragraph(self, text: str, css_class: str = "") -> None:
        attribute = f' class="{css_class}"' if css_class else ""
        self._add(f"<p{attribute}>{html.escape(text)}</p>")

    def missing(self, text: str) -> None:
        """Say that a section's data is missing (instead of failing)."""
        self._add(f'<p class="missing">{html.escape(text)}</p>')

    def alarm(self, text: str) -> None:
        self._add(f'<div class="alarm">{html.escape(text)}</div>')

    def image(self, png: Path, alt: str) -> None:
        self._add(f'<img src="{data_uri(png)}" alt="{html.escape(alt, quote=True)}">')

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
        self._add(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def render(self) -> str:
        nav = " ".join(f'<a href="#{a}">{html.escape(t)}</a>' for a, t, _ in self.sections)
        body = "\n".join(
            f'<section id="{a}"><h2>{html.escape(t)}</h2>\n' + "\n".join(parts) + "</section>"
            for a, t, parts in self.sections
        )
        subtitle = f'<p class="subtitle">{html.escape(self.subtitle)}</p>' if self.subtitle else ""
        return (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(self.title)}</title><style>{STYLE}</style></head>\n<body>"
            f"<h1>{html.escape(self.title)}</h1>{subtitle}<nav>{nav}</nav>\n{body}\n"
            "</body></html>\n"
        )

    def write(self, path: Path) -> Path:
        path.write_text(self.render(), encoding="utf-8")
        return path
