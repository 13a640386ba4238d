"""The ``serve`` command: the HTTP service of an encoder, with its limits (docs/serving.md): an
image run or artefact, a text run or exported text tower, or an image-text run (docs/text.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from contrastlab.errors import ConfigError
from contrastlab.serve.cli import (
    ArtefactOpt,
    DeviceOpt,
    FeaturesOpt,
    Opt,
    RunOpt,
    _device,
    err_console,
)
from contrastlab.serve.text_inputs import DEFAULT_MAX_TEXT_CHARS, DEFAULT_MAX_TEXTS

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def serve(
    run: RunOpt = None,
    artefact: ArtefactOpt = None,
    index: Annotated[Path | None, Opt("--index", help="Index folder for /v1/search.")] = None,
    host: Annotated[str, Opt(help="Address to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, Opt(help="Port.")] = 8000,
    api_key: Annotated[str | None, Opt("--api-key", envvar="CONTRASTLAB_API_KEY",
                                       show_envvar=True,
                                       help="Require this key on every route but /healthz.")]
    = None,
    features: FeaturesOpt = None,
    max_batch: Annotated[int, Opt(help="Most images (or texts) per batched forward pass (1: "
                                  "no batching).")] = 32,
    max_wait_ms: Annotated[float, Opt(help="How long a batch waits to fill.")] = 2.0,
    max_body_mb: Annotated[float, Opt(help="Largest request body, in MiB.")] = 16.0,
    max_json_mb: Annotated[float, Opt(help="Largest JSON request body (base64 images), in MiB: "
                                      "the JSON parser holds up the server about 2 ms per "
                                      "MiB.")] = 4.0,
    max_pixels: Annotated[int | None, Opt(help="Largest image, width x height (default "
                                          "4096 x 4096).")] = None,
    max_side: Annotated[int, Opt(help="Longest image side, in pixels.")] = 16_384,
    max_aspect_ratio: Annotated[float, Opt(help="Largest ratio of an image's longer side to its "
                                           "shorter side.")] = 20.0,
    max_request_pixels: Annotated[int | None, Opt(
        help="Most decoded pixels of all the images of one request (default: --max-pixels; "
             "JPEGs count at the reduced scale they are decoded at).")] = None,
    max_images: Annotated[int, Opt(help="Most images per request.")] = 64,
    max_texts: Annotated[int, Opt(help="Most texts per request (text and image-text "
                                  "runs).")] = DEFAULT_MAX_TEXTS,
    max_text_chars: Annotated[int, Opt(help="Longest text, in characters (text and image-text "
                                       "runs).")] = DEFAULT_MAX_TEXT_CHARS,
    decode_threads: Annotated[int, Opt(help="Threads decoding light requests (up to 1 million "
                                       "pixels).")] = 2,
    heavy_decode_threads: Annotated[int, Opt(help="Threads decoding heavier requests.")] = 1,
    decode_timeout: Annotated[float, Opt(help="Seconds a request may wait for and spend in "
                                         "decoding before it is answered 503.")] = 10.0,
    header_timeout: Annotated[float, Opt(help="Seconds a connection has to send a request's "
                                         "headers.")] = 10.0,
    body_timeout: Annotated[float, Opt(help="Seconds a request has to send its body.")] = 30.0,
    keep_alive_timeout: Annotated[float, Opt(help="Seconds an idle connection is kept "
                                             "open.")] = 5.0,
    max_connections: Annotated[int, Opt(help="Most connections and requests at once; more "
                                        "are answered 503.")] = 512,
    device: DeviceOpt = "auto",
    threads: Annotated[int | None, Opt(help="CPU threads of the model (PyTorch intra-op / ONNX "
                                       "Runtime; default: the library's choice).")] = None,
    log_level: Annotated[str, Opt(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the encoder over HTTP: /v1/embed, /v1/similarity, /v1/search, /v1/info, /healthz.

    --run may be an image run, a text run (texts) or an image-text run (images and texts);
    --artefact an exported image encoder or text tower."""
    from contrastlab.serve.app import BatchSettings, Service, ServiceLimits, create_app
    from contrastlab.serve.decoding import DecodeSettings
    from contrastlab.serve.deps import require
    from contrastlab.serve.images import DEFAULT_MAX_PIXELS
    from contrastlab.serve.index import adopt_classes, load_index
    from contrastlab.serve.server import ServerSettings, run_server
    from contrastlab.serve.text_service import check_index, open_served_model

    require("uvicorn", "contrastlab serve")
    if not 0 < port < 65536:
        raise ConfigError(f"--port must be 1-65535, got {port}")
    if max_batch < 1 or max_wait_ms < 0 or max_body_mb <= 0 or max_json_mb <= 0 \
            or max_images < 1:
        raise ConfigError("--max-batch and --max-images must be >= 1, --max-wait-ms >= 0 and "
                          "--max-body-mb and --max-json-mb > 0")
    for name, value in (("--max-pixels", max_pixels), ("--max-side", max_side),
                        ("--max-request-pixels", max_request_pixels),
                        ("--decode-threads", decode_threads),
                        ("--heavy-decode-threads", heavy_decode_threads),
                        ("--max-connections", max_connections),
                        ("--max-texts", max_texts), ("--max-text-chars", max_text_chars)):
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")
    if not max_aspect_ratio >= 1:
        raise ConfigError(f"--max-aspect-ratio must be >= 1, got {max_aspect_ratio}")
    for name, seconds in (("--decode-timeout", decode_timeout),
                          ("--header-timeout", header_timeout),
                          ("--body-timeout", body_timeout),
                          ("--keep-alive-timeout", keep_alive_timeout)):
        if not seconds > 0:
            raise ConfigError(f"{name} must be > 0 seconds, got {seconds}")
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {threads}")
        import torch

        torch.set_num_threads(threads)
    model = open_served_model(run, artefact, features, _device(device), threads)
    encoder = model.images
    vector_index = None
    if index is not None:
        vector_index = load_index(index)
        check_index(vector_index, model, f"index '{index}'")
        if encoder is not None and model.texts is None:
            adopt_classes(vector_index, encoder.card.model_meta.get("classes"),
                          (getattr(encoder, "run_config", None) or {}).get("data"))
    pixels = max_pixels or DEFAULT_MAX_PIXELS
    limits = ServiceLimits(max_body_bytes=int(max_body_mb * 1024 * 1024),
                           max_json_bytes=int(max_json_mb * 1024 * 1024), max_pixels=pixels,
                           max_images=max_images, max_side=max_side,
                           max_aspect_ratio=max_aspect_ratio,
                           max_request_pixels=max_request_pixels or pixels,
                           body_timeout_s=body_timeout, max_texts=max_texts,
                           max_text_chars=max_text_chars)
    decoding = DecodeSettings(light_threads=decode_threads, heavy_threads=heavy_decode_threads,
                              timeout_s=decode_timeout)
    service = Service(encoder, vector_index, limits, BatchSettings(max_batch, max_wait_ms),
                      decoding, texts=model.texts)
    app = create_app(service, api_key or None)
    if host not in LOOPBACK and not api_key:
        err_console.print(f"[yellow]warning:[/yellow] listening on {host} without an API key: "
                          "anyone who can reach this address can use the service "
                          "(set --api-key or CONTRASTLAB_API_KEY)", highlight=False)
    run_server(app, ServerSettings(host, port, header_timeout, keep_alive_timeout,
                                   max_connections, log_level=log_level,
                                   access_log=log_level in ("debug", "trace")))
