"""The training loop: data -> views -> method -> optimiser, with checkpoints and callbacks.

:class:`Trainer` reads top to bottom in a few named phases:

* :meth:`Trainer.setup`: device and processes, run folder, data and views, the method and its
  optimiser, and the state of a run being resumed;
* :meth:`Trainer.train_step`: one batch: views on the training device, the method's loss, the
  backward pass, the optimiser step (skipped when anything is not finite), then the method's
  after-step update (EMA teachers, queues);
* :meth:`Trainer.end_of_epoch`: the epoch's record and the callbacks' epoch work (evaluation,
  diagnostics);
* :meth:`Trainer.save_checkpoint`: ``last.pt`` (and ``best.pt`` / ``epoch-N.pt``), atomically;
* :meth:`Trainer.end_of_run`: the final record from the callbacks' final scores.

Everything about where training is lives in :attr:`Trainer.state` (a :class:`TrainState`), which
the checkpoint saves. The learning rate follows a warm-up + cosine schedule laid out over the
epochs, or over the wall time when ``time_budget`` is set. Evaluation, diagnostics, the collapse
alarm, the progress bar and loggers are :class:`~contrastlab.training.callbacks.Callback` objects
handed in (``contrastlab.train`` adds the usual ones); this package imports none of them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from contrastlab.config import TrainConfig, flatten
from contrastlab.data import DatasetSplits, load_dataset
from contrastlab.data.folder_stream import folder_catalog, is_image_folder, should_stream_folder
from contrastlab.data.shard_set import find_shard_sets
from contrastlab.data.split import stratified_split
from contrastlab.data.streamed import StreamedData, open_stream
from contrastlab.errors import CheckpointError, ConfigError
from contrastlab.methods import Method, method_class
from contrastlab.models.global_batch_norm import convert_to_global_batch_norm
from contrastlab.models.weights import check_weights_file, load_backbone_weights
from contrastlab.optim import build_optimizer, default_lr, set_lr, warmup_cosine
from contrastlab.runs import (
    CHECKPOINT_FORMAT,
    build_backbone_of,
    build_views,
    capture_rng_state,
    load_checkpoint,
    memory_format_of,
    model_meta,
    num_local_crops,
    precision_warning,
    rebuild_method,
    resolve_device,
    resolve_precision,
    restore_rng_state,
    save_atomic,
)
from contrastlab.training.batches import MemoryBatches, StreamBatches, epoch_permutation
from contrastlab.training.callbacks import Callback
from contrastlab.training.ddp import setup_distributed
from contrastlab.training.micro_batch import check_micro_batch, grad_cache_step
from contrastlab.training.signals import StopRequest
from contrastlab.training.state import TrainResult, TrainState
from contrastlab.views import EvalTransform, channel_stats

#: settings a resumed run must share with the run it continues
RESUME_IDENTITY = ("method", "backbone", "data", "batch_size", "seed", "image_size",
                   "test_fraction", "split_seed", "optimizer")
#: settings added later: checked only against checkpoints that record them
RESUME_IDENTITY_IF_SAVED = ("stream", "shuffle_buffer")


def gradient_norm(parameters: list[torch.Tensor], clip: float | None) -> torch.Tensor:
    """Total L2 norm of the gradients (clipped to ``clip`` when given), as a 0-d tensor; NaN/inf
    when any gradient is not finite."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    if clip is not None:
        return torch.nn.utils.clip_grad_norm_(parameters, clip).float()
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)).float())


class Trainer:
    """Trains ``config.method`` on ``config.data``; everything lands in ``config.run.out``.

    Under ``torchrun`` (or in a process group the caller initialised) every process runs a
    Trainer with the same configuration and they train as one process on the whole (global)
    batch; rank 0 logs, writes and runs the callbacks (see :mod:`contrastlab.training.ddp`,
    docs/distributed.md).

    Args:
        config: a checked configuration.
        callbacks: evaluation, diagnostics, progress, loggers (see
            :mod:`contrastlab.training.callbacks`), called in this order.
        console: where messages go (a quiet one is fine for tests).
        backbone: an ``nn.Module`` to train instead of ``config.backbone`` (it needs an integer
            ``output_dim``).
        stop_after_step: stop (with a checkpoint) once this global step is reached, as an
            interruption would; ``resume`` continues from there.
    """

    def __init__(self, config: TrainConfig, *, callbacks: Sequence[Callback] = (),
                 console: Console | None = None, backbone: nn.Module | None = None,
                 stop_after_step: int | None = None) -> None:
        self.config = config
        self.callbacks = list(callbacks)
        self.console = console or Console(stderr=True)
        self.custom_backbone = backbone
        self.stop_after_step = stop_after_step
        self.state = TrainState()
        self.stop_reason: str | None = None

    # ================================================================== the whole run
    def fit(self) -> TrainResult:
        """Set up, train until the schedule ends (or a stop), and finish the run."""
        try:
            self.setup()
            self.call("on_train_start")
            with StopRequest() as self.stop_request:
                while not self.finished and self.stop_reason is None:
                    self.run_epoch()
            if self.state.global_step == 0 and self.stop_reason is None:
                self.save_checkpoint()  # --epochs 0: the initial (or --weights) model
            self.call("on_loop_end")
            return self.end_of_run()
        finally:
            self.call("on_close")

    # ================================================================== setup
    def setup(self) -> None:
        """Device and processes, run folder, data and views, method, optimiser, resume."""
        config = self.config
        device = resolve_device(config.run.device)
        # torchrun: join the process group; rank 0 alone logs, prints and writes
        self.ddp = ddp = setup_distributed(device)
        self.device = ddp.device
        if ddp.enabled:
            run = dataclasses.replace(config.run, out=ddp.from_main(config.run.out))
            self.config = config = config.replace(run=run)
            if not ddp.is_main:
                self.console = Console(quiet=True)
        if config.backbone.weights is not None and not config.run.resume:
            check_weights_file(config.backbone.weights)  # before any data is read
        self.run = ddp.run_directory(config.run.out, config.run.resume)
        self.autocast_dtype = resolve_precision(config.run.precision, self.device)
        torch.manual_seed(config.run.seed)
        if config.run.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.setup_data()
        self.setup_model()
        if config.run.resume:
            self.restore()
        else:
            ddp.on_main(lambda: config.save_yaml(self.run.config_path))
        self.log({"type": "data", "name": self.train_set.name, "n_train": self.n_train,
                  "streamed": self.streamed is not None,
                  "n_test": 0 if self.splits.test is None else len(self.splits.test),
                  "official_split": self.splits.official_split,
                  "skipped_files": len(self.splits.skipped)})
        self.model = ddp.wrap(self.method)  # DistributedDataParallel under torchrun
        if self.custom_backbone is None:
            for note in config.notes:
                self.console.print(note)
        slow_precision = precision_warning(self.autocast_dtype, self.device)
        if slow_precision is not None:
            self.console.print(slow_precision)
        self.console.print(
            f"training [bold]{config.method.name}[/bold] / {self.backbone_name} on "
            f"{self.train_set.name}: {self.n_train} images {self.train_set.channels}x"
            f"{self.image_size}x{self.image_size}, batch {config.schedule.batch_size}, "
            f"{config.optimizer.name} lr {self.base_lr:.3g}, device {self.device}"
            + (f", budget {config.schedule.time_budget:.0f}s" if config.schedule.time_budget
               else f", {config.schedule.epochs} epochs"))

    @property
    def backbone_name(self) -> str:
        if self.custom_backbone is not None:
            return type(self.custom_backbone).__name__
        return self.config.backbone.name

    def open_stream(self) -> StreamedData | None:
        """The streamed training set, or None: the data is decoded into memory.

        Tar shards stream unless ``--stream off``; an image folder streams file by file with
        ``--stream on``, or with ``auto`` when its decoded images would take more than half of
        the memory available. Without an official test split, the images held out for
        evaluation (``test_fraction``, ``split_seed``: the in-memory reader's split) are left
        out of training, as they are in memory.
        """
        data = self.config.data
        if data.stream == "off":
            return None
        shards = find_shard_sets(data.source)
        if shards is not None:
            streamed = open_stream(shards[0], image_size=data.image_size,
                                   skip_bad_files=data.skip_bad_files)
            official = shards[1] is not None
        elif is_image_folder(data.source):
            folder = folder_catalog(data.source)
            if data.stream == "auto":
                stream, need, have = should_stream_folder(folder.catalog, data.image_size)
                if not stream:
                    return None
                self.console.print(
                    f"the decoded images of {data.source} would take about {need / 2**30:.1f} "
                    f"GiB of the {have / 2**30:.1f} GiB of memory available: streaming them "
                    "from the folder, decoded in worker processes (--stream off decodes them "
                    "into memory; 'contrastlab shards build' makes them faster to read)")
            streamed = open_stream(folder.shards, image_size=data.image_size,
                                   skip_bad_files=data.skip_bad_files, catalog=folder.catalog)
            official = folder.test is not None
        else:
            if data.stream == "on":
                raise ConfigError(
                    f"--stream on needs WebDataset tar shards or an image folder but data "
                    f"{data.source!r} is neither; make shards with 'contrastlab shards build "
                    f"--data {data.source} --out DIR' and train with --data DIR, or pass "
                    "--stream auto")
            return None
        if not official and streamed.catalog.has_labels:
            kept, _ = stratified_split(streamed.catalog.label, data.test_fraction,
                                       data.split_seed)
            streamed.catalog = streamed.catalog.subset(kept)
        return streamed

    def setup_data(self) -> None:
        """Load (or catalogue, for a stream) the data, check it fits the batch and the
        processes, make the views and the source of batches."""
        config, ddp = self.config, self.ddp
        self.streamed = self.open_stream()
        if self.streamed is not None:
            # the preview stands for the training set (channel statistics, diagnostics); no
            # evaluation split is held in memory
            self.splits = DatasetSplits(train=self.streamed.preview, test=None,
                                        skipped=self.streamed.skipped)
            self.n_train = len(self.streamed.catalog)
        else:
            self.splits = load_dataset(
                config.data.source, test_fraction=config.data.test_fraction,
                split_seed=config.data.split_seed, skip_bad_files=config.data.skip_bad_files,
                image_size=config.data.image_size)
            self.n_train = len(self.splits.train)
        self.train_set = train_set = self.splits.train
        if self.splits.skipped:
            self.console.print(f"[yellow]skipped {len(self.splits.skipped)} unreadable file(s) "
                               f"(--skip-bad-files), e.g. {self.splits.skipped[0]}[/yellow]")
        batch = config.schedule.batch_size
        if self.n_train < batch:
            raise ConfigError(
                f"batch_size {batch} is larger than the training set ({self.n_train} images "
                f"in {train_set.name}); pass --batch-size {max(2, self.n_train)} or less"
            )
        if batch % ddp.world_size:
            raise ConfigError(
                f"batch_size {batch} is the global batch and must divide evenly over the "
                f"{ddp.world_size} processes; use a multiple of {ddp.world_size}, e.g. "
                f"--batch-size {batch // ddp.world_size * ddp.world_size or ddp.world_size}"
            )
        self.local_batch = batch // ddp.world_size
        if config.schedule.micro_batch is not None:
            check_micro_batch(config.schedule.micro_batch, self.local_batch, ddp.world_size)
        self.image_size = (self.streamed.image_size if self.streamed is not None
                           else config.data.image_size or min(train_set.image_size))
        self.mean, self.std = channel_stats(train_set.images)
        self.views = build_views(config, self.image_size, train_set.channels, self.mean,
                                 self.std)
        self.eval_transform = EvalTransform(self.image_size, train_set.channels, self.mean,
                                            self.std)
        self.meta = model_meta(config, self.splits, self.image_size, self.mean, self.std,
                               self.custom_backbone)
        self.batches = self.make_batches()
        self.steps_per_epoch = self.batches.steps_per_epoch
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"batch_size {batch} leaves no whole batch per process: each of the "
                f"{ddp.world_size} processes reads its own shards of {train_set.name}, and the "
                f"smallest share holds fewer than {self.local_batch} images; use a smaller "
                "--batch-size, fewer processes or more, smaller shards")
        self.total_steps = config.schedule.epochs * self.steps_per_epoch

    def make_batches(self) -> MemoryBatches | StreamBatches:
        """The source of this process's batches (see :mod:`contrastlab.training.batches`)."""
        config = self.config
        if self.streamed is None:
            images, labels = self.place_training_data()
            return MemoryBatches(images, labels, seed=config.run.seed,
                                 batch=config.schedule.batch_size, local_batch=self.local_batch,
                                 rank=self.ddp.rank, device=self.device)
        self.console.print(
            f"streaming {len(self.streamed.shards.paths)} shard(s) of {self.train_set.name}, "
            f"decoded at {self.streamed.image_size}x{self.streamed.image_size}; evaluation "
            "during training is off for streamed data (the end of the run evaluates with one "
            "more streamed pass, as 'contrastlab eval knn --run RUN' does)")
        return StreamBatches(self.streamed, seed=config.run.seed, rank=self.ddp.rank,
                             world=self.ddp.world_size, local_batch=self.local_batch,
                             buffer=config.data.shuffle_buffer,
                             workers=config.data.loader_workers,
                             skip_bad_files=config.data.skip_bad_files, device=self.device,
                             on_skipped=self.skipped_samples)

    def skipped_samples(self, names: list[str]) -> None:
        """Samples of a streamed batch that could not be decoded (``--skip-bad-files``)."""
        self.log({"type": "skipped_samples", "epoch": self.state.epoch,
                  "step": self.state.global_step, "count": len(names), "samples": names})
        self.console.print(f"[yellow]skipped {len(names)} undecodable sample(s) "
                           f"(--skip-bad-files), e.g. {names[0]}[/yellow]")

    def place_training_data(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Where batches are drawn from: the training images on the GPU (``data_on_device``),
        or in pinned CPU memory for fast copies to a GPU, or as they are on the CPU."""
        images, labels = self.train_set.images, self.train_set.labels
        if self.device.type != "cuda":
            return images, labels
        choice = self.config.run.data_on_device
        if choice == "auto":
            free, _ = torch.cuda.mem_get_info(self.device)
            choice = "on" if images.numel() < free / 4 else "off"
        if choice == "on":
            return images.to(self.device), None if labels is None else labels.to(self.device)
        return images.pin_memory(), None if labels is None else labels.pin_memory()

    def setup_model(self) -> None:
        """The method on the training device, its optimiser and the fp16 loss scaler."""
        config, train_set = self.config, self.train_set
        method_type = method_class(config.method.name)
        if method_type.needs_labels and train_set.labels is None:
            raise ConfigError(
                f"method '{config.method.name}' needs labels but {train_set.name} has none (a "
                "flat folder of images is unlabelled); use class sub-folders or a "
                "self-supervised method"
            )
        if method_type.uses_labels and train_set.labels is None:
            raise ConfigError(
                f"method '{config.method.name}' uses labels but {train_set.name} has none; "
                "without labels it reduces to SimCLR: use --method simclr"
            )
        method = rebuild_method(self.meta, self.initial_backbone()).to(self.device)
        fixed_size = getattr(method.backbone, "fixed_image_size", None)
        if fixed_size is not None and num_local_crops(config):
            raise ConfigError(
                f"backbone '{config.backbone.name}' was built for {fixed_size}x{fixed_size} "
                f"images only, but method '{config.method.name}' adds {num_local_crops(config)} "
                "smaller local views (multi-crop); pass --num-local-crops 0 or use a "
                "convolutional backbone"
            )
        # fp64: parameters and views in float64 (exactness checks, e.g. several processes ==
        # one process)
        self.compute_dtype = torch.float64 if config.run.precision == "fp64" else torch.float32
        method.to(dtype=self.compute_dtype)
        if self.ddp.enabled and config.run.sync_batchnorm and method.sync_batch_norm:
            convert_to_global_batch_norm(method)
        self.memory_format = memory_format_of(config.run.channels_last)
        method.to(memory_format=self.memory_format)
        if config.run.compile:
            # in place (nn.Module.compile): parameter names, hence checkpoints, are unchanged
            method.backbone.compile()
        self.method: Method = method
        self.base_lr = config.optimizer.lr or default_lr(config.optimizer.name,
                                                         config.schedule.batch_size)
        self.optimizer = build_optimizer(method, config.optimizer.name, self.base_lr,
                                         config.optimizer.weight_decay,
                                         config.optimizer.momentum)
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=self.autocast_dtype == torch.float16)
        self.view_generator = torch.Generator().manual_seed(config.run.seed)
        self.trainable = [p for p in method.parameters() if p.requires_grad]
        self.last_lr = float("nan")

    def initial_backbone(self) -> nn.Module | None:
        """The backbone to build the method around: the module given from Python, or, with
        ``--weights`` (not when resuming: the checkpoint holds the weights), the configured
        backbone with the file's weights loaded (before the method copies it into momentum
        encoders or teachers); None: the method builds its own."""
        weights = self.config.backbone.weights
        if weights is None or self.config.run.resume:
            return self.custom_backbone
        backbone = self.custom_backbone or build_backbone_of(self.meta)
        loaded = load_backbone_weights(backbone, weights, self.backbone_name)
        self.meta["weights"] = loaded.to_meta()
        self.console.print(loaded.summary())
        return backbone

    def restore(self) -> None:
        """Continue the run in the folder: model, optimiser, scaler, generators and state."""
        path = self.run.checkpoint_path
        saved = load_checkpoint(path)
        check_resumable(saved, self.config, self.meta, path)
        self.method.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scaler.load_state_dict(saved["scaler"])
        self.view_generator.set_state(saved["view_generator"])
        restore_rng_state(saved["rng"])
        self.state = TrainState.from_checkpoint(saved)
        self.meta["weights"] = saved["model_meta"].get("weights")  # the run's starting point
        self.ddp.share_random_state()  # the CUDA states were captured per device on rank 0
        self.console.print(f"resumed from {path} at epoch {self.state.epoch}, step "
                           f"{self.state.global_step}")

    # ================================================================== the loop
    @property
    def schedule_progress(self) -> float:
        """Share of the schedule done, in [0, 1]: steps, or seconds under a time budget."""
        budget = self.config.schedule.time_budget
        if budget is not None:
            return self.state.elapsed / budget
        return self.state.global_step / max(self.total_steps, 1)

    @property
    def finished(self) -> bool:
        """The schedule is complete (all epochs, or the time budget spent)."""
        budget = self.config.schedule.time_budget
        if budget is not None:
            return self.state.elapsed >= budget
        return self.state.epoch >= self.config.schedule.epochs

    @property
    def epochs_done(self) -> float:
        """Epochs done, with the fraction of the current one."""
        return self.state.epoch + self.state.batch_in_epoch / max(self.steps_per_epoch, 1)

    def run_epoch(self) -> None:
        """The remaining batches of the current epoch (or until a stop), then the epoch's end
        when it is complete, then a checkpoint."""
        state = self.state
        batches = self.batches.epoch(state.epoch, state.batch_in_epoch)
        self.epoch_loss_sum = torch.zeros((), device=self.device)
        self.epoch_steps = 0
        self.window_start, self.window_images = time.perf_counter(), 0
        self.window_data_wait = 0.0
        budget = self.config.schedule.time_budget
        try:
            while state.batch_in_epoch < self.steps_per_epoch:
                step_start = time.perf_counter()
                images, labels = next(batches)  # waiting for data counts as training time
                self.window_data_wait += time.perf_counter() - step_start
                self.train_step(images, labels, step_start)
                if self.stop_reason is not None:
                    break
                if budget is not None and state.elapsed >= budget:
                    break
                self.checkpoint_within_epoch()
        finally:
            batches.close()  # a stream's worker processes end here
        extra_copies: list[Path] = []
        if state.batch_in_epoch >= self.steps_per_epoch:
            extra_copies = self.end_of_epoch()
        checkpoint_start = time.perf_counter()
        self.save_checkpoint(*extra_copies)
        state.elapsed += time.perf_counter() - checkpoint_start
        _, state.elapsed = self.ddp.agree(None, state.elapsed)

    def checkpoint_within_epoch(self) -> None:
        """``--checkpoint-every N``: last.pt every N steps, except at the epoch's end (which
        writes its own); the write counts as training time, as at the end of an epoch."""
        every, state = self.config.run.checkpoint_every, self.state
        if not every or state.global_step % every or state.batch_in_epoch >= self.steps_per_epoch:
            return
        start = time.perf_counter()
        self.save_checkpoint()
        state.elapsed += time.perf_counter() - start
        _, state.elapsed = self.ddp.agree(None, state.elapsed)

    def train_step(self, images: torch.Tensor, labels: torch.Tensor | None,
                   step_start: float | None = None) -> None:
        """One optimiser step on this process's uint8 ``images`` (and ``labels``) of the next
        batch; ``step_start``: when the step began (before its data was fetched)."""
        config, state, ddp = self.config, self.state, self.ddp
        batch = config.schedule.batch_size
        step_start = time.perf_counter() if step_start is None else step_start
        lr = self.base_lr * warmup_cosine(self.schedule_progress, config.optimizer.warmup_fraction)
        set_lr(self.optimizer, lr)
        progress = self.schedule_progress
        step_views = self.views.at(progress)
        views = [v.to(self.compute_dtype).contiguous(memory_format=self.memory_format)
                 for v in step_views(images, self.view_generator, global_batch=batch,
                                     offset=ddp.rank * self.local_batch)]
        self.method.on_step_start(state.global_step, progress)
        output = self.forward_backward(views, labels)
        if self.scaler.is_enabled():
            self.scaler.unscale_(self.optimizer)
        grad_norm = gradient_norm(self.trainable, config.optimizer.clip_grad_norm)
        # the global batch's loss and metrics (`output.loss` and its metrics in one process)
        step_loss, step_metrics = ddp.mean_step(output.loss.detach(), output.metrics)
        # one host sync: NaN/inf in the loss or any gradient makes the sum non-finite
        if bool(torch.isfinite(step_loss.float() + grad_norm)):
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.method.on_step_end(state.global_step, progress, output)
            state.nonfinite_in_a_row = 0
            self.epoch_loss_sum += step_loss
            self.epoch_steps += 1
        else:
            self.skip_step(step_loss, grad_norm, lr)
        state.global_step += 1
        state.batch_in_epoch += 1
        self.window_images += batch
        state.elapsed += time.perf_counter() - step_start
        stop_now = ("stop_after_step" if self.stop_after_step is not None
                    and state.global_step >= self.stop_after_step
                    else self.stop_request.received)
        stop_now, state.elapsed = ddp.agree(stop_now, state.elapsed)  # the same on every rank
        if (state.global_step % config.run.log_every == 0
                or state.batch_in_epoch == self.steps_per_epoch):
            now = time.perf_counter()
            window = max(now - self.window_start, 1e-9)
            images_per_s = self.window_images / window
            # the share of the window spent waiting for the next batch (decoding, loading)
            data_wait = min(1.0, self.window_data_wait / window)
            self.window_start, self.window_images, self.window_data_wait = now, 0, 0.0
            self.log({"type": "step", "epoch": state.epoch, "step": state.global_step,
                      "loss": float(step_loss), "lr": lr, "images_per_s": images_per_s,
                      "data_wait": round(data_wait, 4),
                      "grad_norm": float(grad_norm), "elapsed": state.elapsed,
                      "view_size": step_views.output_size, **step_metrics})
        self.last_lr = lr
        self.call("on_step_end")
        if stop_now is not None:
            self.stop_reason = stop_now

    def forward_backward(self, views: list[torch.Tensor], labels: torch.Tensor | None) -> Any:
        """The method's loss on the views and its gradient (GradCache with ``micro_batch``)."""
        micro_batch = self.config.schedule.micro_batch
        autocast = (torch.autocast(self.device.type, dtype=self.autocast_dtype)
                    if self.autocast_dtype is not None else contextlib.nullcontext())
        if micro_batch is None:
            with autocast:
                output = self.model(views, labels)  # DDP: gradients averaged over ranks
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(output.loss).backward()
            return output
        # GradCache: the full batch's gradient, a micro-batch of activations at a time
        self.optimizer.zero_grad(set_to_none=True)
        with self.ddp.no_sync(self.model):  # the passes bypass DDP's forward: reduce once,
            output = grad_cache_step(self.method, views, labels, micro_batch,
                                     autocast=autocast, scale_loss=self.scaler.scale)
        self.ddp.average_gradients(self.trainable)  # ... here, as DDP would have
        return output

    def skip_step(self, step_loss: torch.Tensor, grad_norm: torch.Tensor, lr: float) -> None:
        """A non-finite loss or gradient: no update; stop after too many in a row."""
        state = self.state
        if self.scaler.is_enabled():
            self.scaler.update()  # lowers the fp16 loss scale
        self.optimizer.zero_grad(set_to_none=True)
        state.skipped_steps += 1
        state.nonfinite_in_a_row += 1
        self.log({"type": "skipped_step", "epoch": state.epoch, "step": state.global_step,
                  "loss": float(step_loss), "grad_norm": float(grad_norm)})
        if state.nonfinite_in_a_row >= self.config.run.max_nonfinite_steps:
            raise FloatingPointError(
                f"the loss or gradients were not finite for {state.nonfinite_in_a_row} steps in "
                f"a row (the last at step {state.global_step}; {state.skipped_steps} skipped in "
                f"all); stopped without saving these steps. The last good checkpoint is "
                f"{self.run.checkpoint_path}. Likely causes: a learning rate too high (--lr, now "
                f"{lr:.3g}), a temperature too low (--temperature), or reduced precision (try "
                f"--precision fp32). Continue from the checkpoint with --resume --out "
                f"{self.run.root} after changing them."
            )

    # ================================================================== epoch end, checkpoints
    def end_of_epoch(self) -> list[Path]:
        """Close the epoch: its record, the callbacks' epoch work (evaluation, diagnostics);
        returns the extra checkpoint copies to write (best.pt, epoch-N.pt)."""
        state, config = self.state, self.config
        state.epoch, state.batch_in_epoch = state.epoch + 1, 0
        mean_loss = float(self.epoch_loss_sum) / max(self.epoch_steps, 1)
        self.log({"type": "epoch", "epoch": state.epoch, "step": state.global_step,
                  "loss": mean_loss, "lr": self.last_lr, "elapsed": state.elapsed,
                  "skipped_steps": state.skipped_steps})
        extra: list[Path] = []
        scores = self.epoch_callbacks()
        if scores:
            self.log({"type": "eval", "epoch": state.epoch, "step": state.global_step, **scores})
            if scores.get("knn_top1", -math.inf) > state.best_score:
                state.best_score = scores["knn_top1"]
                extra.append(self.run.best_checkpoint_path)
        if config.run.keep and state.epoch % config.run.keep == 0:
            extra.append(self.run.epoch_checkpoint_path(state.epoch))
        return extra

    def epoch_callbacks(self) -> dict[str, Any]:
        """Run every callback's ``on_epoch_end`` on rank 0; their scores, merged."""

        def run_all() -> tuple[bool, dict[str, Any]]:
            scores: dict[str, Any] = {}
            worked = False
            for callback in self.callbacks:
                result = callback.on_epoch_end(self)
                if result is not None:
                    worked = True
                    scores.update(result)
            return worked, scores

        worked, scores = self.ddp.on_main(run_all) or (False, {})
        self.ddp.share_random_state()  # rank-0-only work must not make the ranks' states differ
        if worked:
            self.method.train()
        return scores

    def checkpoint_state(self) -> dict[str, Any]:
        """Everything needed to continue exactly: model, optimiser, scaler, generators, state."""
        return {
            "format": CHECKPOINT_FORMAT,
            "model_meta": self.meta,
            "config": self.config.to_dict(),
            "model": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            **self.state.to_checkpoint(),
            "view_generator": self.view_generator.get_state(),
            "rng": capture_rng_state(),
        }

    def save_checkpoint(self, *extra: Path) -> None:
        """last.pt (and copies such as best.pt / epoch-N.pt); a failed write leaves the previous
        file intact and stops training with the reason. Rank 0 writes; the others wait."""
        run = self.run

        def write() -> None:
            state = self.checkpoint_state()
            advice = (f"Free disk space or fix the folder's permissions, then continue with "
                      f"--resume --out {run.root}")
            for path in (run.checkpoint_path, *extra):
                save_atomic(state, path, advice=advice)

        self.ddp.on_main(write)

    # ================================================================== the end
    def end_of_run(self) -> TrainResult:
        """Say how the run ended; for a finished run, the callbacks' final scores become the
        ``final`` record and final_metrics.json."""
        state, run = self.state, self.run
        if self.stop_reason in ("SIGINT", "SIGTERM"):
            self.console.print(
                f"{self.stop_reason} received: finished step {state.global_step} and wrote the "
                f"checkpoint {run.checkpoint_path}. Continue with: contrastlab train --resume "
                f"--out {run.root}")
        result = TrainResult(run.root, global_step=state.global_step, epoch=state.epoch,
                             finished=self.stop_reason is None, stop_reason=self.stop_reason,
                             skipped_steps=state.skipped_steps)
        if self.stop_reason is not None:
            self.log({"type": "stopped", "reason": self.stop_reason, "epoch": state.epoch,
                      "step": state.global_step, "elapsed": state.elapsed})
            if self.stop_reason == "stop_after_step":
                self.console.print(f"stopped at step {state.global_step}; continue with "
                                   f"--resume --out {run.root}")
            self.ddp.close(wait_for_all=True)
            return result
        self.ddp.close(wait_for_all=True)  # the other ranks are done; rank 0 goes on alone
        if self.ddp.is_main:
            scores: dict[str, Any] = {}
            for callback in self.callbacks:
                scores.update(callback.on_train_end(self) or {})
            if scores:
                test = self.splits.test
                final = {"epoch": state.epoch, "step": state.global_step,
                         "train_seconds": round(state.elapsed, 2), "n_train": self.n_train,
                         "n_test": 0 if test is None else len(test),
                         "skipped_steps": state.skipped_steps, **scores}
                self.log({"type": "final", **final})
                run.write_final(final)
                result.metrics = final
        self.console.print(f"run saved in {run.root}")
        return result

    # ================================================================== helpers
    def log(self, record: dict[str, Any]) -> None:
        """Append ``record`` to metrics.jsonl (rank 0) and show it to the callbacks."""
        self.run.log(record)
        if self.ddp.is_main:
            for callback in self.callbacks:
                callback.on_record(self, record)

    def note(self, message: str) -> None:
        """A line for the user (printed above the progress bar)."""
        self.console.print(message)

    def call(self, hook: str) -> None:
        """Call ``hook`` of every callback, on rank 0 only (before setup: on this process)."""
        ddp = getattr(self, "ddp", None)
        if ddp is not None and not ddp.is_main:
            return
        for callback in self.callbacks:
            getattr(callback, hook)(self)


def check_resumable(state: dict[str, Any], config: TrainConfig, meta: dict[str, Any],
                    path: Path) -> None:
    """Refuse to continue a checkpoint with settings that would make it another run."""
    if state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"'{path}' is not a {CHECKPOINT_FORMAT} checkpoint")
    saved, asked = flatten(state["config"]), config.flat()
    identity = RESUME_IDENTITY + tuple(key for key in RESUME_IDENTITY_IF_SAVED if key in saved)
    for key in identity:
        if saved.get(key) != asked[key]:
            raise CheckpointError(
                f"cannot resume '{path}': it was trained with {key}={saved.get(key)!r} but this "
                f"run asks for {key}={asked[key]!r}; use the same value or a new --out"
            )
    if state["model_meta"]["in_channels"] != meta["in_channels"]:
        raise CheckpointError(f"cannot resume '{path}': the data's channel count changed")
    if not math.isfinite(state["elapsed"]):
        raise CheckpointError(f"'{path}' holds a non-finite elapsed time")


__all__ = ["RESUME_IDENTITY", "RESUME_IDENTITY_IF_SAVED", "Trainer", "check_resumable",
           "epoch_permutation", "gradient_norm"]
