"""A method trained for a fixed number of steps on the MNIST benchmark split, then evaluated.

Counts steps rather than seconds, so the figure does not depend on how busy a shared CPU is (the
wall time is printed beside it). One process, one thread, in-process loop (no trainer): batches
of 128 drawn with replacement from the seeded 8,000 / 2,000 split of ../shared/data/mnist-test,
AdamW at lr 3e-3 (weight decay 1e-4) with a cosine decay and no warm-up, views = crops of
30-100% of the image, no flip, no colour jitter, grey or blur. kNN (k = 200) and the linear probe
on the frozen backbone features, as `contrastlab eval`.

    python bench/fixed_steps.py --method rotnet --steps 600
    python bench/fixed_steps.py --method mae --backbone vit-micro --steps 600 [--markdown]
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from common import emit, machine, shared_path

from contrastlab.data import load_dataset
from contrastlab.eval import evaluate_features
from contrastlab.methods import METHODS, build_method
from contrastlab.models.backbones import GEOMETRY_BACKBONES
from contrastlab.views import AugmentConfig, AugmentedViews, EvalTransform, channel_stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", required=True)
    parser.add_argument("--backbone", default="convnet-small")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    splits = load_dataset(str(shared_path("mnist-test")), test_fraction=0.2, split_seed=0)
    train, test = splits.train, splits.test
    assert test is not None
    size = min(train.image_size)
    mean, std = channel_stats(train.images)
    augment = AugmentConfig(crop_scale=(0.3, 1.0), flip_p=0.0, jitter_p=0.0, grey_p=0.0,
                            blur_p=0.0)
    views = AugmentedViews(size, train.channels, mean, std, augment,
                        num_views=METHODS[args.method].num_views)
    options = {"image_size": size} if args.backbone in GEOMETRY_BACKBONES else None
    method = build_method(args.method, args.backbone, train.channels, backbone_options=options)
    optimizer = torch.optim.AdamW(method.parameters(), args.lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(args.seed)
    start, losses = time.perf_counter(), []
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        index = torch.randint(0, len(train), (args.batch_size,), generator=generator)
        method.on_step_start(step, step / args.steps)
        output = method.training_step(views(train.images[index], generator), train.labels[index])
        optimizer.zero_grad(set_to_none=True)
        output.loss.backward()
        optimizer.step()
        method.on_step_end(step, step / args.steps, output)
        losses.append(float(output.loss.detach()))
    seconds = time.perf_counter() - start
    method.eval()
    with torch.no_grad():
        scores = evaluate_features(method.encode, train, test, EvalTransform(size, 1, mean, std))
    first = sum(losses[:20]) / max(len(losses[:20]), 1)  # 0 steps: the untrained encoder
    last = sum(losses[-20:]) / max(len(losses[-20:]), 1)
    result = {
        "benchmark": "fixed_steps", "method": args.method, "backbone": args.backbone,
        "steps": args.steps, "batch_size": args.batch_size, "loss_first_20": round(first, 4),
        "loss_last_20": round(last, 4), "knn_top1": scores["knn_top1"],
        "linear_top1": scores["linear_top1"], "train_seconds": round(seconds, 1),
        "images_per_s": round(args.steps * args.batch_size / seconds, 1), "machine": machine(),
    }
    row = (f"| {args.method} | {args.backbone} | {args.steps} | {first:.3f} -> {last:.3f} | "
           f"{100 * scores['knn_top1']:.1f}% | {100 * scores['linear_top1']:.1f}% | "
           f"{seconds:.0f} s |")
    emit(result, row if args.markdown else None)


if __name__ == "__main__":
    main()
