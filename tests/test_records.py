"""Numbers that cannot be wrong: the axes declared once, one typed reader of a run's record, comparability from
what ran, and a store that cannot be tricked. Each test reproduces a finding with real runs, files and processes."""

import json
import os
import shutil
import signal
import time

import pytest
from typer.testing import CliRunner

from resnet_ablate import axes, record, store
from resnet_ablate.cli import app
from resnet_ablate.config import UNKEYED, compose, key_fields
from resnet_ablate.grid import expand_grid, preset_grid
from resnet_ablate.report.tables import build, records
from resnet_ablate.sweep import run_cells

from .conftest import TINY, cli, start_cli

B = [*TINY[:4], "data.synthetic_train=256", "data.synthetic_test=128", "train.batch_size=32", "train.eval_every=4",
     "train.checkpoint_every=4", "train.milestones=[4,6]", "train.warmup_iterations=0", "train.device=cpu"]  # fmt: skip


def _b(tmp_path, *extra):
    return [*B, "train.iterations=8", f"store.root={tmp_path / 'store'}", f"data.root={tmp_path / 'data'}", *extra]


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    """A store with seeds 0 and 1 of one tiny cell: the record every test below damages a copy of."""
    tmp = tmp_path_factory.mktemp("two")
    run_cells(compose([*_b(tmp), "launcher.seeds=[0,1]"]))
    return tmp / "store"


def _copy(store_root, tmp_path):
    shutil.copytree(store_root, tmp_path / "store")
    return tmp_path / "store"


def _result(root, seed=0):
    (d,) = [r.directory for r in record.scan(root)[0] if r.config["seed"] == seed]
    return d, json.loads((d / "result.json").read_text())


# the axes, once


def test_every_setting_is_an_axis_or_unkeyed_and_the_run_key_derives_from_them(cfg):
    d = key_fields(cfg())

    def leaves(node, prefix=""):
        for k, v in node.items():
            yield from leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"]

    added = {a.path for a in axes.AXES if a.added}  # added later: out of the key at their defaults
    assert set(leaves(d)) == {a.path for a in axes.AXES} - added  # the run key is exactly the axes
    moved = cfg(
        "norm=group", "act=elu", "init=zero_last_bn", "model.drop_path=0.1", "shortcut=layerscale", "shortcut.eps=1e-5"
    )
    assert set(leaves(key_fields(moved))) == {a.path for a in axes.AXES}  # set, they key
    assert not axes.problems(d) and axes.problems({**d, "seed": "0"}) == ["seed is '0', not int"]
    assert {"store", "launcher", "logger", "data.root", "train.device", "train.budget"} <= set(UNKEYED)
    assert "budget" not in d["train"] and "root" not in d["data"]
    assert axes.find("model.depth").column == axes.find("depth").column == "depth"
    assert axes.find("model").path == "model.name" and axes.find("colour") is None
    kinds = {a.column: a.kinds for a in axes.AXES if a.kinds is not None}
    assert kinds["gate_bias"] == ("exclusive_gating", "shortcut_gating") and kinds["p"] == ("dropout",)


def test_parameters_a_kind_does_not_read_are_empty_in_the_records(two_seeds):  # finding 5
    df = records(two_seeds)
    assert df["p"].isna().all() and df["gate_bias"].isna().all() and set(df["shortcut"]) == {"identity"}


# one typed record


@pytest.mark.parametrize(
    "field,value,why",
    [
        ("test_error", 5, "test_error is 5"),
        ("test_error", -0.5, "test_error is -0.5"),
        ("test_error", True, "test_error is True"),
        ("test_error", float("inf"), "test_error is inf"),
        ("test_error", float("nan"), "test_error is nan"),
        ("test_error", "0.05", "test_error is '0.05'"),
        ("test_error", None, "says done but holds no test_error"),
        ("wall_time", "12", "wall_time is '12'"),
        ("config.seed", "0", "config: seed is '0', not int"),
        ("config.model.name", {"x": 1}, "config: model.name is {'x': 1}"),
        ("config.train", "fast", "config: train.iterations is None"),
        ("key", "abc", "not the run key"),
    ],
)
def test_a_mistyped_or_out_of_range_record_is_skipped_with_its_reason_and_rerun(two_seeds, tmp_path, field, value, why):
    """Finding 4, 14: never shown as 500%, never 'done' without numbers, and the next sweep reruns the cell."""
    root = _copy(two_seeds, tmp_path)
    d, result = _result(root)
    *parents, leaf = field.split(".")
    node = result
    for p in parents:
        node = node[p]
    node[leaf] = value
    (d / "result.json").write_text(json.dumps(result))
    df = records(root)
    assert list(df["seed"]) == [1] and df["error"].between(0, 100).all()
    ((reason, names),) = df.attrs["skipped"].items()
    assert why in reason and names == [d.name]
    assert store.cell_status(d) == "partial"  # not done: a sweep reruns it (from its last checkpoint)
    (again,) = run_cells(compose(_b(tmp_path)))
    assert again["status"] == "done" and list(d.glob("result.json.rejected*"))


def test_a_copied_run_directory_is_not_a_second_seed(two_seeds, tmp_path):  # finding 3
    root = _copy(two_seeds, tmp_path)
    d, _ = _result(root)
    shutil.copytree(d, d.with_name(d.name + ".bak"))
    df = records(root)
    assert sorted(df["seed"]) == [0, 1]
    why = "its name is not the run key of its config (a copy or a renamed run)"
    assert df.attrs["skipped"] == {why: [d.name + ".bak"]}


def test_a_yaml_alias_bomb_in_a_run_directory_does_not_hang_status(tmp_path):  # finding 12
    run = tmp_path / "runs" / "abc"
    run.mkdir(parents=True)
    names = "abcdefghi"  # each list holds nine of the one before: 9^9 strings once expanded
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip(names, names[1:])
    )
    (run / "config.yaml").write_text(bomb)
    start = time.monotonic()
    assert store.saved_config(run) == {}
    proc = cli("status", f"store.root={tmp_path}", timeout=120)
    assert proc.returncode == 0 and "pending" in proc.stdout and time.monotonic() - start < 60


def test_metrics_rows_are_typed_and_an_enormous_integer_is_left_out(tmp_path):  # finding 14
    path = tmp_path / "metrics.jsonl"
    huge = "1" + "0" * 400
    rows = ['{"iteration": 4, "test_error": 0.5, "train_loss": 1}', f'{{"iteration": 8, "test_error": {huge}}}']
    path.write_text("\n".join(rows) + "\n")
    rows = record.read_jsonl(path, "test_error")
    assert rows == [{"iteration": 4, "test_error": 0.5, "train_loss": 1.0}]


# comparability from what ran, not from a label


def test_a_short_run_labelled_paper_is_not_compared_with_the_paper_nor_pooled(tmp_path):  # finding 1
    from resnet_ablate.data import write_synthetic

    fake = tmp_path / "fake"  # synthetic images in CIFAR-10's layout, named cifar10
    write_synthetic(fake / "cifar-10-batches-py", 256, 128)
    common = [*B[:1], "model=resnet110", "model.depth=8", "data=cifar10", f"data.root={fake}", "train.batch_size=32",
              "train.device=cpu", "train.eval_every=1", "train.warmup_iterations=0",
              f"store.root={tmp_path / 'store'}"]  # fmt: skip
    run_cells(compose([*common, "train.iterations=2", "seed=0"]))
    run_cells(compose([*common, "train.iterations=3", "seed=1"]))
    df = records(tmp_path / "store")
    assert set(df["budget"]) == {"custom"} and df["official_data"].isna().all()
    with pytest.raises(LookupError, match=r"differ in iterations \(2, 3\); they are not pooled"):
        build("table2", df, {"depth": 8})
    result, header = build("table2", df, {"depth": 8, "iterations": 2})
    cell = result[(result.row == "original") & (result.column == "resnet110")].iloc[0]
    assert cell["n"] == 1 and cell["delta"] is None and not cell["comparable"]
    assert "iterations 2 (the paper's: 64000)" in cell["why"]
    assert "images other than the official cifar10 ones" in cell["why"]
    assert header["budget"] == "custom"


def test_compare_refuses_to_pool_two_nets_and_names_them(tmp_path):  # finding 2
    for model, depth in (("resnet110", 8), ("resnet164", 11)):
        for unit in ("original", "full_preact"):
            extra = [f"model={model}", f"model.depth={depth}", f"unit={unit}", "launcher.seeds=[0,1]"]
            run_cells(compose(_b(tmp_path, *extra)))
    df = records(tmp_path / "store")
    from resnet_ablate.report.compare import compare

    pooled = r"differ in model \(resnet110, resnet164\); block \(basic, bottleneck\); depth \(11, 8\)"
    with pytest.raises(LookupError, match=pooled):
        compare(df, "unit", ["original", "full_preact"], {"data": "synthetic"})
    rows, _ = compare(df, "unit", ["original", "full_preact"], {"model.name": "resnet164"})
    assert list(rows["n"]) == [2, 2]
    res = CliRunner().invoke(app, ["compare", "unit=original,full_preat", f"store.root={tmp_path / 'store'}"])
    assert res.exit_code == 2 and "no finished run has unit=full_preat; the runs hold unit=full_preact,original" in (
        res.output
    )


def test_the_data_fingerprint_is_the_content_and_the_official_test_set_is_known():
    import numpy as np

    from resnet_ablate.data import OFFICIAL, fingerprint

    x, y = np.arange(3 * 3072, dtype=np.uint8).reshape(3, 3, 32, 32), np.array([1, 2, 3])
    assert fingerprint(x, y) == fingerprint(x.copy(order="F"), y.astype(np.int32))  # not how it was stored
    assert fingerprint(x, y) != fingerprint(x, np.array([1, 2, 4])) and len(OFFICIAL) >= 1


@pytest.mark.parametrize("split,known", [("train", "973ef2abb5897efc"), ("test", "2c33b053d1cd726a")])
def test_the_official_cifar10_splits_are_known_by_content_whoever_wrote_the_batch_files(tmp_path, split, known):
    """Derived from the official pixels (data.OFFICIAL's comment): a run on them gets its Δ whatever tool pickled
    them (the files' bytes, and so torchvision's MD5s, differ)."""
    from resnet_ablate.data import OFFICIAL, _official
    from resnet_ablate.schema import Dataset

    assert OFFICIAL[(Dataset.cifar10, split)] == known
    files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    for f in files:
        (tmp_path / f).write_bytes(b"pickled by another tool")
    assert _official(Dataset.cifar10, tmp_path, split, files, known)
    assert not _official(Dataset.cifar10, tmp_path, split, files, "0" * 16)


# a store that cannot be tricked


@pytest.mark.parametrize("name", ["lock", "starts.jsonl", "train.log", "metrics.jsonl", "result.json"])
def test_a_link_planted_in_a_run_directory_is_never_written_through(tmp_path, name):  # finding 7
    """Appended files refuse a link in one line; files written whole replace it (the victim is never touched)."""
    c = compose(_b(tmp_path))
    d = store.run_dir(c)
    d.mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (d / name).symlink_to(victim)
    proc = cli("train", "--quiet", *_b(tmp_path))
    assert victim.read_text() == "precious\n"
    if name in ("lock", "starts.jsonl"):
        assert proc.returncode == 1 and "link" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_rejected_files_are_numbered_never_overwritten(tmp_path):  # finding 8
    c = compose(_b(tmp_path))
    d = store.run_dir(c)
    d.mkdir(parents=True)
    for n in range(3):
        (d / "result.json").write_text(f'{{"foreign": {n}}}')
        (d / "checkpoint.pt").write_bytes(b"not a checkpoint %d" % n)
        (again,) = run_cells(c)
        assert again["status"] == "done"
        (d / "result.json").unlink()
        (d / "checkpoint.pt").unlink()
    kept = sorted(p.name for p in d.glob("*.rejected*"))
    assert kept == [f"{f}.rejected{s}" for f in ("checkpoint.pt", "result.json") for s in ("", ".1", ".2")]
    assert {(d / n).read_bytes() for n in kept if n.startswith("result")} == {b'{"foreign": %d}' % n for n in range(3)}


def test_a_writers_leftover_temporary_files_are_removed_on_the_next_start(tmp_path):  # finding 10
    c = compose(_b(tmp_path))
    d = store.run_dir(c)
    d.mkdir(parents=True)
    leftover = d / ".checkpoint.pt.partial-x1y2z3"
    leftover.write_bytes(b"0" * 1000)
    run_cells(c)
    assert not leftover.exists()


def test_a_bad_line_in_starts_jsonl_does_not_block_a_resume(tmp_path):  # finding 11
    c = compose(_b(tmp_path))
    d = store.run_dir(c)
    d.mkdir(parents=True)
    (d / "starts.jsonl").write_text('{"foo": 1}\n')
    (result,) = run_cells(c)
    assert result["status"] == "done" and result["resumed_from"] == []


@pytest.mark.slow
def test_closing_the_terminal_checkpoints_like_sigterm(tmp_path):  # finding 9
    args = [*_b(tmp_path), "train.iterations=4000", "train.eval_every=4", "train.checkpoint_every=4000"]
    proc = start_cli("train", *args)
    d = store.run_dir(compose(args))
    deadline = time.monotonic() + 120
    while not record.read_jsonl(d / "metrics.jsonl") and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGHUP)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGHUP and "SIGHUP: checkpoint saved" in _ + err
    assert store.cell_status(d) == "partial"


@pytest.mark.slow
def test_a_stopped_holder_of_a_cell_is_reported_as_stopped(tmp_path):  # finding 17
    args = [*_b(tmp_path), "train.iterations=100000", "train.eval_every=4"]
    proc = start_cli("train", "--quiet", *args)
    d = store.run_dir(compose(args))
    deadline = time.monotonic() + 120
    while not record.read_jsonl(d / "metrics.jsonl") and time.monotonic() < deadline:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        status = cli("status", f"store.root={tmp_path / 'store'}")
        assert "running" in status.stdout and f"pid {proc.pid}" in status.stdout
        assert "stopped (SIGSTOP)" in status.stdout
        second = cli("train", "--quiet", *args)
        assert second.returncode == 1 and "stopped (SIGSTOP)" in second.stderr
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


# what a user types


def test_a_store_path_with_a_comma_quotes_or_non_ascii_works_in_sweep(tmp_path):  # finding 6
    root = tmp_path / "results/a,b (é)='x'"
    data = tmp_path / "data,1"
    paths = [f"store.root={_hydra_quoted(root)}", f"data.root={_hydra_quoted(data)}"]
    proc = cli("sweep", "table2", *B[:-1], "train.iterations=4", "unit=original", "model=resnet110", "seed=0", *paths)
    assert proc.returncode == 0, proc.stderr
    assert len(record.scan(root)[0]) == 1 and not (tmp_path / "results" / "a").exists()


def _hydra_quoted(path):
    from resnet_ablate.grid import quote

    return quote(str(path))


def test_narrowing_a_preset_selects_the_lines_with_that_value():  # finding 18
    assert len(preset_grid("table1", ["shortcut=identity"])) == 5
    assert {c[-1] for c in preset_grid("table2", ["unit=original"])} <= {"model=resnet110", "model=resnet164"}
    assert len(preset_grid("table2", ["unit=original"])) == 10
    assert all("model=resnet20" in c for c in preset_grid("table2", ["model=resnet20"]))  # a new value replaces
    assert expand_grid(["a=1 b=1", "a=2 b=2"], [], ["a=2"]) == [["a=2", "b=2"]]


def test_a_dry_run_needs_no_data(tmp_path):  # finding 18
    res = CliRunner().invoke(app, ["sweep", "table5", "--dry-run", f"data.root={tmp_path}"])
    assert res.exit_code == 0, res.output
    assert "8 cells" not in res.output and "4 cells: 4 pending" in res.output


@pytest.mark.parametrize(
    "args,message",
    [
        (["train", "~store"], "the overrides remove store"),
        (["train", "~train"], "the overrides remove train."),
        (["train", "~seed"], "the overrides remove seed"),
        (["sweep", "table2", "--dry-run", "~store"], "the overrides remove store"),
        (["train", "launcher.jobs_per_gpu=100000000"], "launcher.jobs_per_gpu=100000000 is out of range"),
        (["train", "unit.name=a$\\frac$"], "unit.name='a$\\\\frac$' is not a name"),
        (["status", "store.root=/nonexistent/store"], "holds no runs/ folder"),
        (["report", "--out", "."], "--out . is a folder"),
        (["table", "table2", "--out", "."], "--out . is a folder"),
        (["plot", "runs", "--out", "pyproject.toml"], "--out pyproject.toml is a file"),
    ],
)
def test_bad_input_is_a_one_line_error(args, message):  # findings 13, 15
    res = CliRunner().invoke(app, args)
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and message in lines[0], res.output


def test_filters_take_the_override_spelling_too(two_seeds):  # finding 15
    for spelling in ("depth=8", "model.depth=8"):
        args = ["table", "table2", "data=synthetic", "model=resnet20", spelling, f"store.root={two_seeds}"]
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 0, res.output


def test_the_wandb_reader_stops_at_a_record_whose_crc_does_not_match(tmp_path):  # finding 19
    import struct
    import zlib

    from wandb.proto.wandb_internal_pb2 import Record

    from resnet_ablate.trackers.wandb_files import wandb_records

    def chunk(record: Record) -> bytes:
        data = record.SerializeToString()
        return struct.pack("<IHB", zlib.crc32(bytes([1]) + data), len(data), 1) + data

    records = [Record(num=i) for i in range(3)]
    body = b":W&B\x00\x00\x00" + b"".join(chunk(r) for r in records)
    (tmp_path / "ok.wandb").write_bytes(body)
    assert [r.num for r in wandb_records(tmp_path / "ok.wandb")] == [0, 1, 2]
    damaged = bytearray(body)
    damaged[-1] ^= 0xFF  # a flipped bit in the last record
    (tmp_path / "bad.wandb").write_bytes(bytes(damaged))
    assert [r.num for r in wandb_records(tmp_path / "bad.wandb")] == [0, 1]


def _within(seconds: float, fn):
    """``fn()``'s value; fails (rather than hangs the suite) when it has not returned within ``seconds``."""
    import threading

    box = []
    thread = threading.Thread(target=lambda: box.append(fn()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert box, f"still running after {seconds} s: it waits on something"
    return box[0]


@pytest.mark.parametrize("name", ["result.json", "lock", "config.yaml", "metrics.jsonl", "checkpoint.pt"])
@pytest.mark.parametrize("plant", ["a FIFO", "JSON 1,000 deep"])
def test_a_fifo_or_a_deep_file_planted_in_a_run_never_hangs_or_breaks_a_reader_and_the_cell_retrains(
    two_seeds, tmp_path, name, plant
):
    """status, table and plot answer at once (the planted entry skipped with its reason, or read around), and
    training the cell again ends in a record or one line, never a wait or a traceback."""
    root = _copy(two_seeds, tmp_path)
    d = next((root / "runs").iterdir())
    (d / name).unlink(missing_ok=True)
    if plant == "a FIFO":
        os.mkfifo(d / name)
    else:
        deep = "[" * 1000 + "]" * 1000
        (d / name).write_text(deep if name != "metrics.jsonl" else '{"iteration": 1, "x": ' + deep + "}\n")
    for args in (
        ["status"],
        ["table", "table2", "data=synthetic", "model=resnet20"],
        ["plot", "runs", "data=synthetic"],
    ):
        full = [*args, f"store.root={root}", *(["--out", str(tmp_path / "fig")] if args[0] == "plot" else [])]
        res = _within(60, lambda full=full: CliRunner().invoke(app, full))
        assert res.exception is None or isinstance(res.exception, SystemExit), res.output
        assert "Traceback" not in res.output and "RecursionError" not in res.output
    result = json.loads((two_seeds / "runs" / d.name / "result.json").read_text())
    overrides = [*_b(tmp_path), f"seed={result['config']['seed']}", f"store.root={root}"]
    res = _within(120, lambda: CliRunner().invoke(app, ["train", "--quiet", *overrides]))
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code in (0, 1) and "Traceback" not in res.output, res.output
    assert res.exit_code == 0 or (len(lines) == 1 and lines[0].startswith("error:") and name in lines[0])


def test_a_tilde_in_a_folder_setting_means_home_quoted_or_not(tmp_path, monkeypatch):
    """``store.root='~/x'`` wrote into ./~/x while printing ~/x; unquoted it was a Hydra lexer error."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    for root in ("'~/quoted'", "~/bare"):
        res = CliRunner().invoke(app, ["train", "--quiet", *_b(tmp_path), f"store.root={root}"])
        assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "home").glob("*/runs/*/result.json"))) == 2 and not (tmp_path / "~").exists()
    res = CliRunner().invoke(app, ["status", "store.root=~/bare"])
    assert res.exit_code == 0 and "done" in res.output
    res = CliRunner().invoke(app, ["sweep", "table2", "store.root=~/bare", "--dry-run", *B])
    assert res.exit_code == 0 and str(tmp_path / "home" / "bare" / "runs") in res.output.replace("\n", "")


def test_a_finished_cell_is_skipped_only_on_its_own_images(tmp_path):
    """The same settings with data.root at other images of the same sizes: refused in one line naming both
    fingerprints (it printed the old cell's error as done, rc 0); --force retrains it on the new images."""
    from resnet_ablate.data import write_synthetic

    args = _b(tmp_path)
    assert CliRunner().invoke(app, ["train", "--quiet", *args]).exit_code == 0
    other = tmp_path / "other"
    write_synthetic(other / "synthetic" / "256-128" / "cifar-10-batches-py", 256, 128, seed=1)
    res = CliRunner().invoke(app, ["train", "--quiet", *args, f"data.root={other}"])
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and "ended on other images than data.root holds now" in lines[0]
    assert "train " in lines[0] and " now " in lines[0]
    res = CliRunner().invoke(app, ["train", "--quiet", *args, f"data.root={other}", "store.rerun=all"])
    assert res.exit_code == 0, res.output
    assert CliRunner().invoke(app, ["train", "--quiet", *args, f"data.root={other}"]).exit_code == 0  # its own now


@pytest.mark.parametrize(
    "change,reason",
    [
        ({"data": {"train": "973ef2abb5897efc", "test": "1" * 16, "official": "cifar10"}}, "official cifar10 data"),
        ({"iterations": 3}, "done after 3 iterations of train.iterations=8"),
        ({"iterations": 9, "status": "diverged"}, "diverged after 9 iterations"),
    ],
)
def test_a_record_that_contradicts_itself_is_skipped_with_the_reason(two_seeds, tmp_path, change, reason):
    """A hand-written result.json claiming the official data with another fingerprint, or a done run of fewer
    iterations than its schedule, gave a Δ; now its own fields are checked against each other and its config."""
    root = _copy(two_seeds, tmp_path)
    d, result = _result(root, seed=1)
    (d / "result.json").write_text(json.dumps({**result, **change}))
    found, skipped = record.scan(root)
    assert [r.config["seed"] for r in found] == [0]
    assert any(reason in why and "contradicts itself" in why for why in skipped), skipped


def test_an_official_claim_needs_the_official_fingerprints_where_they_are_known():
    from resnet_ablate.record import _inconsistent

    config = {"data": {"name": "cifar10"}, "train": {"iterations": 10}}
    official = {"train": "973ef2abb5897efc", "test": "2c33b053d1cd726a", "official": "cifar10"}
    assert _inconsistent({"config": config, "status": "done", "iterations": 10, "data": official}) is None
    forged = {**official, "test": "1" * 16}
    why = _inconsistent({"config": config, "status": "done", "iterations": 10, "data": forged})
    assert why == "official cifar10 data with a test fingerprint of '1111111111111111'"


def test_the_writer_beside_the_reader_writes_nothing_the_reader_would_refuse(tmp_path):
    """record.write checks a record as record.read will: a failed cell's record reads back; a done one with no
    test error, or a status not of ours, is refused before anything is written, and what was there is kept."""
    cfg = compose([*TINY, f"store.root={tmp_path}"])
    directory = store.run_dir(cfg)
    directory.mkdir(parents=True)
    record.write_failed(directory, key_fields(cfg), "RuntimeError: boom")
    assert record.read(directory).status == "failed" and record.read(directory).get("error") == "RuntimeError: boom"
    before = (directory / "result.json").read_bytes()
    for bad, why in [
        ({"status": "done"}, "says done but holds no test_error"),
        ({"status": "ok"}, "no status of ours"),
    ]:
        with pytest.raises(ValueError, match=why):
            record.write(directory, {**record.read(directory).result, **bad})
        assert (directory / "result.json").read_bytes() == before
