"""Compare settings along one axis over seeds: medians, spread, bootstrap CIs of the differences, a verdict."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .tables import select

MIN_SEEDS = 3  # below this a bootstrap interval only restates the observed values


def compare(
    df: pd.DataFrame, axis: str, settings: list[Any], filters: dict[str, Any], resamples: int = 10000, seed: int = 0
) -> tuple[pd.DataFrame, list[str]]:
    """Per setting: n, median, mean, std of test error (%); vs the first setting: Δ median with a 95% bootstrap CI
    (paired over matching seeds when every seed is shared), and a verdict in words."""
    if df.empty:
        raise LookupError("no finished runs in the store; run a sweep first")
    df = select(df, filters)
    groups = {s: select(df, {axis: s}) for s in settings}
    budgets = sorted(df[df[axis].astype(str).isin([str(s) for s in settings])]["budget"].dropna().unique())
    if len(budgets) > 1 and "budget" not in filters:
        raise LookupError(f"the runs mix budgets {', '.join(budgets)}; pick one with budget=NAME")
    rows, verdicts = [], []
    rng = np.random.default_rng(seed)
    ref_name, ref = settings[0], groups[settings[0]]
    for s, g in groups.items():
        e = g["error"].to_numpy(float)
        row = {
            axis: s,
            "n": len(e),
            "median": np.median(e) if len(e) else None,
            "mean": e.mean() if len(e) else None,
            "std": e.std(ddof=1) if len(e) > 1 else None,
            "delta": None,
            "ci_low": None,
            "ci_high": None,
        }
        if s != ref_name and min(len(e), len(ref)) < MIN_SEEDS:
            verdicts.append(
                f"{s} vs {ref_name}: too few finished seeds to tell (n={len(e)}/{len(ref)}; need {MIN_SEEDS}+ each)."
            )
        elif s != ref_name:
            a, b = ref.set_index("seed")["error"], g.set_index("seed")["error"]
            paired = set(a.index) == set(b.index)
            if paired:
                d = (b - a.loc[b.index]).to_numpy(float)
                boots = np.median(d[rng.integers(0, len(d), (resamples, len(d)))], axis=1)
                delta = float(np.median(d))
            else:
                x, y = a.to_numpy(float), b.to_numpy(float)
                boots = np.median(y[rng.integers(0, len(y), (resamples, len(y)))], axis=1) - np.median(
                    x[rng.integers(0, len(x), (resamples, len(x)))], axis=1
                )
                delta = float(np.median(y) - np.median(x))
            lo, hi = np.percentile(boots, [2.5, 97.5])
            row.update(delta=delta, ci_low=lo, ci_high=hi)
            kind = "paired over seeds" if paired else "unpaired"
            if lo > 0 or hi < 0:
                better = ref_name if lo > 0 else s
                verdicts.append(
                    f"{s} vs {ref_name}: Δ {delta:+.2f} points, 95% CI [{lo:+.2f}, {hi:+.2f}] ({kind}, "
                    f"n={len(e)}/{len(ref)}): the data separate them; {better} has the lower error."
                )
            else:
                verdicts.append(
                    f"{s} vs {ref_name}: Δ {delta:+.2f} points, 95% CI [{lo:+.2f}, {hi:+.2f}] ({kind}, "
                    f"n={len(e)}/{len(ref)}): not separated at these seeds."
                )
        rows.append(row)
    return pd.DataFrame(rows), verdicts
