"""Turning request bodies into images and parameters, or into 4xx answers.

Every malformed value is answered 4xx with a message that names the field
(:class:`ApiError`); nothing a client sends may raise anything else. JSON bodies are parsed and
their base64 images decoded by :func:`parse_json_images`, a plain function the service runs in a
worker thread (a 16 MiB body takes tens of milliseconds, which must not stall the event loop).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from contrastlab.serve.schemas import MAX_K

#: A whole number as a client may write it in a text field: ASCII digits only (``str.isdigit``
#: also accepts superscripts and other scripts' digits, which ``int`` refuses or reads
#: differently), at most as many as :data:`MAX_K` has.
_WHOLE_NUMBER = re.compile(f"[0-9]{{1,{len(str(MAX_K))}}}")


@dataclass
class ApiError(Exception):
    """An expected failure, answered as ``{"error": code, "detail": detail}``."""

    status: int
    code: str
    detail: Any = field(default="")
    headers: dict[str, str] | None = None


def shown(value: Any, limit: int = 24) -> str:
    """``repr(value)``, shortened: error messages never echo megabytes back."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def content_kind(content_type: str) -> str:
    """``"json"`` or ``"multipart"``; ApiError 415 for any other body."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "multipart/form-data":
        return "multipart"
    if media == "application/json" or media.endswith("+json"):
        return "json"
    raise ApiError(415, "unsupported_media_type",
                   "send the body as application/json (base64 images, texts as strings) or "
                   "multipart/form-data (image files, text fields), not "
                   f"{media or 'no content type'!r}")


def field_name(location: tuple[Any, ...] | list[Any]) -> str:
    """``("images", 2)`` -> ``images[2]``."""
    out = ""
    for part in location:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "the body"


def validation_message(error: ValidationError) -> str:
    """Pydantic's errors as one message naming each field, without the offending input (it may
    be megabytes of base64)."""
    problems = error.errors(include_input=False, include_url=False, include_context=False)
    return "; ".join(f"{field_name(item['loc'])}: {item['msg']}" for item in problems)


def decode_base64(value: str, name: str) -> bytes:
    """Bytes of a base64 string or ``data:...;base64,`` URL; 422 if it is not base64."""
    text = value.strip()
    if text.startswith("data:"):
        header, sep, payload = text.partition(",")
        if not sep or ";base64" not in header:
            raise ApiError(422, "invalid_base64", f"{name}: a data URL must be base64-encoded")
        text = payload
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ApiError(422, "invalid_base64", f"{name}: not valid base64 ({error})") from error


def parse_json(raw: bytes, model: type[BaseModel]) -> BaseModel:
    """``raw`` validated against ``model``; ApiError 422 naming what is wrong."""
    try:
        data = json.loads(raw)
    except RecursionError as error:  # deep nesting recurses
        raise ApiError(422, "invalid_json", "the body is not valid JSON (nested too deeply)") \
            from error
    except (ValueError, UnicodeDecodeError) as error:
        reason = str(error).split(":")[0][:100]  # e.g. a number of more than 4300 digits
        raise ApiError(422, "invalid_json", f"the body is not valid JSON ({reason})") from error
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ApiError(422, "invalid_request", validation_message(error)) from error


def parse_json_images(raw: bytes, model: type[BaseModel], files: dict[str, bool],
                      max_images: int) -> tuple[list[tuple[str, bytes]], dict[str, Any]]:
    """(field name, bytes) of every base64 image of a JSON body, and its other fields.

    ``files`` maps each image field to whether it holds a list; a field the body leaves out
    (None) is skipped.
    """
    values = parse_json(raw, model).model_dump()
    blobs = []
    for name in files:
        value = values.pop(name, None)
        if value is None:
            continue
        items = value if isinstance(value, list) else [value]
        if len(items) > max_images:
            raise ApiError(422, "too_many_images", f"{name}: {len(items)} images in one request; "
                           f"at most {max_images}")
        for position, item in enumerate(items):
            label = f"{name}[{position}]" if isinstance(value, list) else name
            blobs.append((label, decode_base64(item, label)))
    return blobs, values


async def multipart_fields(request: Any, files: dict[str, bool], texts: tuple[str, ...],
                           max_files: int, repeated_texts: tuple[str, ...] = (),
                           max_texts: int = 0, files_required: bool = True
                           ) -> tuple[dict[str, list[bytes]], dict[str, Any]]:
    """File fields (name -> contents, in order) and text fields of a multipart body: a string
    for each of ``texts``, a list of strings for each of ``repeated_texts`` (up to
    ``max_texts`` + 1 of them are read, so that one too many is refused by the caller with its
    own message).

    Unknown, missing (files, when ``files_required``), repeated (when not repeatable) or
    mistyped fields give 422.
    """
    from starlette.datastructures import UploadFile

    names = (*texts, *repeated_texts)
    form = await request.form(max_files=max_files,
                              max_fields=len(files) + len(names) + 4 + max_texts)
    try:
        found: dict[str, list[bytes]] = {name: [] for name in files}
        text_values: dict[str, Any] = {}
        unknown = sorted({key for key in form.keys() if key not in files and key not in names})
        if unknown:
            raise ApiError(422, "invalid_request",
                           f"unknown field(s) {unknown}; expected {sorted([*files, *names])}")
        for key, value in form.multi_items():
            if key in repeated_texts:
                if isinstance(value, UploadFile):
                    raise ApiError(422, "invalid_request",
                                   f"'{key}' must be text fields, not files")
                text_values.setdefault(key, []).append(value)
                continue
            if key in texts:
                if isinstance(value, UploadFile) or key in text_values:
                    raise ApiError(422, "invalid_request", f"'{key}' must be one text field")
                text_values[key] = value
                continue
            if not isinstance(value, UploadFile):
                raise ApiError(422, "invalid_request",
                               f"'{key}' must be a file field (an image), not text")
            found[key].append(await value.read())
        for name, repeatable in files.items():
            if not found[name] and files_required:
                raise ApiError(422, "invalid_request", f"missing file field '{name}'")
            if not repeatable and len(found[name]) > 1:
                raise ApiError(422, "invalid_request", f"'{name}' must be given once")
        return found, text_values
    finally:
        await form.close()


def parse_k(value: Any) -> int:
    """The ``k`` of a search: an int from JSON or a text field of ASCII digits, 1..MAX_K."""
    if isinstance(value, str):
        if not _WHOLE_NUMBER.fullmatch(value.strip()):
            raise ApiError(422, "invalid_request",
                           f"'k' must be a whole number from 1 to {MAX_K} written in the digits "
                           f"0-9, got {shown(value)}")
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_K:
        raise ApiError(422, "invalid_request",
                       f"'k' must be a whole number from 1 to {MAX_K}, got {shown(value)}")
    return value
