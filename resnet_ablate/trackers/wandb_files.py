"""A reader of W&B's run files: the history a run holds on disk, read without W&B's service (a resumed run continues
from the step its files hold)."""

from __future__ import annotations

import glob
import json
import struct
import zlib
from pathlib import Path
from typing import Any

# W&B's run files (``run-<id>.wandb``) are a LevelDB-style log of protobuf records: a 7-byte file header, then
# 32 KiB blocks of chunks, each a 7-byte header (CRC, length, type: full, first, middle, last) and its bytes; the
# CRC is zlib's CRC-32 of the type byte and the bytes. The record types are wandb's internal protobufs: pyproject
# bounds wandb to the versions this reader was tested with.
_BLOCK, _HEADER = 32768, 7


def wandb_records(path: Path):
    """The protobuf ``Record``s of one W&B run file, in order, up to a torn tail (a killed writer) or the first chunk
    whose CRC does not match (a damaged file): what follows is not read."""
    from wandb.proto.wandb_internal_pb2 import Record

    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file")
    pos, pending = _HEADER, b""
    while pos + _HEADER <= len(data):
        room = _BLOCK - pos % _BLOCK
        if room < _HEADER:  # a block's zero-filled trailer
            pos += room
            continue
        crc, length, kind = struct.unpack_from("<IHB", data, pos)
        chunk = data[pos + _HEADER : pos + _HEADER + length]
        pos += _HEADER + length
        if kind == 0 or len(chunk) < length or zlib.crc32(bytes([kind]) + chunk) != crc:  # the end, torn, damaged
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = Record()
            record.ParseFromString(pending)
            yield record


def wandb_history(directory: Path, run_id: str) -> list[dict[str, Any]]:
    """The history rows (``_step`` and the logged values) of a W&B run's files under ``directory``, over all of
    its segments (one per start), in the order they were written."""
    rows = []
    for path in sorted(glob.glob(str(directory / "wandb" / f"*-{run_id}" / f"run-{run_id}.wandb"))):
        for record in wandb_records(Path(path)):
            if record.HasField("history"):
                rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
    return rows
