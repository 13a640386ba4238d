"""The training loop of text runs (SimCSE on a :class:`TextTransformer`, on a bag-of-n-grams
:class:`NgramEncoder` or on a local Hugging Face model, :class:`HfTextEncoder`;
``text_backbone``).

A loop of its own rather than a mode of :class:`contrastlab.training.trainer.Trainer`: that
trainer is built around an in-memory image tensor, batched augmentations on the device, channels
last, batch-norm synchronisation, GradCache and image evaluation callbacks, none of which applies
to token batches. This loop reuses what does apply: the optimiser and its parameter groups and
the warm-up + cosine schedule (``optim/``), the run directory with ``config.yaml`` and
``metrics.jsonl`` records, atomic checkpoints that load weights-only (``runs/``), the step
skip on a non-finite loss, the ``--time-budget`` meaning (the schedule spans the budget), and
``--resume`` / ``--checkpoint-every`` / the stop at SIGINT or SIGTERM with their meanings (the
loop: :mod:`contrastlab.training.small_loop`; the settings: ``small_resume``).

The run directory::

    RUN/config.yaml             the resolved settings, by section
    RUN/tokenizer.json          the tokenizer (loaded with the run; none for n-gram runs,
                                whose featuriser is their settings and IDF a model buffer, nor
                                for hf: runs, whose tokenizer files are in the checkpoint)
    RUN/metrics.jsonl           "type": data | step | epoch | final
    RUN/checkpoints/last.pt     settings, encoder, optimiser, loop position, random states,
                                example count, tokenizer (Transformer runs; hf: runs: the
                                model folder's config.json and tokenizer files, ``hf_files``,
                                and where they came from, ``hf_source``); written at the end
                                of every epoch, every ``checkpoint_every`` steps, at a stop
                                and, with ``epochs: 0``, once with the encoder as built

An ``hf:PATH`` run starts from the pretrained weights of the folder (read once, local files
only: :mod:`contrastlab.runs.hf_folder`) and tokenises with its tokenizer; its checkpoint holds
all the folder's files but the weights file (the weights are the state dict), so the run
folder alone rebuilds the encoder: ``eval sts`` and ``--resume`` do not read the model folder
again. ``epochs: 0`` saves the encoder as loaded (no step).

Under ``torchrun --nproc_per_node P -m contrastlab train-text ...`` (Transformer encoder) every
process runs this loop on its share of each global batch (``batch_size`` is the global batch),
SimCSE's loss sees the whole batch's positives and negatives, gradients are averaged and rank 0
alone writes the run folder (:mod:`contrastlab.training.small_ddp`; dropout and token drop are
drawn per rank). The n-gram encoder (sparse gradients, SparseAdam) and CoSENT (a ranking over
every pair of the batch, without a per-rank form) are refused under torchrun.

Batch order: epoch e is a permutation drawn from a generator seeded with (seed, e); dropout and
token drop draw from torch's global generator, whose state the checkpoint holds, so a resumed
run ends with the same weights as one that was never interrupted.

The n-gram encoder's table has sparse gradients and is stepped by ``torch.optim.SparseAdam``
(Adam on the rows a batch touches, no weight decay) at the run's ``lr`` and schedule; the
``optimizer`` and ``weight_decay`` settings apply to the Transformer only. Its checkpoint holds
the table's and the moments' rows of the training text's buckets only; the others are the
seeded initialisation and zeros (:mod:`contrastlab.runs.ngram_table`).
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
from contrastlab.data.tokenizer import TextTokenizer
from contrastlab.methods.simcse import SimCSE
from contrastlab.models.hf_text_encoder import HfTextEncoder
from contrastlab.models.ngram_encoder import NgramEncoder
from contrastlab.models.text_encoder import TextTransformer
from contrastlab.optim.optimizers import build_optimizer, default_lr
from contrastlab.runs.checkpoint import CHECKPOINT_FORMAT, save_atomic
from contrastlab.runs.device import resolve_device
from contrastlab.runs.directory import RunDirectory, default_run_name
from contrastlab.runs.hf_folder import hf_folder
from contrastlab.runs.ngram_table import (
    TABLE_KEY,
    pack_sparse_adam,
    pack_table,
    table_digest,
    touched_rows,
    unpack_sparse_adam,
    unpack_table,
)
from contrastlab.runs.text_run import TEXT_RUN_KIND
from contrastlab.training.ddp import Distributed, setup_distributed
from contrastlab.training.pretrained_text import PretrainedText, pretrained_text_tower
from contrastlab.training.signals import StopRequest
from contrastlab.training.small_ddp import (
    broadcast_module,
    check_global_batch,
    local_rows,
    rank_random_states,
    refuse_under_torchrun,
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
    #: False on the ranks other than 0 under torchrun (they print and evaluate nothing)
    is_main: bool = True


def _say_nothing(_: str) -> None:
    pass


@dataclass
class _Model:
    """What a text run trains and checkpoints: the method, its optimiser and, for an n-gram
    encoder, the table's touched rows and the digest of its initialisation; for an ``hf:``
    encoder, the model folder's files."""

    method: SimCSE
    optimizer: torch.optim.Optimizer
    ngram_rows: torch.Tensor | None = None
    init_digest: str = ""
    pretrained: PretrainedText | None = None

    @property
    def encoder(self) -> NgramEncoder:
        assert isinstance(self.method.backbone, NgramEncoder)
        return self.method.backbone


def fit_text(settings: TextRunSettings, say: Callable[[str], None] = _say_nothing,
             stop_after_step: int | None = None) -> TextRunResult:
    """Train SimCSE as ``settings`` say; returns when the epochs or the time budget are spent
    (or at a SIGINT / SIGTERM, or once ``stop_after_step`` steps are done: with a checkpoint,
    stop reason the signal's name or ``stop_after_step``). ``settings.train.resume``: continue
    the run in ``out`` (:mod:`contrastlab.training.small_resume`)."""
    train = settings.train
    if train.threads:
        torch.set_num_threads(train.threads)
    ddp = setup_distributed(resolve_device(train.device))
    return run_in_group(ddp, lambda: _fit_text(settings, ddp, say if ddp.is_main else _say_nothing,
                                              stop_after_step))


def _fit_text(settings: TextRunSettings, ddp: Distributed, say: Callable[[str], None],
              stop_after_step: int | None) -> TextRunResult:
    train = settings.train
    if train.text_backbone == "ngrams":
        refuse_under_torchrun(ddp, "train-text --text-backbone ngrams",
                              "the n-gram table's sparse gradients (SparseAdam) are not averaged "
                              "over processes; use --text-backbone transformer")
    if settings.method.supervised and settings.method.supervised_loss == "cosent":
        refuse_under_torchrun(ddp, "train-text --supervised-loss cosent",
                              "CoSENT ranks every pair of the batch against every other and has "
                              "no per-process form here; use --supervised-loss simcse")
    out = Path(ddp.from_main(train.out or default_run_name("simcse",
                                                           train.data.split(",")[0])))
    run = ddp.run_directory(str(out), train.resume)
    saved = load_resumable(out, TEXT_RUN_KIND, "train-text") if train.resume else None
    device = ddp.device
    torch.manual_seed(train.seed)
    hf_path = hf_folder(train.text_backbone)
    pretrained = (None if hf_path is None
                  else pretrained_text_tower(hf_path, settings.encoder, saved, out, say))
    data: TextTrainingData | NgramTrainingData
    if pretrained is not None:
        data = build_training_data(train, settings.method, pretrained.encoder.max_length, say,
                                   pretrained.tokenizer)
        if saved:
            check_examples(saved, len(data), out)
        run.log({"type": "data", "examples": len(data), "groups": data.groups,
                 "vocab_size": data.tokenizer.vocab_size, "skipped_rows": len(data.skipped),
                 "hf_source": pretrained.source})
    elif train.text_backbone == "ngrams":
        data = build_ngram_data(train, settings.method, settings.ngrams)
        if saved:
            check_examples(saved, len(data), out)
        run.log({"type": "data", "examples": len(data), "groups": data.groups,
                 "buckets": settings.ngrams.buckets, "idf_sentences": data.sentences,
                 "skipped_rows": len(data.skipped)})
    else:
        data = _read_on_every_rank(settings, ddp, say, TextTokenizer.from_json(
            saved["tokenizer"]) if saved else None)
        if saved:
            check_examples(saved, len(data), out)
        run.log({"type": "data", "examples": len(data), "groups": data.groups,
                 "vocab_size": data.tokenizer.vocab_size, "skipped_rows": len(data.skipped)})
    if data.skipped:
        say(f"skipped {len(data.skipped)} bad row(s); first: {data.skipped[0]}")
    plan = plan_loop(len(data), train.batch_size, train.epochs, train.time_budget)
    local_batch = check_global_batch(ddp, plan.batch_size, "train-text")
    ddp.on_main(lambda: write_text_atomic(
        run.config_path, yaml.safe_dump(settings.to_dict(), sort_keys=False), "config"))

    opt = settings.optimizer
    peak_lr = opt.lr if opt.lr is not None else default_lr(opt.name, train.batch_size)
    model = _build(settings, data, device, peak_lr, run, ddp, pretrained)
    broadcast_module(ddp, model.method)
    seed_ranks(ddp, train.seed)
    position = None
    if saved:
        position = _restore(saved, model, out)
        restore_rank_random_state(ddp, saved, train.seed)
    kind = "unsupervised"
    if settings.method.supervised:
        kind = ("supervised, CoSENT" if settings.method.supervised_loss == "cosent"
                else "supervised")
    say(f"simcse ({kind}, {train.text_backbone}): {len(data)} examples, {plan.describe()}, "
        f"device {device}"
        + (f", {ddp.world_size} processes of {local_batch} examples" if ddp.enabled else "")
        + (f"; resumed at step {position.step}" if position else ""))
    model.method.train()
    clip = None if model.ngram_rows is not None else opt.clip_grad_norm

    def step(indices: torch.Tensor, number: int, progress: float
             ) -> tuple[float, dict[str, float]]:
        return _step(model.method, model.optimizer, data, local_rows(ddp, indices), device,
                     clip, ddp), {}

    saves = 0

    def save(position: LoopPosition) -> None:
        nonlocal saves
        rank_rng = rank_random_states(ddp)  # a collective: every rank
        ddp.on_main(lambda: _save(run, model, settings, data, position, rank_rng))
        saves += 1

    with StopRequest() as request:
        end = run_loop(plan, items=len(data), seed=train.seed, log_every=train.log_every,
                       peak_lr=peak_lr, warmup_fraction=opt.warmup_fraction,
                       optimizers=[model.optimizer], step=step, log=run.log, say=say,
                       save=save, checkpoint_every=train.checkpoint_every, start=position,
                       should_stop=stop_check(request, stop_after_step), ddp=ddp)
    if not saves:  # epochs 0 (or a resumed run already past its epochs): the encoder as it is
        save(position or LoopPosition())
    if end.stop in ("done", "time_budget"):
        run.log({"type": "final", "steps": end.step, "loss": end.last_loss,
                 "stop_reason": end.stop, "elapsed": round(end.elapsed, 3)})
    return TextRunResult(out, end.step, end.last_loss, end.stop, end.elapsed, ddp.is_main)


def _read_on_every_rank(settings: TextRunSettings, ddp: Distributed, say: Callable[[str], None],
                        tokenizer: TextTokenizer | None) -> TextTrainingData:
    """:func:`build_training_data`; under torchrun rank 0 reads first (a bad file stops every
    rank with its error) and every rank then tokenises with rank 0's tokenizer."""
    train, length = settings.train, settings.encoder.max_length

    def read(tokenizer: TextTokenizer | None) -> TextTrainingData:
        return build_training_data(train, settings.method, length, say, tokenizer)

    if not ddp.enabled:
        return read(tokenizer)
    data = ddp.on_main(lambda: read(tokenizer))
    shared = ddp.from_main(data.tokenizer.to_json() if data is not None else None)
    return data if data is not None else read(TextTokenizer.from_json(shared))


def _build(settings: TextRunSettings, data: TextTrainingData | NgramTrainingData,
           device: torch.device, peak_lr: float, run: RunDirectory,
           ddp: Distributed, pretrained: PretrainedText | None = None) -> _Model:
    """The method around a fresh encoder (``pretrained``: the hf: run's), and its optimiser."""
    opt = settings.optimizer
    if isinstance(data, NgramTrainingData):
        encoder = NgramEncoder(settings.ngrams, settings.encoder.dim, settings.encoder.dropout,
                               seed=settings.train.seed)
        digest = table_digest(encoder.table.weight)
        encoder.set_idf(data.document_frequency, data.sentences)
        method = SimCSE(encoder, settings.method).to(device)
        table = encoder.table.weight
        if any(p is not table for p in method.parameters() if p.requires_grad):
            raise NotImplementedError("an n-gram SimCSE with dense parameters besides the table "
                                      "needs a dense optimiser beside SparseAdam")
        return _Model(method, torch.optim.SparseAdam([table], lr=peak_lr),
                      touched_rows(*(corpus.encoded.ids for corpus in data.corpora)), digest)
    backbone: TextTransformer | HfTextEncoder
    if pretrained is not None:
        backbone = pretrained.encoder
    else:
        assert isinstance(data.tokenizer, TextTokenizer)
        tokenizer = data.tokenizer
        ddp.on_main(lambda: write_text_atomic(run.root / "tokenizer.json", tokenizer.to_json(),
                                              "tokenizer"))
        backbone = TextTransformer(tokenizer.vocab_size, settings.encoder, tokenizer.pad_id)
    method = SimCSE(backbone, settings.method).to(device)
    return _Model(method, build_optimizer(method, opt.name, peak_lr, opt.weight_decay,
                                          opt.momentum), pretrained=pretrained)


def _restore(saved: dict[str, Any], model: _Model, out: Path) -> LoopPosition:
    """Load the weights, optimiser and random states of a checkpoint into ``model``."""
    if model.ngram_rows is None:
        model.method.load_state_dict(saved["model"])
        model.optimizer.load_state_dict(saved["optimizer"])
    else:
        record = saved["ngram_table"]
        unpack_table(model.encoder, record, f"the checkpoint of '{out}'")
        missing = model.method.load_state_dict(saved["model"], strict=False).missing_keys
        assert missing == [TABLE_KEY], missing
        unpack_sparse_adam(model.optimizer, saved["optimizer"], record["rows"])
        model.ngram_rows = touched_rows(model.ngram_rows, record["rows"])
    return restore_training_state(saved)


def _step(method: SimCSE, optimizer: torch.optim.Optimizer,
          data: TextTrainingData | NgramTrainingData,
          indices: torch.Tensor, device: torch.device, clip: float | None,
          ddp: Distributed) -> float:
    """One optimiser step; a non-finite loss or gradient skips it (returns the loss, the
    global batch's: averaged over the ranks under torchrun)."""
    batch = data.batch(indices).to(device)
    optimizer.zero_grad(set_to_none=True)
    loss = method(batch).loss
    value = float(ddp.mean_step(loss.detach(), {})[0])
    if not math.isfinite(value):
        return value
    loss.backward()
    ddp.average_gradients(method.parameters())
    if clip is not None:
        norm = torch.nn.utils.clip_grad_norm_(method.parameters(), clip)
        if not torch.isfinite(norm):
            return math.nan
    optimizer.step()
    return value


def _save(run: RunDirectory, model: _Model, settings: TextRunSettings,
          data: TextTrainingData | NgramTrainingData, position: LoopPosition,
          rank_rng: list[dict[str, Any]] | None = None) -> None:
    """The checkpoint: settings, weights, optimiser, position and random states (an n-gram
    table as its touched rows: :mod:`contrastlab.runs.ngram_table`; an hf: model with its
    folder's config and tokenizer files)."""
    state: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "kind": TEXT_RUN_KIND,
        "settings": settings.to_dict(),
        **training_state(position, len(data)),
        **({"rank_rng": rank_rng} if rank_rng else {}),
    }
    if model.ngram_rows is not None:
        state["model"] = {key: value for key, value in model.method.state_dict().items()
                          if key != TABLE_KEY}
        state["ngram_table"] = pack_table(model.encoder, model.ngram_rows, model.init_digest)
        state["optimizer"] = pack_sparse_adam(model.optimizer, model.ngram_rows)
    else:
        assert isinstance(data, TextTrainingData)
        state["model"] = model.method.state_dict()
        state["optimizer"] = model.optimizer.state_dict()
        state.update({"vocab_size": data.tokenizer.vocab_size, "pad_id": data.tokenizer.pad_id})
        if model.pretrained is not None:
            state.update({"hf_files": model.pretrained.files,
                          "hf_source": model.pretrained.source})
        else:
            assert isinstance(data.tokenizer, TextTokenizer)
            state["tokenizer"] = data.tokenizer.to_json()
    save_atomic(state, run.checkpoint_path)


__all__ = ["TextRunResult", "fit_text"]
