"""The text and image-text halves of ``contrastlab embed``, ``export`` and ``search``
(:mod:`contrastlab.serve.cli` calls them when a run is a text or image-text run, or a query or
input is text).

* embed ``--texts FILE``: one embedding per sentence (non-blank line of ``.txt``/``.txt.gz``,
  or both sentences of each pair of a pairs file: :func:`contrastlab.data.text.read_sentences`),
  in file order; row ``i`` has id ``i`` and the sentence as its text.
* embed ``--data`` of an image-text run: the image tower; pair data (a caption table, or a
  folder whose images have sidecar captions) is read by :mod:`contrastlab.data.captions`, each
  image once (id: its path relative to the folder or the table's folder), with its captions
  (joined by `` | ``) as its text.
* export: ONNX only, one file per tower (``RUN/export/text-encoder.onnx`` for a text run;
  ``image-tower.onnx`` and ``text-tower.onnx`` for an image-text run, ``--tower`` picks one).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from contrastlab.errors import ConfigError, DataError
from contrastlab.serve.embed import EmbeddingTable, save_embeddings
from contrastlab.serve.parity import ParityReport
from contrastlab.serve.progress import StderrProgress
from contrastlab.serve.text_encoders import (
    TextEncoder,
    is_text_artefact,
    read_run_settings,
    run_kind,
    text_encoder_from_artefact,
    text_encoder_from_run,
)

TOWERS = ("image", "text", "both")
CAPTION_JOIN = " | "


def open_text_encoder(run: Path | None, artefact: Path | None, device: torch.device,
                      what: str) -> TextEncoder:
    """The text encoder of a run or of a text artefact; ``what`` names the input in errors."""
    if (run is None) == (artefact is None):
        raise ConfigError("give exactly one of --run (a run directory) and --artefact (an "
                          "exported encoder)")
    if run is not None:
        if run_kind(run) == "image":
            raise ConfigError(f"'{run}' is an image run (`contrastlab train`): it has no text "
                              f"encoder, so it cannot embed {what}; give a run of `contrastlab "
                              "train-text` or `train-pairs`")
        return text_encoder_from_run(run, device)
    if not is_text_artefact(artefact):  # type: ignore[arg-type]
        raise ConfigError(f"artefact '{artefact}' is an image encoder: it cannot embed {what}; "
                          "give the text tower exported from a text or image-text run")
    return text_encoder_from_artefact(artefact, device)  # type: ignore[arg-type]


def read_texts(spec: str) -> list[str]:
    """The sentences of ``spec`` (files comma-separated), in order, duplicates kept."""
    from contrastlab.data.text import read_sentences
    from contrastlab.training.text_settings import data_paths

    texts: list[str] = []
    for path in data_paths(spec):
        texts += read_sentences(path).texts
    return texts


def embed_texts_file(out: Path, encoder: TextEncoder, spec: str, batch_size: int,
                     normalize: bool, source: str, progress: StderrProgress) -> dict[str, Any]:
    """Embed the sentences of ``spec`` with ``encoder`` into ``out``; the command's summary."""
    with progress.phase(f"reading {spec}", None):
        texts = read_texts(spec)
    with progress.phase(f"embedding {len(texts):,} texts", len(texts)) as advance:
        vectors = encoder.embed_texts(texts, batch_size, normalize, advance)
    meta = {**encoder.card.summary(), "tower": "text", "normalized": normalize, "data": spec,
            "split": "all", "source": source}
    table = EmbeddingTable(vectors, [str(i) for i in range(len(texts))], meta=meta, texts=texts)
    with progress.phase(f"writing {out}", None):
        written = save_embeddings(table, out)
    return {"out": str(out), "files": [str(p) for p in written], "count": len(table),
            "dim": int(vectors.shape[1]), "labels": False, "normalized": normalize,
            "texts": True}


def is_caption_data(spec: str) -> bool:
    """Whether ``spec`` is pair data read by captions rather than the image path: a caption
    table, or a folder whose first image has a ``.txt`` caption beside it."""
    from contrastlab.data.captions import TABLE_SUFFIXES
    from contrastlab.data.image_folder import list_image_tree
    from contrastlab.data.text import base_suffix

    path = Path(spec).expanduser()
    if path.is_file():
        return base_suffix(path) in TABLE_SUFFIXES
    if not path.is_dir():
        return False
    files, _ = list_image_tree(path)
    return bool(files) and (path / files[0]).with_suffix(".txt").is_file()


def read_caption_images(spec: str, image_size: int, skip_bad_files: bool
                        ) -> tuple[torch.Tensor, list[str], list[str]]:
    """Each image of pair data once: uint8 images, their ids and their captions joined."""
    from contrastlab.data.captions import load_image_captions

    pairs = load_image_captions(spec, image_size, skip_bad_files)
    captions: list[list[str]] = [[] for _ in pairs.image_ids]
    for caption, image in zip(pairs.captions, pairs.image_index.tolist(), strict=True):
        captions[image].append(caption)
    path = Path(spec).expanduser()
    base = path if path.is_dir() else path.parent
    return (pairs.images, [_relative(name, base) for name in pairs.image_ids],
            [CAPTION_JOIN.join(c) for c in captions])


def _relative(name: str, base: Path) -> str:
    """``name`` relative to ``base`` when it lies below it (as image folders' ids are)."""
    try:
        return Path(name).relative_to(base).as_posix()
    except ValueError:
        return name


def space_meta(card_json: dict[str, Any]) -> dict[str, Any]:
    """The space keys of an image encoder's card (an image-text run's image tower), for the
    embeddings' metadata; {} for an image run's encoder."""
    meta = card_json.get("model_meta") or {}
    return {key: meta[key] for key in ("space", "run_kind", "kind", "tower") if key in meta}


# ---------------------------------------------------------------------- export

def _summary_line(report: ParityReport, what: str) -> str:
    return (f"parity: mean cosine {report.mean_cosine:.6f} (min {report.min_cosine:.6f}, "
            f"{report.samples} {what}; needs >= {report.cosine_threshold})")


def export_run_towers(run: Path, kind: str, fmt: str, out: Path | None, tower: str | None,
                      int8: bool, features: str | None, parity: bool, parity_samples: int,
                      progress: StderrProgress, refuse_existing: Any
                      ) -> tuple[dict[str, Any], list[str], bool]:
    """Export the towers of a text (``kind`` ``text``) or image-text run as ONNX.

    Returns the JSON result, the lines to print and whether every parity check passed.
    """
    if fmt != "onnx":
        raise ConfigError(f"{kind} runs export to ONNX only (--format onnx), not {fmt}: "
                          "TorchScript and safetensors artefacts are made for image runs (the run "
                          "folder itself is what PyTorch loads: contrastlab.runs.text_run / "
                          "pair_run)")
    if int8:
        raise ConfigError("--int8 applies to image runs' encoders; a text or image-text run's "
                          "towers export in float32")
    if features is not None:
        raise ConfigError("--features applies to image runs; an image-text run's image tower is "
                          "exported into the shared space (projector features)")
    if kind == "text" and tower not in (None, "text"):
        raise ConfigError(f"a text run has only a text tower; --tower {tower} does not apply")
    tower = tower or ("text" if kind == "text" else "both")
    if tower not in TOWERS:
        from contrastlab.errors import unknown_name

        raise unknown_name("tower", tower, TOWERS)
    towers = ["image", "text"] if tower == "both" else [tower]
    if out is not None and len(towers) > 1:
        raise ConfigError("--out names one file: give --tower image or --tower text with it, "
                          "or leave --out out (both towers go to RUN/export/)")
    defaults = {"image": "image-tower.onnx",
                "text": "text-encoder.onnx" if kind == "text" else "text-tower.onnx"}
    paths = {name: out or Path(run) / "export" / defaults[name] for name in towers}
    refuse_existing(list(paths.values()), "exported encoder")
    settings = read_run_settings(run)
    text_backbone = str(settings.get("train", {}).get("text_backbone", "transformer"))
    if "text" in towers and text_backbone.startswith("hf:"):  # before anything is written
        raise ConfigError(f"the text tower of '{run}' is a Hugging Face model ({text_backbone}); "
                          "contrastlab does not export those to ONNX: embed, search and serve "
                          "the run itself (PyTorch)"
                          + (", or export the image tower alone (--tower image)"
                             if kind == "image-text" else ""))
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    lines: list[str] = []
    passed = True
    for name in towers:
        result, report = (_export_text(run, kind, paths[name], settings, parity,
                                       parity_samples, progress) if name == "text" else
                          _export_image(run, paths[name], settings, parity, parity_samples,
                                        progress))
        results[name] = result
        card = result["card"]
        lines.append(f"wrote {paths[name]} ({result['bytes']:,} bytes): onnx, {kind} run's "
                     f"{name} {'encoder' if kind == 'text' else 'tower'}, {card['backbone']}, "
                     f"{card['embedding_dim']}-d")
        if report is not None:
            what = "sentences of the run's data" if name == "text" else "images of the run's data"
            lines += [_summary_line(report, what),
                      f"parity: {'passed' if report.passed else 'FAILED'}"]
            passed = passed and report.passed
    if len(towers) == 1:
        return results[towers[0]], lines, passed
    return {"towers": results}, lines, passed


def _export_text(run: Path, kind: str, out: Path, settings: dict[str, Any], parity: bool,
                 parity_samples: int, progress: StderrProgress
                 ) -> tuple[dict[str, Any], ParityReport | None]:
    from contrastlab.serve.text_export import export_text_onnx, text_parity

    encoder = text_encoder_from_run(run, "cpu")
    card = export_text_onnx(encoder, out, progress.phase)
    result: dict[str, Any] = {"artefact": str(out), "bytes": out.stat().st_size,
                              "card": card.summary()}
    if not parity:
        return result, None
    data = settings.get("train", {}).get("data")
    if not data:
        raise ConfigError(f"'{run}/config.yaml' names no training data for the parity check; "
                          "pass --no-parity")
    with progress.phase(f"reading {data}", None):
        texts = _run_texts(data, kind)
    report = text_parity(encoder, text_encoder_from_artefact(out, "cpu"), texts,
                         sample_size=parity_samples, phase=progress.phase)
    result["parity"] = report.to_json()
    return result, report


def _run_texts(data: str, kind: str) -> list[str]:
    """The sentences of a run's training data (bad rows skipped): a text run's files, or an
    image-text run's captions (read without decoding the images)."""
    if kind == "image-text":
        from contrastlab.data.captions import (
            read_caption_folder,
            read_caption_shards,
            read_caption_table,
        )
        from contrastlab.data.shard_format import is_brace_pattern
        from contrastlab.data.shard_set import find_shard_sets

        path = Path(data).expanduser()
        if is_brace_pattern(data) or (path.is_dir() and find_shard_sets(data) is not None):
            return read_caption_shards(data, True).captions
        reader = read_caption_folder if path.is_dir() else read_caption_table
        return reader(path, True).captions
    from contrastlab.data.text import read_sentences
    from contrastlab.training.text_settings import data_paths

    return [t for path in data_paths(data) for t in read_sentences(path, True).texts]


def _export_image(run: Path, out: Path, settings: dict[str, Any], parity: bool,
                  parity_samples: int, progress: StderrProgress
                  ) -> tuple[dict[str, Any], ParityReport | None]:
    from contrastlab.serve.encoders import encoder_from_artefact
    from contrastlab.serve.export import card_summary, export_encoder
    from contrastlab.serve.text_encoders import pair_image_encoder
    from contrastlab.serve.text_export import image_parity

    encoder = pair_image_encoder(run, "projector", "cpu")
    card = export_encoder(encoder, "onnx", out, phase=progress.phase)
    result: dict[str, Any] = {"artefact": str(out), "bytes": out.stat().st_size,
                              "card": json.loads(card_summary(card))}
    if not parity:
        return result, None
    train = settings.get("train", {})
    with progress.phase(f"reading {train.get('data')}", None):
        images, _, _ = read_caption_images(str(train.get("data")), encoder.card.image_size,
                                           bool(train.get("skip_bad_files", False)))
    report = image_parity(encoder, encoder_from_artefact(out, "cpu"), images,
                          sample_size=parity_samples, phase=progress.phase)
    result["parity"] = report.to_json()
    return result, report


# ---------------------------------------------------------------------- search

def embed_text_query(encoder: TextEncoder, text: str) -> np.ndarray:
    """The (1, D) normalised embedding of one query text."""
    if not text.strip():
        raise DataError("--text is empty: give the words to search for")
    return encoder.embed_texts([text])


__all__ = ["CAPTION_JOIN", "TOWERS", "embed_text_query", "embed_texts_file",
           "export_run_towers", "is_caption_data", "open_text_encoder", "read_caption_images",
           "read_texts", "space_meta"]
