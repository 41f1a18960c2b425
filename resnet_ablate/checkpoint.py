"""Checkpoints and random state: what a run needs to resume bit-identically, and the refusal of any file that is
not one of our checkpoints for this very cell (it is set aside, never deleted, and the run starts over)."""

from __future__ import annotations

import io
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from .config import key_fields
from .files import atomic_write, open_regular, set_aside

KEYS = ("model", "optimizer", "iteration", "elapsed", "stats", "rng", "config")


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = not deterministic
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)


def rng_states(device: torch.device) -> dict[str, Any]:
    states = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def set_rng_states(states: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(states["torch"])
    if "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], device)


def save(path: Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(path, buffer.getvalue())


def _problem(ckpt: Any, cfg: DictConfig, model: torch.nn.Module | None) -> str | None:
    """Why ``ckpt`` cannot resume the cell of ``cfg`` (and ``model``'s weights), or None."""
    if not isinstance(ckpt, dict):
        return f"not a resnet-ablate checkpoint (a {type(ckpt).__name__})"
    missing = [k for k in KEYS if k not in ckpt]
    if missing:
        return f"not a resnet-ablate checkpoint (no {', '.join(missing)})"
    if not isinstance(ckpt["iteration"], int) or not 0 <= ckpt["iteration"] <= cfg.train.iterations:
        return f"at iteration {ckpt['iteration']!r}, outside this run's [0, {cfg.train.iterations}]"
    if not isinstance(ckpt["config"], dict) or key_fields(OmegaConf.create(ckpt["config"])) != key_fields(cfg):
        return "written for another cell"
    if model is None:
        return None
    theirs, mine = ckpt["model"], model.state_dict()
    fits = isinstance(theirs, dict) and set(theirs) == set(mine)
    if not fits or any(not isinstance(theirs[k], torch.Tensor) or theirs[k].shape != v.shape for k, v in mine.items()):
        return "for another network (its weights do not fit)"
    return None


def load(path: Path, cfg: DictConfig, model: torch.nn.Module | None = None) -> dict | None:
    """The checkpoint at ``path`` when it can resume this cell; a corrupt, truncated or foreign file is reported,
    renamed ``checkpoint.pt.rejected`` and the run starts from scratch. Loading never runs code from the file
    (``weights_only``)."""
    if not path.exists():
        return None
    try:
        with os.fdopen(open_regular(path, os.O_RDONLY), "rb") as f:  # a planted FIFO: refused, not waited on
            ckpt = torch.load(f, map_location="cpu", weights_only=True)
        problem = _problem(ckpt, cfg, model)
    except Exception as e:  # truncated, random bytes, a pickle that names code: torch raises many kinds
        problem = f"unreadable ({type(e).__name__})"
    if problem is None:
        return ckpt
    rejected = set_aside(path)
    print(f"warning: checkpoint {path} is {problem}; kept as {rejected.name}, restarting this run from scratch")
    return None
