"""What every command shares: the Typer app, the one-line errors, and ``--out`` and filter arguments."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Reproduce and extend the ablations of 'Identity Mappings in Deep Residual Networks'.",
)
out = Console() if sys.stdout.isatty() else Console(width=200)  # tables unwrapped in files and pipes
OVERRIDES = typer.Argument(None, help="Hydra overrides, e.g. model=resnet110 unit=full_preact seed=1")


def one_line(e: BaseException) -> str:
    """A composition or validation error as one line that names the problem and the valid choices."""
    from hydra.errors import MissingConfigException

    if isinstance(e, MissingConfigException) and e.missing_cfg_file:
        group, _, name = e.missing_cfg_file.rpartition("/")
        valid = [o for o in e.options or [] if o != "schema"]
        return f"unknown {group or 'config'} {name!r}; valid: {', '.join(valid)}"
    text = str(e).splitlines()[0].rstrip(".") if str(e) else type(e).__name__
    if e.__cause__ is not None and str(e.__cause__).strip():
        text += f": {str(e.__cause__).splitlines()[0]}"
    return text


def fail(message: str, code: int = 2):
    err = Console(stderr=True, soft_wrap=True)
    err.print("error:", style="bold red", end=" ")
    err.print(message, markup=False, highlight=False)
    raise typer.Exit(code)


def compose_or_fail(overrides: list[str]):
    from ..config import compose

    try:
        return compose(overrides)
    except Exception as e:
        fail(one_line(e))


def note_skipped(skipped) -> None:
    from ..store import describe_skipped

    err = Console(stderr=True, soft_wrap=True)
    for line in describe_skipped(skipped):
        err.print(f"note: {line}", highlight=False, markup=False)


def check_out(path: Optional[Path], folder: bool) -> None:
    """``--out``, before any work: a folder for figures; for a page or a table a new file or a regular one to
    replace (never a device, a FIFO, a socket), in a folder this user can write. Else one line."""
    if path is None:
        return
    if folder and path.exists() and not path.is_dir():
        fail(f"--out {path} is a file; plot writes a PNG and a PDF into a folder: give a folder")
    if not folder and path.is_dir():
        fail(f"--out {path} is a folder; give a file name, e.g. --out {path / 'out.txt'}")
    if not folder and path.exists() and not path.is_file():
        kind = next((k for k, test in _KINDS if test(path)), "not a regular file")
        fail(f"--out {path} is {kind}; --out writes a new file or replaces a regular one")
    target = (path if folder else path.parent).absolute()
    existing = next(p for p in [target, *target.parents] if p.exists())  # the folder the write creates things in
    if not os.access(existing, os.W_OK | os.X_OK):
        fail(f"--out {path}: {existing} is not writable (read-only or not this user's); give another path")


_KINDS = (
    ("a character device", Path.is_char_device),
    ("a block device", Path.is_block_device),
    ("a FIFO", Path.is_fifo),
    ("a socket", Path.is_socket),
)


def write_out(path: Path, text: str) -> None:
    """``--out``'s file, whole or not at all (a full disk: one line; a file there before is kept)."""
    from ..files import atomic_write

    try:
        atomic_write(path, text.encode())
    except OSError as e:
        fail(f"--out: {one_line(e)}", 1)  # the error names the file
    out.print(f"wrote {path}")


def parse_filters(args: Optional[list[str]]) -> tuple[str, dict]:
    """``key=value`` or ``key=a,b`` filters over run records (numbers typed as such); ``store.root=DIR`` apart."""
    from ..presets import typed_value

    root, filters = "results", {}
    for arg in args or []:
        key, sep, value = arg.partition("=")
        if not sep:
            fail(f"filter {arg!r} is not key=value (e.g. data=synthetic budget=smoke seed=0)")
        if key == "store.root":
            root = os.path.expanduser(value)
            continue
        values = [typed_value(v) for v in value.split(",")]
        filters[key] = values if len(values) > 1 else values[0]
    return root, filters
