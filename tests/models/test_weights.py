"""``--weights FILE``: local state dicts (torchvision, timm, safetensors, contrastlab checkpoints)
matched to a backbone; the loaded parameters equal the file's, and files that do not fit are
refused naming the file and how many tensors matched."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from torch import nn

from contrastlab.errors import CheckpointError
from contrastlab.models import build_backbone
from contrastlab.models.weights import (
    canonical_key,
    file_digest,
    load_backbone_weights,
    read_state_dict,
)


def assert_loaded(backbone: nn.Module, expected: dict[str, torch.Tensor],
                  prefix: str = "") -> None:
    """Every tensor of ``backbone`` equals the file's tensor of the same name (after
    ``prefix``, the wrapper's)."""
    state = backbone.state_dict()
    for name, value in state.items():
        torch.testing.assert_close(value, expected[name.removeprefix(prefix)], rtol=0, atol=0)


def test_torchvision_state_dict_loads_into_the_resnet_wrapper(tmp_path: Path) -> None:
    from torchvision.models import resnet18

    torch.manual_seed(0)
    state = resnet18().state_dict()  # with the ImageNet classifier fc.weight / fc.bias
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    backbone = build_backbone("resnet18", 3)
    loaded = load_backbone_weights(backbone, path, "resnet18")
    assert_loaded(backbone, state, prefix="net.")
    assert loaded.tensors == len(backbone.state_dict())
    assert loaded.heads_left_out == ("fc.weight", "fc.bias") and loaded.ignored == ()
    assert loaded.to_meta() == {"path": str(path.resolve()), "sha256": loaded.sha256,
                                "tensors": loaded.tensors}
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    assert loaded.summary().startswith(f"loaded {loaded.tensors} backbone tensors from "
                                       f"{path.resolve()} (sha256 {loaded.sha256}); left out "
                                       "the classifier (fc.weight, fc.bias)")


def test_timm_state_dict_in_a_training_script_wrapper(tmp_path: Path) -> None:
    """A timm model's state dict saved by a DataParallel script: {"state_dict": {"module.x"}},
    with its classifier head; loaded into the timm:<name> backbone (the model. wrapper)."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(1)
    state = timm.create_model("test_resnet", num_classes=10, in_chans=1).state_dict()
    path = tmp_path / "timm.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    backbone = build_backbone("timm:test_resnet", 1)
    loaded = load_backbone_weights(backbone, path, "timm:test_resnet")
    assert_loaded(backbone, state, prefix="model.")
    assert loaded.heads_left_out == ("module.fc.weight", "module.fc.bias")


def test_safetensors_file(tmp_path: Path) -> None:
    safetensors = pytest.importorskip("safetensors.torch")
    torch.manual_seed(2)
    state = build_backbone("convnet-small", 1).state_dict()
    path = tmp_path / "convnet.safetensors"
    safetensors.save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    backbone = build_backbone("convnet-small", 1)
    load_backbone_weights(backbone, path)
    assert_loaded(backbone, state)


def test_contrastlab_checkpoint_gives_its_online_backbone(tmp_path: Path) -> None:
    """Only the ``backbone.`` entries of a checkpoint's ``model``; the momentum copy and the
    heads are other entries."""
    torch.manual_seed(3)
    online = build_backbone("convnet-small", 1).state_dict()
    momentum = build_backbone("convnet-small", 1).state_dict()
    model = {**{f"backbone.{k}": v for k, v in online.items()},
             **{f"key_backbone.{k}": v for k, v in momentum.items()},
             "projection_head.layers.0.weight": torch.zeros(4, 64)}
    path = tmp_path / "last.pt"
    torch.save({"format": "contrastlab-checkpoint-v1", "model_meta": {"backbone": "x"},
                "model": model, "epoch": 1}, path)
    assert set(read_state_dict(path)) == {f"backbone.{k}" for k in online}
    backbone = build_backbone("convnet-small", 1)
    load_backbone_weights(backbone, path)
    assert_loaded(backbone, online)


def test_num_batches_tracked_may_be_absent(tmp_path: Path) -> None:
    state = {k: v for k, v in build_backbone("convnet-small", 1).state_dict().items()
             if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "w.pt")
    load_backbone_weights(build_backbone("convnet-small", 1), tmp_path / "w.pt")


def test_a_resnet50_file_for_resnet18_is_refused_with_the_count(tmp_path: Path) -> None:
    from torchvision.models import resnet50

    path = tmp_path / "resnet50.pth"
    torch.save(resnet50().state_dict(), path)
    backbone = build_backbone("resnet18", 3)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    with pytest.raises(CheckpointError) as caught:
        load_backbone_weights(backbone, path, "resnet18")
    message = str(caught.value)
    assert f"weights file '{path}' does not fit backbone 'resnet18'" in message
    assert "tensors matched" in message and "of another shape" in message
    assert "or leave out --weights" in message
    for name, value in backbone.state_dict().items():  # nothing was changed
        torch.testing.assert_close(value, before[name], rtol=0, atol=0)


def test_rgb_weights_for_grey_data_say_so(tmp_path: Path) -> None:
    from torchvision.models import resnet18

    torch.save(resnet18().state_dict(), tmp_path / "r18.pt")
    with pytest.raises(CheckpointError, match="99 of 100 tensors matched.*takes 3-channel "
                       "images, the data has 1"):
        load_backbone_weights(build_backbone("resnet18", 1), tmp_path / "r18.pt", "resnet18")


@pytest.mark.parametrize("content,message", [
    ({"epoch": 3, "note": "no tensors"}, "holds no state dict of tensors"),
    ([1, 2, 3], "holds a list, not a state dict"),
])
def test_files_without_a_state_dict_are_refused(tmp_path: Path, content: object,
                                                message: str) -> None:
    torch.save(content, tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match=message):
        load_backbone_weights(build_backbone("convnet-small", 1), tmp_path / "w.pt")


class Crafted:
    """Unpickling it would run ``touch MARKER``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        import os

        return (os.system, (f"touch {self.marker}",))


def test_unsafe_missing_and_folder_paths_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    torch.save({"x": Crafted(marker)}, tmp_path / "unsafe.pt")
    backbone = build_backbone("convnet-small", 1)
    with pytest.raises(CheckpointError, match="cannot read weights file .* safely: it asks for "
                       "the Python object '(posix|nt).system'"):
        load_backbone_weights(backbone, tmp_path / "unsafe.pt")
    assert not marker.exists()
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="the file is empty"):
        load_backbone_weights(backbone, tmp_path / "empty.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_backbone_weights(backbone, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="is a folder"):
        load_backbone_weights(backbone, tmp_path)
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors")
    pytest.importorskip("safetensors")
    with pytest.raises(CheckpointError, match="as safetensors"):
        load_backbone_weights(backbone, tmp_path / "bad.safetensors")


def test_canonical_keys_strip_wrappers_repeatedly() -> None:
    assert canonical_key("module.encoder_q.conv1.weight") == "conv1.weight"
    assert canonical_key("_orig_mod.model.blocks.0.attn.qkv.weight") == "blocks.0.attn.qkv.weight"
    assert canonical_key("net.layer1.0.bn1.running_mean") == "layer1.0.bn1.running_mean"
    assert canonical_key("key_backbone.features.0.weight") == "key_backbone.features.0.weight"


def test_file_digest(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"abc" * 1_000_000)
    assert file_digest(tmp_path / "f") == hashlib.sha256(b"abc" * 1_000_000).hexdigest()[:12]
