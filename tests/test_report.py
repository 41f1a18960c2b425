"""Tables, comparisons and figures built from records of real tiny runs."""

import json
import statistics

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from resnet_ablate import record
from resnet_ablate.cli import app
from resnet_ablate.config import compose
from resnet_ablate.report.tables import build, cells, records
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


def _paper(table: str) -> dict:
    return {(c.row, c.column): c.paper for c in cells(table)[0]}


def test_the_presets_hold_the_papers_numbers():
    table2 = _paper("table2")
    assert table2[("full_preact", "resnet110")] == 6.37 and table2[("full_preact", "resnet164")] == 5.46
    assert _paper("table3")[("cifar100 resnet1001", "full_preact")] == 22.71
    assert [v for (row, _), v in _paper("table1").items() if "b_g=-6" in row] == [8.70, 6.91]
    assert list(_paper("table1").values()).count("fail") == 9
    assert _paper("table4")[("cifar10 resnet1001 batch 64", "full_preact")] == 4.62
    assert _paper("table5")[("imagenet_resnet200 full_preact", "top-5")] == 5.3
    assert {c.metric for c in cells("table5")[0] if c.column == "top-5"} == {"error_top5"}


def test_aggregation_is_exact_over_the_runs_records(root):
    df = records(root)
    result, header = build("table2", df, {"data": "synthetic"})
    cell = result[(result.row == "original") & (result.column == "resnet110")].iloc[0]
    errors = [
        100 * r.get("test_error")
        for r in record.scan(root)[0]
        if r.config["unit"]["name"] == "original" and r.config["model"]["name"] == "resnet110"
    ]
    assert cell["n"] == 2
    assert cell["ours_median"] == pytest.approx(statistics.median(errors))
    assert cell["ours_mean"] == pytest.approx(statistics.mean(errors))
    assert cell["ours_std"] == pytest.approx(statistics.stdev(errors))
    # depth 20 on synthetic data at budget=smoke: the paper's number is shown for reference, without Δ
    assert cell["paper"] == 6.61 and not cell["comparable"] and cell["delta"] is None
    assert not cell["fail"]  # "fail" is the paper's word after its schedule; these ran 6 iterations
    # the budget is what ran: smoke's schedule cut to 6 iterations is no preset's
    assert header["budget"] == "custom" and header["complete"] is False  # partial: most cells have no run
    missing = result[(result.row == "bn_after_add")]
    assert (missing["n"] == 0).all()


def _paper_scale_runs(**changes) -> pd.DataFrame:
    """Records as a full-recipe Table 2 sweep on the official CIFAR-10 would leave them (three seeds of two
    cells): every axis as the paper's cell composes it."""
    from resnet_ablate.axes import columns
    from resnet_ablate.config import key_fields

    rows = [
        {
            **columns(key_fields(compose(["model=resnet110", f"unit={u}", f"seed={s}"]))),
            "key": f"{u}{s}",
            "status": "done",
            "budget": "paper",
            "images": "official",
            "official_data": "cifar10",
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
    short = {"iterations": 6400, "milestones": [(3200, 4800)] * 6, "warmup_iterations": 40, "budget": "tenth"}
    for changes in ({"depth": 20}, {"data": "synthetic"}, short, {"official_data": None}, {"weight_decay": 5e-4}):
        filters = {k: v for k, v in changes.items() if k == "data"}
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


def test_diverged_runs_count_with_the_error_they_ended_with_and_rank_last_without_one(root):
    df = records(root)
    df.loc[df["unit"] == "full_preact", "status"] = "diverged"
    result, _ = build("table2", df, {"data": "synthetic"})
    cell = result[(result.row == "full_preact") & (result.column == "resnet110")].iloc[0]
    ended = df[(df["unit"] == "full_preact") & (df["model"] == "resnet110")]["error"]
    assert cell["ours_median"] == pytest.approx(ended.median()) and cell["diverged"] == 2
    df.loc[df["unit"] == "full_preact", "error"] = None  # diverged before any evaluation: no number to show
    result, _ = build("table2", df, {"data": "synthetic"})
    cell = result[(result.row == "full_preact") & (result.column == "resnet110")].iloc[0]
    assert pd.isna(cell["ours_median"]) and cell["n"] == 2  # ranked last, never shown as an invented 100


def test_runs_that_differ_in_more_than_the_seed_are_never_pooled(root):
    df = records(root)
    df.loc[df["seed"] == 0, "iterations"] = 8  # as a run of 8 iterations beside one of 6 would read
    with pytest.raises(LookupError, match=r"differ in iterations \(6, 8\); they are not pooled.*iterations=8"):
        build("table2", df, {"data": "synthetic"})
    result, _ = build("table2", df, {"data": "synthetic", "train.iterations": 6})  # a config path filters too
    assert set(result["n"]) <= {0, 1}


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


def _pdflatex(tmp_path, body: str) -> tuple[str, str]:
    """Compile ``body`` in a bare article with booktabs (fail with pdflatex's first error line); its log and the
    PDF's text (pdftotext)."""
    import shutil
    import subprocess

    if shutil.which("pdflatex") is None or shutil.which("pdftotext") is None:
        pytest.skip("Debian's TeX Live and poppler-utils are not installed (.ci/run installs them)")
    tex = tmp_path / "doc.tex"
    preamble = "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
    tex.write_text(preamble + body + "\n\\end{document}\n")
    proc = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", tex.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    errors = [line for line in proc.stdout.splitlines() if line.startswith("!")]
    assert proc.returncode == 0 and (tmp_path / "doc.pdf").exists(), errors or proc.stdout[-2000:]
    text = subprocess.run(["pdftotext", "doc.pdf", "-"], cwd=tmp_path, capture_output=True, text=True, check=True)
    return (tmp_path / "doc.log").read_text(errors="replace"), text.stdout


def test_latex_prints_what_the_terminal_shows_and_fits_the_page(root, tmp_path):
    """Table and compare output (a diverged run among them) compiled in a bare article: no overfull box, and the
    PDF's text holds the terminal's numbers and words, p < 0.05 included (text-mode < prints ¡ under OT1)."""
    from resnet_ablate.report.compare import compare
    from resnet_ablate.report.render import comparison, latex_text, paper_table

    df = records(root)
    df.loc[(df["unit"] == "full_preact") & (df["seed"] == 1), "status"] = "diverged"
    result, header = build("table2", df, {"data": "synthetic"})
    table = paper_table("table2", result, header, "latex")
    rows, verdicts = compare(df, "unit", ["original", "full_preact"], {"model": "resnet110"})
    compared = comparison(rows, verdicts, "unit", "latex")
    every = "Table 1 λ=0.5, F×0.5, zero-γ; Δ ±2 % & # _ $ {x} ~ ^ \\ − – — … → ≤ ≥ · α 2ⁿ p < 0.05 > |"
    assert "λ" not in latex_text(every) and "γ" not in latex_text(every)
    log, text = _pdflatex(tmp_path, table + compared + latex_text(every))
    assert "Overfull" not in log, [line for line in log.splitlines() if "Overfull" in line]
    words = " ".join(text.split())
    cell = result[(result["row"] == "full_preact") & (result["column"] == "resnet110")].iloc[0]
    terminal = paper_table("table2", result, header, "md")
    assert f"{cell['ours_median']:.2f} ({cell['ours_mean']:.2f}±{cell['ours_std']:.2f})" in words + terminal
    assert "1 diverged" in terminal and "1 diverged" in words and "(6.61)" in words
    assert "p < 0.05" in words and "¡" not in words and "zero-γ" in words
    assert "full preact" in words  # OT1 draws \\_ as a rule, which pdftotext reads as a space
    assert f"{rows.loc[0, 'std']:.2f}" in words and "diverged" in words


@pytest.mark.parametrize(
    "args,message",
    [
        (["table", "table9"], "unknown table 'table9'; valid: table1, table2"),
        (["table", "table2", "data=cifar10"], "no finished runs match table2"),
        (["table", "table2"], "the store's runs have data=synthetic: add data=synthetic"),
        (["table", "table3"], "the store's runs have data=synthetic: add data=synthetic"),  # its rows set data
        (["table", "table2", "colour=red"], "unknown filter 'colour'"),
    ],
)
def test_table_errors_are_one_line(root, args, message):
    res = CliRunner().invoke(app, [*args, f"store.root={root}"])
    assert res.exit_code == 2 and message in res.output and len(res.output.strip().splitlines()) == 1


def test_empty_store_is_a_clear_error(tmp_path):
    res = CliRunner().invoke(app, ["table", "table2", f"store.root={tmp_path}"])
    assert res.exit_code == 2 and "no finished runs in the store" in res.output


def test_compare_reports_n_and_what_two_seeds_allow(root):
    res = CliRunner().invoke(app, ["compare", "unit=original,full_preact", "model=resnet110", f"store.root={root}"])
    assert res.exit_code == 0, res.output
    assert "full_preact vs original" in res.output and "exact paired permutation (sign-flip) test, n=2/2" in res.output
    assert "2 paired seeds cannot reach p < 0.05 two-sided (no interval at this n); 6 can" in res.output
    assert "CI" not in res.output  # an interval from two seeds is not printed as if it meant something


def _runs(errors: dict[str, list[float]], seeds=None) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"unit": u, "seed": (seeds or {}).get(u, range(len(errs)))[s], "error": e, "budget": "paper"}
            for u, errs in errors.items()
            for s, e in enumerate(errs)
        ]
    ).assign(status="done")


def test_five_paired_seeds_never_separate_two_settings_six_can():
    from scipy import stats

    from resnet_ablate.report.compare import compare

    a, b = [6.0, 6.2, 6.1, 5.9, 6.3, 6.0], [8.0, 8.3, 8.1, 7.9, 8.2, 8.4]
    table, verdicts = compare(_runs({"a": a[:5], "b": b[:5]}), "unit", ["a", "b"], {})
    assert table.loc[1, "p"] == pytest.approx(1 / 16)  # every difference positive: the exact floor 2/2^5
    assert "5 paired seeds cannot reach p < 0.05 two-sided (no interval at this n); 6 can" in verdicts[0]
    assert "CI" not in verdicts[0] and table.loc[1, "ci_low"] is None
    table, verdicts = compare(_runs({"a": a, "b": b}), "unit", ["a", "b"], {})
    assert table.loc[1, "p"] == pytest.approx(1 / 32) and "the data separate them; a has the lower error" in verdicts[0]
    d = np.array(b) - np.array(a)
    ci = stats.bootstrap((d,), np.mean, method="BCa", random_state=0).confidence_interval
    assert (table.loc[1, "ci_low"], table.loc[1, "ci_high"]) == pytest.approx((ci.low, ci.high))
    assert table.loc[1, "delta"] == pytest.approx(d.mean()) and table.loc[1, "test"].startswith("exact paired")
    assert f"95% BCa CI [{ci.low:+.2f}, {ci.high:+.2f}]" in verdicts[0]
    table, verdicts = compare(_runs({"a": a, "b": a}), "unit", ["a", "b"], {})
    assert "no interval (no spread)" in verdicts[0] and "nan" not in verdicts[0]


def test_unpaired_seeds_use_the_exact_two_sample_test_as_scipy_computes_it():
    from scipy import stats

    from resnet_ablate.report.compare import compare

    a, b = [6.0, 6.2, 6.1, 5.9], [7.0, 7.3, 7.1, 6.9, 7.2]
    runs = _runs({"a": a, "b": b}, {"a": [0, 1, 2, 3], "b": [10, 11, 12, 13, 14]})
    table, verdicts = compare(runs, "unit", ["a", "b"], {})

    def mean_difference(x, y, axis):
        return np.mean(y, axis) - np.mean(x, axis)

    expected = stats.permutation_test((a, b), mean_difference, vectorized=True)
    assert table.loc[1, "p"] == pytest.approx(expected.pvalue) and table.loc[1, "p"] == pytest.approx(2 / 126)
    assert table.loc[1, "test"] == "exact permutation test" and "n=5/4" in verdicts[0]


def test_compare_edge_cases_ties_one_seed_and_a_setting_without_runs():
    from resnet_ablate.report.compare import compare

    table, verdicts = compare(_runs({"a": [6.0] * 4, "b": [6.0] * 4}), "unit", ["a", "b"], {})
    assert table.loc[1, "p"] == pytest.approx(1.0) and table.loc[1, "delta"] == 0
    table, verdicts = compare(_runs({"a": [6.0, 6.1], "b": [7.0]}), "unit", ["a", "b"], {})
    assert "too few finished seeds to test (n=1/2" in verdicts[0] and list(table["n"]) == [2, 1]
    with pytest.raises(ValueError, match="no finished run has unit=c; the runs hold unit=a,b"):
        compare(_runs({"a": [6.0, 6.1], "b": [7.0]}), "unit", ["a", "b", "c"], {})


@pytest.mark.parametrize("fmt,needle", [("md", "| unit"), ("csv", "unit,n,median"), ("latex", "\\begin{tabular}")])
def test_compare_formats_and_json(root, fmt, needle):
    args = ["compare", "unit=original,full_preact", "model=resnet110", f"store.root={root}"]
    res = CliRunner().invoke(app, [*args, "--format", fmt])
    assert res.exit_code == 0 and needle in res.output, res.output
    res = CliRunner().invoke(app, [*args, "--json"])
    data = json.loads(res.output)
    assert [r["n"] for r in data["rows"]] == [2, 2] and data["verdicts"][0].startswith("full_preact vs original")


def test_figures_are_drawn_as_png_and_pdf(root, tmp_path):
    for name in ("gradient-flow", "runs"):
        res = CliRunner().invoke(app, ["plot", name, "data=synthetic", f"store.root={root}", "--out", str(tmp_path)])
        assert res.exit_code == 0, res.output
        assert (tmp_path / f"{name}.png").stat().st_size > 1000 and (tmp_path / f"{name}.pdf").exists()


@pytest.mark.slow
def test_a_figure_of_20_runs_has_a_colour_per_setting_a_style_per_seed_and_its_legend_below_the_axes(tmp_path):
    """Up to 8 seeds, a line per run, a style per seed; past them (styles no longer tell seeds apart) each
    setting's median over its seeds with their range shaded, said in the legend."""
    from resnet_ablate.report.figures import figure

    for unit in ("original", "full_preact"):
        seeds = ",".join(map(str, range(10)))
        run_cells(
            compose([*TINY, "model.depth=8", f"unit={unit}", f"launcher.seeds=[{seeds}]", f"store.root={tmp_path}"])
        )
    fig = figure("runs", tmp_path, {"seed": [0, 1, 2, 3]})
    error = fig.axes[0]
    lines = error.get_lines()
    assert len(lines) == 8 and len({line.get_color() for line in lines}) == 2  # a colour per placement
    styles = {}
    for line in lines:  # the seeds in the same order under each colour, a style each
        styles.setdefault(line.get_color(), []).append(line.get_linestyle())
    first, second = styles.values()
    assert first == second and len(set(first)) == 4  # "-", "--", ":", "-."
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend = error.get_legend().get_window_extent(renderer)
    assert legend.y1 <= error.xaxis.get_tightbbox(renderer).y0  # below the axes and their labels, not over the data
    texts = [t.get_text() for t in error.get_legend().get_texts()]
    assert len(texts) == 6 and "seed 3" in texts and any("full_preact" in t for t in texts)
    fig = figure("runs", tmp_path, {})  # 10 seeds: a median and a band per placement
    error = fig.axes[0]
    assert len(error.get_lines()) == 2 and len(error.collections) == 2
    texts = [t.get_text() for t in error.get_legend().get_texts()]
    assert texts[-1] == "median over 10 seeds, shaded: their range" and len(texts) == 3


def test_a_paper_figure_leaves_out_a_panel_whose_variant_has_no_run(root):
    from resnet_ablate.report.figures import figure

    with pytest.raises(LookupError, match="no run of shortcut=scaling"):
        figure("figure3", root, {"data": "synthetic", "model": "resnet110"})


def test_the_notebook_api_gives_the_cli_s_numbers_as_dataframes(root):
    import resnet_ablate as ra

    df = ra.results(root)
    assert len(df) == 5 and set(df["status"]) == {"done"}
    cells = ra.table("table2", df, data="synthetic")
    assert cells.equals(build("table2", records(root), {"data": "synthetic"})[0])
    rows = ra.compare(df, "unit", ["original", "full_preact"], model="resnet110")
    assert list(rows["n"]) == [2, 2] and rows.attrs["verdicts"][0].startswith("full_preact vs original")


def test_the_report_is_one_page_with_the_tables_verdicts_figures_and_provenance(root, tmp_path):
    out = tmp_path / "report.html"
    res = CliRunner().invoke(app, ["report", "data=synthetic", f"store.root={root}", "--out", str(out)])
    assert res.exit_code == 0, res.output
    html = out.read_text()
    assert "<h4>table2</h4>" in html and "full_preact" in html and "(6.61)" in html
    assert "table2, resnet110: full_preact vs original" in html
    assert html.count('src="data:image/png;base64,') >= 2 and "http" not in html.split("<body>")[1]
    assert "<th>runs</th><td>5</td>" in html and "<th>budgets</th><td>custom</td>" in html
    assert "<th>CPU-hours spent</th>" in html and "GPU-hours" not in html  # trained on a CPU: said so
    for r in record.scan(root)[0]:  # every number traced to its run directories
        assert r.key in html


def test_the_report_without_a_dataset_filter_has_a_section_per_dataset_and_budget(root, tmp_path):
    out = tmp_path / "report.html"
    res = CliRunner().invoke(app, ["report", f"store.root={root}", "--out", str(out)])
    assert res.exit_code == 0, res.output
    html = out.read_text()
    assert "<h2>data=synthetic budget=custom</h2>" in html and "<h4>table2</h4>" in html
    assert "No paper table has a finished run" not in html and "gradient-flow ()" not in html


@pytest.mark.slow
def test_the_report_renders_in_a_real_browser(root, tmp_path):
    """Headless Chromium (Debian's, installed by .ci/run) loads the page: the tables are in its DOM, the screenshot
    is not blank, and the console reports no errors."""
    import shutil
    import subprocess

    from PIL import Image, ImageStat

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    page = tmp_path / "report.html"
    CliRunner().invoke(app, ["report", "data=synthetic", f"store.root={root}", "--out", str(page)])
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--enable-logging=stderr", "--v=0", "--window-size=1200,1600",
    ]  # fmt: skip

    def browse(*args):
        profile = ["--user-data-dir=" + str(tmp_path / f"profile{len(list(tmp_path.iterdir()))}")]
        return subprocess.run([chromium, *flags, *profile, *args, page.as_uri()], capture_output=True, timeout=120)

    dom = browse("--dump-dom")
    assert dom.returncode == 0 and b"table2" in dom.stdout and b"full_preact vs original" in dom.stdout
    assert b"Uncaught" not in dom.stderr and b"CONSOLE" not in dom.stderr
    shot = tmp_path / "shot.png"
    assert browse(f"--screenshot={shot}").returncode == 0
    stats = ImageStat.Stat(Image.open(shot).convert("L"))
    assert stats.stddev[0] > 10  # text and tables, not a blank page


def test_plot_signal_draws_each_row_of_a_preset_at_initialisation(tmp_path):
    from resnet_ablate.report.figures import plt

    args = ["plot", "signal", "after2016", "model=resnet110", "model.depth=8", "--out", str(tmp_path)]
    shown = []
    original = plt.close
    plt.close = lambda fig: shown.append(fig) or original(fig)
    try:
        res = CliRunner().invoke(app, args)
    finally:
        plt.close = original
    assert res.exit_code == 0, res.output
    assert (tmp_path / "signal.png").stat().st_size > 1000 and (tmp_path / "signal.pdf").exists()
    forward = shown[0].axes[0]
    labels = [line.get_label() for line in forward.get_lines()]
    assert labels[:3] == ["original (He et al. 2016)", "full pre-activation (He et al. 2016)", "no normalisation"]
    assert len(labels) == 11 and "Fixup (Zhang et al. 2019) (∂E/∂x = 0: the classifier starts at 0)" in labels
    bad = CliRunner().invoke(app, ["plot", "signal", "after2016", "init=fixup", "norm=batch", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "init=fixup trains without normalisation" in bad.output


def test_a_diverged_run_shows_as_diverged_with_its_error_and_fail_only_after_the_papers_schedule(tmp_path):
    """A diverged run is never an invented 100%; "fail" (Table 1's caption) is the paper's word for its schedule."""

    def table(store_root, *overrides):
        (run,) = run_cells(compose([*TINY, f"store.root={store_root}", f"data.root={tmp_path / 'data'}", *overrides]))
        result, _ = build("table2", records(store_root), {"data": "synthetic"})
        args = ["table", "table2", "data=synthetic", f"store.root={store_root}", "--format", "md"]
        md = CliRunner().invoke(app, args)
        return run, result.set_index(["row", "column"]).loc[("original", "resnet110")], md.output

    run, cell, out = table(tmp_path / "a", "train.lr=1e12", "train.warmup_iterations=0")
    assert run["status"] == "diverged" and run["test_error"] is not None
    assert cell["ours_median"] == pytest.approx(100 * run["test_error"]) and cell["diverged"] == 1
    assert f"diverged ({100 * run['test_error']:.2f}) n=1" in out and "100.00" not in out
    run, cell, out = table(tmp_path / "b", "train.lr=0")  # learns nothing: far above 20%, after 6 iterations
    assert run["status"] == "done" and run["test_error"] > 0.2 and not cell["fail"]
    assert f"| {100 * run['test_error']:.2f} n=1" in out and "fail" not in out


def test_runs_that_differ_in_a_follow_up_axis_get_a_colour_and_a_label_each(tmp_path):
    """after2016's rows differ in norm, act, init or drop path, not only in unit and shortcut: each shows."""
    from resnet_ablate.report.figures import figure

    for row in (["norm=batch"], ["norm=group"], ["act=elu"], ["model.drop_path=0.5"]):
        run_cells(compose([*TINY, "model.depth=8", "seed=0", f"store.root={tmp_path}", *row]))
    error = figure("runs", tmp_path, {}).axes[0]
    assert len({line.get_color() for line in error.get_lines()}) == 4
    texts = [t.get_text() for t in error.get_legend().get_texts()]
    assert len(set(texts)) == 4 and any("norm=group" in t for t in texts) and any("drop_path=0.5" in t for t in texts)
    assert any("act=elu" in t for t in texts) and any("groups=8" in t for t in texts)


def test_compare_counts_diverged_runs_as_the_table_does_and_says_what_it_left_out():
    """8 done runs against 4 done + 4 diverged: the diverged count with the error they ended with (as ``table``
    counts them), the verdict says so, and one diverged before any evaluation is left out and named."""
    from resnet_ablate.report.compare import compare

    runs = _runs({"a": [6.0, 6.1, 6.2, 6.3, 6.0, 6.1, 6.2, 6.3], "b": [5.0, 5.1, 5.2, 5.3, 60, 70, 80, 90]})
    runs.loc[(runs["unit"] == "b") & (runs["error"] > 50), "status"] = "diverged"
    table, verdicts = compare(runs, "unit", ["a", "b"], {})
    assert list(table["n"]) == [8, 8] and table.loc[1, "diverged"] == 4 and table.loc[1, "median"] == 32.65
    assert "n=8/8" in verdicts[0] and "b has the lower error" not in verdicts[0]  # its diverged runs count
    assert "b: 4 of its 8 runs diverged (counted with the error they ended with)." in verdicts
    runs.loc[runs["error"] == 90, "error"] = None
    table, verdicts = compare(runs, "unit", ["a", "b"], {})
    assert table.loc[1, "n"] == 7 and table.loc[1, "left_out"] == 1
    assert "b: 3 of its 7 runs diverged (counted with the error they ended with); 1 diverged before any" in verdicts[-1]


def test_a_permutation_p_is_called_exact_only_when_every_permutation_was_counted():
    from resnet_ablate.report.compare import compare

    rng = np.random.default_rng(0)
    a = rng.normal(6, 0.3, 17)
    b = a + rng.normal(0.2, 0.3, 17)
    table, _ = compare(_runs({"a": list(a), "b": list(b)}), "unit", ["a", "b"], {})
    signs = 1 - 2 * ((np.arange(2**17)[:, None] >> np.arange(17)) & 1)  # every sign flip of the 17 differences
    flipped = np.abs((signs * (b - a)).mean(axis=1))
    exact = np.mean(flipped >= abs((b - a).mean()) - 1e-12)
    assert table.loc[1, "p"] == pytest.approx(exact, abs=1e-12) and table.loc[1, "test"].startswith("exact paired")
    a, b = rng.normal(6, 0.3, 12), rng.normal(6.5, 0.3, 12)  # unpaired: C(24, 12) = 2,704,156 permutations
    table, _ = compare(
        _runs({"a": list(a), "b": list(b)}, {"a": range(12), "b": range(20, 32)}), "unit", ["a", "b"], {}
    )
    assert table.loc[1, "test"] == "permutation test, 10,000 random permutations of 2,704,156"


def test_the_papers_number_stands_plain_only_beside_its_own_net_and_recipe_and_every_difference_is_said(root):
    """One rule: plain (with Δ) where our runs are the paper's cell, in parentheses otherwise (no run; other data,
    depth, schedule), each difference said once per kind, with every value, in the note."""
    from resnet_ablate.report.render import fmt_paper, not_comparable_note, paper_table

    result, _ = build("table2", _paper_scale_runs())
    empty = result[result["n"] == 0].iloc[0]
    assert not empty["comparable"] and empty["why"] == "no finished run" and fmt_paper(empty).startswith("(")
    assert not_comparable_note(result) == "Paper numbers in parentheses have no Δ: their cell has no run."
    result, header = build("table3", records(root), {"data": "synthetic"})
    cell = result[(result["row"] == "synthetic resnet110") & (result["column"] == "original")].iloc[0]
    assert "data synthetic (the paper's: cifar10)" in cell["why"] and "not a cell" not in cell["why"]
    note = not_comparable_note(result)
    assert note.count("depth ") == 1 and "depth 20 (the paper's: 110, 164)" in note and "more" not in note
    parts = note.split(": ", 2)[2].split(". Each cell")[0].split("; ")
    assert parts == sorted(parts, key=len) and any(p.startswith("images other than the official") for p in parts)
    assert "column why" in paper_table("table3", result, header, "md")


def test_a_follow_up_run_joins_no_paper_table_and_the_reports_verdicts_follow_each_tables_rows(root):
    """A GroupNorm run beside Table 2's runs: Table 2 and its verdicts are unchanged (the follow-up axes sit at their
    defaults in the paper's tables), the report says what it left out, and after2016's verdicts follow its rows."""
    from resnet_ablate.report.page import _left_out, _verdicts

    df = records(root)
    gn = df[df["unit"] == "full_preact"].assign(norm="group", groups=8, key=lambda d: d["key"] + "gn")
    both = pd.concat([df, gn], ignore_index=True)
    alone, _ = build("table2", df, {"data": "synthetic"})
    beside, _ = build("table2", both, {"data": "synthetic"})
    assert beside.drop(columns="differences").equals(alone.drop(columns="differences"))
    verdicts = _verdicts(both, {"data": "synthetic"})
    assert any(v.startswith("table2, resnet110: full_preact vs original") for v in verdicts), verdicts
    assert not any("differ in" in v for v in verdicts), verdicts
    assert (
        _left_out(both, set(df["key"])) == "2 of these runs are in no table (norm=group); compare and plot show them."
    )
    after = df.assign(norm="batch", act="relu", init="he", drop_path=0.0)
    after = pd.concat(
        [after, after[after["unit"] == "original"].assign(shortcut="rezero", key=lambda d: d["key"] + "z")]
    )
    verdicts = _verdicts(after, {"data": "synthetic"})
    assert any(v.startswith("after2016, resnet110: ReZero (Bachlechner et al. 2020) vs original") for v in verdicts), (
        verdicts
    )


def test_figure_labels_never_overlap_ticks_are_whole_and_gradient_flow_draws_one_seed_per_setting(root):
    """figure6's twin axis label clears the next panel's; iterations and units are whole numbers; gradient-flow
    draws two lines (start, end) per setting, not per run; ``plot --help`` says what a line style is in each."""
    from resnet_ablate.report.figures import figure

    df = records(root)
    first = df[(df["model"] == "resnet110") & (df["unit"] == "full_preact") & (df["seed"] == 0)]
    runs = pd.concat([df, first.assign(unit="bn_after_add"), first.assign(model="resnet164")])
    fig = figure("figure6", root, {"data": "synthetic"}, runs)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    left_twin, right = fig.axes[2], fig.axes[1]  # the left panel's loss axis, the right panel's error axis
    assert left_twin.get_ylabel() == "training loss, dashed" and right.get_ylabel() == "test error (%), solid"
    assert not left_twin.yaxis.label.get_window_extent(renderer).overlaps(right.yaxis.label.get_window_extent(renderer))
    assert all(float(t).is_integer() for t in fig.axes[0].get_xticks())
    fig = figure("gradient-flow", root, {"data": "synthetic"})
    ax = fig.axes[0]
    settings = df.groupby(["model", "unit"]).ngroups
    assert len(ax.lines) == 2 * settings < 2 * len(df) and all(float(t).is_integer() for t in ax.get_xticks())
    assert ax.lines[0].get_xdata()[0] == 1
    assert "line style per seed" in CliRunner().invoke(app, ["plot", "--help"]).output
