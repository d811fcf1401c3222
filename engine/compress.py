"""The state document compressed: Zstandard with a shipped dictionary.

A customer's state document (segengine.codec) is most of what Redis holds per customer, and
every document repeats the same things: the field codes, the dimension and segment names,
timestamps that share their leading digits. Compressed alone, a document of about a
kilobyte shrinks by a third; compressed with a dictionary that already holds those
repetitions, by about three quarters, at a few microseconds each way.

The entries of a customer's recent changes (segengine.writes) are compressed one by one with
a dictionary of their own, in a leaner frame: an entry is some 60 bytes, and a standard
frame's header (magic number, dictionary id, content size: 9 bytes) would take most of what
compression saves. An entry's frame is one byte naming its dictionary (``ENTRY_MARKERS``;
never the first byte of a MessagePack array or of JSON) and a Zstandard frame without magic
number, dictionary id or content size: 63 -> 41 bytes each on the benchmark's workload.

The dictionaries ship with the package (``dictionaries/<kind>-<id>.zdict``) and are never
changed once shipped: a stored frame names its dictionary by id (the frame header's
Dictionary_ID), and that dictionary must read it for as long as such documents exist. A
better dictionary is a new file with a new id; the one ``CURRENT_ID`` names compresses new
documents (``RECENT_ID`` new entries). The shipped ones were trained (``python -m
bench.state_dictionary``) on the documents and entries the CDNOW demo data leaves with the
shipped rule packs, not on the benchmark's workload; rule packs of one's own compress less
well, never wrongly.
"""

from __future__ import annotations

import functools
from pathlib import Path

import zstandard

from .paths import PACKAGE

MAGIC = b"\x28\xb5\x2f\xfd"  # a Zstandard frame's first bytes (never a MessagePack map's or array's, nor JSON)
CURRENT_ID = 0x5E6E0001  # the dictionary new state documents are compressed with (private-use id range)
RECENT_ID = 0x5E6E1001  # the one new recent-change entries are compressed with
LEVEL = 3
DICTIONARIES = PACKAGE / "dictionaries"
KINDS = {CURRENT_ID: "state", RECENT_ID: "recent"}  # what each shipped dictionary was trained on
ENTRY_MARKERS = {b"\x01": RECENT_ID}  # an entry's first byte -> the dictionary of its frame
ENTRY_MARKER = b"\x01"  # new entries'
MAX_ENTRY = 0x10000  # bytes an entry expands to, at most (segengine.writes.MAX_RECENT_ENTRY)
# An entry is compressed with Zstandard's "fast" strategy (its level 1's), a window of 1 KiB and
# tables sized for such inputs, not those of a level, which are sized for any input and cleared
# before each one: a sixth less time, the same bytes within a tenth of one (an entry longer than
# the window compresses less well). The frame reads the same either way.
ENTRY_PARAMETERS = {"window_log": 10, "hash_log": 14, "chain_log": 13, "search_log": 1, "min_match": 4,
                    "target_length": 0, "strategy": 1}  # fmt: skip


class UnknownDictionary(ValueError):
    """A document compressed with a dictionary this version does not ship (written by a newer one)."""


def dictionary_path(dict_id: int) -> Path:
    return DICTIONARIES / f"{KINDS.get(dict_id, 'state')}-{dict_id:08x}.zdict"


@functools.cache
def _dictionary(dict_id: int) -> zstandard.ZstdCompressionDict:
    path = dictionary_path(dict_id)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UnknownDictionary(
            f"stored data is compressed with dictionary {dict_id:#010x}, which this segengine does not ship "
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
    """A state document as one Zstandard frame, with the current dictionary and its content
    size; or ``raw`` itself where the frame would not be smaller (a near-empty document)."""
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


@functools.cache
def _entry_compressor() -> zstandard.ZstdCompressor:
    params = zstandard.ZstdCompressionParameters(
        **ENTRY_PARAMETERS, format=zstandard.FORMAT_ZSTD1_MAGICLESS, write_content_size=False, write_dict_id=False
    )
    return zstandard.ZstdCompressor(dict_data=_dictionary(ENTRY_MARKERS[ENTRY_MARKER]), compression_params=params)


@functools.cache
def _entry_decompressor(marker: bytes) -> zstandard.ZstdDecompressor:
    return zstandard.ZstdDecompressor(
        dict_data=_dictionary(ENTRY_MARKERS[marker]), format=zstandard.FORMAT_ZSTD1_MAGICLESS
    )


def compress_entry(raw: bytes) -> bytes:
    """A recent-change entry in its lean frame, or ``raw`` itself where that is not smaller."""
    frame = ENTRY_MARKER + _entry_compressor().compress(raw)
    return frame if len(frame) < len(raw) else raw


def expand_entry(blob: bytes) -> bytes:
    """What ``compress_entry`` was given (an entry stored before compression: as it is)."""
    marker = blob[:1]
    if marker in ENTRY_MARKERS:
        return _entry_decompressor(marker).decompress(blob[1:], max_output_size=MAX_ENTRY)
    if b"\x00" < marker < b"\x20":  # the markers' range: never MessagePack's array or JSON's first byte
        raise UnknownDictionary(
            f"a recent-change entry names dictionary marker {marker[0]}, which this segengine does not ship"
        )
    return blob
