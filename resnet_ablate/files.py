"""Files written whole or not at all, with the mode ``open`` would give them."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

PARTIAL = ".partial-"  # in the name of a file being written: ``.NAME.partial-XXXX``


class WriteError(OSError):
    """A write failed (a full disk, a quota, permissions); its text is one line naming the path."""

    def __str__(self) -> str:
        return str(self.strerror)

    @classmethod
    def at(cls, path: Path, error: OSError) -> WriteError:
        return cls(error.errno, f"cannot write {path}: {error.strerror or error}")


def _umask() -> int:
    """This process's umask, read without changing it (os.umask would race with other threads)."""
    with contextlib.suppress(OSError, ValueError, StopIteration), open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("Umask:")).split()[1], 8)
    return 0o022


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename over it: readers see old or new, never half.
    The file gets the mode ``open`` would give it (0666 less the umask), so a group can share a store. On failure
    the old file stays and the temporary one is removed."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{PARTIAL}")
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(e, OSError) and not isinstance(e, WriteError):
            raise WriteError.at(path, e) from None
        raise


def open_nofollow(path: Path, flags: int) -> int:
    """``os.open`` that refuses a link (a link planted in a run directory would send our writes elsewhere): a
    ``WriteError`` naming the path."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise WriteError(e.errno, f"cannot use {path}: a link (links in a run directory are refused)") from None
        raise WriteError.at(path, e) from None


def read_bytes(path: Path, limit: int) -> bytes:
    """The file's bytes (at most ``limit``); a link is refused (OSError ELOOP), a larger file is an OSError."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes")
    return data


def numbered(path: Path) -> Path:
    """``path`` itself if free, else ``path.1``, ``path.2``, …: a name that overwrites nothing."""
    candidate, n = path, 0
    while candidate.exists() or candidate.is_symlink():
        n += 1
        candidate = path.with_name(f"{path.name}.{n}")
    return candidate


def set_aside(path: Path, suffix: str = ".rejected") -> Path:
    """Rename ``path`` to ``<name>.rejected`` (numbered when that exists): kept, never overwritten."""
    target = numbered(path.with_name(path.name + suffix))
    os.replace(path, target)
    return target


def remove_leftovers(directory: Path) -> list[str]:
    """Remove the temporary files ``atomic_write`` leaves when its process is killed mid-write; the run's next
    start calls this, under the cell's lock."""
    removed = []
    for p in directory.glob(f".*{PARTIAL}*"):
        if p.is_file() and not p.is_symlink():
            p.unlink(missing_ok=True)
            removed.append(p.name)
    return removed
