"""Experiment trackers (``logger=tensorboard|wandb|mlflow``, or a list): each run also sends its metrics.jsonl rows
(and its gradient-flow norms) to them, with its config axes as hyper-parameters and its final test error.

The store stays the record: a tracker is a copy. A tracker that fails (a server down, a full disk) is dropped with
one warning and the run goes on. A resumed run continues its own tracker runs (the ids are kept in the run
directory's ``trackers.json``) and sends only the rows the tracker does not hold: those up to its checkpoint
that it lost come from the store, those after it are not sent twice.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import secrets
import struct
import time
import zlib
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from . import store
from .config import key_fields
from .files import read_json, write_json
from .record import read_jsonl

KINDS = ("tensorboard", "wandb", "mlflow")  # the sections of ``logger``; each is also the package and the extra


def chosen(cfg: DictConfig) -> list[str]:
    return [k for k in KINDS if cfg.logger[k] is not None]


def check_installed(cfg: DictConfig) -> None:
    for kind in chosen(cfg):
        if importlib.util.find_spec(kind) is None:
            raise ValueError(f"logger={kind} needs the {kind} package: pip install 'resnet-ablate[{kind}]'")
    mode = cfg.logger.wandb and cfg.logger.wandb.mode
    if mode and mode not in ("offline", "online"):
        raise ValueError(f"logger.wandb.mode={mode} is not a mode; valid: offline, online")


def hyperparameters(cfg: DictConfig) -> dict[str, Any]:
    """Every axis of the cell (``axes.AXES``; a shortcut parameter only where its kind reads it, lists as text), the
    budget its schedule follows and its sweep: what a tracker's hyper-parameter view compares runs by."""
    from .axes import columns
    from .record import budget_of

    d = key_fields(cfg)
    values = {k: str(list(v)) if isinstance(v, tuple) else v for k, v in columns(d).items() if v is not None}
    return {**values, "budget": budget_of(d), "sweep": cfg.logger.group or ""}


def scalars(row: dict, norms: list[float] | None) -> dict[str, float]:
    """A metrics.jsonl row (and gradient-flow norms) as tracker scalars, keyed by name; the step is the iteration."""
    out = {k: float(v) for k, v in row.items() if k != "iteration" and isinstance(v, (int, float))}
    out.update({f"grad_flow/unit_{i:03d}": float(n) for i, n in enumerate(norms or [])})
    return out


class Trackers:
    """The trackers of one run. Every call is guarded: a tracker that raises is dropped, said once on stdout (the
    worker's train.log), and kept in ``errors`` for result.json."""

    def __init__(self) -> None:
        """No trackers: what a run holds before ``open``, and on the ranks of a DDP run other than 0."""
        self.active: list = []
        self.errors: dict[str, str] = {}  # for result.json: the trackers dropped, and why
        self.step = 0

    @classmethod
    def open(cls, cfg: DictConfig, directory: Path, start: int) -> Trackers:
        """The chosen trackers of a run starting at iteration ``start`` (continuing their runs when it is > 0)."""
        trackers = cls()
        trackers.step = start
        state = (read_json(directory / "trackers.json") or {}) if start else {}
        for kind in chosen(cfg):
            trackers._guard(kind, lambda kind=kind: trackers.active.append(OPEN[kind](cfg, directory, start, state)))
        if trackers.active:
            write_json(directory / "trackers.json", {t.kind: t.state for t in trackers.active})
        if start:
            trackers.backfill(directory, start)
        return trackers

    def backfill(self, directory: Path, start: int) -> None:
        """Send the rows up to the checkpoint that a tracker does not hold (a W&B service killed before it wrote
        them, a server that was down) from the store, in order, before the run goes on."""
        rows = {r["iteration"]: r for r in read_jsonl(directory / "metrics.jsonl")}
        norms = {r["iteration"]: r.get("norms") for r in read_jsonl(directory / "grad_flow.jsonl")}
        for step in sorted(s for s in {*rows, *norms} if isinstance(s, int) and s <= start):
            self.log(step, rows.get(step, {}), norms.get(step))

    def log(self, step: int, row: dict, norms: list[float] | None = None) -> None:
        self.step = step
        values = scalars(row, norms)
        for t in list(self.active):
            if step > t.logged:  # rows a resumed run recomputes, which the tracker already holds, are not sent
                self._guard(t.kind, lambda t=t: t.log(step, values))

    def finish(self, status: str, test_error: float | None) -> None:
        for t in list(self.active):
            self._guard(t.kind, lambda t=t: t.finish(status, test_error))
        self.active = []

    def close(self, reason: str) -> None:
        """The run stops without ending (a stop request, an error): flush, and mark the tracker runs so."""
        for t in list(self.active):
            self._guard(t.kind, lambda t=t: t.close(reason))
        self.active = []

    def _guard(self, kind: str, call) -> None:
        try:
            call()
        except Exception as e:
            self.active = [t for t in self.active if t.kind != kind]
            message = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            self.errors[kind] = f"stopped at iteration {self.step}: {message}"
            print(f"warning: logger={kind} failed ({message}); it is dropped and the run goes on", flush=True)


class TensorBoard:
    """Event files in ``<run directory>/tensorboard``; a resume purges the steps after its checkpoint, so the
    curves are the run's own (TensorBoard's purge on restart), and the hyper-parameters go to the HParams view."""

    kind = "tensorboard"

    def __init__(self, cfg: DictConfig, directory: Path, start: int, state: dict):
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        self.writer = SummaryWriter(str(directory / "tensorboard"), purge_step=start + 1 if start else 0)
        self.state, self.logged = {}, start if start else -1  # each row is flushed as it is written
        if start == 0:
            experiment, session_start, _ = hparams(hyperparameters(cfg), {"test_error": 1.0})
            self.writer.file_writer.add_summary(experiment)
            self.writer.file_writer.add_summary(session_start)

    def log(self, step: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def finish(self, status: str, test_error: float | None) -> None:
        from torch.utils.tensorboard.summary import hparams

        *_, session_end = hparams({}, {})
        self.writer.file_writer.add_summary(session_end)
        self.writer.close()

    def close(self, reason: str) -> None:
        self.writer.close()


class Wandb:
    """A W&B run per cell (id kept across resumes, grouped by sweep), files in ``<run directory>/wandb``."""

    kind = "wandb"

    def __init__(self, cfg: DictConfig, directory: Path, start: int, state: dict):
        import wandb

        c = cfg.logger.wandb
        run_id = state.get("wandb", {}).get("id") or secrets.token_hex(4)
        self.state = {"id": run_id}
        steps = [r["_step"] for r in wandb_history(directory, run_id)] if start else []
        self.logged = max(steps, default=-1)
        self.run = wandb.init(
            project=c.project,
            entity=c.entity,
            mode=c.mode,
            id=run_id,
            name=store.run_key(cfg),
            group=cfg.logger.group,
            job_type=cfg.logger.sweep or "train",
            config=hyperparameters(cfg),
            dir=str(directory),
            resume="allow",
            reinit="create_new",  # several runs at once when seeds train stacked
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
        )

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def finish(self, status: str, test_error: float | None) -> None:
        self.run.summary.update({"status": status, "final_test_error": test_error})
        self.run.finish()

    def close(self, reason: str) -> None:
        self.run.finish(exit_code=1)


class Mlflow:
    """An MLflow run per cell in the preset's experiment, a child of the sweep's parent run; through MlflowClient,
    so the stacked seeds of one process are separate runs."""

    kind = "mlflow"

    def __init__(self, cfg: DictConfig, directory: Path, start: int, state: dict):
        self.client, experiment = mlflow_client(cfg, cfg.logger.sweep or "resnet-ablate")
        kept = state.get("mlflow", {})
        if start and kept.get("tracking_uri") == self.client.tracking_uri:
            self.run_id = kept["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            history = self.client.get_metric_history(self.run_id, "train_loss")
            self.logged = max((m.step for m in history), default=-1)
        else:
            from mlflow.entities import Param

            key = store.run_key(cfg)
            tags = {"resnet_ablate.key": key, "resnet_ablate.group": cfg.logger.group or ""}
            if cfg.logger.parent:
                tags["mlflow.parentRunId"] = cfg.logger.parent
            self.run_id = self.client.create_run(experiment, run_name=key, tags=tags).info.run_id
            params = [Param(k, str(v)) for k, v in hyperparameters(cfg).items()]
            self.client.log_batch(self.run_id, params=params)
            self.logged = -1
        self.state = {"run_id": self.run_id, "tracking_uri": self.client.tracking_uri}

    def log(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def finish(self, status: str, test_error: float | None) -> None:
        self.client.set_tag(self.run_id, "resnet_ablate.status", status)
        if test_error is not None:
            self.client.log_metric(self.run_id, "final_test_error", test_error)
        self.client.set_terminated(self.run_id, "FINISHED")

    def close(self, reason: str) -> None:
        self.client.set_terminated(self.run_id, "KILLED" if reason == "stopped" else "FAILED")


OPEN = {"tensorboard": TensorBoard, "wandb": Wandb, "mlflow": Mlflow}


def mlflow_client(cfg: DictConfig, preset: str | None):
    """An MlflowClient for ``logger.mlflow`` (requests time out after ``timeout`` seconds, without retries: a
    tracker that is down costs the run seconds, not minutes) and the id of the preset's experiment (created if need
    be; ``logger.mlflow.experiment`` names another)."""
    c = cfg.logger.mlflow
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(c.timeout))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=c.tracking_uri)
    if preset is None:
        return client, None
    name = c.experiment or preset
    found = client.get_experiment_by_name(name)
    return client, found.experiment_id if found else client.create_experiment(name)


def sweep_group(preset: str, arguments: list[str]) -> str:
    """A sweep's name among its runs: the preset and the overrides that shape its cells (not its seeds, paths,
    launcher or trackers), e.g. ``table2 model.depth=20 data=synthetic``."""
    skip = ("store.", "launcher.", "logger", "hydra", "seed=", "sweep=", "+", "~")
    name = " ".join([preset, *(a for a in arguments if not a.startswith(skip))])
    return name.translate({ord(c): None for c in "'\"\\"})  # a display name: no quoting to carry through packs


def sweep_overrides(preset: str, group: str, parent: str | None) -> list[str]:
    """What each cell of a sweep is told of it."""
    return [f"logger.sweep={preset}", f"logger.group='{group}'", *([f"logger.parent={parent}"] if parent else [])]


def open_sweep(cfg: DictConfig, preset: str, arguments: list[str]) -> tuple[str, str | None]:
    """The sweep's group and, with MLflow, its parent run (the same one each time the same sweep runs), marked
    running; None when MLflow is not chosen or cannot be reached (its cells' runs then have no parent)."""
    group = sweep_group(preset, arguments)
    if cfg.logger.mlflow is None:
        return group, None
    try:
        client, experiment = mlflow_client(cfg, preset)
        found = client.search_runs([experiment], filter_string=f"tags.`resnet_ablate.sweep` = '{group}'", max_results=1)
        if found:
            client.update_run(found[0].info.run_id, status="RUNNING")
            return group, found[0].info.run_id
        return group, client.create_run(experiment, run_name=group, tags={"resnet_ablate.sweep": group}).info.run_id
    except Exception as e:
        print(
            f"warning: logger=mlflow: no parent run for the sweep ({type(e).__name__}: {e}); cells log on", flush=True
        )
        return group, None


def close_sweep(cfg: DictConfig, parent: str | None, ok: bool) -> None:
    if parent is None:
        return
    try:
        client, _ = mlflow_client(cfg, None)
        client.set_terminated(parent, "FINISHED" if ok else "FAILED")
    except Exception as e:
        print(f"warning: logger=mlflow: the sweep's parent run was not closed ({type(e).__name__}: {e})", flush=True)


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
