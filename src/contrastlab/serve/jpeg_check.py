"""Is there enough image data in a JPEG for the size its header announces?

libjpeg does not fail on a JPEG whose entropy-coded data ends early when an end marker follows:
it warns (Pillow drops the warning) and fills the rest with grey. So a 1 kB file whose header
says 4000 x 4000 decodes "successfully" into a grey image, and a truncated JPEG with an end
marker appended passes as a whole one. This module catches the gross cases before decoding:
every 8 x 8 block of every component takes at least one bit of Huffman-coded data (its DC
coefficient: a Huffman code is at least one bit long, in sequential and progressive files
alike), so the bytes of entropy-coded data must be at least ``blocks / 8``. A file under that
bound is truncated or lying about its size.

Arithmetic-coded JPEGs (SOF9-SOF15, rare) can code a block in a fraction of a bit, so no bound
applies to them and they are not checked.
"""

from __future__ import annotations

import math
import re
import struct

#: Start-of-frame markers of Huffman-coded JPEGs (baseline, extended, progressive, lossless,
#: and their differential forms), whose blocks take at least one bit each.
HUFFMAN_FRAMES = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7})
#: Start-of-frame markers of arithmetic-coded JPEGs (not checked).
ARITHMETIC_FRAMES = frozenset({0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})

_SOS, _EOI, _SOI, _TEM = 0xDA, 0xD9, 0xD8, 0x01
_RESTARTS = range(0xD0, 0xD8)
#: The end of entropy-coded data: 0xFF followed by a marker code (not a stuffed 0x00, a restart
#: marker or a fill byte).
_END_OF_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
#: A marker: 0xFF (after any stray bytes and fill bytes) and its code.
_MARKER = re.compile(rb"\xff([^\xff])")
#: Most marker segments walked; real files have a few dozen.
MAX_SEGMENTS = 10_000


def _blocks(payload: bytes) -> int | None:
    """8 x 8 blocks of all components, from a start-of-frame segment's payload."""
    if len(payload) < 6:
        return None
    height, width, count = struct.unpack(">HHB", payload[1:6])
    sampling = [(payload[7 + 3 * i] >> 4, payload[7 + 3 * i] & 15)
                for i in range(count) if 8 + 3 * i <= len(payload)]
    if not sampling or height == 0 or width == 0:
        return None
    h_max = max(h for h, _ in sampling) or 1
    v_max = max(v for _, v in sampling) or 1
    total = 0
    for h, v in sampling:
        columns = math.ceil(math.ceil(width * h / h_max) / 8)
        rows = math.ceil(math.ceil(height * v / v_max) / 8)
        total += columns * rows
    return total


def jpeg_data_shortfall(data: bytes) -> tuple[int, int] | None:
    """``(entropy_bytes, minimum_bytes)`` when ``data`` holds fewer bytes of entropy-coded data
    than its frame needs (see the module doc), else None (enough data, an arithmetic-coded
    file, or a structure this walker does not follow: then the decoder has the last word).

    Raises:
        ValueError: more than :data:`MAX_SEGMENTS` marker segments (no real file has them).
    """
    position, blocks, entropy = 2, None, 0
    for _ in range(MAX_SEGMENTS):
        found = _MARKER.search(data, position)  # libjpeg skips stray and fill bytes as well
        if found is None:
            break
        marker = found.group(1)[0]
        position = found.end()
        if marker == _EOI:
            break
        if marker in (_SOI, _TEM, 0x00) or marker in _RESTARTS:
            continue
        if position + 2 > len(data):
            break
        length = struct.unpack(">H", data[position:position + 2])[0]
        payload = data[position + 2:position + length]
        position += length
        if marker in ARITHMETIC_FRAMES:
            return None
        if marker in HUFFMAN_FRAMES and blocks is None:
            blocks = _blocks(payload)
        if marker == _SOS:
            end = _END_OF_SCAN.search(data, position)
            stop = end.start() if end else len(data)
            entropy += max(stop - position, 0)
            position = stop
    else:
        raise ValueError(f"the JPEG has more than {MAX_SEGMENTS} marker segments")
    if blocks is None:
        return None
    needed = math.ceil(blocks / 8)
    return (entropy, needed) if entropy < needed else None
