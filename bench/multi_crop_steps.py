"""SwAV / DINO (or any method) for a fixed number of steps on MNIST, with or without multi-crop.

Counts steps, not seconds, so the comparison does not depend on how busy the shared CPU is.
One thread, in-process loop (no trainer): batches of 128 drawn with replacement from the seeded
8,000 / 2,000 split of ../shared/data/mnist-test, AdamW lr 3e-3 (weight decay 1e-4), 5% warm-up
then cosine, global views = crops of 30-100% at 28 px (no flip, default colour jitter), then
``--local-crops`` local views of ``--local-size`` px from ``--local-scale`` of the image.
``--upsample-local`` resizes the local views to the global size before the network (same
content, one size group), to separate "small crops" from "small inputs". Evaluation: kNN
(``--knn-k``, default 20) and the linear probe on the frozen backbone features.

    python bench/multi_crop_steps.py --method swav --steps 300 --local-crops 6
    python bench/multi_crop_steps.py --method dino --steps 150 --local-crops 6 --local-size 28 \
        --local-scale 0.05,0.4 --method-kwargs '{"projection_hidden_dim": 512}'
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from common import emit, machine, shared_path

from contrastlab.data import load_dataset
from contrastlab.eval import evaluate_features
from contrastlab.methods import build_method
from contrastlab.optim import warmup_cosine
from contrastlab.views import AugmentConfig, EvalTransform, MultiCropViews, channel_stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", required=True)
    parser.add_argument("--method-kwargs", default="{}", help="JSON constructor arguments")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--local-crops", type=int, default=0)
    parser.add_argument("--local-size", type=int, default=12)
    parser.add_argument("--local-scale", default="0.05,0.4")
    parser.add_argument("--upsample-local", action="store_true")
    parser.add_argument("--knn-k", type=int, default=20)
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
    local_scale = tuple(float(v) for v in args.local_scale.split(","))
    views = MultiCropViews(size, args.local_size, train.channels, mean, std,
                           AugmentConfig(crop_scale=(0.3, 1.0), flip_p=0.0),
                           num_local=args.local_crops, local_crop_scale=local_scale)
    kwargs = json.loads(args.method_kwargs)
    method = build_method(args.method, "convnet-small", train.channels, **kwargs)
    method = method.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], args.lr,
                                  weight_decay=1e-4)
    generator = torch.Generator().manual_seed(args.seed)
    losses: list[float] = []
    start = time.perf_counter()
    for step in range(args.steps):
        index = torch.randint(0, len(train), (args.batch_size,), generator=generator)
        batch = views(train.images[index], generator)
        if args.upsample_local:
            batch = [v if v.shape[-1] == size else
                     F.interpolate(v, size=(size, size), mode="bilinear", align_corners=False)
                     for v in batch]
        batch = [v.contiguous(memory_format=torch.channels_last) for v in batch]
        for group in optimizer.param_groups:
            group["lr"] = args.lr * warmup_cosine(step / args.steps, 0.05)
        method.on_step_start(step, step / args.steps)
        output = method.training_step(batch, None)
        loss = output.loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        method.on_step_end(step, step / args.steps, output)
        losses.append(float(loss.detach()))
    seconds = time.perf_counter() - start
    method.eval()
    scores = evaluate_features(method.encode, train, test, EvalTransform(size, 1, mean, std),
                               "cpu", protocols=("knn", "linear"), k=args.knn_k)
    fifth = max(1, args.steps // 5)
    result = {
        "method": args.method, "method_kwargs": kwargs, "steps": args.steps,
        "local_crops": args.local_crops, "local_size": args.local_size,
        "local_scale": list(local_scale), "upsample_local": args.upsample_local,
        "loss_by_fifth": [round(sum(losses[i:i + fifth]) / len(losses[i:i + fifth]), 3)
                          for i in range(0, args.steps, fifth)],
        "knn_k": args.knn_k, "knn_top1": scores["knn_top1"],
        "linear_top1": scores["linear_top1"], "seconds_per_step": seconds / args.steps,
        "machine": machine(),
    }
    row = (f"| {args.method} | {args.local_crops} x {args.local_size} px, scale "
           f"{args.local_scale}{' (upsampled)' if args.upsample_local else ''} | {args.steps} | "
           f"{100 * scores['knn_top1']:.2f}% | {100 * scores['linear_top1']:.2f}% |")
    emit(result, row if args.markdown else None)


if __name__ == "__main__":
    main()
