"""CIFAR-10 zero-shot: CLIP (or SigLIP) trained on CIFAR-10 images paired with *templated*
captions, scored on the test set with held-out templates, beside kNN and linear probes of the
same image tower.

The captions are made here, not read: every training image gets one caption, a training template
(drawn with the seed) filled with its class name ("a photo of a dog."). They are not real
captions: they say nothing but the class, so this checks the image-text path end to end (pair
table -> tokenizer -> two towers -> zero-shot), not what CLIP learns from natural language.
Zero-shot uses templates never seen in training (``HELD_OUT_TEMPLATES``, disjoint from
``TRAIN_TEMPLATES``), ensembled per class; it is reported with the training templates too.

    python bench/cifar10_zeroshot.py [--recipe cifar10-clip-templated-cpu] [--data /tmp/cifar10]
        [--time-budget 180 | --epochs N] [--method clip|siglip] [--threads 2] [--markdown]
        [--tiny] [--text-backbone hf:/tmp/minilm [--lock-text]]

The run's settings are a shipped image-text recipe's (``contrastlab train-pairs --recipe NAME``:
``cifar10-clip-templated-cpu``, or ``cifar10-lit-minilm-cpu`` with ``--text-backbone hf:PATH``),
so the figure and a user's run cannot drift apart; the flags above override it.

``--data`` is a ``train/<class>/*.jpg`` + ``test/<class>/*.jpg`` tree (CIFAR-10 as JPEGs:
``tar xzf ../shared/data/cifar10-jpg.tar.gz -C /tmp/cifar10``). ``--tiny`` takes 16 training and
8 test images per class and a few seconds of training (a smoke test). ``--text-backbone
hf:PATH`` takes a local Hugging Face model folder (e.g. all-MiniLM-L6-v2) as the text tower
instead of the one-block Transformer (its tokenizer instead of one trained on the captions),
``--lock-text`` keeps it frozen. One JSON object on stdout.
"""

from __future__ import annotations

import argparse
import csv
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from common import emit, machine
from rich.console import Console

from contrastlab.data.captions import load_image_captions
from contrastlab.data.image_folder import read_evaluation_images
from contrastlab.eval.knn import knn_accuracy
from contrastlab.eval.linear import linear_probe
from contrastlab.eval.zeroshot import class_name, topk_accuracy, zeroshot_weights
from contrastlab.recipes import load_pair_recipe
from contrastlab.runs.pair_run import load_pair_run
from contrastlab.training.pair_settings import resolve_pair_settings
from contrastlab.training.pair_trainer import fit_pairs

TRAIN_TEMPLATES = ("a photo of a {}.", "a picture of a {}.", "an image of a {}.",
                   "a {} in the picture.", "this is a {}.")
#: from CLIP's CIFAR-10 prompt list; no template shares its wording with the training ones
HELD_OUT_TEMPLATES = ("a blurry photo of a {}.", "a black and white photo of the {}.",
                      "a low contrast photo of a {}.", "a pixelated photo of the {}.",
                      "a jpeg corrupted photo of a {}.")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")

#: what the bench adds to the recipe's settings (flat keys of `contrastlab train-pairs`)
MACHINE: dict[str, Any] = {"log_every": 50, "device": "cpu"}
TINY: dict[str, Any] = {"batch_size": 32, "dim": 32, "projection_dim": 32,
                        "vocab_size": 200, "log_every": 5}


def write_captions(train: Path, out: Path, seed: int, per_class: int | None
                   ) -> tuple[list[str], list[int]]:
    """Write ``out`` (path,caption with absolute paths): each training image once, with a
    training template drawn by ``seed``; returns the class folders and each row's label."""
    rng = random.Random(seed)
    classes = sorted(d.name for d in train.iterdir() if d.is_dir())
    labels: list[int] = []
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "caption"])
        for label, folder in enumerate(classes):
            files = sorted(p for p in (train / folder).iterdir()
                           if p.suffix.lower() in IMAGE_EXTENSIONS)[:per_class]
            for path in files:
                writer.writerow([str(path.resolve()),
                                 rng.choice(TRAIN_TEMPLATES).format(class_name(folder))])
                labels.append(label)
    return classes, labels


def first_per_class(labels: torch.Tensor, count: int) -> list[int]:
    kept: list[int] = []
    for label in labels.unique().tolist():
        kept += (labels == label).nonzero().flatten()[:count].tolist()
    return sorted(kept)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="/tmp/cifar10", type=Path)
    parser.add_argument("--recipe", default="cifar10-clip-templated-cpu",
                        help="the image-text recipe whose settings are trained (default "
                             "cifar10-clip-templated-cpu; cifar10-lit-minilm-cpu needs "
                             "--text-backbone hf:PATH)")
    parser.add_argument("--method", default=None, choices=("clip", "siglip"),
                        help="override the recipe's method")
    parser.add_argument("--time-budget", type=float, default=None,
                        help="seconds of training instead of the recipe's epochs")
    parser.add_argument("--epochs", type=int, default=None,
                        help="train this many epochs instead of --time-budget seconds (equal "
                             "steps for comparing methods on a machine shared with others)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="keep the run here (default: deleted)")
    parser.add_argument("--tiny", action="store_true", help="16 / 8 images per class, 5 s")
    parser.add_argument("--text-backbone", default=None,
                        help="override the recipe's: transformer or hf:PATH, a local Hugging "
                             "Face model folder")
    parser.add_argument("--lock-text", action="store_true",
                        help="freeze the hf:PATH text tower (a locked text tower)")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    if not (args.data / "train").is_dir() or not (args.data / "test").is_dir():
        parser.error(f"{args.data} needs train/ and test/ class folders (see the docstring)")

    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bench-zeroshot-"))
    out = Path(args.out) if args.out else work / "run"
    table = work / "captions.csv"
    classes, row_labels = write_captions(args.data / "train", table, args.seed,
                                         16 if args.tiny else None)
    recipe = load_pair_recipe(args.recipe).settings
    overrides: dict[str, Any] = {key: value for key, value in (
        ("method", args.method), ("text_backbone", args.text_backbone),
        ("time_budget", 5.0 if args.tiny else args.time_budget), ("epochs", args.epochs),
    ) if value is not None}
    if args.lock_text:
        overrides["lock_text"] = True
    flags = {**recipe, **MACHINE, **(TINY if args.tiny else {}), "data": str(table),
             "out": str(out), "seed": args.seed, "threads": args.threads, **overrides}
    args.method = flags["method"]
    args.text_backbone = flags.get("text_backbone", "transformer")
    args.lock_text = bool(flags.get("lock_text", False))
    settings = resolve_pair_settings(flags)
    console = Console(stderr=True)
    result = fit_pairs(settings, say=lambda text: console.print(text, highlight=False))

    loaded = load_pair_run(out)
    pairs = load_image_captions(table, loaded.transform.output_size)
    train_labels = torch.empty(pairs.images.shape[0], dtype=torch.long)
    train_labels[pairs.image_index] = torch.as_tensor(row_labels)
    test = read_evaluation_images(args.data, skip_bad_files=False,
                                  image_size=loaded.transform.output_size)
    if args.tiny:
        test = test.subset(first_per_class(test.labels, 8))
    names = [class_name(c) for c in classes]
    if [class_name(c) for c in (test.classes or [])] != names:
        raise SystemExit("the train/ and test/ class folders differ")
    test_embeddings = loaded.embed_images(test.images)
    figures: dict[str, Any] = {"benchmark": "cifar10_zeroshot", "method": args.method,
                               "text_backbone": args.text_backbone,
                               "lock_text": args.lock_text,
                               "tiny": args.tiny, "train_pairs": len(pairs),
                               "test_images": len(test), "steps": result.steps,
                               "train_seconds": round(result.seconds, 1)}
    for name, templates in (("held_out", HELD_OUT_TEMPLATES), ("train", TRAIN_TEMPLATES)):
        weights = zeroshot_weights(loaded.embed_texts, names, templates)
        accuracy = topk_accuracy(test_embeddings, test.labels, weights)
        figures[f"zeroshot_top1_{name}_templates"] = round(100 * accuracy[1], 2)
        figures[f"zeroshot_top5_{name}_templates"] = round(100 * accuracy[5], 2)
    train_features = loaded.embed_images(pairs.images, features=True)
    test_features = loaded.embed_images(test.images, features=True)
    figures["knn_top1"] = round(100 * knn_accuracy(train_features, train_labels, test_features,
                                                   test.labels), 2)
    probe = linear_probe(train_features, train_labels, test_features, test.labels)
    figures["linear_top1"] = round(100 * probe["linear_top1"], 2)
    figures["wall_seconds"] = round(time.perf_counter() - started, 1)
    shutil.rmtree(work, ignore_errors=True)
    figures.update(machine())
    text = ("1-block text encoder" if args.text_backbone == "transformer" else
            f"{args.text_backbone}{' (locked)' if args.lock_text else ''}")
    row = (f"| {args.method}, convnet-small + {text} | "
           f"{figures['train_seconds']:.0f} s "
           f"({result.steps} steps) | {figures['zeroshot_top1_held_out_templates']:.2f} | "
           f"{figures['zeroshot_top1_train_templates']:.2f} | {figures['knn_top1']:.2f} | "
           f"{figures['linear_top1']:.2f} |")
    emit(figures, row if args.markdown else None)


if __name__ == "__main__":
    main()
