"""How a frozen encoder is run over many images: the batch size and the memory layout.

Chosen by measurement (ConvNet of the CIFAR-10 recipe, 32 px, 2-core AVX2 CPU, float32): the
evaluation pass went from 686 images/s in batches of 1024 in the default (NCHW) layout to about
1,400-1,900 images/s in batches of 128 in the channels-last (NHWC) layout that oneDNN's
convolutions prefer; large batches make every layer's activations a fresh multi-hundred-MB
allocation (page faults: most of the pass was system time). On a GPU large batches are what
keeps it busy. The layout does not change the features beyond float rounding.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: Images per forward pass of a frozen encoder on the CPU and on a GPU.
CPU_BATCH = 128
GPU_BATCH = 1024


def inference_batch_size(device: torch.device | str) -> int:
    """The batch size for frozen-encoder passes on ``device``."""
    return GPU_BATCH if torch.device(device).type == "cuda" else CPU_BATCH


def as_inference_input(views: Tensor) -> Tensor:
    """``views`` in the channels-last layout when they are images (N, C, H, W)."""
    return views.contiguous(memory_format=torch.channels_last) if views.ndim == 4 else views


__all__ = ["CPU_BATCH", "GPU_BATCH", "as_inference_input", "inference_batch_size"]
