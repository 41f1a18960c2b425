"""Weights & Biases (``logger=wandb``): a run per cell, offline files by default."""

from __future__ import annotations

import secrets
from pathlib import Path

from omegaconf import DictConfig

from .. import store
from . import TRACKERS, hyperparameters
from .wandb_files import wandb_history


@TRACKERS.register("wandb")
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

    @staticmethod
    def check(cfg: DictConfig) -> None:
        if cfg.logger.wandb.mode not in ("offline", "online"):
            raise ValueError(f"logger.wandb.mode={cfg.logger.wandb.mode} is not a mode; valid: offline, online")

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def finish(self, status: str, test_error: float | None) -> None:
        self.run.summary.update({"status": status, "final_test_error": test_error})
        self.run.finish()

    def close(self, reason: str) -> None:
        self.run.finish(exit_code=1)
