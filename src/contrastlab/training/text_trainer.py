"""The training loop of text runs (SimCSE on a :class:`TextTransformer`, on a bag-of-n-grams
:class:`NgramEncoder` or on a local Hugging Face model, :class:`HfTextEncoder`;
``text_backbone``).

A loop of its own rather than a mode of :class:`contrastlab.training.trainer.Trainer`: that
trainer is built around an in-memory image tensor, batched augmentations on the device, channels
last, batch-norm synchronisation, GradCache and image evaluation callbacks, none of which applies
to token batches. This loop reuses what does apply: the optimiser and its parameter groups and
the warm-up + cosine schedule (``optim/``), the run directory with ``config.yaml`` and
``metrics.jsonl`` records, atomic weights-only checkpoints (``runs/``), the step skip on a
non-finite loss and the ``--time-budget`` meaning (the schedule spans the budget).

The run directory::

    RUN/config.yaml             the resolved settings, by section
    RUN/tokenizer.json          the tokenizer (loaded with the run; none for n-gram runs,
                                whose featuriser is their settings and IDF a model buffer)
    RUN/metrics.jsonl           "type": data | step | epoch | final
    RUN/checkpoints/last.pt     encoder, optimiser (Transformer and hf: runs), position,
                                settings and tokenizer (hf: runs: the model folder's
                                config.json and tokenizer files, ``hf_files``, and where
                                they came from, ``hf_source``)

An ``hf:PATH`` run starts from the pretrained weights of the folder (read once, local files
only: :mod:`contrastlab.models.hf_folder`) and tokenises with its tokenizer; its checkpoint holds
all the folder's files but the weights file (the weights are the state dict), so the run
folder alone rebuilds the encoder. ``epochs: 0`` saves the encoder as loaded (no step).

Batch order: epoch e is a permutation drawn from a generator seeded with (seed, e).

The n-gram encoder's table has sparse gradients and is stepped by ``torch.optim.SparseAdam``
(Adam on the rows a batch touches, no weight decay) at the run's ``lr`` and schedule; the
``optimizer`` and ``weight_decay`` settings apply to the Transformer only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from contrastlab.atomic import write_text_atomic
from contrastlab.data.hf_tokenizer import HfTokenizer
from contrastlab.data.tokenizer import TextTokenizer
from contrastlab.methods.simcse import SimCSE
from contrastlab.models.hf_folder import folder_files, hf_folder, load_folder
from contrastlab.models.hf_text_encoder import HfTextEncoder
from contrastlab.models.ngram_encoder import NgramEncoder
from contrastlab.models.text_encoder import TextTransformer
from contrastlab.optim.optimizers import build_optimizer, default_lr
from contrastlab.runs.checkpoint import CHECKPOINT_FORMAT, save_atomic
from contrastlab.runs.device import resolve_device
from contrastlab.runs.directory import RunDirectory, default_run_name
from contrastlab.runs.text_run import TEXT_RUN_KIND
from contrastlab.training.small_loop import plan_loop, run_loop
from contrastlab.training.text_data import (
    NgramTrainingData,
    TextTrainingData,
    build_ngram_data,
    build_training_data,
)
from contrastlab.training.text_settings import TextRunSettings


@dataclass
class TextRunResult:
    """Where the run is and how it ended."""

    run_dir: Path
    steps: int
    last_loss: float
    stop_reason: str
    seconds: float


def _say_nothing(_: str) -> None:
    pass


def fit_text(settings: TextRunSettings, say: Callable[[str], None] = _say_nothing
             ) -> TextRunResult:
    """Train SimCSE as ``settings`` say; returns when the epochs or the time budget are spent."""
    train = settings.train
    if train.threads:
        torch.set_num_threads(train.threads)
    out = Path(train.out or default_run_name("simcse", train.data.split(",")[0]))
    run = RunDirectory(out)
    run.prepare(resume=False)
    device = resolve_device(train.device)
    torch.manual_seed(train.seed)
    ngrams = train.text_backbone == "ngrams"
    hf_path = hf_folder(train.text_backbone)
    pretrained: tuple[HfTextEncoder, dict[str, Any]] | None = None
    data: TextTrainingData | NgramTrainingData
    if hf_path is not None:
        hf_encoder, hf_tokenizer, source = load_folder(hf_path, settings.encoder.pool,
                                                       settings.encoder.max_length)
        pretrained = hf_encoder, source
        say(f"loaded {source['model_type']} from {source['path']} ({hf_encoder.output_dim}-d, "
            f"{sum(p.numel() for p in hf_encoder.parameters()) / 1e6:.1f} M parameters)")
        data = build_training_data(train, settings.method, hf_encoder.max_length, say,
                                   tokenizer=hf_tokenizer)
        run.log({"type": "data", "examples": len(data), "groups": data.groups,
                 "vocab_size": data.tokenizer.vocab_size, "skipped_rows": len(data.skipped),
                 "hf_source": source})
    elif ngrams:
        data = build_ngram_data(train, settings.method, settings.ngrams)
        run.log({"type": "data", "examples": len(data), "groups": data.groups,
                 "buckets": settings.ngrams.buckets, "idf_sentences": data.sentences,
                 "skipped_rows": len(data.skipped)})
    else:
        data = build_training_data(train, settings.method, settings.encoder.max_length, say)
        run.log({"type": "data", "examples": len(data), "groups": data.groups,
                 "vocab_size": data.tokenizer.vocab_size, "skipped_rows": len(data.skipped)})
    if data.skipped:
        say(f"skipped {len(data.skipped)} bad row(s); first: {data.skipped[0]}")
    resolved = settings.to_dict()
    write_text_atomic(run.config_path, yaml.safe_dump(resolved, sort_keys=False), "config")

    opt = settings.optimizer
    peak_lr = opt.lr if opt.lr is not None else default_lr(opt.name, train.batch_size)
    encoder: TextTransformer | NgramEncoder | HfTextEncoder
    if isinstance(data, NgramTrainingData):
        encoder = NgramEncoder(settings.ngrams, settings.encoder.dim, settings.encoder.dropout)
        encoder.set_idf(data.document_frequency, data.sentences)
        method = SimCSE(encoder, settings.method).to(device)
        optimizer: torch.optim.Optimizer = torch.optim.SparseAdam(
            list(method.parameters()), lr=peak_lr)
    else:
        if pretrained is not None:
            encoder = pretrained[0]
        else:
            assert isinstance(data.tokenizer, TextTokenizer)
            write_text_atomic(run.root / "tokenizer.json", data.tokenizer.to_json(),
                              "tokenizer")
            encoder = TextTransformer(data.tokenizer.vocab_size, settings.encoder,
                                      data.tokenizer.pad_id)
        method = SimCSE(encoder, settings.method).to(device)
        optimizer = build_optimizer(method, opt.name, peak_lr, opt.weight_decay, opt.momentum)

    plan = plan_loop(len(data), train.batch_size, train.epochs, train.time_budget)
    kind = "unsupervised"
    if settings.method.supervised:
        kind = ("supervised, CoSENT" if settings.method.supervised_loss == "cosent"
                else "supervised")
    say(f"simcse ({kind}, {train.text_backbone}): {len(data)} examples, {plan.describe()}, "
        f"device {device}")
    method.train()
    clip = None if ngrams else opt.clip_grad_norm

    def step(indices: torch.Tensor, number: int, progress: float
             ) -> tuple[float, dict[str, float]]:
        return _step(method, optimizer, data, indices, device, clip), {}

    end = run_loop(plan, items=len(data), seed=train.seed, log_every=train.log_every,
                   peak_lr=peak_lr, warmup_fraction=opt.warmup_fraction, optimizer=optimizer,
                   step=step, log=run.log, say=say)
    epoch, step_count, elapsed = end.epoch, end.step, end.elapsed
    last_loss, stop = end.last_loss, end.stop
    _save(run, method, optimizer, settings, data, {"epoch": epoch, "step": step_count,
                                                   "elapsed": elapsed},
          None if pretrained is None else pretrained[1])
    final = {"type": "final", "steps": step_count, "loss": last_loss, "stop_reason": stop,
             "elapsed": round(elapsed, 3)}
    run.log(final)
    return TextRunResult(out, step_count, last_loss, stop, elapsed)


def _step(method: SimCSE, optimizer: torch.optim.Optimizer,
          data: TextTrainingData | NgramTrainingData,
          indices: torch.Tensor, device: torch.device, clip: float | None) -> float:
    """One optimiser step; a non-finite loss or gradient skips it (returns the loss)."""
    batch = data.batch(indices).to(device)
    optimizer.zero_grad(set_to_none=True)
    loss = method(batch).loss
    value = float(loss.detach())
    if not math.isfinite(value):
        return value
    loss.backward()
    if clip is not None:
        norm = torch.nn.utils.clip_grad_norm_(method.parameters(), clip)
        if not torch.isfinite(norm):
            return math.nan
    optimizer.step()
    return value


def _save(run: RunDirectory, method: SimCSE, optimizer: torch.optim.Optimizer,
          settings: TextRunSettings, data: TextTrainingData | NgramTrainingData,
          position: dict[str, Any], hf_source: dict[str, Any] | None = None) -> None:
    state = {
        "format": CHECKPOINT_FORMAT,
        "kind": TEXT_RUN_KIND,
        "settings": settings.to_dict(),
        "model": method.state_dict(),
        "position": position,
    }
    if isinstance(data, TextTrainingData):  # (the n-gram table's Adam moments would triple
        state["optimizer"] = optimizer.state_dict()  # its size, and nothing resumes yet)
        state.update({"vocab_size": data.tokenizer.vocab_size, "pad_id": data.tokenizer.pad_id})
        if isinstance(data.tokenizer, HfTokenizer):
            assert isinstance(method.backbone, HfTextEncoder)
            state.update({"hf_files": folder_files(method.backbone, data.tokenizer),
                          "hf_source": hf_source or {}})
        else:
            state["tokenizer"] = data.tokenizer.to_json()
    save_atomic(state, run.checkpoint_path)


__all__ = ["TextRunResult", "fit_text"]
