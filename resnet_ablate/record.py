"""A run's record, read once and typed. ``read`` turns a run directory into a ``Record`` or a ``NotARun`` that
says why it is skipped: a link, a torn or foreign result.json, a field of the wrong type or out of range, a
directory whose name is not the run key of its config (a copy). Every reader of the store (status, table,
compare, plot, report, the sweep's skip rule, the notebook API) goes through it; nothing else parses result.json.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from . import axes
from .config import conf_dir
from .files import parse_json, read_bytes, write_json
from .models.units import zeroes_a_norm
from .status import Status

RESULT_LIMIT = 1 << 20  # bytes: a result.json is a few kB
RECORDED = (Status.done, Status.diverged, Status.failed)  # what a result.json may say (failed: not ended)


class NotARun(ValueError):
    """Why a store entry is not read as a run (one line)."""


def key_of(config: dict) -> str:
    """The run key of a keyed config (``config.key_fields``): a hash of its JSON."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fraction(value: Any) -> bool:
    return _number(value) and math.isfinite(value) and 0 <= value <= 1


def _text(value: Any) -> bool:
    return isinstance(value, str)


def _fingerprint(v: Any) -> bool:
    return (
        isinstance(v, dict)
        and all(_text(v.get(k)) for k in ("train", "test"))
        and (v.get("official") is None or _text(v.get("official")))
    )


def _maybe(check):
    return lambda v: v is None or check(v)


CHECKS = {  # field: (what it must be, the check); absent fields read as None
    "test_error": ("a fraction in [0, 1] or null", _maybe(_fraction)),
    "test_error_top5": ("a fraction in [0, 1] or null", _maybe(_fraction)),
    "train_loss": ("a number or null", _maybe(_number)),
    "iterations": ("a non-negative integer or null", _maybe(lambda v: type(v) is int and v >= 0)),
    "diverged_at": ("an integer or null", _maybe(lambda v: type(v) is int)),
    "wall_time": ("a non-negative number or null", _maybe(lambda v: _number(v) and 0 <= v < math.inf)),
    "device": ("text or null", _maybe(_text)),
    "git_commit": ("text or null", _maybe(_text)),
    "resumed_from": ("a list of iterations", _maybe(lambda v: isinstance(v, list) and all(type(i) is int for i in v))),
    "trained_together": ("a positive integer or null", _maybe(lambda v: type(v) is int and v >= 1)),
    "versions": ("a mapping of text", _maybe(lambda v: isinstance(v, dict) and all(map(_text, v.values())))),
    "data": ("the data's fingerprint or null", _maybe(_fingerprint)),
}


@dataclass(frozen=True)
class Record:
    """A run that ended (done, diverged or failed), as its result.json says, every field checked."""

    directory: Path
    result: dict  # the whole result.json, each field of ``CHECKS`` of its type

    @property
    def key(self) -> str:
        return self.directory.name

    @property
    def status(self) -> Status:
        return Status(self.result["status"])

    @property
    def config(self) -> dict:
        return self.result["config"]

    def get(self, name: str) -> Any:
        return self.result.get(name)

    @property
    def budget(self) -> str:
        return budget_of(self.config)

    @property
    def official(self) -> str | None:
        """The official data set this run trained and tested on (its fingerprint is the official one), or None."""
        return (self.get("data") or {}).get("official")

    def row(self) -> dict[str, Any]:
        """The tidy row of this run: key, status, one column per axis, the derived budget, the data it really
        used, and test errors in %."""
        errors = {k: None if self.get(f"test_{k}") is None else 100 * self.get(f"test_{k}") for k in ERROR_COLUMNS}
        return {
            "key": self.key,
            "status": self.status.value,
            **axes.columns(self.config),
            "budget": self.budget,
            "images": None if self.get("data") is None else f"{self.get('data')['train']}/{self.get('data')['test']}",
            "official_data": self.official,
            **errors,
        }


ERROR_COLUMNS = ("error", "error_top5")
ROW_COLUMNS = ("key", "status", *axes.BY_COLUMN, "budget", "images", "official_data", *ERROR_COLUMNS)  # ``Record.row``


def column(name: str) -> str:
    """The record column a user names: an axis (by column, config path or group: ``depth``, ``model.depth``) or
    a column of the record itself (``budget``, ``status``); else a ValueError naming the valid ones."""
    axis = axes.find(name)
    if axis is not None:
        return axis.column
    if name in ROW_COLUMNS:
        return name
    valid = ", ".join(c for c in ROW_COLUMNS if c not in ("key", *ERROR_COLUMNS))
    raise ValueError(f"unknown filter {name!r}; valid: {valid} (or a config path, e.g. model.depth)")


@cache
def budgets() -> dict[str, dict[str, Any]]:
    """Each budget preset's schedule: the train.* settings it fixes, less its label and record intervals."""
    out = {}
    for path in sorted((conf_dir() / "budget").glob("*.yaml")):
        spec = OmegaConf.to_container(OmegaConf.load(path))
        out[path.stem] = {
            k: v for k, v in spec.items() if k not in ("defaults", "budget", "eval_every", "checkpoint_every")
        }
    return out


def budget_of(config: dict) -> str:
    """The budget preset (conf/budget/) whose schedule a run's config follows, whatever its label said; else
    ``custom``."""
    train = config["train"]
    return next((name for name, s in budgets().items() if all(train.get(k) == v for k, v in s.items())), "custom")


def _zeroed_a_norm(config: dict) -> bool:
    """Whether the old ``init=zero_last_bn`` built this net as ``init=zero_last`` does (its BN ended the branch)."""
    try:
        return zeroes_a_norm(axes.lookup(config, "unit.branch"), config.get("norm") or "batch")
    except (TypeError, ValueError):
        return False


def write(directory: Path, result: dict[str, Any]) -> None:
    """Write a run's result.json, written last: done or diverged (``train``), or failed (the runner, training raised).
    A record whose content ``read`` would refuse is never written: a ValueError says why. (Where it is written is
    the caller's: ``read`` also wants the directory named by the run key, as the store names it.)"""
    why = problem(result)
    if why:
        raise ValueError(f"not writing {directory / 'result.json'}: it would not read back ({why})")
    write_json(directory / "result.json", result)


def write_failed(directory: Path, config: dict, error: str) -> None:
    """The record of a cell whose training raised ``error``: ``failed``, retried by the next plain run."""
    write(directory, {"status": Status.failed.value, "key": directory.name, "error": error, "config": config})


def read(directory: Path) -> Record:
    """The record of the run in ``directory``; ``NotARun`` when the entry is not a run that ended, with why.
    ``FileNotFoundError`` when it has no result.json (a run not ended yet)."""
    if directory.is_symlink():
        raise NotARun("a link, not a run directory")
    if not directory.is_dir():
        raise NotARun("not a run directory")
    try:
        raw = read_bytes(directory / "result.json", RESULT_LIMIT)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise NotARun(f"result.json unreadable ({e.strerror or e})") from None
    try:
        result = parse_json(raw)
    except ValueError as e:
        raise NotARun(
            "result.json is not JSON" if isinstance(e, json.JSONDecodeError) else f"result.json: {e}"
        ) from None
    why = problem(result, directory.name)
    if why:
        raise NotARun(why)
    return Record(directory, result)


def read_result(directory: Path) -> dict | None:
    """The cell's result.json when it is a valid record of this very cell (``read``), else None."""
    try:
        return read(directory).result
    except (OSError, ValueError):
        return None


def problem(result: Any, key: str | None = None) -> str | None:
    """Why ``result`` is not a record (each field of ``CHECKS`` of its type, a status of ours, a config whose axes
    read, fields that agree) or, given ``key``, not the record of the run keyed so; None when it is."""
    if not isinstance(result, dict):
        return f"result.json is a JSON {type(result).__name__}, not an object"
    if result.get("status") not in {s.value for s in RECORDED}:
        return f"result.json has no status of ours ({result.get('status')!r:.30})"
    for name, (what, ok) in CHECKS.items():
        if not ok(result.get(name)):
            return f"result.json's {name} is {result.get(name)!r:.40}, not {what}"
    if result["status"] == Status.done and result.get("test_error") is None:
        return "result.json says done but holds no test_error"
    wrong = axes.problems(result.get("config"))
    if wrong:
        return f"result.json's config: {wrong[0]}"
    claim = _inconsistent(result)
    if claim:
        return f"result.json contradicts itself: {claim}"
    if axes.lookup(result["config"], "init") == "zero_last_bn" and not _zeroed_a_norm(result["config"]):
        return "init=zero_last_bn here zeroed a BN that a ReLU follows: a net that could not learn; retrain it"
    if key is not None and (result.get("key") != key or key_of(result["config"]) != key):
        return "its name is not the run key of its config (a copy or a renamed run)"
    return None


def _inconsistent(result: dict) -> str | None:
    """What a record claims that its own fields or config deny: official data whose fingerprints are not the
    official ones (where they are known) or that its config did not read; a done run that did not run its
    schedule's iterations, or any run past them."""
    from .data import OFFICIAL

    config, data = result["config"], result.get("data") or {}
    official = data.get("official")
    if official is not None:
        if official != axes.lookup(config, "data.name"):
            return f"official {official} data under data={axes.lookup(config, 'data.name')}"
        known = {split: fp for (name, split), fp in OFFICIAL.items() if name.value == official}
        wrong = [split for split, fp in known.items() if data.get(split) != fp]
        if wrong:
            return f"official {official} data with a {wrong[0]} fingerprint of {data.get(wrong[0])!r:.20}"
    planned, ran = axes.lookup(config, "train.iterations"), result.get("iterations")
    if ran is not None and (ran > planned or result["status"] == Status.done and ran != planned):
        return f"{result['status']} after {ran} iterations of train.iterations={planned}"
    return None


def scan(root: str | Path) -> tuple[list[Record], dict[str, list[str]]]:
    """Every ended run under ``root/runs``; and the entries skipped, by reason (each reason with its entries)."""
    found, skipped = [], {}
    runs = Path(root) / "runs"
    for name in sorted(os.listdir(runs)) if runs.is_dir() else []:
        try:
            found.append(read(runs / name))
        except FileNotFoundError:
            continue  # not ended: status says pending, partial or running
        except NotARun as e:
            skipped.setdefault(str(e), []).append(name)
    return found, skipped


def read_jsonl(path: Path, *required: str) -> list[dict[str, Any]]:
    """The rows of a records file (metrics.jsonl, grad_flow.jsonl, starts.jsonl), typed: an integer ``iteration``
    in range, numbers as floats (lists of numbers as lists of floats), text, booleans and nulls; other values are
    dropped. A row lacking a number under one of ``required``, a torn line or a line of another kind is left out."""
    out = []
    try:
        lines = read_bytes(path, 1 << 30).splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            row = parse_json(line)
        except ValueError:
            continue
        if not isinstance(row, dict) or not (type(row.get("iteration")) is int and 0 <= row["iteration"] < 1 << 40):
            continue
        typed = {"iteration": row["iteration"]}
        for k, v in row.items():
            try:
                if _number(v) and k != "iteration":
                    typed[k] = float(v)
                elif isinstance(v, list) and v and all(_number(x) for x in v):
                    typed[k] = [float(x) for x in v]
                elif v is None or isinstance(v, (str, bool)):
                    typed[k] = v
            except OverflowError:  # an integer beyond a float: not a number we wrote
                continue
        if all(_number(typed.get(k)) for k in required):
            out.append(typed)
    return out
