"""The results store: one directory per run, keyed by a hash of the fields that decide its result.

``<root>/runs/<key>/``: ``config.yaml`` (the composed config), ``metrics.jsonl`` (one row per evaluation),
``grad_flow.jsonl``, ``starts.jsonl`` (one row each time a process started training it), ``checkpoint.pt``,
``train.log`` (from the local launcher), ``lock`` (held while a process trains the cell), with ``logger=`` the
trackers' files and ``trackers.json`` (``trackers.py``) and, written last and
atomically, ``result.json``: its presence means the run ended (docs/architecture.md, "The run directory").

Readers never trust the store: a file that is not what we write (binary, a list, a foreign JSON) is skipped and
counted, never a traceback.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .config import key_fields
from .files import WriteError, atomic_write
from .status import Status


def run_key(cfg: DictConfig) -> str:
    blob = json.dumps(key_fields(cfg), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def run_dir(cfg: DictConfig) -> Path:
    return Path(cfg.store.root) / "runs" / run_key(cfg)


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, (json.dumps(obj, indent=1, default=str) + "\n").encode())


def read_json(path: Path) -> dict | None:
    """The JSON object in ``path``; None when it is missing or is not a JSON object (binary, a list, torn)."""
    try:
        obj = json.loads(path.read_bytes())
    except (OSError, ValueError):  # missing, a folder, unreadable; not JSON, not UTF-8
        return None
    return obj if isinstance(obj, dict) else None


def read_jsonl(path: Path) -> list[dict]:
    """The JSON objects of a JSON-lines file; other lines (a torn last line of a killed writer, a stray ``42``)
    are ignored."""
    rows = []
    with contextlib.suppress(OSError), open(path, "rb") as f:
        for line in f:
            with contextlib.suppress(ValueError):
                row = json.loads(line)
                if isinstance(row, dict):
                    rows.append(row)
    return rows


def append_jsonl(path: Path, row: dict) -> None:
    try:
        with open(path, "a") as f:
            f.write(json.dumps(row, default=str) + "\n")
    except OSError as e:
        raise WriteError.at(path, e) from None


def truncate_jsonl(path: Path, last_iteration: int) -> None:
    """Keep the rows up to ``last_iteration`` (the checkpoint a run resumes from); -1 keeps none (a fresh start)."""
    keep = [r for r in read_jsonl(path) if isinstance(r.get("iteration"), int) and r["iteration"] <= last_iteration]
    atomic_write(path, "".join(json.dumps(r) + "\n" for r in keep).encode())


def record_start(directory: Path, iteration: int) -> list[int]:
    """Log that a process starts training the cell at ``iteration``; returns the iterations of every restart so
    far (each start after the first, the same iteration as often as it happened)."""
    append_jsonl(
        directory / "starts.jsonl",
        {"iteration": iteration, "time": time.time(), "host": socket.gethostname(), "pid": os.getpid()},
    )
    return [r["iteration"] for r in read_jsonl(directory / "starts.jsonl")][1:]


@contextlib.contextmanager
def cell_lock(directory: Path) -> Iterator[bool]:
    """Hold the cell's lock without waiting; yields False when another process holds it."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def is_locked(directory: Path) -> bool:
    if not (directory / "lock").exists():
        return False
    with open(directory / "lock") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def read_result(directory: Path) -> dict | None:
    """The cell's result.json when it is one of ours (a JSON object with a known status), else None."""
    result = read_json(directory / "result.json")
    if result is None or result.get("status") not in {s.value for s in Status}:
        return None
    return result


def cell_status(directory: Path) -> Status:
    result = read_result(directory)
    if result is not None:
        return Status(result["status"])
    if is_locked(directory):
        return Status.running
    return Status.partial if (directory / "checkpoint.pt").exists() else Status.pending


def save_config(directory: Path, cfg: DictConfig) -> None:
    atomic_write(directory / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True).encode())


def scan(root: str | Path) -> tuple[list[dict], Counter]:
    """Every run's result.json that is one of ours (each holds the config that keys it): the store's index; and
    how many entries of ``runs/`` were skipped, by reason."""
    found, skipped = [], Counter()
    for path in sorted(Path(root).glob("runs/*")):
        if not path.is_dir():
            skipped["not a run directory"] += 1
        elif (path / "result.json").exists():
            result = read_result(path)
            if result is None or not isinstance(result.get("config"), dict):
                skipped["unreadable result.json"] += 1
            else:
                found.append({**result, "key": path.name})
    return found, skipped


def results(root: str | Path) -> list[dict]:
    return scan(root)[0]


def describe_skipped(skipped: Counter) -> str | None:
    """One line for readers to print once: what they left out of the store, and why."""
    if not skipped:
        return None
    reasons = ", ".join(f"{n} {why}" for why, n in skipped.most_common())
    return f"skipped {sum(skipped.values())} entries of the store that are not runs of resnet-ablate ({reasons})"


def check_writable(root: str | Path) -> None:
    root = Path(root)
    try:
        (root / "runs").mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root / "runs"):
            pass
    except OSError as e:
        raise PermissionError(
            f"store.root {str(root)!r} is not writable ({e.strerror}); choose another with store.root=DIR"
        ) from None
