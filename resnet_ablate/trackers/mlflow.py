"""MLflow (``logger=mlflow``): a run per cell in its preset's experiment, children of a parent run per sweep."""

from __future__ import annotations

import os
import time
from pathlib import Path

from omegaconf import DictConfig

from .. import store
from . import TRACKERS, hyperparameters


@TRACKERS.register("mlflow")
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

    @staticmethod
    def open_sweep(cfg: DictConfig, preset: str, group: str) -> str | None:
        """The sweep's parent run (the same one each time the same sweep runs), marked running; None when MLflow
        cannot be reached."""
        try:
            client, experiment = mlflow_client(cfg, preset)
            query = f"tags.`resnet_ablate.sweep` = '{group}'"
            found = client.search_runs([experiment], filter_string=query, max_results=1)
            if found:
                client.update_run(found[0].info.run_id, status="RUNNING")
                return found[0].info.run_id
            return client.create_run(experiment, run_name=group, tags={"resnet_ablate.sweep": group}).info.run_id
        except Exception as e:
            print(
                f"warning: logger=mlflow: no parent run for the sweep ({type(e).__name__}: {e}); cells log on",
                flush=True,
            )
            return None

    @staticmethod
    def close_sweep(cfg: DictConfig, parent: str, ok: bool) -> None:
        try:
            client, _ = mlflow_client(cfg, None)
            client.set_terminated(parent, "FINISHED" if ok else "FAILED")
        except Exception as e:
            print(
                f"warning: logger=mlflow: the sweep's parent run was not closed ({type(e).__name__}: {e})", flush=True
            )


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
