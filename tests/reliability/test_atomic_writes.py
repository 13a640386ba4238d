"""contrastlab.atomic: a failed write leaves the previous file and no temporary file, and says why.

The full-disk cases write with the real libraries (numpy, PyTorch, FAISS, safetensors, ONNX,
Python's own files) into a real 1 MiB tmpfs; the exception forms that a small file system cannot
produce on demand are raised by hand with the texts the libraries use.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from contrastlab.atomic import (
    save_torch_atomic,
    write_atomic,
    write_atomic_group,
    write_failure_cause,
    write_text_atomic,
)
from contrastlab.errors import ContrastlabError, WriteError
from tests.serve.serve_helpers import small_filesystem

FULL = "No space left on device"
PREVIOUS = b"the previous content"


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB file system holding one file, ``old.bin``, with :data:`PREVIOUS` in it."""
    with small_filesystem(tmp_path / "small") as folder:
        (folder / "old.bin").write_bytes(PREVIOUS)
        yield folder


def assert_clean_failure(error: WriteError, folder: Path, target: Path) -> None:
    message = str(error)
    assert isinstance(error, ContrastlabError)
    assert f"'{target}'" in message and FULL in message and "\n" not in message
    assert "the previous file there is intact" in message and "Free disk space" in message
    assert error.errno == errno.ENOSPC and error.cause == FULL and error.path == str(target)
    assert sorted(p.name for p in folder.iterdir()) == ["old.bin"]  # no temporary file left
    assert (folder / "old.bin").read_bytes() == PREVIOUS


def numpy_writer(tmp: Path) -> None:
    with open(tmp, "wb") as handle:
        np.save(handle, np.zeros(1_000_000, dtype=np.float32), allow_pickle=False)


def test_numpy_on_a_full_disk(full_disk: Path) -> None:
    target = full_disk / "old.bin"
    with pytest.raises(WriteError) as caught:
        write_atomic(target, numpy_writer, "embeddings")
    assert_clean_failure(caught.value, full_disk, target)
    # numpy's own exception says only "N requested and M written" (no errno): the cause comes
    # from the file system's free space.
    assert "requested and" in str(caught.value.__cause__)


@pytest.mark.parametrize("in_memory", [False, True])
def test_torch_save_on_a_full_disk(full_disk: Path, in_memory: bool) -> None:
    target = full_disk / "old.bin"
    with pytest.raises(WriteError) as caught:
        save_torch_atomic({"w": torch.zeros(1_000_000)}, target, "checkpoint",
                          in_memory=in_memory)
    assert_clean_failure(caught.value, full_disk, target)


def test_faiss_write_index_on_a_full_disk(full_disk: Path) -> None:
    faiss = pytest.importorskip("faiss", reason="the serve extra is not installed")
    index = faiss.IndexFlatIP(64)
    index.add(np.zeros((10_000, 64), dtype=np.float32))
    target = full_disk / "old.bin"
    with pytest.raises(WriteError) as caught:
        write_atomic(target, lambda tmp: faiss.write_index(index, str(tmp)), "index")
    assert_clean_failure(caught.value, full_disk, target)
    assert isinstance(caught.value.__cause__, RuntimeError)  # FAISS's own exception type


def test_safetensors_and_onnx_on_a_full_disk(full_disk: Path) -> None:
    pytest.importorskip("safetensors", reason="the serve extra is not installed")
    onnx = pytest.importorskip("onnx", reason="the serve extra is not installed")
    from safetensors.torch import save_file

    target = full_disk / "old.bin"
    with pytest.raises(WriteError) as caught:
        write_atomic(target, lambda tmp: save_file({"w": torch.zeros(1_000_000)}, str(tmp)),
                     "artefact")
    assert_clean_failure(caught.value, full_disk, target)
    weight = onnx.numpy_helper.from_array(np.zeros((600, 600), dtype=np.float32), "weight")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["x", "weight"], ["y"])], "linear",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 600])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 600])], [weight])
    model = onnx.helper.make_model(graph)
    with pytest.raises(WriteError) as caught:
        write_atomic(target, lambda tmp: onnx.save(model, str(tmp)), "artefact")
    assert_clean_failure(caught.value, full_disk, target)


def test_a_group_is_all_or_nothing(full_disk: Path) -> None:
    (full_disk / "ids.json").write_text("old ids")
    with pytest.raises(WriteError) as caught:
        write_atomic_group([(full_disk / "ids.json", lambda tmp: tmp.write_text("new ids")),
                            (full_disk / "old.bin", numpy_writer)], "embeddings")
    assert f"'{full_disk / 'old.bin'}'" in str(caught.value)
    assert (full_disk / "ids.json").read_text() == "old ids"  # written, but never renamed
    assert sorted(p.name for p in full_disk.iterdir()) == ["ids.json", "old.bin"]


def test_read_only_file_system(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "ro", read_only=True) as folder:
        with pytest.raises(WriteError) as caught:
            write_text_atomic(folder / "out.json", "{}", "ids")
        message = str(caught.value)
        assert "Read-only file system" in message and "no file was left there" in message
        assert "permissions" in message
        assert list(folder.iterdir()) == []


def test_success_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "out.txt"
    seen: list[Path] = []
    write_text_atomic(target, "one", "report")
    write_text_atomic(target, "two", "report", before_replace=seen.append)
    assert target.read_text() == "two"
    assert seen and seen[0].name.startswith(".out.txt.") and seen[0].name.endswith(".tmp")
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]


def test_an_output_below_a_file_is_a_write_error(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("")
    with pytest.raises(WriteError, match=r"'.*c\.yaml' is a file, not a folder"):
        write_text_atomic(tmp_path / "c.yaml" / "run" / "x.json", "{}", "ids")


# ------------------------------------------------- exception forms raised by hand

@pytest.mark.parametrize("error,cause", [
    # PyTorch's zip writer (older releases); the errno-less form is checked below
    (RuntimeError("[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed "
                  "writing file data/0: file write failed"),
     "PytorchStreamWriter failed writing file data/0: file write failed"),
    (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"),
     "unexpected pos 576 vs 534"),
    # numpy's tofile on a short write
    (OSError("1000000 requested and 262112 written"), "1000000 requested and 262112 written"),
    # FAISS
    (RuntimeError("Error in void faiss::write_index(const Index*, IOWriter*, int) at "
                  "/project/faiss/impl/index_write.cpp:499: Error: 'ret == (size * 4)' failed: "
                  "write error in /x/.index.faiss.tmp: 1048531 != 2560000 (No space left on "
                  "device)"), FULL),
    # safetensors (a Rust I/O error)
    (Exception("Error while serializing: I/O error: No space left on device (os error 28)"),
     FULL),
    (OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)), os.strerror(errno.EDQUOT)),
    (PermissionError(errno.EACCES, "Permission denied"), "Permission denied"),
])
def test_write_failures_are_recognised(tmp_path: Path, error: Exception, cause: str) -> None:
    # tmp_path is not full, so a cause must come from the exception itself
    assert write_failure_cause(error, tmp_path)[0] == cause

    def fail(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise error

    with pytest.raises(WriteError) as caught:
        write_atomic(tmp_path / "out.bin", fail, "index")
    assert cause in str(caught.value) and caught.value.__cause__ is error
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("error", [TypeError("a bug"), KeyboardInterrupt(),
                                   RuntimeError("CUDA out of memory"), KeyError("x")])
def test_other_exceptions_pass_through_and_leave_no_temporary(tmp_path: Path,
                                                              error: BaseException) -> None:
    (tmp_path / "out.bin").write_bytes(PREVIOUS)

    def fail(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise error

    with pytest.raises(type(error)) as caught:
        write_atomic(tmp_path / "out.bin", fail, "index")
    assert caught.value is error
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
    assert (tmp_path / "out.bin").read_bytes() == PREVIOUS
