"""The training loop of image-text runs (CLIP / SigLIP with an image and a text tower).

Like :mod:`contrastlab.training.text_trainer`, a loop of its own (the image ``Trainer`` feeds
views of images only): the images are decoded once into a uint8 tensor and augmented in batches
on the training device by the image path's :class:`~contrastlab.views.AugmentedViews` (one view
per image, the ``views`` section's settings, normalised with the training images' channel
statistics), in channels-last memory format as in the image ``Trainer``; the captions are
tokenised once. Each step takes a batch of pairs in the epoch's
order, ``method.pair_step(images, tokens)``, an optimiser step, then ``method.on_step_end``
(CLIP clips its logit scale). Optimiser, warm-up + cosine schedule, the skip of a non-finite
step, ``--time-budget``, ``config.yaml`` / ``metrics.jsonl``, the atomic checkpoint (loadable
weights-only), ``--resume``, ``--checkpoint-every`` and the stop at SIGINT / SIGTERM are those of
the text loop.

The run directory::

    RUN/config.yaml             the resolved settings, by section
    RUN/tokenizer.json          the tokenizer
    RUN/metrics.jsonl           "type": data | step | epoch | final
    RUN/checkpoints/last.pt     both towers, projections, loss parameters, optimiser, settings,
                                tokenizer, image size / channels / mean / std, loop position,
                                random states and the augmentations' generator

With ``text_backbone: hf:PATH`` the text tower is a local Hugging Face model
(:mod:`contrastlab.training.pretrained_text`): no ``tokenizer.json`` is written, the checkpoint
holds the model folder's config and tokenizer files instead (``hf_files``, ``hf_source``), and
a resumed run rebuilds the tower from them. ``lock_text`` freezes it
(:class:`~contrastlab.methods.image_text.TextTower`) and its features of every distinct caption
are computed once before the first step (:mod:`contrastlab.training.locked_text`).

Under ``torchrun --nproc_per_node P -m contrastlab train-pairs ...`` every process runs this
loop on its share of each global batch (``batch_size`` is the global batch), the CLIP / SigLIP
loss sees the whole batch's pairs, batch norm (in the image tower) normalises over the global
batch (:class:`~contrastlab.models.global_batch_norm.GlobalBatchNorm`, as the image trainer's
``sync_batchnorm``), gradients are averaged, and rank 0 alone writes the run folder: the run
trains like one process on the whole batch (up to dropout, whose masks are drawn per rank;
:mod:`contrastlab.training.small_ddp`).

Batch order: epoch e is a permutation of the pairs drawn from a generator seeded with
(seed, e); the augmentations draw from a generator seeded with ``seed``, whose state the
checkpoint holds, so a resumed run ends with the weights of one never interrupted.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import closing, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from contrastlab.atomic import write_text_atomic
from contrastlab.data.captions import ImageCaptions, load_image_captions
from contrastlab.data.hf_tokenizer import HfTokenizer
from contrastlab.data.tokenizer import TextTokenizer, TokenBatch, train_tokenizer
from contrastlab.errors import ConfigError
from contrastlab.methods.image_text import ImageTextBatch, TextTower, build_image_text_method
from contrastlab.methods.two_tower import TwoTowerMethod
from contrastlab.models.backbones import build_backbone, takes_geometry
from contrastlab.models.global_batch_norm import convert_to_global_batch_norm
from contrastlab.models.hf_text_encoder import HfTextEncoder
from contrastlab.models.text_encoder import TextTransformer
from contrastlab.optim.optimizers import build_optimizer, default_lr
from contrastlab.runs.checkpoint import CHECKPOINT_FORMAT, save_atomic
from contrastlab.runs.device import resolve_device
from contrastlab.runs.directory import RunDirectory, default_run_name
from contrastlab.runs.hf_folder import hf_folder
from contrastlab.runs.pair_run import PAIR_RUN_KIND
from contrastlab.training.ddp import Distributed, setup_distributed
from contrastlab.training.locked_text import encode_locked_captions
from contrastlab.training.pair_settings import PairRunSettings
from contrastlab.training.pair_stream_data import (
    StreamedPairs,
    open_streamed_pairs,
    pair_shards_to_stream,
)
from contrastlab.training.pretrained_text import pretrained_text_tower
from contrastlab.training.signals import StopRequest
from contrastlab.training.small_ddp import (
    broadcast_module,
    check_global_batch,
    local_rows,
    rank_random_states,
    restore_rank_random_state,
    run_in_group,
    seed_ranks,
)
from contrastlab.training.small_loop import LoopPosition, plan_loop, run_loop, stop_check
from contrastlab.training.small_resume import (
    check_examples,
    load_resumable,
    restore_training_state,
    training_state,
)
from contrastlab.views import AugmentedViews, channel_stats


@dataclass
class PairRunResult:
    """Where the run is and how it ended."""

    run_dir: Path
    steps: int
    last_loss: float
    stop_reason: str
    seconds: float
    #: False on the ranks other than 0 under torchrun (they print and evaluate nothing)
    is_main: bool = True


@dataclass
class PairData:
    """The pairs, their captions' tokens (N, L) and the tokenizer (the model folder's for an
    ``hf:PATH`` text tower)."""

    pairs: ImageCaptions
    tokens: TokenBatch
    tokenizer: TextTokenizer | HfTokenizer

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, TokenBatch]:
        """uint8 images and tokens (cut to their longest caption) of pairs ``indices``."""
        mask = self.tokens.mask[indices]
        length = int(mask.sum(dim=1).max())
        return (self.pairs.images[self.pairs.image_index[indices]],
                TokenBatch(self.tokens.ids[indices, :length], mask[:, :length]))


def _say_nothing(_: str) -> None:
    pass


def read_pair_data(settings: PairRunSettings, say: Callable[[str], None] = _say_nothing,
                   tokenizer: TextTokenizer | HfTokenizer | None = None,
                   max_length: int | None = None) -> PairData:
    """Read and decode the pairs, train (or load, or take ``tokenizer``) the tokenizer,
    tokenise the captions (at most ``max_length`` tokens each; default the encoder
    section's)."""
    train = settings.train
    pairs = load_image_captions(train.data, train.image_size, train.skip_bad_files)
    if tokenizer is not None:
        pass
    elif train.tokenizer:
        tokenizer = TextTokenizer.from_file(train.tokenizer)
    else:
        tokenizer = train_tokenizer(list(dict.fromkeys(pairs.captions)),
                                    vocab_size=train.vocab_size)
        say(f"trained a WordPiece tokenizer of {tokenizer.vocab_size} tokens on the captions")
    tokens = tokenizer.encode(pairs.captions, max_length or settings.encoder.max_length)
    return PairData(pairs, tokens, tokenizer)


def fit_pairs(settings: PairRunSettings, say: Callable[[str], None] = _say_nothing,
              stop_after_step: int | None = None) -> PairRunResult:
    """Train CLIP or SigLIP as ``settings`` say; returns when the epochs or the budget are
    spent (or at a SIGINT / SIGTERM, or once ``stop_after_step`` steps are done, with a
    checkpoint). ``settings.train.resume``: continue the run in ``out``."""
    train = settings.train
    if train.threads:
        torch.set_num_threads(train.threads)
    ddp = setup_distributed(resolve_device(train.device))
    return run_in_group(ddp, lambda: _fit_pairs(settings, ddp, say if ddp.is_main else _say_nothing,
                                              stop_after_step))


def _fit_pairs(settings: PairRunSettings, ddp: Distributed, say: Callable[[str], None],
               stop_after_step: int | None) -> PairRunResult:
    train = settings.train
    out = Path(ddp.from_main(train.out or default_run_name(train.method, train.data)))
    run = ddp.run_directory(str(out), train.resume)
    saved = load_resumable(out, PAIR_RUN_KIND, "train-pairs") if train.resume else None
    device = ddp.device
    torch.manual_seed(train.seed)
    folder = hf_folder(train.text_backbone)
    # an hf: tower's shards are read into memory: the stream tokenises in its worker processes
    # with the run's own WordPiece tokenizer, and a locked tower encodes every caption up front
    shards = pair_shards_to_stream(train.data, "off" if folder and train.stream == "auto"
                                   else train.stream, saved)
    if folder is not None and shards is not None:
        raise ConfigError(f"--stream on with text_backbone {train.text_backbone} is not "
                          "supported yet (streamed captions are tokenised in worker processes "
                          "by the run's own WordPiece tokenizer): give --stream auto or off to "
                          "read the shards into memory, or --text-backbone transformer")
    pretrained = (None if folder is None
                  else pretrained_text_tower(folder, settings.encoder, saved, out, say,
                                               " as the text tower"))
    stream: StreamedPairs | None = None
    if shards is not None:  # streamed from the shards: training/pair_stream_data.py
        tokenizer = TextTokenizer.from_json(saved["tokenizer"]) if saved else None
        data = stream = open_streamed_pairs(settings, shards, ddp, say, tokenizer)
        pair_count, image_count, skipped = len(stream), len(stream), stream.skipped
        plan = plan_loop(stream.steps_per_epoch * stream.batch_size, stream.batch_size,
                         train.epochs, train.time_budget)
        channels, size, mean, std = stream.channels, stream.image_size, stream.mean, stream.std
    else:
        if pretrained is not None:
            data = _read_on_every_rank(settings, ddp, say, pretrained.tokenizer,
                                       pretrained.encoder.max_length)
        else:
            data = _read_on_every_rank(settings, ddp, say, TextTokenizer.from_json(
                saved["tokenizer"]) if saved else None)
        pairs = data.pairs
        pair_count, image_count, skipped = len(pairs), int(pairs.images.shape[0]), pairs.skipped
        plan = plan_loop(len(pairs), train.batch_size, train.epochs, train.time_budget)
        channels, size = int(pairs.images.shape[1]), int(pairs.images.shape[-1])
        mean, std = channel_stats(pairs.images)
    if saved:
        check_examples(saved, pair_count, out)
        if stream is not None:
            stream.check_resume(saved, out)
    local_batch = check_global_batch(ddp, plan.batch_size, "train-pairs")
    run.log({"type": "data", "pairs": pair_count, "images": image_count,
             "vocab_size": data.tokenizer.vocab_size, "skipped_rows": len(skipped),
             "streamed": stream is not None,
             **({"hf_source": pretrained.source} if pretrained is not None else {})})
    if skipped:
        say(f"skipped {len(skipped)} bad row(s); first: {skipped[0]}")
    ddp.on_main(lambda: _write_settings(run, settings, data.tokenizer))
    views = AugmentedViews(size, channels, mean, std, settings.views, num_views=1)
    backbone = build_backbone(train.backbone, channels,
                              size if takes_geometry(train.backbone) else None)
    text: TextTransformer | HfTextEncoder
    if pretrained is not None:
        text = pretrained.encoder
    else:
        text = TextTransformer(data.tokenizer.vocab_size, settings.encoder,
                               data.tokenizer.pad_id)
    method = build_image_text_method(train.method, backbone, text, settings.method,
                                     lock_text=train.lock_text).to(device)
    method.backbone.to(memory_format=torch.channels_last)  # as the image Trainer's default
    if ddp.enabled:  # batch norm over the global batch, as one process on the whole batch
        convert_to_global_batch_norm(method)
    broadcast_module(ddp, method)
    seed_ranks(ddp, train.seed)
    opt = settings.optimizer
    peak_lr = opt.lr if opt.lr is not None else default_lr(opt.name, train.batch_size)
    optimizer = build_optimizer(method, opt.name, peak_lr, opt.weight_decay, opt.momentum)
    generator = torch.Generator().manual_seed(train.seed)
    position = None
    if saved:
        method.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        generator.set_state(saved["view_generator"])
        position = restore_training_state(saved)
        restore_rank_random_state(ddp, saved, train.seed)

    say(f"{train.method}: {pair_count} pairs of {image_count} images, "
        + (f"streamed from {len(shards.paths)} shard(s) at {size}x{size} by "
           f"{stream.workers} worker(s), " if stream and shards else "")
        + f"text tower {train.text_backbone}{' (locked)' if train.lock_text else ''}, "
        + f"{plan.describe()}, device {device}"
        + (f", {ddp.world_size} processes of {local_batch} pairs" if ddp.enabled else "")
        + (f"; resumed at step {position.step}" if position else ""))
    locked = None
    if train.lock_text:  # a locked tower's caption features never change: computed once
        assert isinstance(method.tower_b, TextTower)
        assert stream is None  # an hf: tower (lock_text needs one) is refused with a stream
        locked = encode_locked_captions(method.tower_b, data.tokens, device)
        say(f"locked text tower: {locked.features.shape[0]} distinct captions encoded once")
    method.train()

    dtype = method.projection_a.weight.dtype

    def step(indices: torch.Tensor, number: int, progress: float
             ) -> tuple[float, dict[str, float]]:
        if stream is not None:
            images, tokens = stream.batch(number, lambda names: _report_skipped(run, say, number,
                                                                               names))
        else:
            rows = local_rows(ddp, indices)
            images, tokens = data.batch(rows)
        # the global batch's augmentation parameters are drawn; this rank's rows augmented
        augmented = views(images.to(device), generator, global_batch=plan.batch_size,
                          offset=ddp.rank * local_batch)[0]
        # float32 views in the weights' dtype (float64 under torch.set_default_dtype)
        batch = ImageTextBatch(augmented.to(dtype).contiguous(memory_format=torch.channels_last),
                               tokens.to(device) if locked is None else locked.batch(rows))
        return _step(method, optimizer, batch, opt.clip_grad_norm, number, progress, ddp)

    image = {"size": size, "channels": channels, "mean": list(mean), "std": list(std)}

    def save(position: LoopPosition) -> None:
        rank_rng = rank_random_states(ddp)  # a collective: every rank
        ddp.on_main(lambda: _save(
            run, method, optimizer, settings, data, image,
            {**training_state(position, pair_count), "view_generator": generator.get_state(),
             **({"rank_rng": rank_rng} if rank_rng else {}),
             **({"stream": stream.identity()} if stream is not None else {}),
             **(pretrained.checkpoint_entries() if pretrained is not None else {})}))

    with StopRequest() as request, (closing(stream) if stream else nullcontext()):
        end = run_loop(plan, items=pair_count, seed=train.seed, log_every=train.log_every,
                       peak_lr=peak_lr, warmup_fraction=opt.warmup_fraction,
                       optimizers=[optimizer], step=step, log=run.log, say=say, save=save,
                       checkpoint_every=train.checkpoint_every, start=position,
                       should_stop=stop_check(request, stop_after_step), ddp=ddp,
                       shuffle=stream is None)
    if end.stop in ("done", "time_budget"):
        run.log({"type": "final", "steps": end.step, "loss": end.last_loss,
                 "stop_reason": end.stop, "elapsed": round(end.elapsed, 3)})
    return PairRunResult(out, end.step, end.last_loss, end.stop, end.elapsed, ddp.is_main)


def _read_on_every_rank(settings: PairRunSettings, ddp: Distributed, say: Callable[[str], None],
                        tokenizer: TextTokenizer | HfTokenizer | None,
                        max_length: int | None = None) -> PairData:
    """:func:`read_pair_data`; under torchrun rank 0 reads first (a bad file stops every rank
    with its error) and every rank then tokenises with rank 0's tokenizer (an ``hf:`` tower's
    tokenizer: every rank's own, loaded from the same files)."""
    if not ddp.enabled:
        return read_pair_data(settings, say, tokenizer, max_length)
    data = ddp.on_main(lambda: read_pair_data(settings, say, tokenizer, max_length))
    if isinstance(tokenizer, HfTokenizer):
        return data if data is not None else read_pair_data(settings, say, tokenizer,
                                                            max_length)
    assert data is None or isinstance(data.tokenizer, TextTokenizer)
    shared = ddp.from_main(data.tokenizer.to_json() if data is not None else None)
    return data if data is not None else read_pair_data(settings, say,
                                                        TextTokenizer.from_json(shared))


def _report_skipped(run: RunDirectory, say: Callable[[str], None], step: int,
                    names: list[str]) -> None:
    """Samples of a streamed batch that could not be read (``--skip-bad-files``)."""
    run.log({"type": "skipped_samples", "step": step + 1, "count": len(names), "samples": names})
    say(f"skipped {len(names)} unreadable sample(s) (--skip-bad-files), e.g. {names[0]}")


def _write_settings(run: RunDirectory, settings: PairRunSettings,
                    tokenizer: TextTokenizer | HfTokenizer) -> None:
    write_text_atomic(run.config_path, yaml.safe_dump(settings.to_dict(), sort_keys=False),
                      "config")
    if isinstance(tokenizer, TextTokenizer):  # an hf: tower's is in the checkpoint (hf_files)
        write_text_atomic(run.root / "tokenizer.json", tokenizer.to_json(), "tokenizer")


def _step(method: TwoTowerMethod, optimizer: torch.optim.Optimizer, batch: ImageTextBatch,
          clip: float | None, step: int, progress: float, ddp: Distributed
          ) -> tuple[float, dict[str, float]]:
    """One optimiser step; a non-finite loss or gradient skips it (returns the loss, the
    global batch's: averaged over the ranks under torchrun)."""
    optimizer.zero_grad(set_to_none=True)
    output = method.pair_step(batch.images, batch.tokens)
    loss, metrics = ddp.mean_step(output.loss.detach(), output.metrics)
    value = float(loss)
    if not math.isfinite(value):
        return value, {}
    output.loss.backward()
    ddp.average_gradients(method.parameters())
    if clip is not None:
        norm = torch.nn.utils.clip_grad_norm_(method.parameters(), clip)
        if not torch.isfinite(norm):
            return math.nan, {}
    optimizer.step()
    method.on_step_end(step, progress, output)
    return value, metrics


def _save(run: RunDirectory, method: TwoTowerMethod, optimizer: torch.optim.Optimizer,
          settings: PairRunSettings, data: PairData, image: dict[str, Any],
          training: dict[str, Any]) -> None:
    """The checkpoint: settings, image geometry and statistics, tokenizer, weights (the loss's
    temperature and bias among them), optimiser, and the training state (position, random
    states, the augmentations' generator); an ``hf:`` tower's model files come in
    ``training`` (``hf_files``, ``hf_source``) and replace the tokenizer's JSON."""
    state = {
        "format": CHECKPOINT_FORMAT,
        "kind": PAIR_RUN_KIND,
        "settings": settings.to_dict(),
        "image": image,
        "vocab_size": data.tokenizer.vocab_size,
        "pad_id": data.tokenizer.pad_id,
        **({"tokenizer": data.tokenizer.to_json()}
           if isinstance(data.tokenizer, TextTokenizer) else {}),
        "model": method.state_dict(),
        "optimizer": optimizer.state_dict(),
        **training,
    }
    save_atomic(state, run.checkpoint_path)


__all__ = ["PairData", "PairRunResult", "fit_pairs", "read_pair_data"]
