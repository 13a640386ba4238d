"""The service's limits: malformed parameters, pixel budgets, extreme and lying images, the
bounded decode pools with their deadline, and dropping the work of clients that have gone."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import struct
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed")
pytest.importorskip("faiss", reason="the serve extra is not installed")

import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image, ImageFile  # noqa: E402

from contrastlab.serve.app import ApiError, Service, ServiceLimits, create_app  # noqa: E402
from contrastlab.serve.decoding import (  # noqa: E402
    ClientGoneError,
    DecodeBusyError,
    Decoder,
    DecodeSettings,
    DecodeTimeoutError,
)
from contrastlab.serve.images import ImageTooLargeError, OpenedImage, decode_image  # noqa: E402
from contrastlab.serve.index import build_index  # noqa: E402
from tests.serve.serve_helpers import encode_png, png_bomb  # noqa: E402


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def jpeg(width: int, height: int, progressive: bool = False) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", progressive=progressive)
    return buffer.getvalue()


def lying_jpeg(width: int, height: int, claimed: tuple[int, int]) -> bytes:
    """A valid ``width`` x ``height`` JPEG whose frame header claims ``claimed`` instead."""
    data = bytearray(jpeg(width, height))
    position = 2
    while data[position + 1] not in (0xC0, 0xC2):
        position += 2 + struct.unpack(">H", data[position + 2:position + 4])[0]
    data[position + 5:position + 9] = struct.pack(">HH", claimed[1], claimed[0])
    return bytes(data)


@pytest.fixture(scope="module")
def service(run_encoder) -> Service:
    index = build_index(np.random.default_rng(0).standard_normal((50, 64)).astype(np.float32),
                        meta=run_encoder.card.to_json())
    limits = ServiceLimits(max_pixels=4096 * 4096, max_images=8, max_request_pixels=300_000)
    return Service(run_encoder, index, limits)


@pytest.fixture(scope="module")
def client(service) -> Iterator[TestClient]:
    with TestClient(create_app(service)) as test_client:
        yield test_client


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the images decoded (OpenedImage.decode calls) during the test."""
    calls: list[str] = []
    original = OpenedImage.decode

    def counting(self: OpenedImage, channels: int, size: int) -> np.ndarray:
        calls.append(self.name)
        return original(self, channels, size)

    monkeypatch.setattr(OpenedImage, "decode", counting)
    return calls


def error_of(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"} and body["error"] == code, body
    assert isinstance(body["detail"], str)
    return body["detail"]


# ---------------------------------------------------------------------- malformed parameters

@pytest.mark.parametrize("k", ["²", "1" * 5000, "٣", "", " ", "-1", "0", "1001", "1e3", "0x10",
                               "10.0", "+5", "5 5", "１０"])
def test_a_malformed_multipart_k_is_422_naming_k(client, png, k: str) -> None:
    response = client.post("/v1/search", files={"image": ("q.png", png())}, data={"k": k})
    detail = error_of(response, 422, "invalid_request")
    assert "'k'" in detail and len(detail) < 200


def test_a_well_formed_multipart_k(client, png) -> None:
    response = client.post("/v1/search", files={"image": ("q.png", png())}, data={"k": " 7 "})
    assert response.status_code == 200 and response.json()["k"] == 7


@pytest.mark.parametrize("k", ["3", True, 1.5, 10**30, -1, 0, 1001, None, [3], {"k": 3}])
def test_a_malformed_json_k_is_422_naming_k(client, png, k: Any) -> None:
    detail = error_of(client.post("/v1/search", json={"image": b64(png()), "k": k}), 422,
                      "invalid_request")
    assert detail.startswith("k: "), detail


def test_json_errors_name_the_field(client, png) -> None:
    detail = error_of(client.post("/v1/embed", json={"images": [b64(png()), 7]}), 422,
                      "invalid_request")
    assert detail.startswith("images[1]: ")
    detail = error_of(client.post("/v1/similarity", json={"image_a": b64(png())}), 422,
                      "invalid_request")
    assert detail.startswith("image_b: ")
    huge = b'{"image": "x", "k": 1' + b"0" * 5000 + b"}"  # int() refuses over 4300 digits
    detail = error_of(client.post("/v1/search", content=huge,
                                  headers={"content-type": "application/json"}), 422,
                      "invalid_json")
    assert "digits" in detail


# ---------------------------------------------------------------------- pixel limits

def test_the_request_pixel_budget_is_checked_before_decoding(client, decodes) -> None:
    image = encode_png(np.zeros((256, 256), dtype=np.uint8))  # 65,536 pixels; budget 300,000
    ok = client.post("/v1/embed", files=[("images", ("a.png", image))] * 4)
    assert ok.status_code == 200 and len(decodes) == 4
    decodes.clear()
    detail = error_of(client.post("/v1/embed", files=[("images", ("a.png", image))] * 5), 413,
                      "too_many_pixels")
    assert "327,680 pixels, over the limit of 300,000" in detail and decodes == []


def test_jpegs_count_at_their_reduced_decoding_scale(client) -> None:
    big_jpeg = jpeg(2048, 2048)  # decoded at 1/8: 256 x 256, inside the budget
    assert client.post("/v1/embed", files={"images": ("a.jpg", big_jpeg)}).status_code == 200
    big_png = encode_png(np.zeros((2048, 2048), dtype=np.uint8))  # 4,194,304 pixels
    error_of(client.post("/v1/embed", files={"images": ("a.png", big_png)}), 413,
             "too_many_pixels")


@pytest.mark.parametrize("width,height,why", [(16_777_216, 1, "longer side"),
                                              (1, 16_777_216, "longer side"),
                                              (400, 10, "aspect ratio 40:1")])
def test_extreme_sides_and_aspect_ratios_are_refused_from_the_header(client, decodes, width,
                                                                     height, why) -> None:
    image = png_bomb(width, height)
    detail = error_of(client.post("/v1/embed", files={"images": ("a.png", image)}), 413,
                      "image_too_large")
    assert why in detail and detail.startswith("images[0]: ") and decodes == []


def test_an_image_over_the_per_image_limit_is_still_413(run_encoder) -> None:
    with pytest.raises(ImageTooLargeError, match="over the pixel limit"):
        decode_image(png_bomb(5000, 5000), 1, 8)


# ---------------------------------------------------------------------- lying and truncated

@pytest.mark.parametrize("claimed", [(4000, 4000), (512, 512)])
def test_a_jpeg_claiming_more_pixels_than_it_holds_is_400(client, claimed) -> None:
    detail = error_of(client.post("/v1/embed", files={"images": (
        "a.jpg", lying_jpeg(32, 32, claimed))}), 400, "not_an_image")
    assert f"{claimed[0]} x {claimed[1]} pixels need" in detail
    assert "truncated or corrupt" in detail


def test_truncated_images_are_400(client) -> None:
    whole = jpeg(256, 256)
    sos = whole.index(b"\xff\xda")
    scan = sos + 2 + struct.unpack(">H", whole[sos + 2:sos + 4])[0]
    # cut without an end marker; cut to 50 bytes of image data (256 x 256 pixels need at least
    # 192) with an end marker appended, which libjpeg alone would fill with grey
    for cut in (whole[: len(whole) // 2], whole[: scan + 50] + b"\xff\xd9"):
        error_of(client.post("/v1/embed", files={"images": ("a.jpg", cut)}), 400,
                 "not_an_image")
    png = encode_png(np.random.default_rng(1).integers(0, 256, (64, 64), dtype=np.uint8))
    error_of(client.post("/v1/embed", files={"images": ("a.png", png[:-100])}), 400,
             "not_an_image")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_real_jpegs_pass_the_data_check() -> None:
    for width, height in [(1, 1), (7, 3), (640, 480), (3000, 200)]:
        for progressive in (False, True):
            assert decode_image(jpeg(width, height, progressive), 3, 8).shape == (3, 8, 8)
    flat = io.BytesIO()
    Image.new("L", (2048, 2048), 128).save(flat, format="JPEG", quality=1, optimize=True)
    assert decode_image(flat.getvalue(), 1, 8).shape == (1, 8, 8)


# ---------------------------------------------------------------------- decode pools

class BlockingDecodes:
    """Makes OpenedImage.decode wait until released (to hold a pool busy deterministically)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.calls: list[str] = []
        original = OpenedImage.decode

        def blocking(image: OpenedImage, channels: int, size: int) -> np.ndarray:
            self.calls.append(image.name)
            self.started.set()
            assert self.release.wait(30)
            return original(image, channels, size)

        monkeypatch.setattr(OpenedImage, "decode", blocking)


def heavy_png() -> bytes:
    return encode_png(np.zeros((1600, 1600), dtype=np.uint8))  # 2.56 M pixels: heavy


def admitted(decoder: Decoder) -> int:
    return decoder.small.admitted + decoder.light.admitted + decoder.heavy.admitted


def test_requests_are_decoded_by_the_pool_of_their_cost() -> None:
    decoder = Decoder(1, 28)
    opened = decoder.open_all([("a", encode_png(np.zeros((28, 28), np.uint8)))] * 2)
    assert decoder.lane(decoder.cost(opened)) is decoder.small  # what a resizing client sends
    opened = decoder.open_all([("a", encode_png(np.zeros((28, 28), np.uint8)))] * 64)
    assert decoder.lane(decoder.cost(opened)) is decoder.light  # 64 small images
    opened = decoder.open_all([("a", heavy_png())])
    assert decoder.lane(decoder.cost(opened)) is decoder.heavy
    decoder.close()


def test_a_full_heavy_pool_answers_busy_at_once_and_small_requests_still_pass(
        monkeypatch) -> None:
    blocker = BlockingDecodes(monkeypatch)
    decoder = Decoder(1, 8, settings=DecodeSettings(heavy_threads=1, heavy_queue=0))

    async def scenario() -> None:
        first = asyncio.create_task(decoder.decode([("a", heavy_png())]))
        await asyncio.to_thread(blocker.started.wait, 30)
        with pytest.raises(DecodeBusyError, match="heavy"):
            await decoder.decode([("b", heavy_png())])
        assert decoder.heavy.refused == 1
        small = asyncio.create_task(decoder.decode([("c", encode_png(np.zeros((8, 8),
                                                                             np.uint8)))]))
        await asyncio.sleep(0.2)
        assert blocker.calls == ["a", "c"]  # the small pool runs while the heavy one is busy
        blocker.release.set()
        assert (await first).shape == (1, 1, 8, 8) and (await small).shape == (1, 1, 8, 8)

    asyncio.run(scenario())
    assert admitted(decoder) == 0
    decoder.close()


def test_busy_is_503_with_retry_after(client, service, png, monkeypatch) -> None:
    async def busy(*_args: Any) -> None:
        raise DecodeBusyError("the server is decoding as many heavy requests as it takes")

    monkeypatch.setattr(service.decoder, "decode", busy)
    response = client.post("/v1/embed", files={"images": ("a.png", png())})
    error_of(response, 503, "busy")
    assert response.headers["retry-after"] == "1"


def test_a_request_past_its_deadline_stops_before_its_next_image(monkeypatch) -> None:
    blocker = BlockingDecodes(monkeypatch)
    decoder = Decoder(1, 8, settings=DecodeSettings(timeout_s=0.3))
    images = [(f"images[{i}]", encode_png(np.zeros((8, 8), np.uint8))) for i in range(3)]

    async def scenario() -> None:
        with pytest.raises(DecodeTimeoutError):
            await decoder.decode(images)
        blocker.release.set()
        while admitted(decoder):  # the worker finishes its current image, then stops
            await asyncio.sleep(0.01)

    asyncio.run(scenario())
    assert blocker.calls == ["images[0]"]
    decoder.close()


# ---------------------------------------------------------------------- clients that have gone

async def asgi_call(app: Any, path: str, body: bytes, content_type: str,
                    gone: asyncio.Event) -> list[dict[str, Any]]:
    """Call the ASGI app directly, as a client that 'disconnects' when ``gone`` is set; return
    the messages the app sent."""
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "", "client": ("127.0.0.1", 5000),
             "server": ("127.0.0.1", 8000),
             "headers": [(b"content-type", content_type.encode()),
                         (b"content-length", str(len(body)).encode())]}
    await app(scope, receive, send)
    return sent


def multipart(files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://x/", files=[(n, ("f", b)) for n, b in files])
    return request.read(), request.headers["content-type"]


def test_no_work_starts_for_a_client_already_gone(run_encoder, decodes) -> None:
    service = Service(run_encoder)
    app = create_app(service)
    body, content_type = multipart([("images", encode_png(np.zeros((8, 8), np.uint8)))] * 3)

    async def scenario() -> list[dict[str, Any]]:
        gone = asyncio.Event()
        gone.set()
        return await asgi_call(app, "/v1/embed", body, content_type, gone)

    sent = asyncio.run(scenario())
    assert sent[0]["status"] == 499 and decodes == [] and service.batcher.stats.requests == 0


def test_a_client_gone_during_decoding_stops_the_work(run_encoder, monkeypatch) -> None:
    blocker = BlockingDecodes(monkeypatch)
    service = Service(run_encoder)
    app = create_app(service)
    body, content_type = multipart([("images", encode_png(np.zeros((8, 8), np.uint8)))] * 4)

    async def scenario() -> list[dict[str, Any]]:
        gone = asyncio.Event()
        task = asyncio.create_task(asgi_call(app, "/v1/embed", body, content_type, gone))
        await asyncio.to_thread(blocker.started.wait, 30)
        gone.set()  # the client leaves while its first image is being decoded
        sent = await task
        blocker.release.set()
        while admitted(service.decoder):
            await asyncio.sleep(0.01)
        return sent

    sent = asyncio.run(scenario())
    assert sent[0]["status"] == 499
    assert blocker.calls == ["images[0]"] and service.batcher.stats.requests == 0


def test_a_client_gone_while_waiting_for_the_model_is_skipped(run_encoder) -> None:
    service = Service(run_encoder)
    release, running = threading.Event(), threading.Event()
    batches: list[int] = []

    def slow_model(images: np.ndarray) -> np.ndarray:
        batches.append(len(images))
        running.set()
        assert release.wait(30)
        return run_encoder.embed(images)

    service.batcher.run_batch = slow_model
    image = [("images[0]", encode_png(np.zeros((8, 8), np.uint8)))]

    async def scenario() -> None:
        first = asyncio.create_task(service.embed_blobs(image))
        await asyncio.to_thread(running.wait, 30)
        gone = asyncio.Event()

        async def is_gone() -> bool:
            return gone.is_set()

        second = asyncio.create_task(service.embed_blobs(image, is_gone))
        await asyncio.sleep(0.2)
        gone.set()
        with pytest.raises(ApiError) as caught:
            await second
        assert caught.value.status == 499
        assert isinstance(caught.value.__cause__, ClientGoneError)
        release.set()
        assert (await first).shape == (1, 64)
        await asyncio.sleep(0.2)
        await service.batcher.stop()

    asyncio.run(scenario())
    assert batches == [1]  # the second request never reached the model


def test_info_reports_the_limits(client) -> None:
    info = client.get("/v1/info").json()
    assert info["limits"]["max_request_pixels"] == 300_000
    assert info["limits"]["max_aspect_ratio"] == 20 and info["limits"]["max_side"] == 16384
    pools = info["decoding"]["pools"]
    assert pools["heavy"]["threads_and_queue"] == 3 and pools["small"]["admitted"] == 0
    assert json.dumps(info)
