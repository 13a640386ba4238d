"""Property: whatever bytes or small images a dataset holds, every reader either loads it into a
well-formed dataset or raises DataError, never another exception.

Each reader gets random bytes (behind its format's magic number, so the decoder proper is reached,
not only the format check) and structured input: random small images in every Pillow mode and
format, random tar members, random npz arrays, random IDX headers, random pickled CIFAR batches.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from contrastlab.data import DatasetSplits, load_dataset
from contrastlab.errors import DataError

#: 50 examples per property in the suite; set CONTRASTLAB_FUZZ_EXAMPLES to search longer
FUZZ = settings(max_examples=int(os.environ.get("CONTRASTLAB_FUZZ_EXAMPLES", "50")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

#: magic numbers of the formats the readers meet: images, gzip, bzip2, xz, zip (npz), pickle
IMAGE_MAGIC = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM", b"II*\x00",
               b"MM\x00*", b"RIFF\x00\x00\x00\x00WEBP"]
ARCHIVE_MAGIC = [b"", b"\x1f\x8b\x08", b"BZh9", b"\xfd7zXZ\x00", b"ustar"]
EXTENSIONS = ["png", "jpg", "gif", "bmp", "tif", "webp"]
FORMATS = {"png": "PNG", "jpg": "JPEG", "gif": "GIF", "bmp": "BMP", "tif": "TIFF",
           "webp": "WEBP"}
MODES = ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "I", "I;16", "F", "LAB",
         "HSV", "RGBX"]

random_bytes = st.binary(max_size=600)


@contextmanager
def folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as name:
        yield Path(name)


def load_or_data_error(spec: Path, **options: object) -> DatasetSplits | None:
    """Load ``spec``; a DataError is an accepted outcome, a dataset must be well formed."""
    try:
        splits = load_dataset(str(spec), **options)  # type: ignore[arg-type]
    except DataError as error:
        assert str(error), "a DataError needs a message"
        return None
    for part in (splits.train, splits.test):
        if part is None:
            continue
        n, channels, height, width = part.images.shape
        assert part.images.dtype.is_floating_point is False and n >= 1
        assert channels in (1, 3) and height >= 1 and width >= 1
        if part.labels is not None:
            assert part.labels.shape == (n,) and int(part.labels.min()) >= 0
            if part.classes is not None:
                assert int(part.labels.max()) < len(part.classes)
    return splits


@st.composite
def small_images(draw: st.DrawFn) -> tuple[Image.Image, str]:
    """A random image of a random mode and size, and a file extension to save it under."""
    mode = draw(st.sampled_from(MODES))
    size = (draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    template = Image.new(mode, size)
    raw = draw(st.binary(min_size=len(template.tobytes()), max_size=len(template.tobytes())))
    image = Image.frombytes(mode, size, raw)
    if mode in ("P", "PA"):
        image.putpalette(draw(st.binary(min_size=768, max_size=768)))
        if draw(st.booleans()):
            image.info["transparency"] = draw(st.integers(0, 255))
    return image, draw(st.sampled_from(EXTENSIONS))


def encode(image: Image.Image, extension: str) -> bytes:
    """The image saved in the format of ``extension``; the example is dropped if Pillow cannot
    write that mode in that format."""
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=FORMATS[extension])
    except (OSError, ValueError, KeyError, TypeError):
        assume(False)
    return buffer.getvalue()


# -------------------------------------------------------------------- image folders
@FUZZ
@given(magic=st.sampled_from(IMAGE_MAGIC), payload=random_bytes,
       extension=st.sampled_from(EXTENSIONS), skip=st.booleans())
def test_image_folder_random_bytes(magic: bytes, payload: bytes, extension: str,
                                   skip: bool) -> None:
    with folder() as root:
        good = np.zeros((4, 4, 3), dtype=np.uint8)
        Image.fromarray(good).save(root / "good.png")
        (root / f"random.{extension}").write_bytes(magic + payload)
        splits = load_or_data_error(root, skip_bad_files=skip)
        if skip:  # the good image is always readable
            assert splits is not None


@FUZZ
@given(images=st.lists(small_images(), min_size=1, max_size=3), size=st.none() | st.integers(1, 9))
def test_image_folder_random_images(images: list[tuple[Image.Image, str]],
                                    size: int | None) -> None:
    with folder() as root:
        for i, (image, extension) in enumerate(images):
            (root / f"{i}.{extension}").write_bytes(encode(image, extension))
        splits = load_or_data_error(root, image_size=size)
        if len(images) == 1:  # one valid image is always read (converted per the documented table)
            assert splits is not None
            if size is not None:
                assert splits.train.image_size == (size, size)


# -------------------------------------------------------------------- archives
@FUZZ
@given(magic=st.sampled_from(ARCHIVE_MAGIC), payload=random_bytes,
       suffix=st.sampled_from([".tar", ".tar.gz", ".tgz"]))
def test_archive_random_bytes(magic: bytes, payload: bytes, suffix: str) -> None:
    with folder() as root:
        path = root / f"data{suffix}"
        path.write_bytes(magic + payload)
        load_or_data_error(path)


@FUZZ
@given(members=st.lists(st.tuples(st.sampled_from(["a/", "b/", "", "train/a/", "test/a/"]),
                                   st.sampled_from(EXTENSIONS),
                                   st.sampled_from(IMAGE_MAGIC), random_bytes),
                         min_size=1, max_size=4),
       image=small_images(), compress=st.booleans(), skip=st.booleans())
def test_archive_random_members(members: list, image: tuple[Image.Image, str], compress: bool,
                                skip: bool) -> None:
    with folder() as root:
        path = root / ("data.tar.gz" if compress else "data.tar")
        with tarfile.open(path, "w:gz" if compress else "w") as tar:
            entries = [(prefix + f"{i}.{ext}", magic + payload)
                       for i, (prefix, ext, magic, payload) in enumerate(members)]
            entries.append(("a/image." + image[1], encode(*image)))
            for name, data in entries:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        load_or_data_error(path, skip_bad_files=skip)


# -------------------------------------------------------------------- npz
@FUZZ
@given(magic=st.sampled_from([b"", b"PK\x03\x04", b"\x93NUMPY"]), payload=random_bytes)
def test_npz_random_bytes(magic: bytes, payload: bytes) -> None:
    with folder() as root:
        (root / "data.npz").write_bytes(magic + payload)
        load_or_data_error(root / "data.npz")


dtypes = st.sampled_from([np.uint8, np.int8, np.int64, np.uint64, np.float32, np.bool_])


@st.composite
def arrays(draw: st.DrawFn) -> np.ndarray:
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=0, max_size=5)))
    dtype = draw(dtypes)
    count = int(np.prod(shape, dtype=np.int64))
    raw = draw(st.binary(min_size=count * np.dtype(dtype).itemsize,
                         max_size=count * np.dtype(dtype).itemsize))
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


@FUZZ
@given(fields=st.dictionaries(st.sampled_from(["x", "y", "x_train", "y_train", "x_test",
                                               "y_test", "classes"]),
                              arrays() | st.lists(st.text(max_size=3), max_size=4).map(np.array),
                              max_size=5))
def test_npz_random_arrays(fields: dict[str, np.ndarray]) -> None:
    with folder() as root:
        np.savez(root / "data.npz", **fields)
        load_or_data_error(root / "data.npz")


label_dtypes = st.sampled_from([np.uint8, np.int8, np.int32, np.int64, np.uint64, np.float64,
                                np.bool_])


@FUZZ
@given(count=st.integers(1, 6), height=st.integers(0, 3), channels=st.sampled_from([0, 1, 3, 4]),
       label_dtype=label_dtypes, data=st.data(), with_classes=st.booleans())
def test_npz_near_valid(count: int, height: int, channels: int, label_dtype: type,
                        data: st.DataObject, with_classes: bool) -> None:
    """Valid images with labels of any type and size (huge, negative, float, bool)."""
    shape = (count, height, 3) + ((channels,) if channels else ())
    images = np.zeros(shape, dtype=np.uint8)
    info = np.iinfo(label_dtype) if np.dtype(label_dtype).kind in "iu" else None
    value = st.integers(0, 3)
    if info is not None:  # the extremes of the type, and anything in between
        value = value | st.sampled_from([info.min, info.max, 2**20]).filter(
            lambda v: info.min <= v <= info.max) | st.integers(info.min, info.max)
    values = data.draw(st.lists(value, min_size=count, max_size=count))
    fields = {"x": images, "y": np.array(values, dtype=label_dtype)}
    if with_classes:
        fields["classes"] = np.array(["a", "b", "c"])
    with folder() as root:
        np.savez(root / "data.npz", **fields)
        load_or_data_error(root / "data.npz", test_fraction=0.5)


def idx_bytes(code: int, dims: list[int], payload: bytes) -> bytes:
    return bytes([0, 0, code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims) + payload


@FUZZ
@given(dims=st.lists(st.integers(0, 4), min_size=1, max_size=4), labels=st.lists(
    st.integers(0, 255), min_size=0, max_size=8), extra=st.integers(-1, 1), data=st.data())
def test_idx_near_valid(dims: list[int], labels: list[int], extra: int,
                        data: st.DataObject) -> None:
    """Headers that announce the right amount of data (give or take a byte)."""
    size = max(0, int(np.prod(dims)) + extra)
    payload = data.draw(st.binary(min_size=size, max_size=size))
    with folder() as root:
        (root / "train-images-idx3-ubyte").write_bytes(idx_bytes(0x08, dims, payload))
        (root / "train-labels-idx1-ubyte").write_bytes(idx_bytes(0x08, [len(labels)],
                                                                  bytes(labels)))
        load_or_data_error(root, test_fraction=0.5)


# -------------------------------------------------------------------- idx
@FUZZ
@given(images=st.binary(max_size=300), labels=st.binary(max_size=40),
       header=st.none() | st.tuples(st.sampled_from([0x08, 0x09, 0x0D]),
                                    st.lists(st.integers(0, 6), min_size=0, max_size=4)),
       zipped=st.booleans())
def test_idx_random_files(images: bytes, labels: bytes, header: tuple | None,
                          zipped: bool) -> None:
    with folder() as root:
        if header is not None:  # a plausible header in front of random values
            code, dims = header
            images = (bytes([0, 0, code, len(dims)])
                      + b"".join(d.to_bytes(4, "big") for d in dims) + images)
        suffix = ".gz" if zipped else ""
        pack = gzip.compress if zipped else bytes
        (root / f"train-images-idx3-ubyte{suffix}").write_bytes(pack(images))
        (root / f"train-labels-idx1-ubyte{suffix}").write_bytes(pack(labels))
        load_or_data_error(root)


# -------------------------------------------------------------------- cifar batches
plain = st.recursive(
    st.none() | st.booleans() | st.integers() | st.binary(max_size=8) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from([b"data", b"labels", b"label_names", "data", "labels"]), inner,
        max_size=3),
    max_leaves=8,
)


@st.composite
def near_batches(draw: st.DrawFn) -> dict:
    """A batch of the right structure with random rows, row lengths and labels."""
    rows, width = draw(st.integers(0, 3)), draw(st.sampled_from([3072, 3072, 3071, 0]))
    data = np.frombuffer(draw(st.binary(min_size=rows * width, max_size=rows * width)),
                         dtype=np.uint8).reshape(rows, width)
    labels = draw(st.lists(st.integers(-2, 12), min_size=rows, max_size=rows + 1))
    return {b"data": data, b"labels": labels}


@FUZZ
@given(batch=plain | arrays().map(lambda a: {b"data": a, b"labels": [0] * a.size}) | near_batches(),
       meta=plain | st.just({b"label_names": [b"a", b"b", b"c", b"d", b"e", b"f", b"g", b"h",
                                               b"i", b"j"]}),
       garbage=st.none() | random_bytes)
def test_cifar_random_batches(batch: object, meta: object, garbage: bytes | None) -> None:
    with folder() as root:
        (root / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
        data = garbage if garbage is not None else pickle.dumps(batch, protocol=2)
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            (root / name).write_bytes(data)
        load_or_data_error(root)
