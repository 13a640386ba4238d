"""Step overhead: time of a full SimCLR training step (as the trainer runs it: batch
indexing, views, forward, loss, backward, optimiser, bookkeeping, checkpoints) divided by the
backbone's forward + backward on the same 2N views, at the MNIST benchmark settings. Also prints
a per-part breakdown.

    python bench/step_overhead.py [--device cpu] [--epochs 2] [--markdown]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable

import torch
from common import emit, machine, shared_path
from mnist_simclr import RECIPE
from rich.console import Console

from contrastlab import train
from contrastlab.config import build_config
from contrastlab.data import load_dataset
from contrastlab.methods import build_method
from contrastlab.optim import build_optimizer
from contrastlab.runs import RunDirectory, build_views, load_checkpoint, memory_format_of
from contrastlab.views import channel_stats


def timed(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    """Median seconds of ``fn`` over ``repeats`` runs after two warm-up runs."""
    for _ in range(2):
        fn()
    sync()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    spec = str(shared_path("mnist-test"))

    # 1. the real trainer: seconds per step from its own clock (evaluation excluded)
    out = tempfile.mkdtemp(prefix="bench-step-")
    config = build_config(None, {**RECIPE, "data": spec, "out": out, "epochs": args.epochs,
                                 "device": args.device})
    train(config, console=Console(stderr=True, quiet=True), evaluate_at_end=False)
    state = load_checkpoint(f"{out}/checkpoints/last.pt")
    epochs = [r for r in RunDirectory(out).read_metrics() if r["type"] == "epoch"]
    shutil.rmtree(out, ignore_errors=True)
    trainer_step_with_warmup = state["elapsed"] / state["global_step"]
    # steady state: after the first epoch (one-off costs: allocator, oneDNN/cuDNN kernel choice)
    trainer_step = (epochs[-1]["elapsed"] - epochs[0]["elapsed"]) / (
        epochs[-1]["step"] - epochs[0]["step"]
    )

    # 2. the parts, on one batch of the same settings
    splits = load_dataset(spec)
    images = splits.train.images[: config.schedule.batch_size].to(device)
    mean, std = channel_stats(splits.train.images)
    views = build_views(config, 28, 1, mean, std)
    generator = torch.Generator().manual_seed(0)
    method = build_method("simclr", config.backbone.name, 1, settings=config.method).to(device)
    memory_format = memory_format_of(config.run.channels_last)
    method.to(memory_format=memory_format)
    optimizer = build_optimizer(method, config.optimizer.name, config.optimizer.lr,
                                config.optimizer.weight_decay)
    batch_views = [v.contiguous(memory_format=memory_format) for v in views(images, generator)]
    both = torch.cat(batch_views).contiguous(memory_format=memory_format)

    def backbone_forward_backward() -> None:
        method.zero_grad(set_to_none=True)
        method.backbone(both).sum().backward()

    def full_step() -> None:
        v = [x.contiguous(memory_format=memory_format) for x in views(images, generator)]
        loss = method.training_step(v, None).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def forward_only() -> None:
        with torch.no_grad():
            method.training_step(batch_views, None)

    def backbone_forward() -> None:
        with torch.no_grad():
            method.backbone(both)

    def step_no_optimizer() -> None:
        method.zero_grad(set_to_none=True)
        method.training_step(batch_views, None).loss.backward()

    t_backbone = timed(backbone_forward_backward, args.repeats, sync)
    t_full = timed(full_step, args.repeats, sync)
    t_views = timed(lambda: views(images, generator), args.repeats, sync)
    t_backbone_fwd = timed(backbone_forward, args.repeats, sync)
    t_forward = timed(forward_only, args.repeats, sync)
    t_fwd_bwd = timed(step_no_optimizer, args.repeats, sync)
    method.zero_grad(set_to_none=False)
    step_no_optimizer()
    t_optimizer = timed(optimizer.step, args.repeats, sync)

    figures = {
        "benchmark": "step_overhead",
        "batch_size": config.schedule.batch_size,
        "views_per_step": 2 * config.schedule.batch_size,
        "image_size": 28,
        "backbone": config.backbone.name,
        "trainer_seconds_per_step": trainer_step,
        "trainer_seconds_per_step_including_first_epoch": trainer_step_with_warmup,
        "isolated_full_step_seconds": t_full,
        "backbone_forward_backward_seconds": t_backbone,
        "overhead_ratio_trainer": trainer_step / t_backbone,
        "overhead_ratio_isolated": t_full / t_backbone,
        "breakdown_seconds": {
            "views": t_views,
            "backbone_forward": t_backbone_fwd,
            "head_and_loss_forward": t_forward - t_backbone_fwd,
            "backward": t_fwd_bwd - t_forward,
            "optimizer": t_optimizer,
        },
        "device": args.device,
        **machine(),
    }
    batch = config.schedule.batch_size
    row = (f"| step overhead, SimCLR convnet 28x28, batch {batch}, {args.device} | "
           f"{trainer_step * 1e3:.1f} ms/step (trainer) | backbone f+b {t_backbone * 1e3:.1f} ms | "
           f"ratio {trainer_step / t_backbone:.3f} |")
    emit(figures, row if args.markdown else None)


if __name__ == "__main__":
    main()
