"""embed, index build, search and export with text runs (Transformer and bag of n-grams) and an
image-text run: embeddings equal the loaded runs', searches equal a brute-force ranking, ONNX
towers match PyTorch, and what a run cannot do is refused in one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

pytest.importorskip("faiss", reason="the serve extra is not installed")
pytest.importorskip("onnxruntime", reason="the serve extra is not installed")

from contrastlab.cli import app  # noqa: E402
from contrastlab.errors import CheckpointError, ConfigError  # noqa: E402
from contrastlab.runs.pair_run import load_pair_run  # noqa: E402
from contrastlab.runs.text_run import load_text_run  # noqa: E402
from tests.text.pair_data import COLOURS, write_folder  # noqa: E402

SENTENCES = ["a man plays a guitar", "a woman cuts an onion", "two dogs run in a park",
             "a cat sleeps on a sofa", "a child rides a bike", "the sun sets over the sea",
             "a chef cooks pasta", "people dance at a party"]
TEXT_TINY = ["--dim", "16", "--batch-size", "4", "--device", "cpu", "--log-every", "1",
             "--lr", "0.01", "--epochs", "1"]
NGRAMS = ["--text-backbone", "ngrams", "--buckets", "512"]
PAIR_TINY = ["--dim", "16", "--depth", "1", "--heads", "2", "--batch-size", "4", "--device",
             "cpu", "--log-every", "1", "--lr", "0.01", "--projection-dim", "8", "--threads", "1",
             "--epochs", "1", "--vocab-size", "40"]


def invoke(*args: str) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.stdout


def last_json(*args: str) -> dict:
    return json.loads(invoke(*args).strip().splitlines()[-1])


def refused(*args: str) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code != 0, result.output
    return str(result.exception)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("text-use") / "sentences.txt"
    path.write_text("\n".join(SENTENCES[:4]) + "\n\n" + "\n".join(SENTENCES[4:]) + "\n")
    return path


@pytest.fixture(scope="module")
def text_runs(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A Transformer text run (a tokenizer trained on the corpus) and a bag-of-n-grams one."""
    root = tmp_path_factory.mktemp("text-runs")
    tokenizer = root / "tok.json"
    invoke("tokenizer", "train", "--data", corpus, "--out", tokenizer, "--vocab-size", "60",
           "--min-frequency", "1")
    invoke("train-text", "--data", corpus, "--tokenizer", tokenizer, "--out",
           root / "transformer", *TEXT_TINY, "--depth", "1", "--heads", "2")
    invoke("train-text", "--data", corpus, "--out", root / "ngrams", *TEXT_TINY, *NGRAMS)
    return {"transformer": root / "transformer", "ngrams": root / "ngrams"}


@pytest.fixture(scope="module")
def pair_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An image-text (CLIP) run and its caption folder (4 colours x 2 images)."""
    root = tmp_path_factory.mktemp("pair-run")
    pairs = write_folder(root / "colours", per_class=2)
    invoke("train-pairs", "--data", pairs, "--out", root / "run", *PAIR_TINY)
    return root / "run", pairs


def read_table(path: Path) -> tuple[np.ndarray, dict]:
    return np.load(path), json.loads(path.with_suffix(".json").read_text())


# ---------------------------------------------------------------------- text runs

@pytest.mark.parametrize("backbone", ["transformer", "ngrams"])
def test_text_embeddings_equal_the_runs_and_search_finds_each_sentence(
        backbone: str, text_runs: dict[str, Path], corpus: Path, tmp_path: Path) -> None:
    run = text_runs[backbone]
    out = tmp_path / "texts.npy"
    summary = last_json("embed", "--run", run, "--texts", corpus, "--out", out,
                        "--batch-size", "3", "--device", "cpu")
    assert summary["count"] == 8 and summary["dim"] == 16 and summary["texts"]
    vectors, side = read_table(out)
    assert side["texts"] == SENTENCES and side["ids"] == [str(i) for i in range(8)]
    assert side["meta"]["backbone"] == backbone and side["meta"]["space"].endswith("/text")
    assert side["meta"]["kind"] == "text-simcse"  # what the HTTP service checks an index by
    direct = F.normalize(load_text_run(run).embed(SENTENCES), dim=1)
    np.testing.assert_allclose(vectors, direct.numpy(), atol=1e-5)
    invoke("index", "build", "--embeddings", out, "--out", tmp_path / "index")
    for i, sentence in enumerate(SENTENCES):
        found = last_json("search", "--index", tmp_path / "index", "--run", run, "--text",
                          sentence, "-k", "3", "--device", "cpu", "--json")
        top = found["hits"][0]
        assert (top["rank"], top["id"], top["text"]) == (1, str(i), sentence)
        assert top["score"] == pytest.approx(1.0, abs=1e-5)
    lines = invoke("search", "--index", tmp_path / "index", "--run", run, "--text",
                   SENTENCES[2], "-k", "1", "--device", "cpu").strip().splitlines()
    assert lines[-1].split(maxsplit=3)[2:] == ["2", SENTENCES[2]]


@pytest.mark.parametrize("backbone", ["transformer", "ngrams"])
def test_text_onnx_export_matches_pytorch(backbone: str, text_runs: dict[str, Path],
                                          corpus: Path, tmp_path: Path) -> None:
    from contrastlab.serve.encoders import encoder_from_artefact
    from contrastlab.serve.text_encoders import text_encoder_from_artefact

    run = text_runs[backbone]
    out = tmp_path / "text.onnx"
    result = last_json("export", "--run", run, "--format", "onnx", "--out", out, "--json")
    assert result["parity"]["passed"] and result["parity"]["samples"] == 8
    assert result["parity"]["min_cosine"] > 0.9999
    exported = text_encoder_from_artefact(out)  # the artefact alone: tokenizer from its card
    assert exported.card.format == "onnx" and exported.card.backbone == backbone
    texts = [*SENTENCES, "words never seen: zebra quantum", ""]
    direct = load_text_run(run).embed(texts)
    np.testing.assert_allclose(exported.embed_texts(texts, batch_size=4, normalize=False),
                               direct.numpy(), atol=1e-5)
    invoke("embed", "--artefact", out, "--texts", corpus, "--out", tmp_path / "onnx.npy")
    vectors, side = read_table(tmp_path / "onnx.npy")
    assert side["meta"]["format"] == "onnx" and side["texts"] == SENTENCES
    np.testing.assert_allclose(vectors, F.normalize(direct[:8], dim=1).numpy(), atol=1e-5)
    with pytest.raises(CheckpointError, match="is a text encoder"):
        encoder_from_artefact(out)


def test_ngram_module_equals_the_encoder_with_empty_sentences() -> None:
    from contrastlab.models.ngram_encoder import NgramEncoder, NgramEncoderSettings
    from contrastlab.serve.text_modules import NgramTextModule

    torch.manual_seed(0)
    encoder = NgramEncoder(NgramEncoderSettings(buckets=64), 8).eval()
    encoder.idf.uniform_(1.0, 3.0)
    ids, weights = torch.randint(0, 64, (11,)), torch.rand(11) + 1.0
    offsets = torch.tensor([0, 4, 4, 9, 11])  # sentences 2 and 5 have no n-gram
    with torch.no_grad():
        torch.testing.assert_close(NgramTextModule(encoder, traceable=True)(ids, weights,
                                                                           offsets),
                                   encoder(ids, weights, offsets))


def test_text_runs_refuse_what_they_cannot_do(text_runs: dict[str, Path], corpus: Path,
                                              tmp_path: Path) -> None:
    run, other = text_runs["transformer"], text_runs["ngrams"]
    out = tmp_path / "t.npy"
    invoke("embed", "--run", run, "--texts", corpus, "--out", out)
    invoke("index", "build", "--embeddings", out, "--out", tmp_path / "index")
    image = tmp_path / "q.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(image)
    assert "is a text encoder: it cannot embed --image" in refused(
        "search", "--index", tmp_path / "index", "--run", run, "--image", image)
    assert "give --texts FILE" in refused("embed", "--run", run, "--out", tmp_path / "x.npy")
    message = refused("search", "--index", tmp_path / "index", "--run", other, "--text", "a")
    assert "another run's embeddings" in message and "space" in message
    assert "give one query" in refused("search", "--index", tmp_path / "index", "--run", run)
    assert "ONNX only" in refused("export", "--run", run, "--format", "torchscript")
    assert "--int8 applies to image runs" in refused("export", "--run", run, "--format", "onnx",
                                                     "--int8")
    assert "only a text tower" in refused("export", "--run", run, "--format", "onnx",
                                          "--tower", "image")
    fake_image_run = tmp_path / "image-run"
    from contrastlab.runs.checkpoint import save_atomic

    (fake_image_run / "checkpoints").mkdir(parents=True)
    save_atomic({"model": {}}, fake_image_run / "checkpoints" / "last.pt")
    assert "is an image run" in refused("search", "--index", tmp_path / "index", "--run",
                                        fake_image_run, "--text", "a dog")
    assert "is an image run" in refused("embed", "--run", fake_image_run, "--texts", corpus,
                                        "--out", tmp_path / "y.npy")


# ---------------------------------------------------------------------- image-text runs

def test_image_text_run_embeds_both_towers_and_searches_across(
        pair_run: tuple[Path, Path], tmp_path: Path) -> None:
    run, pairs = pair_run
    loaded = load_pair_run(run)
    captions = tmp_path / "captions.txt"
    queries = [f"a {c} square" for c in COLOURS]
    captions.write_text("\n".join(queries) + "\n")
    invoke("embed", "--run", run, "--texts", captions, "--out", tmp_path / "texts.npy")
    summary = last_json("embed", "--run", run, "--data", pairs, "--out", tmp_path / "img.npy",
                        "--device", "cpu")
    assert summary["count"] == 8 and summary["dim"] == 8 and summary["texts"]
    text_vectors, text_side = read_table(tmp_path / "texts.npy")
    image_vectors, image_side = read_table(tmp_path / "img.npy")
    np.testing.assert_allclose(text_vectors, loaded.embed_texts(queries).numpy(), atol=1e-5)
    assert image_side["ids"][0] == "blue/0.png" and image_side["texts"][0] == "a blue square"
    from contrastlab.data.captions import load_image_captions

    images = load_image_captions(pairs).images
    np.testing.assert_allclose(image_vectors, loaded.embed_images(images).numpy(), atol=1e-5)
    assert text_side["meta"]["space"] == image_side["meta"]["space"]
    default = last_json("embed", "--run", run, "--out", tmp_path / "own.npy")  # the run's data
    assert default["count"] == 8 and np.array_equal(np.load(tmp_path / "own.npy"), image_vectors)
    for name in ("texts", "img"):
        invoke("index", "build", "--embeddings", tmp_path / f"{name}.npy", "--out",
               tmp_path / name)
    # text -> image: the ranking is the brute-force one of the shared space
    found = last_json("search", "--index", tmp_path / "img", "--run", run, "--text", queries[0],
                      "-k", "8", "--json")
    sims = image_vectors @ text_vectors[0]
    assert [h["id"] for h in found["hits"]] == [image_side["ids"][i] for i in np.argsort(-sims)]
    np.testing.assert_allclose([h["score"] for h in found["hits"]], np.sort(sims)[::-1],
                               atol=1e-5)
    # image -> text
    query = pairs / "green" / "1.png"
    found = last_json("search", "--index", tmp_path / "texts", "--run", run, "--image", query,
                      "-k", "4", "--json")
    row = image_side["ids"].index("green/1.png")
    order = np.argsort(-(text_vectors @ image_vectors[row]))
    assert [h["text"] for h in found["hits"]] == [queries[i] for i in order]
    # the HTTP service (serve/text_service.py) accepts these indexes for this run
    from contrastlab.serve.index import load_index
    from contrastlab.serve.text_service import check_index, open_served_model

    served = open_served_model(run)
    for name in ("img", "texts"):
        assert load_index(tmp_path / name).meta["kind"] == "image-text"
        check_index(load_index(tmp_path / name), served, name)
    # the image tower's features before the projection are not in the shared space
    invoke("embed", "--run", run, "--data", pairs, "--features", "backbone", "--out",
           tmp_path / "raw.npy")
    invoke("index", "build", "--embeddings", tmp_path / "raw.npy", "--out", tmp_path / "raw")
    assert "not in the shared space" in refused("search", "--index", tmp_path / "raw", "--run",
                                                run, "--text", "a red square")


def test_image_text_onnx_towers_match_and_search_without_the_run(
        pair_run: tuple[Path, Path], tmp_path: Path) -> None:
    run, pairs = pair_run
    result = last_json("export", "--run", run, "--format", "onnx", "--json", "--force")
    towers = result["towers"]
    assert towers["image"]["parity"]["passed"] and towers["text"]["parity"]["passed"]
    text_onnx = Path(towers["text"]["artefact"])
    image_onnx = Path(towers["image"]["artefact"])
    assert (text_onnx.name, image_onnx.name) == ("text-tower.onnx", "image-tower.onnx")
    invoke("embed", "--artefact", image_onnx, "--data", pairs, "--out", tmp_path / "img.npy")
    invoke("index", "build", "--embeddings", tmp_path / "img.npy", "--out", tmp_path / "img")
    by_run = last_json("search", "--index", tmp_path / "img", "--run", run, "--text",
                       "a yellow square", "--json")
    by_onnx = last_json("search", "--index", tmp_path / "img", "--artefact", text_onnx,
                        "--text", "a yellow square", "--json")
    assert [h["id"] for h in by_onnx["hits"]] == [h["id"] for h in by_run["hits"]]
    np.testing.assert_allclose([h["score"] for h in by_onnx["hits"]],
                               [h["score"] for h in by_run["hits"]], atol=1e-4)
    assert "--out names one file" in refused("export", "--run", run, "--format", "onnx",
                                             "--out", tmp_path / "x.onnx")
    assert "cannot embed --image" in refused("search", "--index", tmp_path / "img",
                                             "--artefact", text_onnx, "--image",
                                             pairs / "red" / "0.png")


def test_check_space_refuses_other_runs_spaces_and_image_run_indexes() -> None:
    from contrastlab.serve.index import build_index, check_space

    vectors = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    bare = build_index(vectors)
    check_space(bare, "abc/text", 4, "bare")  # no metadata: the dimension only
    with pytest.raises(ConfigError, match="gives 3-dimensional embeddings"):
        check_space(bare, "abc/text", 3, "bare")
    image_run = build_index(vectors, meta={"method": "simclr", "backbone": "convnet"})
    with pytest.raises(ConfigError, match="image embeddings of an image run.*not embeddings of"):
        check_space(image_run, "abc/text", 4, "image")
    ours = build_index(vectors, meta={"space": "abc/shared", "run_kind": "image-text",
                                      "tower": "image"})
    check_space(ours, "abc/shared", 4, "ours")
    with pytest.raises(ConfigError, match="another run's embeddings"):
        check_space(ours, "def/shared", 4, "ours")
    with pytest.raises(ConfigError, match="not an image run"):
        check_space(ours, None, 4, "ours")


def test_texts_round_trip_through_npy_and_parquet(tmp_path: Path) -> None:
    from contrastlab.serve.embed import EmbeddingTable, load_embeddings, save_embeddings

    table = EmbeddingTable(np.eye(3, dtype=np.float32), ["0", "1", "2"], meta={"kind": "x"},
                           texts=["a dog", "é, \"quoted\"", ""])
    save_embeddings(table, tmp_path / "t.npy")
    assert load_embeddings(tmp_path / "t.npy").texts == table.texts
    pytest.importorskip("pyarrow", reason="Parquet needs pyarrow")
    save_embeddings(table, tmp_path / "t.parquet")
    loaded = load_embeddings(tmp_path / "t.parquet")
    assert loaded.texts == table.texts and loaded.meta["kind"] == "x"
    np.testing.assert_array_equal(loaded.vectors, table.vectors)


@pytest.mark.parametrize("options", [{"pool": "cls"}, {"positions": False, "depth": 0},
                                     {"final_norm": False, "max_length": 6}])
def test_transformer_variants_export_to_onnx(options: dict, tmp_path: Path) -> None:
    """Freshly initialised encoders of other settings export too (a sentence longer than
    max_length is cut by the tokenizer, as in PyTorch)."""
    from contrastlab.data.tokenizer import train_tokenizer
    from contrastlab.models.text_encoder import TextEncoderSettings, TextTransformer
    from contrastlab.serve.text_encoders import (
        TextCard,
        TorchTextEncoder,
        text_encoder_from_artefact,
    )
    from contrastlab.serve.text_export import export_text_onnx
    from contrastlab.serve.text_modules import TransformerTextModule

    torch.manual_seed(0)
    tokenizer = train_tokenizer(SENTENCES, vocab_size=60, min_frequency=1)
    settings = TextEncoderSettings(**{"dim": 16, "depth": 1, "heads": 2, **options})
    encoder = TextTransformer(tokenizer.vocab_size, settings, tokenizer.pad_id).eval()
    card = TextCard("text", "simcse", "transformer", "sentence", 16, "x/text",
                    settings.max_length, tokenizer.to_json())
    ours = TorchTextEncoder(TransformerTextModule(encoder).eval(), card, tokenizer)
    export_text_onnx(ours, tmp_path / "t.onnx")
    theirs = text_encoder_from_artefact(tmp_path / "t.onnx")
    np.testing.assert_allclose(theirs.embed_texts(SENTENCES, 3), ours.embed_texts(SENTENCES, 3),
                               atol=1e-5)
