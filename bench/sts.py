"""STS Benchmark: sentence encoders trained from scratch with SimCSE on this machine, against
TF-IDF baselines of the same session, all scored on the STS-B test set (Spearman x 100 of cosine
similarity, the standard protocol; contrastlab.eval.sts).

* ``unsup``: the recipe ``sts-simcse-cpu`` on the train + dev sentences as unlabeled text (no
  score is read);
* ``sup``: the recipe ``sts-simcse-sup-cpu`` on the train pairs (score >= 4 as positives);
* baselines: TF-IDF (scikit-learn) fitted on the train + dev sentences, over words and over
  character 2-4-grams (``char_wb``, sublinear tf), cosine -> Spearman.

    python bench/sts.py [--settings unsup,sup] [--time-budget 900] [--threads 2] [--markdown]

Every run trains a fresh tokenizer on its own training text. One JSON object on stdout.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import emit, machine, shared_path
from rich.console import Console

from contrastlab.data.text import read_pairs, read_sentences
from contrastlab.eval.sts import evaluate_sts_run, spearman
from contrastlab.recipes import load_text_recipe
from contrastlab.training.text_settings import resolve_text_settings
from contrastlab.training.text_trainer import fit_text

RECIPES = {"unsup": "sts-simcse-cpu", "sup": "sts-simcse-sup-cpu"}


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


def train_and_score(setting: str, folder: Path, budget: float | None, seed: int,
                    threads: int | None, out: Path) -> dict[str, Any]:
    data = {"unsup": f"{folder / 'sts-train.csv'},{folder / 'sts-dev.csv'}",
            "sup": str(folder / "sts-train.csv")}[setting]
    flags: dict[str, Any] = {"data": data, "out": str(out), "seed": seed, "device": "cpu",
                             "threads": threads}
    if budget is not None:
        flags["time_budget"] = budget
    recipe = RECIPES[setting]
    settings = resolve_text_settings(flags, recipe=load_text_recipe(recipe).settings,
                                     recipe_name=recipe)
    console = Console(stderr=True)
    start = time.perf_counter()
    result = fit_text(settings, say=lambda text: console.print(f"[{setting}] {text}",
                                                               highlight=False))
    wall = time.perf_counter() - start
    test = evaluate_sts_run(out, folder / "sts-test.csv")
    dev = evaluate_sts_run(out, folder / "sts-dev.csv")
    return {"recipe": recipe, "train_seconds": round(result.seconds, 1),
            "wall_seconds": round(wall, 1), "steps": result.steps,
            "test_spearman": round(test["spearman"], 2), "dev_spearman": round(dev["spearman"], 2),
            "test_pearson": round(test["pearson"], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--settings", default="unsup,sup", help="unsup, sup or both")
    parser.add_argument("--time-budget", type=float, default=None,
                        help="seconds of training per setting (default: the recipe's)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
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
            parser.error(f"unknown setting '{setting}' (unsup, sup)")
        scores = train_and_score(setting, folder, args.time_budget, args.seed, args.threads,
                                 root / setting)
        figures[setting] = scores
        rows.append(f"| SimCSE {setting} ({scores['recipe']}) | {scores['train_seconds']:.0f} s"
                    f" | {scores['test_spearman']:.2f} |")
    if args.out is None:
        shutil.rmtree(root, ignore_errors=True)
    figures.update(machine())
    emit(figures, "\n".join(rows) if args.markdown else None)


if __name__ == "__main__":
    main()
