"""The results store: one directory per run, keyed by a hash of the run's identity (PAPER-relevant config).

``<root>/runs/<key>/``: ``config.yaml`` (the composed config), ``metrics.jsonl`` (one row per evaluation),
``grad_flow.jsonl``, ``checkpoint.pt``, ``train.log`` (from the local launcher), ``lock`` (held while a process
trains the cell) and, written last and atomically, ``result.json``: its presence means the run ended.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .config import identity

FAILED = ("diverged", "failed")


def run_key(cfg: DictConfig) -> str:
    blob = json.dumps(identity(cfg), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def run_dir(cfg: DictConfig) -> Path:
    return Path(cfg.store.root) / "runs" / run_key(cfg)


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename over it: readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, (json.dumps(obj, indent=1, default=str) + "\n").encode())


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSON-lines file; a torn last line (a killed writer) is ignored."""
    rows = []
    with contextlib.suppress(FileNotFoundError), open(path) as f:
        for line in f:
            with contextlib.suppress(json.JSONDecodeError):
                rows.append(json.loads(line))
    return rows


def append_jsonl(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row, default=str) + "\n")


def truncate_jsonl(path: Path, last_iteration: int) -> None:
    """Drop rows past ``last_iteration`` (written after the checkpoint a run resumes from)."""
    keep = [r for r in read_jsonl(path) if r.get("iteration", 0) <= last_iteration]
    atomic_write(path, "".join(json.dumps(r) + "\n" for r in keep).encode())


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


def cell_status(directory: Path) -> str:
    """done | diverged | failed | running | partial (has a checkpoint) | pending."""
    result = read_json(directory / "result.json")
    if result is not None:
        return result["status"]
    if is_locked(directory):
        return "running"
    return "partial" if (directory / "checkpoint.pt").exists() else "pending"


def save_config(directory: Path, cfg: DictConfig) -> None:
    atomic_write(directory / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True).encode())


def results(root: str | Path) -> list[dict]:
    """Every ended run's result.json (each holds its identity config): the store's index."""
    return [r for p in sorted(Path(root).glob("runs/*/result.json")) if (r := read_json(p)) is not None]


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
