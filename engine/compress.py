"""The state document compressed: Zstandard with a shipped dictionary.

A customer's state document (segengine.codec) is most of what Redis holds per customer, and
every document repeats the same things: the field codes, the dimension and segment names,
timestamps that share their leading digits. Compressed alone, a document of about a
kilobyte shrinks by a third; compressed with a dictionary that already holds those
repetitions, by about three quarters, at a few microseconds each way.

The dictionaries ship with the package (``dictionaries/state-<id>.zdict``) and are never
changed once shipped: a stored frame names its dictionary by id (the frame header's
Dictionary_ID), and that dictionary must read it for as long as such documents exist. A
better dictionary is a new file with a new id; the one ``CURRENT_ID`` names compresses new
documents. The shipped one was trained (``python -m bench.state_dictionary``) on the
documents the CDNOW demo data leaves with the shipped rule packs, not on the benchmark's
workload; rule packs of one's own compress less well, never wrongly.
"""

from __future__ import annotations

import functools
from pathlib import Path

import zstandard

MAGIC = b"\x28\xb5\x2f\xfd"  # a Zstandard frame's first bytes (never a MessagePack map's or a JSON object's)
CURRENT_ID = 0x5E6E0001  # the dictionary new documents are compressed with (private-use id range)
LEVEL = 3
DICTIONARIES = Path(__file__).resolve().parent / "dictionaries"


class UnknownDictionary(ValueError):
    """A document compressed with a dictionary this version does not ship (written by a newer one)."""


def dictionary_path(dict_id: int) -> Path:
    return DICTIONARIES / f"state-{dict_id:08x}.zdict"


@functools.cache
def _dictionary(dict_id: int) -> zstandard.ZstdCompressionDict:
    path = dictionary_path(dict_id)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UnknownDictionary(
            f"a state document is compressed with dictionary {dict_id:#010x}, which this segengine does not ship "
            "(written by a newer version?)"
        ) from None
    found = zstandard.ZstdCompressionDict(data)
    if found.dict_id() != dict_id:
        raise UnknownDictionary(f"{path.name} holds dictionary {found.dict_id():#010x}, not {dict_id:#010x}")
    return found


@functools.cache
def _compressor() -> zstandard.ZstdCompressor:
    return zstandard.ZstdCompressor(level=LEVEL, dict_data=_dictionary(CURRENT_ID), write_checksum=False)


@functools.cache
def _decompressor(dict_id: int) -> zstandard.ZstdDecompressor:
    return zstandard.ZstdDecompressor(dict_data=_dictionary(dict_id))


def compress(raw: bytes) -> bytes:
    """``raw`` as one Zstandard frame, with the current dictionary and its content size; or
    ``raw`` itself where the frame would not be smaller (a near-empty document)."""
    frame = _compressor().compress(raw)
    return frame if len(frame) < len(raw) else raw


def decompress(blob: bytes) -> bytes:
    """What ``compress`` was given: a frame is read with whichever shipped dictionary it names."""
    if not is_compressed(blob):
        return blob
    return _decompressor(zstandard.get_frame_parameters(blob).dict_id).decompress(blob)


def is_compressed(blob: bytes) -> bool:
    return blob[:4] == MAGIC


def raw_size(blob: bytes) -> int:
    """The size of the document ``blob`` holds, before compression (read from the frame header)."""
    return zstandard.frame_content_size(blob) if is_compressed(blob) else len(blob)
