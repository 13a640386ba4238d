"""SimCLR training throughput: contrastlab's pipeline against the usual pipeline of the field.

Same machine, same backbone (the RECIPE's) and projection head (512 -> 128), same batch (128
images, 256 views of 28x28 MNIST), same optimiser (AdamW, lr 3e-3, weight decay 1e-4), same
augmentation settings (bench/mnist_simclr.py RECIPE: crop area, rotation (torchvision's
RandomRotation after the crop), no flip, colour jitter s = 0.5 with p = 0.8, greyscale p = 0.2),
temperature 0.2.

* ours: the trainer's step (train/trainer.py): index the in-memory uint8 images, two batched
  ``AugmentedViews`` on the device, ``SimCLR`` with the library's ``nt_xent``, backward, gradient
  norm + finiteness check, AdamW; channels_last.
* field: ``torchvision.transforms.v2`` applied per sample (RandomResizedCrop(28, scale=(0.3, 1)),
  RandomApply([ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), RandomGrayscale(0.2), ToDtype, Normalize)
  in a ``DataLoader`` with ``--workers`` worker processes, and NT-Xent written the usual way (cat,
  normalise, matmul, mask the diagonal, cross_entropy); NCHW, as such scripts run.
* field + channels_last: the same, with the model and inputs in channels_last (separates the
  memory-format gain from the data pipeline's).

The pipelines are timed in alternating blocks of ``--steps`` steps (ours, field, field-cl, ours,
...), so machine drift hits all of them. Each field block starts a fresh DataLoader iterator and
takes one batch before its clock starts (worker start-up excluded; the workers then run alongside
the training steps as in a real run), and ends it afterwards (no worker steals CPU from the next
block). images/s = images stepped on / seconds, over all blocks; the ratio is ours / field.

    python bench/pipeline_vs_torchvision.py [--blocks 4] [--steps 15] [--workers 2] [--markdown]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
import torchvision
from common import emit, machine, shared_path
from mnist_simclr import RECIPE
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from contrastlab.config import build_config
from contrastlab.data import load_dataset
from contrastlab.methods import build_method
from contrastlab.models import ProjectionHead, build_backbone
from contrastlab.optim import build_optimizer
from contrastlab.runs import build_views, memory_format_of
from contrastlab.training import gradient_norm
from contrastlab.views import channel_stats


def plain_nt_xent(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """NT-Xent as training scripts usually write it: one 2N x 2N similarity matrix."""
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    similarity = z @ z.T / temperature
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    similarity = similarity.masked_fill(self_mask, float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(similarity, targets)


class TwoViews(Dataset):
    """Per-sample torchvision v2 augmentation, two views per image (MNIST recipe)."""

    def __init__(self, images: Tensor, mean: tuple[float, ...], std: tuple[float, ...],
                 crop_scale: tuple[float, float], jitter_strength: float, jitter_p: float,
                 grey_p: float, rotation: float = 0.0) -> None:
        self.images = images
        s = jitter_strength
        turn = [v2.RandomRotation(rotation)] if rotation > 0 else []
        self.transform = v2.Compose([
            v2.RandomResizedCrop(images.shape[-1], scale=crop_scale, antialias=True),
            *turn,
            v2.RandomApply([v2.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=jitter_p),
            v2.RandomGrayscale(p=grey_p),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean, std),
        ])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image = self.images[index]
        return self.transform(image), self.transform(image)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--steps", type=int, default=15, help="timed steps per block")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (field)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: "
                        "torch's)")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    spec = str(shared_path("mnist-test"))
    config = build_config(None, {**RECIPE, "data": spec})
    train_set = load_dataset(spec).train
    mean, std = channel_stats(train_set.images)
    batch, n = config.schedule.batch_size, len(train_set)
    temperature = float(RECIPE["temperature"])

    # ---------------------------------------------------------------- ours (trainer's step)
    torch.manual_seed(0)
    method = build_method("simclr", config.backbone.name, 1, settings=config.method)
    memory_format = memory_format_of(config.run.channels_last)
    method.to(memory_format=memory_format).train()
    optimizer = build_optimizer(method, config.optimizer.name, config.optimizer.lr,
                                config.optimizer.weight_decay)
    trainable = [p for p in method.parameters() if p.requires_grad]
    views = build_views(config, 28, 1, mean, std)
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(n, generator=generator)
    position = [0]

    def ours_step() -> None:
        start = position[0] % (n // batch) * batch
        position[0] += 1
        images = train_set.images[order[start:start + batch]].to(device)
        batch_views = [v.contiguous(memory_format=memory_format)
                       for v in views(images, generator, global_batch=batch, offset=0)]
        loss = method(batch_views, None).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if bool(torch.isfinite(loss.detach() + gradient_norm(trainable, None))):
            optimizer.step()

    # ---------------------------------------------------------------- the field's pipeline
    def field_pipeline(channels_last: bool) -> tuple[Callable[[], Iterator], Callable]:
        torch.manual_seed(0)
        model = nn.Sequential(
            build_backbone(config.backbone.name, 1),
            ProjectionHead(method.backbone.output_dim, int(RECIPE["projection_hidden_dim"]),
                           int(RECIPE["projection_dim"]), num_layers=2))
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        model.to(memory_format=fmt).train()
        opt = torch.optim.AdamW(model.parameters(), lr=config.optimizer.lr,
                                weight_decay=config.optimizer.weight_decay or 0.0)
        loader = DataLoader(
            TwoViews(train_set.images, mean, std, config.views.crop_scale,
                     config.views.jitter_strength, config.views.jitter_p, config.views.grey_p,
                     config.views.rotation),
            batch_size=batch, shuffle=True, drop_last=True, num_workers=args.workers,
            generator=torch.Generator().manual_seed(0))

        def step(batch_views: tuple[Tensor, Tensor]) -> None:
            x1, x2 = (x.contiguous(memory_format=fmt) for x in batch_views)
            z = model(torch.cat([x1, x2]))
            loss = plain_nt_xent(z[:batch], z[batch:], temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        def batches() -> Iterator:
            while True:
                yield from loader

        return batches, step

    pipelines: dict[str, Callable[[int], float]] = {}

    def time_ours(steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            ours_step()
        return time.perf_counter() - start

    pipelines["ours"] = time_ours
    for name, channels_last in (("field", False), ("field_channels_last", True)):
        batches, step = field_pipeline(channels_last)

        def time_field(steps: int, batches=batches, step=step) -> float:
            iterator = batches()
            step(next(iterator))  # worker start-up and first batch: not timed
            start = time.perf_counter()
            for _ in range(steps):
                step(next(iterator))
            seconds = time.perf_counter() - start
            iterator.close()  # ends the DataLoader's workers
            return seconds

        pipelines[name] = time_field

    for timer in pipelines.values():  # warm-up: allocator, oneDNN kernels
        timer(3)
    seconds = {name: 0.0 for name in pipelines}
    for _ in range(args.blocks):
        for name, timer in pipelines.items():
            seconds[name] += timer(args.steps)
    images = args.blocks * args.steps * batch
    rate = {name: images / value for name, value in seconds.items()}
    figures = {
        "benchmark": "pipeline_vs_torchvision",
        "images_per_s": rate,
        "ratio_ours_over_field": rate["ours"] / rate["field"],
        "ratio_ours_over_field_channels_last": rate["ours"] / rate["field_channels_last"],
        "batch_size": batch,
        "image_size": 28,
        "backbone": config.backbone.name,
        "blocks": args.blocks,
        "steps_per_block": args.steps,
        "workers": args.workers,
        "torchvision": torchvision.__version__,
        **machine(),
    }
    row = (f"| SimCLR MNIST, batch {batch}, {config.backbone.name} | {rate['ours']:.0f} | "
           f"{rate['field']:.0f} | {rate['field_channels_last']:.0f} | "
           f"{rate['ours'] / rate['field']:.2f}x | "
           f"{rate['ours'] / rate['field_channels_last']:.2f}x |")
    emit(figures, row if args.markdown else None)


if __name__ == "__main__":
    main()
