"""Tests of reading folders of image files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from contrastlab.data import load_dataset
from contrastlab.data.decode import decode_images, to_array
from contrastlab.errors import DataError


def test_class_folders_give_labels(tmp_path: Path, class_tree: Callable[..., Path]) -> None:
    root = class_tree(tmp_path / "pets", {"dog": 5, "cat": 5})
    splits = load_dataset(str(root))
    assert not splits.official_split
    assert splits.test is not None
    assert splits.train.classes == ["cat", "dog"]
    assert len(splits.train) == 8 and len(splits.test) == 2
    assert sorted(splits.test.labels.tolist()) == [0, 1]
    images = splits.train.images
    assert images.dtype.is_floating_point is False and str(images.dtype) == "torch.uint8"
    assert tuple(images.shape) == (8, 3, 8, 8) and images.is_contiguous()
    for image, label, ident in zip(images, splits.train.labels, splits.train.ids, strict=True):
        path = Path(ident)
        assert path.parent.name == splits.train.classes[int(label)]
        expected = np.asarray(Image.open(path).convert("RGB")).transpose(2, 0, 1)
        np.testing.assert_array_equal(image.numpy(), expected)


def test_split_is_seeded(tmp_path: Path, class_tree: Callable[..., Path]) -> None:
    root = class_tree(tmp_path / "d", {"a": 10, "b": 10})
    first = load_dataset(str(root), split_seed=1)
    again = load_dataset(str(root), split_seed=1)
    other = load_dataset(str(root), split_seed=2)
    assert first.test is not None and again.test is not None and other.test is not None
    assert first.test.ids == again.test.ids
    assert first.test.ids != other.test.ids
    half = load_dataset(str(root), test_fraction=0.5)
    assert half.test is not None and len(half.test) == 10


def test_train_test_tree_is_official_split(tmp_path: Path, class_tree: Callable[..., Path]) -> None:
    class_tree(tmp_path / "ds" / "train", {"a": 3, "b": 2, "c": 2})
    class_tree(tmp_path / "ds" / "test", {"a": 1, "c": 2})
    splits = load_dataset(str(tmp_path / "ds"))
    assert splits.official_split
    assert splits.test is not None
    assert splits.train.classes == ["a", "b", "c"] == splits.test.classes
    assert splits.train.labels.tolist() == [0, 0, 0, 1, 1, 2, 2]
    assert splits.test.labels.tolist() == [0, 2, 2]
    assert all("/test/" in ident for ident in splits.test.ids)


def test_val_folder_counts_as_test(tmp_path: Path, class_tree: Callable[..., Path]) -> None:
    class_tree(tmp_path / "ds" / "Train", {"a": 2, "b": 2})
    class_tree(tmp_path / "ds" / "val", {"a": 1, "b": 1})
    splits = load_dataset(str(tmp_path / "ds"))
    assert splits.official_split and splits.test is not None and len(splits.test) == 2


def test_train_folder_alone_is_split(tmp_path: Path, class_tree: Callable[..., Path]) -> None:
    class_tree(tmp_path / "ds" / "train", {"a": 5, "b": 5})
    splits = load_dataset(str(tmp_path / "ds"))
    assert not splits.official_split and splits.test is not None
    assert splits.train.classes == ["a", "b"]
    assert len(splits.train) == 8 and len(splits.test) == 2


def test_test_classes_must_be_training_classes(
    tmp_path: Path, class_tree: Callable[..., Path]
) -> None:
    class_tree(tmp_path / "ds" / "train", {"a": 2, "b": 2})
    class_tree(tmp_path / "ds" / "test", {"a": 1, "zebra": 1})
    with pytest.raises(DataError) as info:
        load_dataset(str(tmp_path / "ds"))
    message = str(info.value)
    assert "zebra" in message
    assert str(tmp_path / "ds" / "train") in message and str(tmp_path / "ds" / "test") in message


def test_flat_folder_is_unlabeled(tmp_path: Path, write_image: Callable[..., Path]) -> None:
    for i in range(4):
        write_image(tmp_path / "flat" / f"img{i}.PNG", seed=i, mode="L")
    (tmp_path / "flat" / "notes.txt").write_text("not an image")
    (tmp_path / "flat" / ".hidden.png").write_bytes(b"garbage")
    (tmp_path / "flat" / ".cache").mkdir()
    (tmp_path / "flat" / ".cache" / "x.png").write_bytes(b"garbage")
    splits = load_dataset(str(tmp_path / "flat"))
    assert splits.test is None and not splits.official_split
    assert splits.train.labels is None and splits.train.classes is None
    assert tuple(splits.train.images.shape) == (4, 1, 8, 8)
    assert [Path(i).name for i in splits.train.ids] == [f"img{i}.PNG" for i in range(4)]


def test_all_extensions_are_read(tmp_path: Path, write_image: Callable[..., Path]) -> None:
    extensions = ["png", "jpg", "JPEG", "bmp", "gif", "webp", "tif", "TIFF"]
    for i, ext in enumerate(extensions):
        write_image(tmp_path / "mix" / f"{i}.{ext}", seed=i)
    splits = load_dataset(str(tmp_path / "mix"))
    assert len(splits.train) == len(extensions)
    assert splits.train.channels == 3


def test_images_nested_below_a_class_are_found(
    tmp_path: Path, write_image: Callable[..., Path]
) -> None:
    for i in range(3):
        write_image(tmp_path / "d" / "a" / "deep" / f"{i}.png", seed=i)
        write_image(tmp_path / "d" / "b" / f"{i}.png", seed=10 + i)
    splits = load_dataset(str(tmp_path / "d"), test_fraction=0.34)
    assert splits.test is not None
    assert len(splits.train) + len(splits.test) == 6


def test_empty_folder_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "nothing"
    empty.mkdir()
    (empty / "readme.txt").write_text("hi")
    with pytest.raises(DataError, match="nothing"):
        load_dataset(str(empty))


def test_empty_class_folder_is_refused(tmp_path: Path, class_tree: Callable[..., Path]) -> None:
    root = class_tree(tmp_path / "d", {"a": 3})
    (root / "lonely").mkdir()
    with pytest.raises(DataError) as info:
        load_dataset(str(root))
    assert str(root / "lonely") in str(info.value)


def test_loose_images_next_to_class_folders_are_refused(
    tmp_path: Path, class_tree: Callable[..., Path], write_image: Callable[..., Path]
) -> None:
    root = class_tree(tmp_path / "d", {"a": 3})
    write_image(root / "stray.png")
    with pytest.raises(DataError, match="stray.png"):
        load_dataset(str(root))


def _bad_files(folder: Path, write_image: Callable[..., Path]) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    corrupt = folder / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    empty = folder / "zero.jpg"
    empty.write_bytes(b"")
    text = folder / "text.png"
    text.write_text("this is plain text, not a picture\n")
    full = write_image(folder / "full.jpg", size=(64, 64), quality=95)
    truncated = folder / "truncated.jpg"
    truncated.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    full.unlink()
    return {"corrupt": corrupt, "zero": empty, "text": text, "truncated": truncated}


@pytest.mark.parametrize("kind", ["corrupt", "zero", "text", "truncated"])
def test_unreadable_file_is_named(
    tmp_path: Path, write_image: Callable[..., Path], kind: str
) -> None:
    folder = tmp_path / "d"
    for i in range(3):
        write_image(folder / f"good{i}.png", seed=i, size=(64, 64))
    bad = _bad_files(tmp_path / "bad", write_image)[kind]
    target = folder / bad.name
    bad.rename(target)
    with pytest.raises(DataError) as info:
        load_dataset(str(folder))
    message = str(info.value)
    assert bad.name in message and "--skip-bad-files" in message


def test_bad_files_are_skipped_and_listed(tmp_path: Path, write_image: Callable[..., Path]) -> None:
    folder = tmp_path / "d"
    for i in range(3):
        write_image(folder / f"good{i}.png", seed=i, size=(64, 64))
    bad = _bad_files(folder, write_image)
    splits = load_dataset(str(folder), skip_bad_files=True)
    assert len(splits.train) == 3
    assert len(splits.skipped) == 4
    for path in bad.values():
        assert any(entry.startswith(str(path) + ":") for entry in splits.skipped)
    assert all(Path(ident).name.startswith("good") for ident in splits.train.ids)


def test_skipped_files_keep_labels_aligned(tmp_path: Path, class_tree: Callable[..., Path]) -> None:
    root = class_tree(tmp_path / "d", {"a": 3, "b": 3})
    (root / "a" / "000.png").write_bytes(b"broken")
    splits = load_dataset(str(root), skip_bad_files=True, test_fraction=0.4)
    assert splits.test is not None
    ids = splits.train.ids + splits.test.ids
    labels = splits.train.labels.tolist() + splits.test.labels.tolist()
    for ident, label in zip(ids, labels, strict=True):
        assert Path(ident).parent.name == ["a", "b"][label]
    assert len(ids) == 5 and len(splits.skipped) == 1


def test_mixed_grey_and_colour_is_refused(tmp_path: Path, write_image: Callable[..., Path]) -> None:
    write_image(tmp_path / "d" / "grey.png", mode="L")
    write_image(tmp_path / "d" / "colour.png", mode="RGB")
    with pytest.raises(DataError) as info:
        load_dataset(str(tmp_path / "d"))
    message = str(info.value)
    assert "grey.png" in message and "colour.png" in message and "convert" in message.lower()


def test_different_sizes_need_image_size(tmp_path: Path, write_image: Callable[..., Path]) -> None:
    write_image(tmp_path / "d" / "small.png", size=(8, 8))
    write_image(tmp_path / "d" / "wide.png", size=(20, 10))
    with pytest.raises(DataError) as info:
        load_dataset(str(tmp_path / "d"))
    message = str(info.value)
    assert "--image-size" in message and "small.png" in message and "wide.png" in message
    splits = load_dataset(str(tmp_path / "d"), image_size=6)
    assert tuple(splits.train.images.shape) == (2, 3, 6, 6)


def test_resize_keeps_the_centre_square(tmp_path: Path) -> None:
    pixels = np.zeros((4, 12), dtype=np.uint8)
    pixels[:, 4:8] = 255
    folder = tmp_path / "d"
    folder.mkdir()
    Image.fromarray(pixels, mode="L").save(folder / "wide.png")
    Image.fromarray(pixels.T.copy(), mode="L").save(folder / "tall.png")
    splits = load_dataset(str(folder), image_size=4)
    assert tuple(splits.train.images.shape) == (2, 1, 4, 4)
    assert int(splits.train.images.min()) == 255

    # Shrinking equals "resize the shorter side, then crop the centre" up to rounding.
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, size=(30, 50), dtype=np.uint8)
    other = tmp_path / "e"
    other.mkdir()
    Image.fromarray(photo, mode="L").save(other / "photo.png")
    shrunk = load_dataset(str(other), image_size=12)
    reference = Image.fromarray(photo, mode="L").resize((20, 12), Image.Resampling.BILINEAR)
    expected = np.asarray(reference)[:, 4:16].astype(int)
    got = shrunk.train.images[0, 0].numpy().astype(int)
    assert got.shape == (12, 12)
    assert np.abs(got - expected).mean() < 3.0


def test_large_jpeg_is_resized(tmp_path: Path, write_image: Callable[..., Path]) -> None:
    write_image(tmp_path / "d" / "big.jpg", size=(300, 200))
    write_image(tmp_path / "d" / "other.jpg", size=(64, 64))
    splits = load_dataset(str(tmp_path / "d"), image_size=16)
    assert tuple(splits.train.images.shape) == (2, 3, 16, 16)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_image_size_is_refused(
    tmp_path: Path, class_tree: Callable[..., Path], bad: object
) -> None:
    root = class_tree(tmp_path / "d", {"a": 2})
    with pytest.raises(DataError, match="image_size"):
        load_dataset(str(root), image_size=bad)  # type: ignore[arg-type]


def test_rgba_is_composited_onto_black(tmp_path: Path) -> None:
    pixels = np.zeros((2, 2, 4), dtype=np.uint8)
    pixels[..., :3] = 200
    pixels[..., 3] = [[255, 0], [128, 255]]
    folder = tmp_path / "d"
    folder.mkdir()
    Image.fromarray(pixels, mode="RGBA").save(folder / "a.png")
    splits = load_dataset(str(folder))
    image = splits.train.images[0].numpy()
    assert image.shape == (3, 2, 2)
    np.testing.assert_array_equal(image[0], [[200, 0], [100, 200]])


def test_palette_image_becomes_rgb(tmp_path: Path) -> None:
    pixels = np.zeros((4, 4, 3), dtype=np.uint8)
    pixels[:2] = [255, 0, 0]
    pixels[2:] = [0, 0, 255]
    folder = tmp_path / "d"
    folder.mkdir()
    Image.fromarray(pixels, mode="RGB").convert("P").save(folder / "p.png")
    Image.fromarray(pixels, mode="RGB").save(folder / "palette.gif")
    splits = load_dataset(str(folder))
    assert splits.train.channels == 3
    for image in splits.train.images:
        np.testing.assert_array_equal(image.numpy(), pixels.transpose(2, 0, 1))


def test_sixteen_bit_png_is_scaled(tmp_path: Path) -> None:
    values = np.array([[0, 257], [65535, 128 * 257]], dtype=np.uint16)
    folder = tmp_path / "d"
    folder.mkdir()
    Image.fromarray(values).save(folder / "deep.png")
    with Image.open(folder / "deep.png") as img:
        assert img.mode in ("I;16", "I")
    splits = load_dataset(str(folder))
    np.testing.assert_array_equal(splits.train.images[0, 0].numpy(), [[0, 1], [255, 128]])


def test_cmyk_and_greyscale_alpha_modes(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    Image.new("CMYK", (3, 3), (0, 0, 0, 0)).save(folder / "white.tif")
    Image.new("CMYK", (3, 3), (0, 0, 0, 255)).save(folder / "black.tif")
    splits = load_dataset(str(folder))
    assert splits.train.channels == 3
    by_name = {
        Path(i).name: img for i, img in zip(splits.train.ids, splits.train.images, strict=True)
    }
    assert int(by_name["white.tif"].min()) == 255
    assert int(by_name["black.tif"].max()) == 0
    grey = tmp_path / "g"
    grey.mkdir()
    Image.new("LA", (2, 2), (200, 255)).save(grey / "la.png")
    Image.new("1", (2, 2), 1).save(grey / "bilevel.png")
    grey_splits = load_dataset(str(grey))
    assert grey_splits.train.channels == 1
    assert int(grey_splits.train.images.min()) == 200


def test_to_array_conversions() -> None:
    floats = Image.fromarray(np.array([[0.0, 0.5], [1.0, 0.25]], dtype=np.float32), mode="F")
    np.testing.assert_array_equal(to_array(floats)[0], [[0, 128], [255, 64]])
    big_floats = Image.fromarray(np.array([[-5.0, 100.0], [300.0, 7.4]], dtype=np.float32))
    np.testing.assert_array_equal(to_array(big_floats)[0], [[0, 100], [255, 7]])
    ints = Image.fromarray(np.array([[0, 65535], [70000, 257]], dtype=np.int32), mode="I")
    np.testing.assert_array_equal(to_array(ints)[0], [[0, 255], [255, 1]])
    ycbcr = Image.new("RGB", (2, 2), (10, 20, 30)).convert("YCbCr")
    assert to_array(ycbcr).shape == (3, 2, 2)
    rgba = Image.new("RGBA", (1, 1), (100, 50, 250, 255))
    np.testing.assert_array_equal(to_array(rgba)[:, 0, 0], [100, 50, 250])


def test_thread_pool_keeps_order(write_image: Callable[..., Path], tmp_path: Path) -> None:
    sources = []
    for i in range(600):
        pixels = np.full((2, 2), i % 256, dtype=np.uint8)
        buffer = tmp_path / "x.png"
        Image.fromarray(pixels, mode="L").save(buffer)
        sources.append(buffer.read_bytes())
    sources[300] = b"bad"
    names = [f"img{i}" for i in range(600)]
    result = decode_images(names, sources, workers=2, skip_bad_files=True)
    assert result.images.shape == (599, 1, 2, 2)
    assert result.kept == [i for i in range(600) if i != 300]
    assert result.images[:, 0, 0, 0].tolist() == [i % 256 for i in result.kept]
    assert result.skipped[0].startswith("img300:")
    with pytest.raises(DataError, match="img300"):
        decode_images(names, sources, workers=2)
