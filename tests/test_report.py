"""Tables, comparisons and figures built from records of real tiny runs."""

import statistics

import pandas as pd
import pytest
from typer.testing import CliRunner

from resnet_ablate import store
from resnet_ablate.cli import app
from resnet_ablate.config import compose
from resnet_ablate.report import paper
from resnet_ablate.report.tables import build, records
from resnet_ablate.sweep import run_cells

TINY = [
    "model.depth=20",
    "data=synthetic",
    "data.synthetic_train=256",
    "data.synthetic_test=128",
    "budget=smoke",
    "train.iterations=6",
    "train.eval_every=3",
    "train.checkpoint_every=3",
    "train.device=cpu",
]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A store with real runs: ResNet-110/164 configs at depth 20, two placements, two seeds trained together
    (one of 164 missing)."""
    root = tmp_path_factory.mktemp("store")
    for model, unit, seeds in [  # the pairs of seeds trained together, stacked
        ("resnet110", "original", "[0,1]"),
        ("resnet110", "full_preact", "[0,1]"),
        ("resnet164", "original", "[0]"),
    ]:
        run_cells(
            compose(
                [
                    *TINY,
                    f"model={model}",
                    f"unit={unit}",
                    f"launcher.seeds={seeds}",
                    f"store.root={root}",
                    f"data.root={root / 'data'}",
                ]
            )
        )
    return root


def test_reference_numbers_match_paper_md():
    assert paper.TABLE2["full_preact"] == {"resnet110": 6.37, "resnet164": 5.46}
    assert paper.TABLE3[("cifar100", "resnet1001")] == {"original": 27.82, "full_preact": 22.71}
    assert [v for label, _, v in paper.TABLE1 if "b_g=-6" in label] == [8.70, 6.91]
    assert paper.TABLE4[("cifar10", "resnet1001", 64)] == (4.62, 4.69, 0.20)
    assert paper.TABLE5[("imagenet_resnet200", "full_preact")] == (20.7, 5.3)


def test_aggregation_is_exact_over_the_runs_records(root):
    df = records(root)
    result, header = build("table2", df, {"data": "synthetic"})
    cell = result[(result.row == "original") & (result.column == "resnet110")].iloc[0]
    errors = [
        100 * r["test_error"]
        for r in store.results(root)
        if r["config"]["unit"]["name"] == "original" and r["config"]["model"]["name"] == "resnet110"
    ]
    assert cell["n"] == 2
    assert cell["ours_median"] == pytest.approx(statistics.median(errors))
    assert cell["ours_mean"] == pytest.approx(statistics.mean(errors))
    assert cell["ours_std"] == pytest.approx(statistics.stdev(errors))
    # depth 20 on synthetic data at budget=smoke: the paper's number is shown for reference, without Δ
    assert cell["paper"] == 6.61 and not cell["comparable"] and cell["delta"] is None
    assert cell["fail"] == (cell["ours_median"] > 20)
    assert header["budget"] == "smoke" and header["complete"] is False  # partial: most cells have no run
    missing = result[(result.row == "bn_after_add")]
    assert (missing["n"] == 0).all()


def _paper_scale_runs(**changes) -> pd.DataFrame:
    """Records as a full-recipe Table 2 sweep would leave them (three seeds of two cells)."""
    rows = [
        {
            "key": f"{u}{s}",
            "status": "done",
            "model": "resnet110",
            "depth": 110,
            "unit": u,
            "shortcut": "identity",
            "data": "cifar10",
            "budget": "paper",
            "batch": 128,
            "seed": s,
            "error": e,
            "error_top5": None,
        }
        for u, errs in (("original", [6.5, 6.7, 6.6]), ("full_preact", [6.2, 6.4, 6.3]))
        for s, e in enumerate(errs)
    ]
    return pd.DataFrame(rows).assign(**changes)


def test_the_paper_number_is_compared_only_with_runs_of_the_papers_net_data_and_budget():
    result, _ = build("table2", _paper_scale_runs())
    cell = result[(result.row == "original") & (result.column == "resnet110")].iloc[0]
    assert cell["comparable"] and cell["delta"] == pytest.approx(6.6 - 6.61)
    for changes in ({"depth": 20}, {"data": "synthetic"}, {"budget": "tenth"}):
        filters = {k: v for k, v in changes.items() if k != "depth"}
        result, _ = build("table2", _paper_scale_runs(**changes), filters)
        cell = result[(result.row == "original") & (result.column == "resnet110")].iloc[0]
        assert not cell["comparable"] and cell["delta"] is None and cell["ours_median"] == pytest.approx(6.6)


def test_a_net_the_table_does_not_hold_gets_its_own_column_when_a_filter_asks_for_it():
    runs = _paper_scale_runs(model="resnet20", depth=20)
    result, _ = build("table2", runs, {"model": "resnet20"})
    assert set(result["column"]) == {"resnet20"} and len(result) == 5
    cell = result[result.row == "full_preact"].iloc[0]
    assert cell["ours_median"] == pytest.approx(6.3) and cell["paper"] == 6.37 and not cell["comparable"]
    result, _ = build("table2", pd.concat([runs, _paper_scale_runs()]), {"model": ["resnet110", "resnet20"]})
    assert list(dict.fromkeys(result["column"])) == ["resnet110", "resnet20"]
    assert result.set_index(["row", "column"])["comparable"].to_dict()[("original", "resnet110")]
    res = CliRunner().invoke(app, ["table", "table2", "model=resnet20", "--format", "md", "store.root=/nonexistent"])
    assert res.exit_code == 2  # an empty store is still an error


def test_diverged_runs_count_as_fail(root):
    df = records(root)
    df.loc[df["unit"] == "full_preact", "status"] = "diverged"
    result, _ = build("table2", df, {"data": "synthetic"})
    cell = result[(result.row == "full_preact") & (result.column == "resnet110")].iloc[0]
    assert cell["ours_median"] == 100.0 and cell["fail"]


def test_budgets_are_never_silently_mixed(root):
    df = records(root)
    df.loc[0, "budget"] = "paper"
    with pytest.raises(LookupError, match="mix budgets"):
        build("table2", df, {"data": "synthetic"})
    result, header = build("table2", df, {"data": "synthetic", "budget": "smoke"})
    assert header["budget"] == "smoke"


def test_table_csv_has_one_row_per_cell_with_the_documented_columns(root):
    res = CliRunner().invoke(app, ["table", "table2", "data=synthetic", f"store.root={root}", "--format", "csv"])
    assert res.exit_code == 0, res.output
    from io import StringIO

    df = pd.read_csv(StringIO(res.output))
    assert {"ours_median", "paper", "delta", "n"} <= set(df.columns)
    assert len(df) == 10


@pytest.mark.parametrize("fmt,needle", [("rich", "full_preact"), ("md", "| original"), ("latex", "\\begin{tabular}")])
def test_table_formats(root, fmt, needle, tmp_path):
    out = tmp_path / f"t.{fmt}"
    res = CliRunner().invoke(
        app, ["table", "table2", "data=synthetic", f"store.root={root}", "--format", fmt, "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert needle in text and "6.61" in text and "PARTIAL" in text


@pytest.mark.parametrize(
    "args,message",
    [
        (["table", "table9"], "unknown table 'table9'; valid: table1, table2"),
        (["table", "table2", "data=cifar10"], "no finished runs match table2"),
        (["table", "table2", "colour=red"], "unknown filter 'colour'"),
    ],
)
def test_table_errors_are_one_line(root, args, message):
    res = CliRunner().invoke(app, [*args, f"store.root={root}"])
    assert res.exit_code == 2 and message in res.output and len(res.output.strip().splitlines()) == 1


def test_empty_store_is_a_clear_error(tmp_path):
    res = CliRunner().invoke(app, ["table", "table2", f"store.root={tmp_path}"])
    assert res.exit_code == 2 and "no finished runs in the store" in res.output


def test_compare_reports_medians_intervals_and_a_verdict(root):
    res = CliRunner().invoke(app, ["compare", "unit=original,full_preact", "model=resnet110", f"store.root={root}"])
    assert res.exit_code == 0, res.output
    assert "full_preact vs original: too few finished seeds to tell (n=2/2; need 3+ each)" in res.output


def test_compare_separates_clear_differences_and_not_noise():
    from resnet_ablate.report.compare import compare

    rows = [
        {"unit": u, "seed": s, "error": e, "budget": "paper"}
        for u, errs in (
            ("a", [6.0, 6.2, 6.1, 5.9, 6.3]),
            ("b", [8.0, 8.3, 8.1, 7.9, 8.2]),
            ("c", [6.3, 5.8, 6.2, 6.0, 6.1]),
        )
        for s, e in enumerate(errs)
    ]
    table, verdicts = compare(pd.DataFrame(rows), "unit", ["a", "b", "c"], {})
    assert table.loc[1, "delta"] == pytest.approx(2.0) and table.loc[1, "ci_low"] > 0
    assert "b vs a" in verdicts[0] and "the data separate them; a has the lower error" in verdicts[0]
    assert "c vs a" in verdicts[1] and "not separated at these seeds" in verdicts[1]


def test_figures_are_drawn_as_png_and_pdf(root, tmp_path):
    for name in ("figure6", "gradient-flow", "runs"):
        res = CliRunner().invoke(app, ["plot", name, "data=synthetic", f"store.root={root}", "--out", str(tmp_path)])
        assert res.exit_code == 0, res.output
        assert (tmp_path / f"{name}.png").stat().st_size > 1000 and (tmp_path / f"{name}.pdf").exists()
