"""Do `--compile` (torch.compile of the backbone) and `--precision bf16` (autocast) pay on this
machine? The backbone's forward + backward on one SimCLR batch of the MNIST benchmark (2 x 128
views of 28x28, channels_last): eager and compiled, each in float32 and under bfloat16 autocast,
timed in alternating blocks in one process after the compilation.

    python bench/compile_speed.py [--backbone convnet-small-x256] [--device cpu] [--markdown]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
from common import emit, machine
from mnist_simclr import RECIPE

from contrastlab.models import build_backbone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default=RECIPE["backbone"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--views", type=int, default=2 * RECIPE["batch_size"])
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    eager = build_backbone(args.backbone, 1).to(device, memory_format=torch.channels_last)
    compiled = build_backbone(args.backbone, 1).to(device, memory_format=torch.channels_last)
    compiled.load_state_dict(eager.state_dict())
    compiled.compile()
    x = torch.randn(args.views, 1, 28, 28, device=device).contiguous(
        memory_format=torch.channels_last)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step(model: torch.nn.Module, bf16: bool) -> None:
        model.zero_grad(set_to_none=True)
        context = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else \
            contextlib.nullcontext()
        with context:
            out = model(x)
        out.float().sum().backward()

    variants = {"eager": (eager, False), "compiled": (compiled, False),
                "eager_bf16": (eager, True), "compiled_bf16": (compiled, True)}
    start = time.perf_counter()
    for _ in range(3):  # compilation (forward and backward graphs) and warm-up
        step(compiled, False)
    sync()
    compile_seconds = time.perf_counter() - start
    for model, bf16 in variants.values():
        for _ in range(3):  # warm-up (the bf16 graph of the compiled model compiles here)
            step(model, bf16)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.blocks):
        for name, (model, bf16) in variants.items():
            sync()
            t = time.perf_counter()
            for _ in range(args.steps):
                step(model, bf16)
            sync()
            times[name].append((time.perf_counter() - t) / args.steps)
    median = {name: statistics.median(values) for name, values in times.items()}
    speedups = {name: median["eager"] / value for name, value in median.items()}
    result = {"benchmark": "compile_speed", "backbone": args.backbone, "views": args.views,
              "compile_and_warmup_seconds": round(compile_seconds, 1),
              "median_seconds": median, "speedup_compiled": speedups["compiled"],
              "speedup_over_eager_fp32": speedups, **machine()}
    row = (f"| {args.backbone} | {args.device} | {args.views} | {1000 * median['eager']:.1f} | "
           f"{1000 * median['compiled']:.1f} | {speedups['compiled']:.2f}x | "
           f"{1000 * median['eager_bf16']:.1f} | {speedups['eager_bf16']:.2f}x | "
           f"{1000 * median['compiled_bf16']:.1f} | {speedups['compiled_bf16']:.2f}x | "
           f"{compile_seconds:.0f} s |")
    emit(result, row if args.markdown else None)


if __name__ == "__main__":
    main()
