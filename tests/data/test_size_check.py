"""One image of an odd size fails from the headers, before any image is decoded."""

from __future__ import annotations

from pathlib import Path

import pytest

from contrastlab.data import decode, load_dataset
from contrastlab.errors import DataError


def test_odd_size_fails_before_decoding(tmp_path: Path, class_tree, write_image,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    class_tree(tmp_path / "d", {"a": 6, "b": 5}, size=(8, 8))
    write_image(tmp_path / "d" / "b" / "odd.png", size=(9, 7))

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("an image was decoded before the sizes were checked")

    monkeypatch.setattr(decode, "_decode_chunk", no_decoding)
    with pytest.raises(DataError) as info:
        load_dataset(str(tmp_path / "d"))
    message = str(info.value)
    assert f"{tmp_path / 'd' / 'b' / 'odd.png'} is 9x7 (width x height)" in message
    assert "11 of the 12 images are 8x8" in message and "--image-size N" in message
    monkeypatch.undo()
    assert load_dataset(str(tmp_path / "d"), image_size=8).train.image_size == (8, 8)


def test_unreadable_headers_are_left_to_the_decoder(tmp_path: Path, class_tree) -> None:
    class_tree(tmp_path / "d", {"a": 3, "b": 3})
    (tmp_path / "d" / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"cannot read image file .*broken\.png"):
        load_dataset(str(tmp_path / "d"))
    splits = load_dataset(str(tmp_path / "d"), skip_bad_files=True, test_fraction=0.5)
    assert len(splits.skipped) == 1
