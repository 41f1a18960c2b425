"""resnet-ablate: reproduce the ablations of *Identity Mappings in Deep Residual Networks* (He et al., 2016).

For notebooks::

    import resnet_ablate as ra
    df = ra.results("results/")                        # one row per run
    ra.table("table2", df, data="cifar10")             # one row per cell of the paper's Table 2, ours beside theirs
    ra.compare(df, "unit", ["original", "full_preact"]).attrs["verdicts"]
"""

from importlib.metadata import version

__version__ = version("resnet-ablate")  # pyproject.toml's


def results(root="results"):
    """The store at ``root`` as a tidy DataFrame: one row per ended run (axes, status, errors in %)."""
    from .report.tables import records

    return records(root)


def table(name: str, df, **filters):
    """Paper table ``name`` (table1 … table5) from ``results()``: one row per cell (ours: median, mean, std, n;
    the paper's number, whether it is comparable, Δ). ``filters`` pick the runs, as on the command line."""
    from .report.tables import build

    return build(name, df, filters)[0]


def compare(df, axis: str, settings: list, **filters):
    """Settings along ``axis``: n, median, mean, std; Δ vs the first with its BCa interval and an exact permutation
    test's p. The verdicts in words are in ``.attrs["verdicts"]``."""
    from .report.compare import compare as run

    rows, verdicts = run(df, axis, settings, filters)
    rows.attrs["verdicts"] = verdicts
    return rows
