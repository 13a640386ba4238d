"""Long phases say what they did on stderr (one line off a terminal), short ones stay silent,
and ``quiet()`` silences them."""

from __future__ import annotations

import pytest

from contrastlab import phases


def test_a_long_phase_prints_one_closing_line(capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(phases, "SHOW_AFTER", 0.0)
    with phases.phase("decoding the images of data/train", total=3) as progress:
        progress.advance(2)
        progress.advance(1)
    err = capsys.readouterr().err
    assert err.startswith("decoding the images of data/train: 3 images, ") and err.endswith(" s\n")


def test_short_failed_and_quiet_phases_print_nothing(capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    with phases.phase("short", total=1) as progress:  # under SHOW_AFTER
        progress.advance()
    monkeypatch.setattr(phases, "SHOW_AFTER", 0.0)
    with pytest.raises(RuntimeError), phases.phase("failing", total=2) as progress:
        progress.advance()
        raise RuntimeError("boom")
    with phases.quiet(), phases.phase("silenced", total=1) as progress:
        progress.advance()
    assert capsys.readouterr().err == ""


def test_no_bar_while_the_training_bar_is_live(monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    monkeypatch.setattr(phases, "SHOW_AFTER", 0.0)
    with phases.phase("on a terminal", total=2) as progress:
        progress.console = Console(stderr=True, force_terminal=True)
        progress.advance()
        assert progress.bar is not None  # the control: a bar on a terminal
    with phases.live_display(), phases.phase("inside training", total=2) as progress:
        progress.console = Console(stderr=True, force_terminal=True)
        progress.advance()
        assert progress.bar is None
