"""Compare settings along one axis over seeds, with statistics a reviewer accepts (scipy.stats): an exact
permutation test for the p-value (paired over seeds when both settings ran the same seeds) and a BCa bootstrap
interval for the effect, with what the number of seeds allows said in the verdict."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from .. import axes
from ..status import ENDED, Status
from .tables import MUST_AGREE, differing, named, select, show, spread_in_words

ALPHA = 0.05
BATCH = 1000  # resamples computed at once: memory stays ~n × 8 KB however many seeds (5,000 runs took 16 GB)
EXACT_UP_TO = 2**20  # permutations enumerated; beyond, a random RANDOM of them (and the test is named so)
RANDOM = 10_000  # p to ±0.005 at p = 0.05 (binomial SE 0.002); 100,000 took scipy 18 s at 2,500 seeds


def _mean_difference(x, y, axis=-1):
    return np.mean(y, axis=axis) - np.mean(x, axis=axis)


def smallest_p(n: int, m: int | None = None) -> float:
    """The smallest two-sided p an exact permutation test can give: 2/2^n for n pairs, 2/C(n+m, n) unpaired."""
    return min(1.0, 2 / (2**n if m is None else math.comb(n + m, n)))


def difference(a: np.ndarray, b: np.ndarray, paired: bool, seed: int = 0) -> dict[str, Any]:
    """Δ = mean(b) − mean(a) in points, its 95% BCa bootstrap interval, and the permutation test's p: exact (every
    permutation) up to ``EXACT_UP_TO`` of them, else from ``RANDOM`` random ones, as the test's name says."""
    data = (a, b)
    kind = "samples" if paired else "independent"
    total = 2 ** len(a) if paired else math.comb(len(a) + len(b), len(a))
    exact = total <= EXACT_UP_TO
    p = stats.permutation_test(
        data,
        _mean_difference,
        permutation_type=kind,
        vectorized=True,
        n_resamples=np.inf if exact else RANDOM,
        batch=BATCH,
        random_state=seed,
    ).pvalue
    low = high = float("nan")
    with warnings.catch_warnings():  # a degenerate sample (all equal) has no interval: it stays NaN
        warnings.simplefilter("ignore")
        if paired:
            ci = stats.bootstrap((b - a,), np.mean, method="BCa", batch=BATCH, random_state=seed).confidence_interval
        else:
            ci = stats.bootstrap(data, _mean_difference, method="BCa", batch=BATCH, random_state=seed)
            ci = ci.confidence_interval
        low, high = float(ci.low), float(ci.high)
    name = "paired permutation (sign-flip) test" if paired else "permutation test"
    of = f"{total:,}" if total < 10**12 else f"about 10^{len(str(total)) - 1}"
    name = f"exact {name}" if exact else f"{name}, {RANDOM:,} random permutations of {of}"
    return {"delta": float(np.mean(b) - np.mean(a)), "ci_low": low, "ci_high": high, "p": float(p), "test": name}


def _verdict(s, ref, r: dict, n: int, m: int, paired: bool) -> str:
    """Δ, p and what they allow. Where n seeds cannot reach p < ALPHA at all, no interval is printed: a 95% interval
    from so few seeds means nothing, and one that excludes 0 beside "not separated" misleads."""
    test = f"p = {r['p']:.4f} ({r['test']}, n={n}/{m})"
    if r["ci_low"] is None:
        seeds = f"{n} paired seeds" if paired else f"{n} and {m} seeds"
        more = next(k for k in range(n, 64) if (smallest_p(k) if paired else smallest_p(k, k)) < ALPHA)
        return (
            f"{s} vs {ref}: Δ {r['delta']:+.2f} points, {test}: not separated; {seeds} cannot reach p < {ALPHA} "
            f"two-sided (no interval at this n); {more}{'' if paired else ' each'} can."
        )
    finite = np.isfinite([r["ci_low"], r["ci_high"]]).all()
    interval = f"95% BCa CI [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]" if finite else "no interval (no spread)"
    head = f"{s} vs {ref}: Δ {r['delta']:+.2f} points, {interval}, {test}"
    if r["p"] < ALPHA:
        return f"{head}: the data separate them; {ref if r['delta'] > 0 else s} has the lower error."
    return f"{head}: not separated at these seeds."


def compare(
    df: pd.DataFrame, axis: str, settings: list[Any], filters: dict[str, Any], seed: int = 0, laid_out=()
) -> tuple[pd.DataFrame, list[str]]:
    """Per setting: n, median, mean, std of test error (%); vs the first setting: Δ mean, its CI, the p-value and the
    test used; and a verdict in words. The runs of a setting agree in everything but the seed; across settings, in
    everything but the axis, ``laid_out`` and the other settings of their config sections (``unit`` with ``unit.*``):
    otherwise they are refused, not pooled. A setting that no finished run has is refused with the values the store
    holds."""
    if df.empty:
        raise LookupError("no finished runs in the store; run a sweep first")
    axis = named(df, axis)
    df = select(df, {named(df, k): v for k, v in filters.items()})
    # every ended run counts with the error it ended with, as in the tables; a diverged one without any is left out
    ended = df[df["status"].isin([s.value for s in ENDED])]
    groups = _groups(ended, axis, settings, laid_out)
    rows, verdicts = [], []
    ref_name, ref = settings[0], groups[settings[0]]
    for s, g in groups.items():
        e = g["error"].to_numpy(float)
        row = {
            axis: s,
            "n": len(e),
            "median": np.median(e) if len(e) else None,
            "mean": e.mean() if len(e) else None,
            "std": e.std(ddof=1) if len(e) > 1 else None,
            **dict.fromkeys(("delta", "ci_low", "ci_high", "p", "test")),
            "diverged": int((g["status"] == Status.diverged.value).sum()),  # of the n: counted as they ended
            "left_out": len(select(ended, {axis: s})) - len(e),  # diverged with no error to count
        }
        if s != ref_name and min(len(e), len(ref)) < 2:
            verdicts.append(f"{s} vs {ref_name}: too few finished seeds to test (n={len(e)}/{len(ref)}; need 2+ each).")
        elif s != ref_name:
            result, n, n_ref, paired = _test(ref, g, seed)
            row.update(result)
            verdicts.append(_verdict(s, ref_name, result, n, n_ref, paired))
        rows.append(row)
    table = pd.DataFrame(rows)
    return table, verdicts + _unusual(table, axis)


def _groups(ended: pd.DataFrame, axis: str, settings: list[Any], laid_out) -> dict[Any, pd.DataFrame]:
    """Each setting's runs with an error, checked: every setting has some, each group agrees in all but the seed,
    and the groups agree in all but the free columns (``_free``)."""
    df = ended.dropna(subset=["error"])
    held = sorted({show(v) for v in df[axis]})
    for s in settings:
        if select(df, {axis: s}).empty:
            others = select(ended, {axis: s})["status"].value_counts()
            why = ", ".join(f"{n} {status} with no error" for status, n in others.items())
            why = f" ({why})" if why else ""
            raise ValueError(f"no finished run has {axis}={s}{why}; the runs hold {axis}={','.join(held) or 'nothing'}")
    groups = {s: select(df, {axis: s}) for s in settings}
    for s, g in groups.items():
        spread = differing(g, MUST_AGREE)
        if spread:
            raise LookupError(f"the runs of {axis}={s} differ in {spread_in_words(spread)}")
    free = _free([axis, *laid_out])
    spread = differing(pd.concat(groups.values()), [c for c in MUST_AGREE if c not in free])
    if spread:
        raise LookupError(f"the runs of {axis}={','.join(map(str, settings))} differ in {spread_in_words(spread)}")
    return groups


def _free(keys: list[str]) -> set[str]:
    """The columns that may differ between settings: ``keys`` and the other settings of their config sections
    (``unit`` names a placement: its ``branch`` and ``after_add`` differ with it)."""
    sections = {axes.BY_COLUMN[k].path.rpartition(".")[0] for k in keys if k in axes.BY_COLUMN} - {""}
    return {*keys, *(c for c, a in axes.BY_COLUMN.items() if a.path.rpartition(".")[0] in sections)}


def _test(ref: pd.DataFrame, g: pd.DataFrame, seed: int) -> tuple[dict, int, int, bool]:
    """``difference`` of a setting's errors against the reference's, paired over seeds when both hold the same
    seeds once each; without an interval where n cannot support one (see ``_verdict``). Also n, n_ref, paired."""
    a, b = ref.set_index("seed")["error"], g.set_index("seed")["error"]
    paired = set(a.index) == set(b.index) and a.index.is_unique and b.index.is_unique
    x, y = (a.loc[b.index].to_numpy(float), b.to_numpy(float)) if paired else (a.to_numpy(float), b.to_numpy(float))
    result = difference(x, y, paired, seed)
    if (smallest_p(len(y)) if paired else smallest_p(len(y), len(x))) >= ALPHA:
        result.update(ci_low=None, ci_high=None)
    return result, len(y), len(x), paired


def _unusual(table: pd.DataFrame, axis: str) -> list[str]:
    """What the verdicts count that is not a plain finished run: diverged runs (with the error they ended with) and
    those left out (diverged before any evaluation: no error to count)."""
    out = []
    for _, r in table[(table["diverged"] > 0) | (table["left_out"] > 0)].iterrows():
        kept = f"{r['diverged']} of its {r['n']} runs diverged (counted with the error they ended with)"
        out.append(
            f"{r[axis]}: {kept if r['diverged'] else 'no run diverged'}"
            + (f"; {r['left_out']} diverged before any evaluation, left out (no error)" if r["left_out"] else "")
            + "."
        )
    return out
