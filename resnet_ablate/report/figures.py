"""The paper's training curves (Figs. 1, 3, 6) and a gradient-flow figure, from the runs' records; the signal at
initialisation of any variants (``signal``: built, not read from the store)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .. import presets  # noqa: E402
from ..axes import AXES  # noqa: E402
from ..presets import record_filter  # noqa: E402
from ..record import read_jsonl  # noqa: E402
from .tables import records, select, show  # noqa: E402

PRESETS = presets.names("figure")  # the paper's figures: conf/sweep/figureN.yaml
FIGURES = (*PRESETS, "gradient-flow", "runs")


SEED_STYLES = ["-", "--", ":", "-.", (0, (5, 1, 1, 1)), (0, (3, 1, 1, 1, 1, 1)), (0, (1, 3)), (0, (8, 3))]


BASE = ("model", "depth", "unit", "shortcut")  # named in every label; any other axis where it varies


def _setting(r: pd.Series, varying: tuple[str, ...] = ()) -> str:
    """model (at its depth), unit, shortcut, the parameters its kind reads and every other axis that varies among
    the plotted runs (``varying``): what a colour stands for."""
    params = "".join(f" {a.column}={show(r[a.column])}" for a in AXES if a.kinds and show(r.get(a.column)) != "None")
    other = "".join(f" {c}={show(r[c])}" for c in varying)
    return f"{r['model']} depth {show(r['depth'])} {r['unit']} {r['shortcut']}{params}{other}"


def _varying(runs: pd.DataFrame) -> tuple[str, ...]:
    """The axes besides the seed, ``BASE``, what a unit's name already says (its op order) and shortcut parameters
    whose values differ among ``runs``."""
    shown = {"seed", *BASE}
    return tuple(
        a.column
        for a in AXES
        if a.column not in shown
        and not a.kinds
        and not a.path.startswith("unit.")
        and a.column in runs
        and runs[a.column].astype(str).nunique(dropna=False) > 1
    )


def literal(text: str) -> str:
    """Text that matplotlib draws as it is: a ``$`` in a user's name would start mathtext."""
    return text.replace("$", r"\$")


class Styles:
    """A colour per setting and a line style per seed, with the legend that says which is which (below the axes,
    outside them: readable at 20+ runs)."""

    def __init__(self, runs: pd.DataFrame):
        self.varying = _varying(runs) if len(runs) else ()
        settings = list(dict.fromkeys(runs.apply(_setting, axis=1, varying=self.varying))) if len(runs) else []
        cycle = plt.get_cmap("tab10" if len(settings) <= 10 else "tab20").colors
        self.colours = {s: cycle[i % len(cycle)] for i, s in enumerate(settings)}
        seeds = sorted(set(runs["seed"]))  # a style per seed while there are styles to tell them apart
        many = len(seeds) > len(SEED_STYLES)
        self.seeds = {seed: "-" if many else SEED_STYLES[i] for i, seed in enumerate(seeds)}
        self.note = f"one line per seed ({len(seeds):,} seeds)" if many else None

    def of(self, r: pd.Series) -> dict[str, Any]:
        return {"color": self.colours[_setting(r, self.varying)], "linestyle": self.seeds[r["seed"]]}

    def legend(self, ax, extra: list[tuple[str, dict]] = ()) -> None:
        handles = [Line2D([], [], color=c, label=literal(s)) for s, c in self.colours.items()]
        if len(set(self.seeds.values())) > 1:
            handles += [Line2D([], [], color="grey", linestyle=ls, label=f"seed {k}") for k, ls in self.seeds.items()]
        if self.note:
            handles.append(Line2D([], [], color="grey", label=self.note))
        handles += [Line2D([], [], color="grey", label=label, **style) for label, style in extra]
        ax.legend(
            handles=handles,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.16),
            ncol=2 if len(handles) > 4 else 1,
            fontsize=7,
            frameon=False,
        )


def _runs(df: pd.DataFrame, match: dict[str, Any]) -> pd.DataFrame:
    return select(df, match).sort_values("seed")


def _metrics(root: Path, r: pd.Series) -> list[dict]:
    return read_jsonl(root / "runs" / r["key"] / "metrics.jsonl", "test_error", "train_loss")


def _curves(ax, runs: pd.DataFrame, root: Path) -> None:
    """The paper's way: test error solid (left axis), training loss dashed (right axis), against iterations; a
    colour per cell (one run each)."""
    twin, styles = ax.twinx(), Styles(runs)
    for _, r in runs.iterrows():
        rows = _metrics(root, r)
        it = [m["iteration"] for m in rows]
        ax.plot(it, [100 * m["test_error"] for m in rows], "-", color=styles.of(r)["color"])
        twin.plot(it, [m["train_loss"] for m in rows], "--", color=styles.of(r)["color"])
    _iterations(ax)
    ax.set_ylabel("test error (%), solid")
    twin.set_ylabel("training loss, dashed")
    styles.legend(ax)


def _iterations(ax) -> None:
    ax.set_xlabel("iterations")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # a short run's few evaluations: no 3.5 iterations


def _test_and_loss(axes, runs: pd.DataFrame, root: Path) -> None:
    """Test error (left panel) and training loss (right panel), a colour per setting: every run, a style per seed;
    past ``len(SEED_STYLES)`` seeds (styles no longer tell them apart), each setting's median over its seeds with
    their range shaded."""
    styles = Styles(runs)
    if len(styles.seeds) <= len(SEED_STYLES):
        for _, r in runs.iterrows():
            rows = _metrics(root, r)
            it = [m["iteration"] for m in rows]
            axes[0].plot(it, [100 * m["test_error"] for m in rows], **styles.of(r))
            axes[1].plot(it, [m["train_loss"] for m in rows], **styles.of(r))
    else:
        by_setting = runs.assign(setting=runs.apply(_setting, axis=1, varying=styles.varying)).groupby("setting")
        for setting, group in by_setting:
            long = pd.DataFrame([m for _, r in group.iterrows() for m in _metrics(root, r)])
            long["test_error"] *= 100
            for ax, column in zip(axes, ("test_error", "train_loss")):
                spread = long.groupby("iteration")[column].agg(["median", "min", "max"])
                ax.plot(spread.index, spread["median"], color=styles.colours[setting])
                ax.fill_between(spread.index, spread["min"], spread["max"], color=styles.colours[setting], alpha=0.2)
        styles.seeds = {}  # the legend's last line says what a line is
        styles.note = f"median over {len(set(runs['seed'])):,} seeds, shaded: their range"
    for ax, label in zip(axes, ("test error (%)", "training loss")):
        _iterations(ax)
        ax.set_ylabel(label)
    styles.legend(axes[0])


def plot(
    name: str, root: str | Path, filters: dict[str, Any], out: Path, runs: pd.DataFrame | None = None
) -> list[Path]:
    """Draw figure ``name`` from the store at ``root`` (its ``records``, unless already read: ``runs``) into ``out``
    as PNG and PDF; returns the files."""
    return _save(figure(name, root, filters, runs), out, name)


def _save(fig, out: Path, name: str) -> list[Path]:
    """``fig`` as ``out/name.png`` and ``.pdf``, closed; the files."""
    out.mkdir(parents=True, exist_ok=True)
    files = [out / f"{name}.{ext}" for ext in ("png", "pdf")]
    for f in files:
        fig.savefig(f, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return files


def figure(name: str, root: str | Path, filters: dict[str, Any], runs: pd.DataFrame | None = None):
    """Figure ``name`` as a matplotlib figure. A paper figure's panel is drawn when runs of two of its cells can be
    compared (its title names a cell without a run); one left with a lone curve would be a copy of another panel's,
    so it is left out and named under the figure."""
    if name not in FIGURES:
        raise ValueError(f"unknown figure {name!r}; valid: {', '.join(FIGURES)}, signal")
    root = Path(root)
    df = records(root) if runs is None else runs
    if df.empty:
        raise LookupError("no finished runs in the store; run a sweep first (resnet-ablate sweep PRESET)")
    spec = presets.load(name).panels if name in PRESETS else []
    base = {**(presets.load(name).base() if spec else {}), **filters}
    drawn = {k for panel in spec for cell in panel for k in record_filter(cell)}
    df = select(df, {k: v for k, v in base.items() if k not in drawn})
    where = ", ".join(f"{k}={v}" for k, v in base.items())
    panels, titles, left_out = [], [], []
    for panel in spec:  # each panel: the first seed of each of its cells
        found = [_runs(df, record_filter(cell)).head(1) for cell in panel]
        missing = [cell for cell, runs in zip(panel, found) if runs.empty]
        if len(panel) - len(missing) < min(2, len(panel)):  # nothing to compare: a copy of another panel's curve
            left_out.append(" vs ".join(panel) + f" (no run of {'; '.join(missing)})")
            continue
        panels.append(pd.concat(found))
        titles.append(" vs ".join(panel) + (f"\nno run of {'; '.join(missing)}" if missing else ""))
    if not spec and len(df):
        panels, titles = [df.sort_values(["model", "unit", "shortcut", "seed"])], [""]
    if not panels:
        missing = "; ".join(left_out) or "no run"
        raise LookupError(f"no finished runs match {name}{f' ({where})' if where else ''}: {missing}")
    wide = name == "runs"
    size = (12 if wide else 6 * len(panels), 4.6)
    fig, axes = plt.subplots(1, 2 if wide else len(panels), figsize=size, layout="constrained")  # twin labels apart
    axes = list(axes) if hasattr(axes, "__len__") else [axes]
    if wide:
        _test_and_loss(axes, panels[0], root)
    for ax, runs, title in zip(axes, [] if wide else panels, titles):
        (_gradient_flow if name == "gradient-flow" else _curves)(ax, runs, root)
        ax.set_title(literal(title), fontsize=8)
    fig.suptitle(literal(f"{name} ({where})" if where else name), fontsize=9)
    if left_out:
        fig.text(0.01, -0.02, literal("left out, no run: " + "; ".join(left_out)), fontsize=7, va="top")
    return fig


def _gradient_flow(ax, runs: pd.DataFrame, root: Path) -> None:
    """‖∂E/∂x_l‖ at each unit's input (l = 1, 2, …): at initialisation (faint) and at the end of training (bold);
    a colour per setting, its first seed only (two lines per setting, readable at many settings)."""
    styles = Styles(runs)
    runs = runs.assign(setting=runs.apply(_setting, axis=1, varying=styles.varying))
    runs = runs.sort_values("seed").drop_duplicates("setting")
    styles.seeds = dict.fromkeys(styles.seeds, "-")  # one seed per setting: its style says nothing
    for _, r in runs.iterrows():
        rows = [r for r in read_jsonl(root / "runs" / r["key"] / "grad_flow.jsonl") if "norms" in r]
        if rows:
            units = range(1, len(rows[0]["norms"]) + 1)
            ax.plot(units, rows[0]["norms"], alpha=0.35, linewidth=1, **styles.of(r))
            ax.plot(units, rows[-1]["norms"], linewidth=1.8, **styles.of(r))
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("residual unit l (input side → output side), the first seed of each setting")
    ax.set_ylabel("‖∂E/∂x_l‖")
    styles.legend(ax, [("at initialisation", {"alpha": 0.35}), ("end of training", {"linewidth": 1.8})])


def signal(arguments: list[str], out: Path, batch: int = 32) -> list[Path]:
    """``plot signal``: each variant at initialisation, from one batch of Gaussian images (seed 0), as
    ``recipe.signal`` measures it: the activations' RMS after each unit and the gradient reaching them. The
    variants are a preset's cells (``after2016``, narrowed by the other arguments as ``sweep`` narrows it) or the
    cells of the arguments' comma lists (``unit=original,full_preact norm=none``)."""
    from ..grid import expand_grid, preset_grid, varying

    preset = arguments[0] if arguments and "=" not in arguments[0] else None
    rest = arguments[1:] if preset else arguments
    cells = preset_grid(preset, [*rest, "seed=0"]) if preset else expand_grid([], [], [*rest, "seed=0"])
    values, varied = varying(cells)
    spec = presets.load(preset) if preset else None
    fig, (fwd, bwd) = plt.subplots(1, 2, figsize=(12, 4.6))
    names = [spec.label(v, with_column=False) if spec else None for v in values]
    full = [spec.label(v, with_column=True) if spec else None for v in values]
    names = full if len(set(full)) > len(set(names)) else names  # name the columns too where rows repeat
    with _idle_cores_only():
        _draw_signal(fwd, bwd, cells, values, varied, names, batch)
    where = " ".join([*([preset] if preset else []), *rest])
    for ax, what in ((fwd, "RMS of x_{l+1} (forward)"), (bwd, "RMS of ∂E/∂x_{l+1} (backward)")):
        ax.set_yscale("log")
        ax.set_xlabel("residual unit l")
        ax.set_title(what, fontsize=9)
    fwd.legend(loc="upper center", bbox_to_anchor=(1.1, -0.14), ncol=2, fontsize=7, frameon=False)
    title = (
        f"signal at initialisation ({where}): one batch of {batch} Gaussian images, training mode (batch statistics)"
    )
    fig.suptitle(literal(title), fontsize=9)
    return _save(fig, out, "signal")


def _draw_signal(fwd, bwd, cells, values, varied, names, batch: int) -> None:
    """Each cell's network at initialisation, measured on one batch (seed 0) and drawn on the two panels."""
    import torch

    from ..config import compose
    from ..models import build_model, input_size
    from ..recipe import signal as measure

    cycle = plt.get_cmap("tab10" if len(cells) <= 10 else "tab20").colors
    for i, (cell, value) in enumerate(zip(cells, values)):
        label = names[i] or " ".join(f"{k}={value[k]}" for k in varied) or "as composed"
        cfg = compose(cell)
        size = input_size(cfg)
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(batch, 3, size, size, generator=generator)
        y = torch.randint(cfg.data.num_classes, (batch,), generator=generator)
        torch.manual_seed(0)
        activations, gradients = measure(build_model(cfg).train(), x, y)
        if not any(gradients):
            label += " (∂E/∂x = 0: the classifier starts at 0)"
        if cfg.model.drop_path:
            label += " (one draw of its drop-path masks)"
        units = range(1, len(activations) + 1)
        style = {"color": cycle[i % len(cycle)], "linestyle": SEED_STYLES[i % 4]}  # variants equal at init: dashes
        fwd.plot(units, activations, label=literal(label), **style)
        bwd.plot(units, [g or float("nan") for g in gradients], **style)


@contextlib.contextmanager
def _idle_cores_only():
    """torch's CPU threads capped at the cores other processes leave idle (the 1-minute load average): OpenMP
    threads spin at every barrier, and on a 2-core machine whose other core was busy, two threads took 31.5 s of
    CPU for ``plot signal after2016 model=resnet110`` where one took 13.7 s."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, min(threads, (os.cpu_count() or 1) - round(os.getloadavg()[0]))))
    try:
        yield
    finally:
        torch.set_num_threads(threads)
