"""The paper's training curves (Figs. 1, 3, 6) and a gradient-flow figure, from the runs' records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from .. import presets, store  # noqa: E402
from ..axes import AXES  # noqa: E402
from ..presets import match  # noqa: E402
from .tables import records, select, show  # noqa: E402

PRESETS = presets.names("figure")  # the paper's figures: conf/sweep/figureN.yaml
FIGURES = (*PRESETS, "gradient-flow", "runs")


def _label(r: pd.Series) -> str:
    """model, unit, shortcut and the parameters its kind reads, seed."""
    params = "".join(f" {a.column}={show(r[a.column])}" for a in AXES if a.kinds and r.get(a.column) is not None)
    return f"{r['model']} {r['unit']} {r['shortcut']}{params} seed {r['seed']}"


def literal(text: str) -> str:
    """Text that matplotlib draws as it is: a ``$`` in a user's name would start mathtext."""
    return text.replace("$", r"\$")


def _runs(df: pd.DataFrame, match: dict[str, Any]) -> pd.DataFrame:
    return select(df, match).sort_values("seed")


def _curves(ax, runs: pd.DataFrame, root: Path) -> int:
    """Test error solid (left axis), training loss dashed (right axis), against iterations."""
    twin = ax.twinx()
    drawn = 0
    for (_, r), color in zip(runs.iterrows(), plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4):
        rows = store.read_jsonl(Path(root) / "runs" / r["key"] / "metrics.jsonl", "test_error", "train_loss")
        if not rows:
            continue
        it = [m["iteration"] for m in rows]
        ax.plot(it, [100 * m["test_error"] for m in rows], "-", color=color, label=literal(_label(r)))
        twin.plot(it, [m["train_loss"] for m in rows], "--", color=color)
        drawn += 1
    ax.set_xlabel("iterations")
    ax.set_ylabel("test error (%) — solid")
    twin.set_ylabel("training loss — dashed")
    ax.legend(fontsize=7)
    return drawn


def plot(
    name: str, root: str | Path, filters: dict[str, Any], out: Path, runs: pd.DataFrame | None = None
) -> list[Path]:
    """Draw figure ``name`` from the store at ``root`` (its ``records``, unless already read: ``runs``) into ``out``
    as PNG and PDF; returns the files."""
    if name not in FIGURES:
        raise ValueError(f"unknown figure {name!r}; valid: {', '.join(FIGURES)}")
    df = records(root) if runs is None else runs
    if df.empty:
        raise LookupError("no finished runs in the store; run a sweep first (resnet-ablate sweep PRESET)")
    figure = [[match(cell) for cell in panel] for panel in presets.load(name).panels] if name in PRESETS else []
    base = {**(presets.load(name).base() if figure else {}), **filters}
    drawn = {k for panel in figure for m in panel for k in m}
    df = select(df, {k: v for k, v in base.items() if k not in drawn})
    if figure:  # each panel: the first seed of each of its cells
        panels = [pd.concat([_runs(df, m).head(1) for m in panel]) for panel in figure]
    else:
        panels = [df.sort_values(["model", "unit", "shortcut", "seed"])]
    if not any(len(p) for p in panels):
        raise LookupError(f"no finished runs match {name} ({', '.join(f'{k}={v}' for k, v in base.items())})")
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    for ax, runs in zip(axes[0], panels):
        if name == "gradient-flow":
            _gradient_flow(ax, runs, Path(root))
        else:
            _curves(ax, runs, Path(root))
    fig.suptitle(literal(f"{name} ({', '.join(f'{k}={v}' for k, v in base.items())})"), fontsize=9)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    files = [out / f"{name}.{ext}" for ext in ("png", "pdf")]
    for f in files:
        fig.savefig(f, dpi=130)
    plt.close(fig)
    return files


def _gradient_flow(ax, runs: pd.DataFrame, root: Path) -> None:
    """‖∂E/∂x_l‖ at each unit's input: at initialisation (dotted) and at the end of training (solid)."""
    for (_, r), color in zip(runs.iterrows(), plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4):
        rows = [r for r in store.read_jsonl(root / "runs" / r["key"] / "grad_flow.jsonl") if "norms" in r]
        if not rows:
            continue
        ax.plot(rows[0]["norms"], ":", color=color)
        ax.plot(rows[-1]["norms"], "-", color=color, label=literal(_label(r)))
    ax.set_yscale("log")
    ax.set_xlabel("residual unit l (input side → output side)")
    ax.set_ylabel("‖∂E/∂x_l‖ (dotted: init, solid: end)")
    ax.legend(fontsize=7)
