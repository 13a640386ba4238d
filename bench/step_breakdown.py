"""Where a training step's time goes: SimCLR or BYOL at the MNIST benchmark settings.

One step is run exactly as the trainer runs it (``train/trainer.py``: batch indexing, views on the
device, ``method(views, labels)``, backward, gradient norm + finiteness check, optimiser step,
``on_step_end``), with a clock between the phases:

* data: slicing the shuffled order, indexing the in-memory uint8 images, learning-rate schedule;
* views: the batched augmentation (two views), dtype and memory format;
* backbone_forward: time inside the method's backbone (forward hooks);
* target_backbone_forward: time inside other encoders (BYOL's EMA target encoder; 0 for SimCLR);
* head_and_loss_forward: the rest of the method's forward (heads, loss; BYOL's target projector);
* backward; check (gradient norm and the finiteness check, one host sync); optimizer (AdamW);
* on_step_end: nothing for SimCLR, the EMA update of the target network for BYOL.

The floor is the backbone's forward + backward on the same 2N views in the same memory format.
Step and floor are timed in alternating blocks in one process (step block, floor block, ...), so
machine drift on a shared CPU hits both; the ratio is that of the medians, and the median of the
per-block ratios is printed too.

    python bench/step_breakdown.py --method simclr|byol [--blocks 6] [--steps 10] [--markdown]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from common import emit, machine, shared_path
from mnist_simclr import RECIPE

from contrastlab.config import build_config
from contrastlab.data import load_dataset
from contrastlab.methods import build_method
from contrastlab.models import Backbone
from contrastlab.optim import build_optimizer, set_lr, warmup_cosine
from contrastlab.runs import build_views, memory_format_of
from contrastlab.training import gradient_norm
from contrastlab.views import channel_stats

#: the MNIST benchmark settings (bench/mnist_simclr.py RECIPE; BYOL as in bench/methods.py)
SETTINGS = {
    "simclr": dict(RECIPE),
    "byol": {**{k: v for k, v in RECIPE.items()
                if k not in ("temperature", "projection_dim", "projection_hidden_dim")},
             "ema_momentum": 0.99},
}
PHASES = ("data", "views", "backbone_forward", "target_backbone_forward",
          "head_and_loss_forward", "backward", "check", "optimizer", "on_step_end")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=sorted(SETTINGS), default="simclr")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--blocks", type=int, default=6, help="step/floor block pairs")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per block")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: "
                        "torch's)")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync: Callable[[], None] = (torch.cuda.synchronize if device.type == "cuda"
                                else (lambda: None))
    spec = str(shared_path("mnist-test"))
    config = build_config(None, {**SETTINGS[args.method], "method": args.method, "data": spec,
                                 "device": args.device})

    splits = load_dataset(spec)
    train_set = splits.train
    mean, std = channel_stats(train_set.images)
    views = build_views(config, 28, 1, mean, std)
    torch.manual_seed(0)
    method = build_method(args.method, config.backbone.name, 1, settings=config.method).to(device)
    memory_format = memory_format_of(config.run.channels_last)
    method.to(memory_format=memory_format).train()
    optimizer = build_optimizer(method, config.optimizer.name, config.optimizer.lr,
                                config.optimizer.weight_decay)
    trainable = [p for p in method.parameters() if p.requires_grad]
    generator = torch.Generator().manual_seed(0)
    batch = config.schedule.batch_size
    steps_per_epoch = len(train_set) // batch
    order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(0))

    inside = {"backbone_forward": 0.0, "target_backbone_forward": 0.0}
    starts: list[float] = []

    def before(*_: object) -> None:
        sync()
        starts.append(time.perf_counter())

    def after_for(key: str) -> Callable[..., None]:
        def after(*_: object) -> None:
            sync()
            inside[key] += time.perf_counter() - starts.pop()
        return after

    for module in method.modules():
        if isinstance(module, Backbone):
            key = "backbone_forward" if module is method.backbone else "target_backbone_forward"
            module.register_forward_pre_hook(before)
            module.register_forward_hook(after_for(key))

    step_counter = [0]

    def one_step() -> dict[str, float]:
        """One trainer step; seconds per phase."""
        step = step_counter[0]
        step_counter[0] += 1
        times = {}
        sync()
        t = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal t
            sync()
            now = time.perf_counter()
            times[name] = now - t
            t = now

        position = step % steps_per_epoch
        index = order[position * batch:(position + 1) * batch]
        images = train_set.images[index].to(device, non_blocking=True)
        labels = None if train_set.labels is None else train_set.labels[index].to(device)
        progress = step / 1000
        set_lr(optimizer, config.optimizer.lr
               * warmup_cosine(progress, config.optimizer.warmup_fraction))
        lap("data")
        batch_views = [v.to(torch.float32).contiguous(memory_format=memory_format)
                       for v in views(images, generator, global_batch=batch, offset=0)]
        lap("views")
        method.on_step_start(step, progress)
        inside.update(dict.fromkeys(inside, 0.0))
        output = method(batch_views, labels)
        lap("forward")
        times.update(inside)
        times["head_and_loss_forward"] = times.pop("forward") - sum(inside.values())
        optimizer.zero_grad(set_to_none=True)
        output.loss.backward()
        lap("backward")
        grad_norm = gradient_norm(trainable, None)
        finite = bool(torch.isfinite(output.loss.detach() + grad_norm))
        lap("check")
        if finite:
            optimizer.step()
        lap("optimizer")
        method.on_step_end(step, progress, output)
        lap("on_step_end")
        times["step"] = sum(times[name] for name in PHASES)
        return times

    floor_views = torch.cat([v.contiguous(memory_format=memory_format)
                             for v in views(train_set.images[:batch].to(device), generator)])
    floor_views = floor_views.contiguous(memory_format=memory_format)

    def floor() -> float:
        """Backbone forward + backward on the same 2N views (hooks counted off)."""
        sync()
        start = time.perf_counter()
        method.backbone.zero_grad(set_to_none=True)
        method.backbone(floor_views).sum().backward()
        sync()
        return time.perf_counter() - start

    for _ in range(args.warmup):
        one_step()
        floor()
    step_samples: list[dict[str, float]] = []
    floor_samples: list[float] = []
    block_ratios = []
    for _ in range(args.blocks):
        block_steps = [one_step() for _ in range(args.steps)]
        block_floor = [floor() for _ in range(args.steps)]
        step_samples += block_steps
        floor_samples += block_floor
        block_ratios.append(statistics.median(s["step"] for s in block_steps)
                            / statistics.median(block_floor))

    median = {name: statistics.median(s[name] for s in step_samples) for name in
              (*PHASES, "step")}
    t_floor = statistics.median(floor_samples)
    figures = {
        "benchmark": "step_breakdown",
        "method": args.method,
        "backbone": config.backbone.name,
        "batch_size": batch,
        "views_per_step": 2 * batch,
        "image_size": 28,
        "timed_steps": len(step_samples),
        "median_seconds": {**median, "floor_backbone_forward_backward": t_floor},
        "share_of_step": {name: median[name] / median["step"] for name in PHASES},
        "ratio_step_over_floor": median["step"] / t_floor,
        # the method's own extra encoder pass (BYOL's target) left out: the trainer's overhead
        "ratio_without_target_forward": (median["step"] - median["target_backbone_forward"])
        / t_floor,
        "median_block_ratio": statistics.median(block_ratios),
        "block_ratios": block_ratios,
        "device": args.device,
        **machine(),
    }
    ms = {name: f"{median[name] * 1e3:.1f}" for name in (*PHASES, "step")}
    row = (f"| {args.method} | {ms['data']} | {ms['views']} | {ms['backbone_forward']} | "
           f"{ms['target_backbone_forward']} | {ms['head_and_loss_forward']} | "
           f"{ms['backward']} | {ms['check']} | "
           f"{ms['optimizer']} | {ms['on_step_end']} | {ms['step']} | {t_floor * 1e3:.1f} | "
           f"{median['step'] / t_floor:.3f} |")
    emit(figures, row if args.markdown else None)


if __name__ == "__main__":
    main()
