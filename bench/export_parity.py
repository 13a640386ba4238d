"""Exported encoders of an MNIST run: size, parity with PyTorch and embedding throughput.

For ONNX float32, ONNX int8 (static QDQ, calibrated on 512 training images), ONNX int8
(dynamic), TorchScript and safetensors: the artefact's size, the parity check of
`contrastlab export` (mean/min cosine to the PyTorch embeddings on 512 held-out images, kNN
top-1 of both on the 2,000 test images with the 8,000 training images as neighbours), and
images/s of the embedding call at batch sizes 2 and 256 with one CPU thread.

    python bench/export_parity.py --run RUN   (a run on ../shared/data/mnist-test)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import emit, machine

from contrastlab.data import load_dataset
from contrastlab.serve.encoders import encoder_from_artefact, encoder_from_run
from contrastlab.serve.export import export_encoder
from contrastlab.serve.parity import parity_check

VARIANTS = [("pytorch", None, False, ""), ("onnx", ".onnx", False, "static"),
            ("onnx-int8-static", ".onnx", True, "static"),
            ("onnx-int8-dynamic", ".onnx", True, "dynamic"),
            ("torchscript", ".torchscript.pt", False, ""),
            ("safetensors", ".safetensors", False, "")]


def images_per_second(encoder, images: torch.Tensor, batch: int, seconds: float = 2.0) -> float:
    chunk = images[:batch]
    encoder.embed(chunk)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        encoder.embed(chunk)
        done += len(chunk)
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", required=True)
    args = parser.parse_args()

    torch.set_num_threads(1)
    reference = encoder_from_run(args.run)
    config = reference.run_config or {}
    splits = load_dataset(config["data"], test_fraction=config.get("test_fraction", 0.2),
                          split_seed=config.get("split_seed", 0),
                          image_size=reference.card.image_size)
    chosen = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(0))[:512]
    with torch.inference_mode():
        calibration = reference.card.transform(splits.train.images[chosen.sort().values]).numpy()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, suffix, int8, mode in VARIANTS:
            if suffix is None:
                encoder, size, report = reference, None, None
            else:
                fmt = name.split("-")[0]
                path = Path(tmp) / (name + suffix)
                start = time.perf_counter()
                export_encoder(reference, fmt, path, int8, mode or "static", calibration)
                export_s = time.perf_counter() - start
                encoder = encoder_from_artefact(path, threads=1)
                size = path.stat().st_size
                report = parity_check(reference, encoder, splits, "int8" if int8 else "fp32",
                                      k=int(config.get("knn_k", 200))).to_json()
            results[name] = {
                "bytes": size,
                "export_s": None if suffix is None else round(export_s, 2),
                "images_per_s_batch2": round(images_per_second(encoder, splits.test.images, 2)),
                "images_per_s_batch256": round(images_per_second(encoder, splits.test.images,
                                                                 256)),
                "parity": None if report is None else {
                    k: (round(v, 6) if isinstance(v, float) else v) for k, v in report.items()},
            }
    emit({"benchmark": "export_parity", "run_backbone": reference.card.backbone,
          "image_size": reference.card.image_size, "threads": 1, "variants": results,
          "numpy": np.__version__, "machine": machine()})


if __name__ == "__main__":
    main()
