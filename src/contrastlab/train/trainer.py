"""The training loop: data -> views -> method -> optimiser, with checkpoints and evaluation.

It reads top to bottom: build everything from a validated :class:`TrainConfig`, optionally restore
a checkpoint, then for each step draw a batch from the in-memory training set, augment it on the
training device, ask the method for a loss, step the optimiser and tell the method the step ended.
The learning rate follows a warm-up + cosine schedule laid out over the epochs, or over the wall
time when ``time_budget`` is set.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from contrastlab.config import TrainConfig, method_kwargs
from contrastlab.data import DatasetSplits, load_dataset
from contrastlab.errors import CheckpointError, ConfigError
from contrastlab.methods import METHODS, Method, build_method
from contrastlab.models.global_batch_norm import convert_to_global_batch_norm
from contrastlab.train.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_atomic,
)
from contrastlab.train.ddp import setup_distributed
from contrastlab.train.diagnose_hook import EpochDiagnostics
from contrastlab.train.micro_batch import check_micro_batch, grad_cache_step
from contrastlab.train.optim import build_optimizer, default_lr, set_lr, warmup_cosine
from contrastlab.train.progress import TrainingProgress
from contrastlab.train.signals import StopRequest
from contrastlab.views import (
    AugmentConfig,
    EvalTransform,
    MultiCropViews,
    SimCLRViews,
    channel_stats,
)

CHECKPOINT_FORMAT = "contrastlab-checkpoint-v1"


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    run_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    global_step: int = 0
    epoch: int = 0
    finished: bool = True
    #: why training stopped early: "stop_after_step", "SIGINT" or "SIGTERM"; None when finished
    stop_reason: str | None = None
    skipped_steps: int = 0


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' requested but CUDA is not available; use --device cpu")
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype (None: float32, or float64 with 'fp64'); 'auto' is bf16 on CUDA (if
    supported), fp32 on CPU."""
    if name in ("fp32", "fp64") or (name == "auto" and device.type != "cuda"):
        return None
    if name == "fp16":
        return torch.float16
    if name == "bf16" or (device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def memory_format_of(config: TrainConfig) -> torch.memory_format:
    """NHWC (channels_last) when ``config.channels_last``, else the default NCHW layout."""
    return torch.channels_last if config.channels_last else torch.contiguous_format


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of the training set in ``epoch``: a function of (seed, epoch) only, so resuming
    mid-run draws the same batches as an uninterrupted run."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator)


def default_run_name(config: TrainConfig) -> str:
    data_name = Path(config.data).name.split(".")[0] or "data"
    return f"runs/{config.method}-{data_name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def model_meta(config: TrainConfig, splits: DatasetSplits, image_size: int,
               mean: tuple[float, ...], std: tuple[float, ...]) -> dict[str, Any]:
    """Everything needed to rebuild the encoder and its preprocessing without the config."""
    return {
        "method": config.method,
        "backbone": config.backbone,
        "backbone_options": backbone_options(config, image_size),
        "in_channels": splits.train.channels,
        "image_size": image_size,
        "mean": list(mean),
        "std": list(std),
        "method_kwargs": full_method_kwargs(config, splits),
        "classes": splits.train.classes,
    }


def backbone_options(config: TrainConfig, image_size: int) -> dict[str, Any]:
    """Geometry for backbones that need it (ViTs); empty for convolutional ones."""
    from contrastlab.models.backbones import GEOMETRY_BACKBONES

    if config.backbone not in GEOMETRY_BACKBONES:
        return {}
    return {"image_size": image_size, "patch_size": config.patch_size}


def full_method_kwargs(config: TrainConfig, splits: DatasetSplits) -> dict[str, Any]:
    """The configured hyper-parameters plus what the data decides (``num_classes``)."""
    import inspect

    kwargs = method_kwargs(config)
    parameters = inspect.signature(METHODS[config.method].__init__).parameters
    if "num_classes" in parameters:
        kwargs["num_classes"] = len(splits.train.classes) if splits.train.classes else (
            int(splits.train.labels.max()) + 1 if splits.train.labels is not None else 0)
    return kwargs


def num_local_crops(config: TrainConfig) -> int:
    """Local (small) multi-crop views per image: the configured number or the method's default."""
    if config.num_local_crops is not None:
        return config.num_local_crops
    return METHODS[config.method].default_local_crops


def build_views(config: TrainConfig, image_size: int, channels: int,
                mean: tuple[float, ...], std: tuple[float, ...]) -> SimCLRViews | MultiCropViews:
    """The views the method trains on: ``num_views`` global views (the configured number for a
    method that takes it, e.g. SupCon, else the method's), plus local multi-crop views when the
    method uses them."""
    augment = AugmentConfig(
        crop_scale=config.crop_scale,
        flip_p=config.flip_p,
        jitter_strength=config.jitter_strength,
        jitter_p=config.jitter_p,
        grey_p=config.grey_p,
        blur_p=config.blur_p,
        rotation=config.rotation,
    )
    num_global = config.num_views or METHODS[config.method].num_views
    num_local = num_local_crops(config)
    if num_local == 0:
        return SimCLRViews(image_size, channels, mean, std, augment, num_views=num_global)
    local_size = config.local_crop_size or max(4, round(image_size * 3 / 7))
    if local_size > image_size:
        raise ConfigError(
            f"local_crop_size {local_size} is larger than the image size {image_size}; local "
            "crops must be smaller than the global views"
        )
    return MultiCropViews(image_size, local_size, channels, mean, std, augment,
                          num_global=num_global, num_local=num_local,
                          local_crop_scale=config.local_crop_scale)


def train(
    config: TrainConfig,
    *,
    console: Console | None = None,
    stop_after_step: int | None = None,
    evaluate_at_end: bool = True,
) -> TrainResult:
    """Train ``config.method`` and evaluate it; everything lands in ``config.out``.

    Under ``torchrun`` (or in a process group the caller initialised) every process runs this
    with the same configuration and they train as one process on the whole (global) batch;
    rank 0 logs, writes and evaluates (see :mod:`contrastlab.train.ddp`, docs/distributed.md).

    Args:
        config: a validated configuration.
        console: where progress and summaries go (a quiet one is fine for tests).
        stop_after_step: stop (with a checkpoint) once this global step is reached, as an
            interruption would; ``resume=True`` continues from there.
        evaluate_at_end: run kNN and linear evaluation on the test split at the end.
    """
    console = console or Console(stderr=True)
    device = resolve_device(config.device)
    # torchrun: join the process group; rank 0 alone logs, prints and writes (docs/distributed.md)
    ddp = setup_distributed(device)
    device = ddp.device
    if ddp.enabled:
        config = dataclasses.replace(config, out=ddp.from_main(config.out))
        if not ddp.is_main:
            console = Console(quiet=True)
    run = ddp.run_directory(config.out, config.resume)
    autocast_dtype = resolve_precision(config.precision, device)
    torch.manual_seed(config.seed)
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)

    # ------------------------------------------------------------------ data and views
    splits = load_dataset(config.data, test_fraction=config.test_fraction,
                          split_seed=config.split_seed, skip_bad_files=config.skip_bad_files,
                          image_size=config.image_size)
    train_set = splits.train
    run.log({"type": "data", "name": train_set.name, "n_train": len(train_set),
             "n_test": 0 if splits.test is None else len(splits.test),
             "official_split": splits.official_split, "skipped_files": len(splits.skipped)})
    if splits.skipped:
        console.print(f"[yellow]skipped {len(splits.skipped)} unreadable file(s) "
                      f"(--skip-bad-files), e.g. {splits.skipped[0]}[/yellow]")
    if len(train_set) < config.batch_size:
        raise ConfigError(
            f"batch_size {config.batch_size} is larger than the training set ({len(train_set)} "
            f"images in {train_set.name}); pass --batch-size {max(2, len(train_set))} or less"
        )
    if config.batch_size % ddp.world_size:
        raise ConfigError(
            f"batch_size {config.batch_size} is the global batch and must divide evenly over the "
            f"{ddp.world_size} processes; use a multiple of {ddp.world_size}, e.g. --batch-size "
            f"{config.batch_size // ddp.world_size * ddp.world_size or ddp.world_size}"
        )
    local_batch = config.batch_size // ddp.world_size
    if config.micro_batch is not None:
        check_micro_batch(config.micro_batch, local_batch, ddp.world_size)
    image_size = config.image_size or min(train_set.image_size)
    mean, std = channel_stats(train_set.images)
    views = build_views(config, image_size, train_set.channels, mean, std)
    eval_transform = EvalTransform(image_size, train_set.channels, mean, std)
    meta = model_meta(config, splits, image_size, mean, std)

    # ------------------------------------------------------------------ model and optimiser
    if METHODS[config.method].needs_labels and train_set.labels is None:
        raise ConfigError(
            f"method '{config.method}' needs labels but {train_set.name} has none (a flat folder "
            "of images is unlabelled); use class sub-folders or a self-supervised method"
        )
    if METHODS[config.method].uses_labels and train_set.labels is None:
        raise ConfigError(
            f"method '{config.method}' uses labels but {train_set.name} has none; without "
            "labels it reduces to SimCLR: use --method simclr"
        )
    method = build_method(config.method, config.backbone, train_set.channels,
                          backbone_options=meta["backbone_options"],
                          **meta["method_kwargs"]).to(device)
    # fp64: parameters and views in float64 (exactness checks, e.g. multi-process == one process)
    compute_dtype = torch.float64 if config.precision == "fp64" else torch.float32
    method.to(dtype=compute_dtype)
    if ddp.enabled and config.sync_batchnorm and method.sync_batch_norm:
        convert_to_global_batch_norm(method)
    memory_format = memory_format_of(config)
    method.to(memory_format=memory_format)
    if config.compile:
        # in place (nn.Module.compile): parameter names, hence checkpoints, are unchanged
        method.backbone.compile()
    base_lr = config.lr or default_lr(config.optimizer, config.batch_size)
    optimizer = build_optimizer(method, config.optimizer, base_lr, config.weight_decay,
                                config.momentum)
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)
    steps_per_epoch = len(train_set) // config.batch_size
    total_steps = config.epochs * steps_per_epoch
    view_generator = torch.Generator().manual_seed(config.seed)

    epoch, batch_in_epoch, global_step, elapsed = 0, 0, 0, 0.0
    skipped_steps, best_score = 0, -math.inf
    if config.resume:
        state = load_checkpoint(run.checkpoint_path)
        _check_resumable(state, config, meta, run.checkpoint_path)
        method.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        view_generator.set_state(state["view_generator"])
        restore_rng_state(state["rng"])
        epoch, batch_in_epoch = state["epoch"], state["batch_in_epoch"]
        global_step, elapsed = state["global_step"], state["elapsed"]
        skipped_steps = state.get("skipped_steps", 0)
        best_score = state.get("best_score", -math.inf)
        ddp.share_random_state()  # the CUDA states were captured per device on rank 0
        console.print(f"resumed from {run.checkpoint_path} at epoch {epoch}, step {global_step}")
    else:
        ddp.on_main(lambda: config.save_yaml(run.config_path))
    model = ddp.wrap(method)  # DistributedDataParallel under torchrun, else the method

    def checkpoint_state() -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "model_meta": meta,
            "config": config.to_dict(),
            "model": method.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "epoch": epoch,
            "batch_in_epoch": batch_in_epoch,
            "global_step": global_step,
            "elapsed": elapsed,
            "view_generator": view_generator.get_state(),
            "rng": capture_rng_state(),
            "skipped_steps": skipped_steps,
            "best_score": best_score,
        }

    def save_checkpoint(*extra: Path) -> None:
        """last.pt (and copies such as best.pt / epoch-N.pt); a failed write leaves the previous
        file intact and stops training with the reason. Rank 0 writes; the others wait."""

        def write() -> None:
            state = checkpoint_state()
            for path in (run.checkpoint_path, *extra):
                try:
                    save_atomic(state, path)
                except OSError as error:
                    raise CheckpointError(
                        f"could not write checkpoint '{path}' ({error.strerror or error}); the "
                        "previous checkpoint there is intact. Free disk space or fix the "
                        f"folder's permissions, then continue with --resume --out {run.root}"
                    ) from error

        ddp.on_main(write)

    def schedule_progress() -> float:
        if config.time_budget is not None:
            return elapsed / config.time_budget
        return global_step / max(total_steps, 1)

    def finished() -> bool:
        if config.time_budget is not None:
            return elapsed >= config.time_budget
        return epoch >= config.epochs

    autocast = (
        torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None
        else contextlib.nullcontext()
    )
    console.print(
        f"training [bold]{config.method}[/bold] / {config.backbone} on {train_set.name}: "
        f"{len(train_set)} images {train_set.channels}x{image_size}x{image_size}, batch "
        f"{config.batch_size}, {config.optimizer} lr {base_lr:.3g}, device {device}"
        + (f", budget {config.time_budget:.0f}s" if config.time_budget else
           f", {config.epochs} epochs")
    )
    progress = TrainingProgress(console, config.time_budget or total_steps,
                                by_time=config.time_budget is not None)
    diagnose_views = SimCLRViews(image_size, train_set.channels, mean, std, views.config)
    diagnose = EpochDiagnostics(
        train_set.images,
        lambda images, generator: [v.to(compute_dtype) for v in diagnose_views(images, generator)],
        device, memory_format, config.method, config.seed)
    nonfinite_in_a_row = 0
    interrupted = False
    stop_reason: str | None = None
    trainable = [p for p in method.parameters() if p.requires_grad]
    method.train()
    with progress, StopRequest() as stop_request:
        progress.update(elapsed if config.time_budget else global_step)
        while not finished() and not interrupted:
            order = epoch_permutation(len(train_set), config.seed, epoch)
            epoch_loss_sum, epoch_steps = torch.zeros((), device=device), 0
            window_start, window_images = time.perf_counter(), 0
            while batch_in_epoch < steps_per_epoch:
                step_start = time.perf_counter()
                index = order[batch_in_epoch * config.batch_size:
                              (batch_in_epoch + 1) * config.batch_size]
                local = index[ddp.rank * local_batch:(ddp.rank + 1) * local_batch]  # this rank's
                images = train_set.images[local].to(device, non_blocking=True)
                labels = None
                if train_set.labels is not None:
                    labels = train_set.labels[local].to(device, non_blocking=True)
                lr = base_lr * warmup_cosine(schedule_progress(), config.warmup_fraction)
                set_lr(optimizer, lr)
                batch_views = [v.to(compute_dtype).contiguous(memory_format=memory_format)
                               for v in views(images, view_generator,
                                              global_batch=config.batch_size,
                                              offset=ddp.rank * local_batch)]
                progress_now = schedule_progress()
                method.on_step_start(global_step, progress_now)
                if config.micro_batch is None:
                    with autocast:
                        output = model(batch_views, labels)  # DDP: gradients averaged over ranks
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(output.loss).backward()
                else:  # GradCache: the full batch's gradient, a micro-batch of activations
                    optimizer.zero_grad(set_to_none=True)
                    with ddp.no_sync(model):  # the passes bypass DDP's forward: reduce once,
                        output = grad_cache_step(method, batch_views, labels,
                                                 config.micro_batch, autocast=autocast,
                                                 scale_loss=scaler.scale)
                    ddp.average_gradients(trainable)  # ... here, as DDP would have
                loss = output.loss
                if scaler.is_enabled():
                    scaler.unscale_(optimizer)
                grad_norm = gradient_norm(trainable, config.clip_grad_norm)
                # the global batch's loss and metrics (`loss` and output.metrics in one process)
                step_loss, step_metrics = ddp.mean_step(loss.detach(), output.metrics)
                # one host sync: NaN/inf in the loss or any gradient makes the sum non-finite
                if bool(torch.isfinite(step_loss.float() + grad_norm)):
                    scaler.step(optimizer)
                    scaler.update()
                    method.on_step_end(global_step, progress_now, output)
                    nonfinite_in_a_row = 0
                    epoch_loss_sum += step_loss
                    epoch_steps += 1
                else:
                    if scaler.is_enabled():
                        scaler.update()  # lowers the fp16 loss scale
                    optimizer.zero_grad(set_to_none=True)
                    skipped_steps += 1
                    nonfinite_in_a_row += 1
                    run.log({"type": "skipped_step", "epoch": epoch, "step": global_step,
                             "loss": float(step_loss), "grad_norm": float(grad_norm)})
                    if nonfinite_in_a_row >= config.max_nonfinite_steps:
                        raise FloatingPointError(
                            f"the loss or gradients were not finite for {nonfinite_in_a_row} steps "
                            f"in a row (the last at step {global_step}; {skipped_steps} skipped "
                            f"in all); stopped without saving these steps. The last good "
                            f"checkpoint is {run.checkpoint_path}. Likely causes: a learning rate "
                            f"too high (--lr, now {lr:.3g}), a temperature too low "
                            "(--temperature), or reduced precision (try --precision fp32). "
                            f"Continue from the checkpoint with --resume --out {run.root} after "
                            "changing them."
                        )
                global_step += 1
                batch_in_epoch += 1
                window_images += len(index)
                elapsed += time.perf_counter() - step_start
                stop_now = ("stop_after_step" if stop_after_step is not None
                            and global_step >= stop_after_step else stop_request.received)
                stop_now, elapsed = ddp.agree(stop_now, elapsed)  # the same on every rank
                if global_step % config.log_every == 0 or batch_in_epoch == steps_per_epoch:
                    loss_value = float(step_loss)
                    now = time.perf_counter()
                    images_per_s = window_images / max(now - window_start, 1e-9)
                    window_start, window_images = now, 0
                    run.log({"type": "step", "epoch": epoch, "step": global_step,
                             "loss": loss_value, "lr": lr, "images_per_s": images_per_s,
                             "grad_norm": float(grad_norm), "elapsed": elapsed,
                             **step_metrics})
                    progress.set_stats(epoch, loss_value, lr, images_per_s)
                progress.update(elapsed if config.time_budget else global_step)
                if stop_now is not None:
                    interrupted, stop_reason = True, stop_now
                    break
                if config.time_budget is not None and elapsed >= config.time_budget:
                    break
            extra_copies: list[Path] = []
            if batch_in_epoch >= steps_per_epoch:
                epoch, batch_in_epoch = epoch + 1, 0
                mean_loss = float(epoch_loss_sum) / max(epoch_steps, 1)
                run.log({"type": "epoch", "epoch": epoch, "step": global_step, "loss": mean_loss,
                         "lr": lr, "elapsed": elapsed, "skipped_steps": skipped_steps})
                if config.eval_every and epoch % config.eval_every == 0 and splits.test is not None:
                    scores = ddp.on_main(lambda: evaluate_method(
                        method, splits, eval_transform, device, config)) or {}
                    ddp.share_random_state()
                    method.train()
                    run.log({"type": "eval", "epoch": epoch, "step": global_step, **scores})
                    progress.note(f"epoch {epoch}: " + _format_scores(scores))
                    if scores.get("knn_top1", -math.inf) > best_score:
                        best_score = scores["knn_top1"]
                        extra_copies.append(run.best_checkpoint_path)
                if config.keep and epoch % config.keep == 0:
                    extra_copies.append(run.epoch_checkpoint_path(epoch))
                if config.diagnose_every and (epoch % config.diagnose_every == 0 or finished()):
                    ddp.on_main(functools.partial(diagnose, method, epoch, global_step,
                                                  schedule_progress(), run, progress))
                    ddp.share_random_state()
            checkpoint_start = time.perf_counter()
            save_checkpoint(*extra_copies)
            elapsed += time.perf_counter() - checkpoint_start
            _, elapsed = ddp.agree(None, elapsed)

    if stop_reason in ("SIGINT", "SIGTERM"):
        console.print(
            f"{stop_reason} received: finished step {global_step} and wrote the checkpoint "
            f"{run.checkpoint_path}. Continue with: contrastlab train --resume --out {run.root}"
        )

    result = TrainResult(run.root, global_step=global_step, epoch=epoch, finished=not interrupted,
                         stop_reason=stop_reason, skipped_steps=skipped_steps)
    if interrupted:
        if stop_reason == "stop_after_step":
            console.print(f"stopped at step {global_step}; continue with --resume --out {run.root}")
        ddp.close()
        return result
    ddp.close()  # the other ranks are done; rank 0 evaluates alone
    if evaluate_at_end and splits.test is not None and ddp.is_main:
        scores = evaluate_method(method, splits, eval_transform, device, config)
        final = {"epoch": epoch, "step": global_step, "train_seconds": round(elapsed, 2),
                 "n_train": len(train_set), "n_test": len(splits.test),
                 "skipped_steps": skipped_steps, **scores}
        run.log({"type": "final", **final})
        run.write_final(final)
        result.metrics = final
        console.print(f"[bold]{train_set.name}[/bold] after {epoch} epochs "
                      f"({elapsed:.0f}s): " + _format_scores(scores))
        assert train_set.labels is not None
        counts = torch.bincount(train_set.labels)
        smallest_class = int(counts[counts > 0].min())
        if config.knn_k > smallest_class:
            console.print(
                f"note: kNN used k={config.knn_k} neighbours but the smallest class has only "
                f"{smallest_class} training images, which lowers kNN accuracy; compare with "
                f"`contrastlab eval knn --run {run.root} --k 20`"
            )
    elif splits.test is None:
        console.print("no labels in the data: skipped kNN / linear evaluation")
    console.print(f"run saved in {run.root}")
    return result


def gradient_norm(parameters: list[torch.Tensor], clip: float | None) -> torch.Tensor:
    """Total L2 norm of the gradients (clipped to ``clip`` when given), as a 0-d tensor; NaN/inf
    when any gradient is not finite."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    if clip is not None:
        return torch.nn.utils.clip_grad_norm_(parameters, clip).float()
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)).float())


def evaluate_method(method: Method, splits: DatasetSplits, transform: EvalTransform,
                    device: torch.device, config: TrainConfig) -> dict[str, float]:
    """kNN and linear-probe accuracy of the method's encoder on the test split."""
    from contrastlab.eval import evaluate_features

    assert splits.test is not None
    method.eval()
    memory_format = memory_format_of(config)

    dtype = next(method.parameters()).dtype  # float64 under --precision fp64

    def prepare(images: torch.Tensor) -> torch.Tensor:
        return transform(images).to(dtype).contiguous(memory_format=memory_format)

    return evaluate_features(method.encode, splits.train, splits.test, prepare, device,
                             protocols=("knn", "linear"), k=config.knn_k,
                             temperature=config.knn_temperature, seed=config.seed)


def _format_scores(scores: dict[str, float]) -> str:
    parts = []
    if "knn_top1" in scores:
        parts.append(f"kNN top-1 {100 * scores['knn_top1']:.2f}%")
    if "linear_top1" in scores:
        parts.append(f"linear top-1 {100 * scores['linear_top1']:.2f}%")
    return ", ".join(parts)


def _check_resumable(state: dict[str, Any], config: TrainConfig, meta: dict[str, Any],
                     path: Path) -> None:
    if state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"'{path}' is not a {CHECKPOINT_FORMAT} checkpoint")
    saved = state["config"]
    for key in ("method", "backbone", "data", "batch_size", "seed", "image_size",
                "test_fraction", "split_seed", "optimizer"):
        if saved.get(key) != config.to_dict()[key]:
            raise CheckpointError(
                f"cannot resume '{path}': it was trained with {key}={saved.get(key)!r} but this "
                f"run asks for {key}={config.to_dict()[key]!r}; use the same value or a new --out"
            )
    if state["model_meta"]["in_channels"] != meta["in_channels"]:
        raise CheckpointError(f"cannot resume '{path}': the data's channel count changed")
    if not math.isfinite(state["elapsed"]):
        raise CheckpointError(f"'{path}' holds a non-finite elapsed time")
