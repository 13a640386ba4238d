"""Bad data: each kind of bad file or layout is either converted as documented
(src/contrastlab/data/decode.py, docs/reliability.md) or refused with a DataError naming the file,
and --skip-bad-files skips and counts the unreadable ones. Complements tests/data (which covers
folders of corrupt files, RGBA, 16-bit PNG, CMYK TIFF and empty class folders)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from contrastlab import train
from contrastlab.config import build_config
from contrastlab.data import load_dataset
from contrastlab.errors import DataError


def save(path: Path, image: Image.Image, **options: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return path


def grey(value: int, size: tuple[int, int] = (4, 4)) -> Image.Image:
    return Image.new("L", size, value)


def bad_bytes(kind: str) -> bytes:
    """The content of an unreadable file of the given kind."""
    png = io.BytesIO()
    Image.fromarray(np.arange(64 * 64, dtype=np.uint32).reshape(64, 64).astype(np.uint8)
                    ).save(png, format="PNG")
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(jpeg, format="JPEG")
    return {
        "corrupt": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
        "truncated-png": png.getvalue()[: len(png.getvalue()) // 2],
        "truncated-jpeg": jpeg.getvalue()[: len(jpeg.getvalue()) // 2],
        "zero-byte": b"",
        "not-an-image": b"name,label\ncat,1\n",
    }[kind]


def tar_of(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="data")
    return archive


KINDS = ["corrupt", "truncated-png", "truncated-jpeg", "zero-byte", "not-an-image"]


@pytest.mark.parametrize("container", ["folder", "archive"])
@pytest.mark.parametrize("kind", KINDS)
def test_unreadable_file_named_or_skipped_and_counted(tmp_path: Path, kind: str,
                                                      container: str) -> None:
    root = tmp_path / "data"
    for label in ("a", "b"):
        for i in range(3):
            save(root / label / f"{i}.png", grey(40 * i + (label == "b")))
    extension = "jpg" if kind == "truncated-jpeg" else "png"
    (root / "a" / f"bad.{extension}").write_bytes(bad_bytes(kind))
    spec = root if container == "folder" else tar_of(root, tmp_path / "data.tar.gz")
    with pytest.raises(DataError) as error:
        load_dataset(str(spec))
    message = str(error.value)
    assert f"a/bad.{extension}" in message and "--skip-bad-files" in message
    splits = load_dataset(str(spec), skip_bad_files=True, test_fraction=0.4)
    assert len(splits.skipped) == 1 and f"a/bad.{extension}" in splits.skipped[0]
    assert len(splits.train) + len(splits.test) == 6


def test_palette_transparency_is_composited_onto_black(tmp_path: Path) -> None:
    palette = Image.new("P", (2, 2))
    palette.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    palette.putdata([0, 1, 1, 0])
    save(tmp_path / "d" / "opaque.png", palette)
    save(tmp_path / "d" / "transparent.png", palette, transparency=1)  # index 1 (green) clear
    save(tmp_path / "d" / "transparent.gif", palette, transparency=1)
    splits = load_dataset(str(tmp_path / "d"))
    images = {Path(i).name: x.numpy() for i, x in zip(splits.train.ids, splits.train.images,
                                                       strict=True)}
    red, green, black = [255, 0, 0], [0, 255, 0], [0, 0, 0]
    np.testing.assert_array_equal(images["opaque.png"][:, 0, :].T, [red, green])
    for name in ("transparent.png", "transparent.gif"):
        np.testing.assert_array_equal(images[name][:, 0, :].T, [red, black])


def test_grey_with_alpha_is_composited_onto_black(tmp_path: Path) -> None:
    pixels = np.array([[[200, 255], [200, 0]], [[200, 128], [100, 51]]], dtype=np.uint8)
    save(tmp_path / "d" / "la.png", Image.fromarray(pixels, mode="LA"))
    image = load_dataset(str(tmp_path / "d")).train.images[0, 0].numpy()
    # value * alpha / 255, rounded
    np.testing.assert_array_equal(image, [[200, 0], [100, 20]])


@pytest.mark.parametrize(("values", "dtype", "expected"), [
    ([[0, 65535], [257, 514]], np.uint16, [[0, 255], [1, 2]]),       # I;16: v / 257
    ([[0, 70000], [257, -5]], np.int32, [[0, 255], [1, 0]]),         # I: clipped, then / 257
])
def test_sixteen_and_thirty_two_bit_tiffs_are_scaled(tmp_path: Path, values: list, dtype: type,
                                                     expected: list) -> None:
    save(tmp_path / "d" / "deep.tif", Image.fromarray(np.array(values, dtype=dtype)))
    splits = load_dataset(str(tmp_path / "d"))
    assert splits.train.channels == 1
    np.testing.assert_array_equal(splits.train.images[0, 0].numpy(), expected)


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    save(tmp_path / "d" / "white.jpg", Image.new("CMYK", (8, 8), (0, 0, 0, 0)))
    save(tmp_path / "d" / "cyan.jpg", Image.new("CMYK", (8, 8), (255, 0, 0, 0)))
    splits = load_dataset(str(tmp_path / "d"))
    images = {Path(i).name: x.float().mean((1, 2)).tolist()
              for i, x in zip(splits.train.ids, splits.train.images, strict=True)}
    assert min(images["white.jpg"]) > 250
    red, green, blue = images["cyan.jpg"]
    assert red < 5 and green > 250 and blue > 250


def test_images_smaller_than_image_size_are_enlarged(tmp_path: Path) -> None:
    save(tmp_path / "d" / "a" / "tiny.png", grey(77, (3, 2)))
    save(tmp_path / "d" / "a" / "big.png", grey(99, (40, 30)))
    save(tmp_path / "d" / "b" / "tiny.png", grey(10, (2, 2)))
    save(tmp_path / "d" / "b" / "big.png", grey(20, (30, 40)))
    splits = load_dataset(str(tmp_path / "d"), image_size=16, test_fraction=0.5)
    images = splits.train.images
    assert tuple(images.shape[1:]) == (1, 16, 16)
    for image in images:  # a uniform image stays uniform when enlarged or shrunk
        assert int(image.min()) == int(image.max())


def test_training_on_images_smaller_than_the_default_crop(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        for i in range(8):
            save(tmp_path / "d" / label / f"{i}.png",
                 Image.fromarray(rng.integers(0, 256, (3, 3), dtype=np.uint8)))
    config = build_config(None, {"data": str(tmp_path / "d"), "backbone": "convnet-small",
                                 "epochs": 1, "batch_size": 4, "knn_k": 3, "diagnose_every": 0,
                                 "projection_hidden_dim": 8, "out": str(tmp_path / "run")})
    result = train(config, console=Console(quiet=True), evaluate_at_end=False)
    assert result.finished and result.skipped_steps == 0  # every step had a finite loss


@pytest.mark.parametrize("container", ["folder", "archive"])
def test_mixed_grey_and_colour_names_both_files(tmp_path: Path, container: str) -> None:
    save(tmp_path / "d" / "a" / "grey.png", grey(5))
    save(tmp_path / "d" / "b" / "colour.png", Image.new("RGB", (4, 4), (1, 2, 3)))
    spec = tmp_path / "d" if container == "folder" else tar_of(tmp_path / "d",
                                                                tmp_path / "d.tar.gz")
    for skip in (False, True):  # not an unreadable file: skipping does not hide it
        with pytest.raises(DataError, match=r"grey\.png.*colour\.png.*convert"):
            load_dataset(str(spec), skip_bad_files=skip)


def test_class_with_only_unreadable_images_is_refused_when_skipping(tmp_path: Path) -> None:
    for label in ("a", "b", "c"):
        for i in range(3):
            save(tmp_path / "d" / label / f"{i}.png", grey(i))
    for i in range(3):
        (tmp_path / "d" / "b" / f"{i}.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"class 'b' \(3 file\(s\), e\.g\. .*b/0\.png\)"):
        load_dataset(str(tmp_path / "d"), skip_bad_files=True)


def test_test_side_with_only_unreadable_images_says_so(tmp_path: Path) -> None:
    for label in ("a", "b"):
        for i in range(2):
            save(tmp_path / "d" / "train" / label / f"{i}.png", grey(i))
        (tmp_path / "d" / "test" / label).mkdir(parents=True)
        (tmp_path / "d" / "test" / label / "0.png").write_bytes(b"broken")
    with pytest.raises(DataError, match=r"test set holds no images that could be read "
                                        r"\(2 unreadable file\(s\) were skipped"):
        load_dataset(str(tmp_path / "d"), skip_bad_files=True)


def test_class_names_that_differ_only_in_case_are_different_classes(tmp_path: Path) -> None:
    for side, names in (("train", ("Cat", "dog")), ("test", ("cat", "dog"))):
        for name in names:
            save(tmp_path / "d" / side / name / "0.png", grey(1))
            save(tmp_path / "d" / side / name / "1.png", grey(2))
    with pytest.raises(DataError, match=r"'cat' exist only in .*test.*rename or remove"):
        load_dataset(str(tmp_path / "d"))


def test_test_side_may_lack_a_training_class_labels_follow_names(tmp_path: Path) -> None:
    for label, value in (("a", 10), ("b", 20), ("c", 30)):
        save(tmp_path / "d" / "train" / label / "0.png", grey(value))
    for label, value in (("a", 10), ("c", 30)):
        save(tmp_path / "d" / "test" / label / "0.png", grey(value))
    splits = load_dataset(str(tmp_path / "d"))
    assert splits.train.classes == ["a", "b", "c"] and splits.test.classes == ["a", "b", "c"]
    pairs = zip(splits.test.labels.tolist(), splits.test.images[:, 0, 0, 0].tolist(), strict=True)
    assert sorted(pairs) == [(0, 10), (2, 30)]
