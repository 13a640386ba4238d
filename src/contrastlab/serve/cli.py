"""The ``embed``, ``export``, ``index build`` and ``search`` commands (``serve`` is in
:mod:`contrastlab.serve.serve_command`).

Registered on the main typer application by :func:`register`. Everything heavy (FAISS, ONNX,
FastAPI, uvicorn, the model) is imported inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from contrastlab.errors import ConfigError, DataError, unknown_name

Opt = typer.Option
err_console = Console(stderr=True)

RunOpt = Annotated[Path | None, Opt("--run", help="Run directory written by `contrastlab "
                                    "train`, `train-text` or `train-pairs`.")]
ArtefactOpt = Annotated[Path | None, Opt("--artefact", help="Encoder exported by `contrastlab "
                                         "export` (.onnx, .torchscript.pt or .safetensors).")]
FeaturesOpt = Annotated[str | None, Opt(help="backbone (the representation; default) or "
                                        "projector (the projection-head output).")]
DeviceOpt = Annotated[str, Opt(help="auto, cpu, cuda or cuda:N.")]
JsonOpt = Annotated[bool, Opt("--json", help="Print exactly one JSON object.")]
ForceOpt = Annotated[bool, Opt("--force", help="Replace the output if it exists.")]


def _device(name: str) -> Any:
    from contrastlab.runs.device import resolve_device

    return resolve_device(name)


def _run_config(encoder: Any) -> dict[str, Any]:
    """The training configuration of an encoder loaded from a run ({} for artefacts)."""
    return dict(getattr(encoder, "run_config", None) or {})


def _load_splits(spec: str, config: dict[str, Any], image_size: int, stream: bool = False
                 ) -> Any:
    """The run's train/test split of ``spec``; with ``stream``, tar shards are catalogued to be
    decoded in one pass (``StreamedSplits``) instead of decoded into memory (unless the run was
    trained with ``stream: off``)."""
    from contrastlab.data import load_dataset
    from contrastlab.data.loader import shard_sets_of
    from contrastlab.data.streamed_images import open_streamed_splits

    fraction, seed = config.get("test_fraction", 0.2), config.get("split_seed", 0)
    skip = config.get("skip_bad_files", False)
    shards = shard_sets_of(spec) if stream and config.get("stream", "auto") != "off" else None
    if shards is not None:
        return open_streamed_splits(*shards, test_fraction=fraction, split_seed=seed,
                                    image_size=image_size, skip_bad_files=skip,
                                    workers=config.get("loader_workers"))
    return load_dataset(spec, test_fraction=fraction, split_seed=seed, skip_bad_files=skip,
                        image_size=image_size)


def _refuse_existing(paths: list[Path], what: str, force: bool) -> None:
    """ConfigError naming the outputs that exist, unless ``force``."""
    existing = [path for path in paths if path.exists()]
    if existing and not force:
        names = " and ".join(f"'{path}'" for path in existing)
        verb, them = ("exists", "it") if len(existing) == 1 else ("exist", "them")
        raise ConfigError(f"{names} already {verb}; pass --force to replace {them} with the new "
                          f"{what}, or choose another --out")


def _progress() -> Any:
    from contrastlab.serve.progress import StderrProgress

    return StderrProgress(err_console)


def _check_channels(dataset: Any, channels: int, spec: str) -> None:
    if dataset.channels != channels:
        raise DataError(f"'{spec}' has {dataset.channels}-channel images but the encoder takes "
                        f"{channels}-channel images")


# ---------------------------------------------------------------------- embed

def embed(
    out: Annotated[Path, Opt("--out", help="Output file: NAME.npy (ids/labels/texts in NAME.json) "
                             "or NAME.parquet (needs pyarrow).")],
    run: RunOpt = None,
    artefact: ArtefactOpt = None,
    data: Annotated[str | None, Opt(help="Images to embed (default: the run's own data; for an "
                                    "image-text run, its image tower).")] = None,
    texts: Annotated[str | None, Opt("--texts", help="Sentences to embed with a text run or an "
                                     "image-text run's text tower: .txt/.txt.gz, one a line "
                                     "(several files comma-separated).")] = None,
    split: Annotated[str, Opt(help="all, train or test (the run's held-out split).")] = "all",
    batch_size: Annotated[int, Opt(help="Images (or texts) per forward pass.")] = 256,
    features: FeaturesOpt = None,
    normalize: Annotated[bool, Opt("--normalize/--no-normalize",
                                   help="L2-normalise the embeddings.")] = True,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
) -> None:
    """Embed every image of a dataset (or every sentence of --texts); write float32 vectors with
    their ids, labels and texts. Tar shards are decoded in one streamed pass, never held in
    memory."""
    import torch

    from contrastlab.data import ImageDataset
    from contrastlab.serve.embed import (
        EmbeddingTable,
        embed_batches,
        embed_images,
        output_files,
        save_embeddings,
    )
    from contrastlab.serve.text_commands import (
        embed_texts_file,
        is_caption_data,
        open_text_encoder,
        read_caption_images,
        space_meta,
    )
    from contrastlab.serve.text_encoders import is_text_artefact, open_image_encoder, run_kind

    if split not in ("all", "train", "test"):
        raise ConfigError(f"--split must be all, train or test, got '{split}'")
    if out.suffix.lower() not in (".npy", ".parquet"):
        raise ConfigError(f"--out '{out}' must end in .npy or .parquet")
    _refuse_existing(output_files(out), "embeddings", force)
    kind = run_kind(run) if run is not None else None
    source = str(run if run is not None else artefact)
    if texts is not None:
        if data is not None:
            raise ConfigError("give --texts or --data, not both: texts and images go to two "
                              "files (two embed commands)")
        if split != "all" or features is not None:
            raise ConfigError("--split and --features apply to images, not to --texts")
        text_encoder = open_text_encoder(run, artefact, _device(device), "--texts")
        with _progress() as progress:
            print(json.dumps(embed_texts_file(out, text_encoder, texts, batch_size, normalize,
                                              source, progress)))
        return
    if kind == "text" or (artefact is not None and is_text_artefact(artefact)):
        raise ConfigError(f"'{source}' is a text encoder: give --texts FILE (one sentence a "
                          "line) to embed, not images")
    encoder = open_image_encoder(run, artefact, features, _device(device), kind)
    card = encoder.card
    config = _run_config(encoder)
    spec = data or config.get("data")
    if spec is None:
        raise ConfigError("--data is required with --artefact (an artefact does not know its "
                          "training data)")
    captions: list[str] | None = None
    if card.model_meta.get("run_kind") == "image-text" and is_caption_data(spec):
        if split != "all":
            raise ConfigError(f"--split applies to image datasets; the pairs of '{spec}' are "
                              "embedded whole (each image once)")
        with _progress() as progress, progress.phase(f"reading {spec}", None):
            images, ids, captions = read_caption_images(spec, card.image_size,
                                                        bool(config.get("skip_bad_files")))
        if images.shape[1] != card.channels:
            raise DataError(f"'{spec}' has {images.shape[1]}-channel images but the encoder "
                            f"takes {card.channels}-channel images")
        with _progress() as progress:
            with progress.phase(f"embedding {len(ids):,} images", len(ids)) as advance:
                vectors = embed_images(encoder, images, batch_size, normalize, advance)
        labels, classes = None, None
    else:
        with _progress() as progress, progress.phase(f"reading {spec}", None):
            splits = _load_splits(spec, config, card.image_size, stream=True)
        parts = {"train": [splits.train], "test": [splits.test] if splits.test else [],
                 "all": [splits.train] + ([splits.test] if splits.test else [])}[split]
        if not parts:
            raise DataError(f"'{spec}' has no held-out test split to embed")
        for part in parts:
            _check_channels(part, card.channels, spec)
        total = sum(len(part) for part in parts)
        with _progress() as progress:
            with progress.phase(f"embedding {total:,} images", total) as advance:
                if all(isinstance(part, ImageDataset) for part in parts):
                    images = torch.cat([part.images for part in parts])
                    vectors = embed_images(encoder, images, batch_size, normalize, advance)
                else:  # streamed shards: one pass, batch by batch
                    batches = (batch for part in parts for batch in part.batches(batch_size))
                    vectors = embed_batches(encoder, batches, total, normalize, advance)
        # after the pass: streamed parts know then which samples --skip-bad-files left out
        ids = [i for part in parts for i in part.ids]
        labelled = all(part.labels is not None for part in parts)
        labels = torch.cat([part.labels for part in parts]).numpy() if labelled else None
        classes = parts[0].classes
    card_json = card.to_json()
    meta = {**{k: v for k, v in card_json.items() if k not in ("model_meta", "input",
                                                                 "output")},
            **space_meta(card_json), "normalized": normalize, "data": spec, "split": split,
            "source": source}
    with _progress() as progress:
        table = EmbeddingTable(vectors, ids, labels, classes, meta, captions)
        with progress.phase(f"writing {out}", None):
            written = save_embeddings(table, out)
    print(json.dumps({"out": str(out), "files": [str(p) for p in written], "count": len(table),
                      "dim": int(vectors.shape[1]), "labels": labels is not None,
                      "normalized": normalize, "texts": captions is not None}))


# ---------------------------------------------------------------------- export

def export(
    run: Annotated[Path, Opt("--run", help="Run directory written by `contrastlab train`, "
                             "`train-text` or `train-pairs`.")],
    format: Annotated[str, Opt("--format", help="onnx, torchscript or safetensors (text and "
                               "image-text runs: onnx).")],
    out: Annotated[Path | None, Opt(help="Artefact path (default RUN/export/encoder.<ext>; text "
                                    "runs text-encoder.onnx; image-text runs image-tower.onnx "
                                    "and text-tower.onnx).")] = None,
    tower: Annotated[str | None, Opt(help="Image-text runs: image, text or both (default).")]
    = None,
    int8: Annotated[bool, Opt("--int8", help="Quantise to int8 with ONNX Runtime (onnx).")]
    = False,
    int8_mode: Annotated[str, Opt(help="static (QDQ, calibrated; default) or dynamic.")]
    = "static",
    features: FeaturesOpt = None,
    parity: Annotated[bool, Opt("--parity/--no-parity", help="Compare the artefact with the "
                                "PyTorch model on the run's data.")] = True,
    calibration_size: Annotated[int, Opt(help="Training images used to calibrate static int8.")]
    = 512,
    parity_samples: Annotated[int, Opt(help="Held-out images of the cosine check.")] = 512,
    knn_train_limit: Annotated[int | None, Opt(
        help="Most training images used as kNN neighbours in the parity check (default: all, "
             "the run's own kNN protocol; fewer is faster but gives other figures than the "
             "run's).")] = None,
    as_json: JsonOpt = False,
    force: ForceOpt = False,
) -> None:
    """Export a run's encoder (a text run's encoder, an image-text run's towers) as a
    self-describing artefact and check it against PyTorch."""
    import torch

    from contrastlab.serve.encoders import encoder_from_artefact, encoder_from_run
    from contrastlab.serve.export import (
        EXPORT_FORMATS,
        card_summary,
        default_artefact_path,
        export_encoder,
    )
    from contrastlab.serve.parity import parity_check
    from contrastlab.serve.text_encoders import run_kind

    if format not in EXPORT_FORMATS:
        raise unknown_name("export format", format, EXPORT_FORMATS)
    if calibration_size < 1 or parity_samples < 1 or (knn_train_limit is not None
                                                      and knn_train_limit < 1):
        raise ConfigError("--calibration-size, --parity-samples and --knn-train-limit must be "
                          ">= 1")
    kind = run_kind(run)
    if kind != "image":
        _export_towers(run, kind, format, out, tower, int8, features, parity, parity_samples,
                       as_json, force)
        return
    if tower is not None:
        raise ConfigError("--tower applies to image-text runs; an image run has one encoder")
    out = out or default_artefact_path(run, format, int8, features or "backbone")
    _refuse_existing([out], "exported encoder", force)
    encoder = encoder_from_run(run, features or "backbone", "cpu")
    card = encoder.card
    config = _run_config(encoder)
    splits = None
    if parity or (int8 and int8_mode == "static"):
        with _progress() as progress, progress.phase(f"reading {config['data']}", None):
            splits = _load_splits(config["data"], config, card.image_size)
        _check_channels(splits.train, card.channels, config["data"])
    calibration = None
    if int8 and int8_mode == "static":
        generator = torch.Generator().manual_seed(0)
        n = splits.train.images.shape[0]
        chosen = torch.randperm(n, generator=generator)[:calibration_size].sort().values
        with torch.inference_mode():
            calibration = card.transform(splits.train.images[chosen]).numpy()
    with _progress() as progress:
        exported_card = export_encoder(encoder, format, out, int8, int8_mode, calibration,
                                       progress.phase)
    result: dict[str, Any] = {"artefact": str(out), "bytes": out.stat().st_size,
                              "card": json.loads(card_summary(exported_card))}
    report = None
    if parity:
        exported = encoder_from_artefact(out, "cpu")
        k = int(config.get("knn_k", 200))
        with _progress() as progress:
            report = parity_check(encoder, exported, splits, "int8" if int8 else "fp32",
                                  sample_size=parity_samples, knn_train_limit=knn_train_limit,
                                  k=k, temperature=float(config.get("knn_temperature", 0.1)),
                                  phase=progress.phase)
        report.run_knn = _run_knn(run, k) if report.knn_reference is not None else None
        result["parity"] = {**report.to_json(), "knn_protocol": report.knn_protocol()}
    if as_json:
        print(json.dumps(result))
    else:
        print(f"wrote {out} ({result['bytes']:,} bytes): {exported_card.format}"
              f"{' ' + exported_card.quantization if exported_card.quantization else ''}, "
              f"{card.backbone} {card.features} features, {card.embedding_dim}-d, input "
              f"{card.channels}x{card.image_size}x{card.image_size}")
        if report is not None:
            print(f"parity: mean cosine {report.mean_cosine:.6f} (min {report.min_cosine:.6f}, "
                  f"{report.samples} held-out images; needs >= {report.cosine_threshold})")
            if report.knn_reference is not None:
                limit = ("" if report.knn_drop_threshold is None
                         else f"; may drop by <= {report.knn_drop_threshold} points")
                print(f"parity: kNN top-1 {100 * report.knn_reference:.2f}% (PyTorch) vs "
                      f"{100 * report.knn_exported:.2f}% (exported), drop "
                      f"{report.knn_drop_points:+.2f} points on {report.knn_test:,} test images"
                      f"{limit}")
                print(f"parity: kNN with {report.knn_protocol()}")
            print(f"parity: {'passed' if report.passed else 'FAILED'}")
    if report is not None and not report.passed:
        err_console.print("[bold red]error:[/bold red] the exported encoder does not match the "
                          "PyTorch model within the thresholds (the artefact was written; see "
                          "the parity figures above)", highlight=False)
        raise typer.Exit(1)


def _export_towers(run: Path, kind: str, fmt: str, out: Path | None, tower: str | None,
                   int8: bool, features: str | None, parity: bool, parity_samples: int,
                   as_json: bool, force: bool) -> None:
    """``export`` of a text or image-text run (:mod:`contrastlab.serve.text_commands`)."""
    from contrastlab.serve.text_commands import export_run_towers

    with _progress() as progress:
        result, lines, passed = export_run_towers(
            run, kind, fmt, out, tower, int8, features, parity, parity_samples, progress,
            lambda paths, what: _refuse_existing(paths, what, force))
    print(json.dumps(result) if as_json else "\n".join(lines))
    if not passed:
        err_console.print("[bold red]error:[/bold red] an exported tower does not match the "
                          "PyTorch model within the thresholds (the artefact was written; see "
                          "the parity figures above)", highlight=False)
        raise typer.Exit(1)


def _run_knn(run: Path, k: int) -> float | None:
    """The run's own final kNN top-1 (``final_metrics.json``), if it used ``k`` neighbours."""
    try:
        metrics = json.loads((run / "final_metrics.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(metrics, dict) or metrics.get("k", k) != k:
        return None
    value = metrics.get("knn_top1")
    return float(value) if isinstance(value, (int, float)) else None


# ---------------------------------------------------------------------- index and search

def index_build(
    embeddings: Annotated[Path, Opt("--embeddings", help="File written by `contrastlab embed` "
                                    "(.npy or .parquet).")],
    out: Annotated[Path, Opt("--out", help="Index folder to write.")],
    kind: Annotated[str, Opt(help="flat (exact), ivf or hnsw.")] = "flat",
    nlist: Annotated[int | None, Opt(help="IVF cells (default about 4 sqrt(N)).")] = None,
    nprobe: Annotated[int | None, Opt(help="IVF cells visited per query.")] = None,
    hnsw_m: Annotated[int, Opt(help="HNSW links per node.")] = 32,
    ef_construction: Annotated[int, Opt(help="HNSW construction beam.")] = 40,
    ef_search: Annotated[int, Opt(help="HNSW search beam.")] = 64,
    force: ForceOpt = False,
) -> None:
    """Build a FAISS nearest-neighbour index (cosine similarity) of saved embeddings."""
    from contrastlab.serve.embed import load_embeddings
    from contrastlab.serve.index import IndexParams, build_index, index_files

    if out.exists() and not out.is_dir():
        raise ConfigError(f"index output '{out}' exists and is not a folder; choose another "
                          "--out")
    _refuse_existing(index_files(out), "index", force)
    with _progress() as progress:
        with progress.phase(f"reading {embeddings}", None):
            table = load_embeddings(embeddings)
        params = IndexParams(nlist, nprobe, hnsw_m, ef_construction, ef_search)
        index = build_index(table.vectors, table.ids, kind, table.labels, params, table.meta,
                            classes=table.classes, phase=progress.phase, texts=table.texts)
        with progress.phase(f"writing {out}", None):
            index.save(out)
    print(json.dumps({"index": str(out), "kind": kind, "count": len(index), "dim": index.dim,
                      "build_seconds": round(index.build_seconds, 3),
                      "params": index.params.__dict__}))


def search(
    index: Annotated[Path, Opt("--index", help="Index folder from `contrastlab index build`.")],
    image: Annotated[Path | None, Opt("--image", help="Query image file.")] = None,
    text: Annotated[str | None, Opt("--text", help="Query text (a text run, or an image-text "
                                    "run's text tower: text-to-image search).")] = None,
    run: RunOpt = None,
    artefact: ArtefactOpt = None,
    k: Annotated[int, Opt("-k", "--k", help="Neighbours to return.")] = 10,
    features: FeaturesOpt = None,
    nprobe: Annotated[int | None, Opt(help="IVF cells visited (default: the index's).")] = None,
    ef_search: Annotated[int | None, Opt(help="HNSW search beam (default: the index's).")]
    = None,
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Find the indexed items most similar to an image or a text: ids, cosine scores (and the
    items' texts)."""
    from contrastlab.serve.images import read_image_file
    from contrastlab.serve.index import adopt_classes, check_compatible, check_space, load_index
    from contrastlab.serve.text_commands import embed_text_query, open_text_encoder
    from contrastlab.serve.text_encoders import is_text_artefact, open_image_encoder, run_kind

    if k < 1:
        raise ConfigError(f"-k must be >= 1, got {k}")
    if (image is None) == (text is None):
        raise ConfigError("give one query: --image FILE or --text \"WORDS\"")
    if (run is None) == (artefact is None):
        raise ConfigError("give exactly one of --run (a run directory) and --artefact (an "
                          "exported encoder)")
    kind = run_kind(run) if run is not None else None
    if image is not None and (kind == "text" or (artefact is not None
                                                 and is_text_artefact(artefact))):
        raise ConfigError(f"'{run or artefact}' is a text encoder: it cannot embed --image; "
                          "give --text, or an image or image-text run")
    with _progress() as progress, progress.phase(f"loading {index}", None):
        vector_index = load_index(index)
    vector_index.set_search_params(nprobe, ef_search)
    if text is not None:
        if features is not None:
            raise ConfigError("--features applies to image queries, not to --text")
        text_encoder = open_text_encoder(run, artefact, _device(device), "--text")
        check_space(vector_index, text_encoder.card.space, text_encoder.card.embedding_dim,
                    f"index '{index}'", "the text query")
        query, shown = embed_text_query(text_encoder, text), text
    else:
        if features is None and vector_index.meta.get("features") in ("backbone", "projector") \
                and run is not None:
            features = vector_index.meta["features"]
        encoder = open_image_encoder(run, artefact, features, _device(device), kind)
        check_compatible(vector_index, encoder.card.to_json(), f"index '{index}'")
        adopt_classes(vector_index, encoder.card.model_meta.get("classes"),
                      _run_config(encoder).get("data"))
        card = encoder.card
        assert image is not None
        query = encoder.embed(read_image_file(str(image), card.channels, card.image_size)[None])
        shown = str(image)
    hits = vector_index.search(query, k)[0]
    if as_json:
        print(json.dumps({"query": shown, "k": k, "hits": [h.to_json() for h in hits]}))
        return
    for hit in hits:
        label = "" if hit.label is None else f"  label {hit.class_name or hit.label}"
        words = "" if hit.text is None else f"  {hit.text}"
        print(f"{hit.rank:>3}  {hit.score:.4f}  {hit.id}{label}{words}")


def register(app: typer.Typer) -> None:
    """Add the commands of this module and ``serve`` to the main ``contrastlab`` application."""
    from contrastlab.serve.serve_command import serve  # it imports this module's helpers

    app.command("embed")(embed)
    app.command("export")(export)
    app.command("search")(search)
    app.command("serve")(serve)
    index_app = typer.Typer(help="Nearest-neighbour indexes of embeddings.",
                            no_args_is_help=True)
    index_app.command("build")(index_build)
    app.add_typer(index_app, name="index")


__all__ = ["register"]
