"""Attacks on a store at random: links planted in run directories, copied run directories, torn and wrong-typed
result.json files, short recipes under the paper's label, store paths with odd characters; other images under a
finished cell's settings, a diverged seed beside done ones, a drop-path seed stacked with another, forged records
(official data with another fingerprint, a done run short of its schedule), FIFOs planted as a run's files, JSON
nested 1,000 deep. Each trial starts from a copy of a store of real tiny runs, attacks it, reads it back and reruns
its cell; the script counts wrong numbers shown, writes outside the store, runs lost (a cell that has not ended
after its rerun) and hangs (each should be 0).

    python benchmarks/attacks.py [--trials 40] [--seed 0]
"""

import argparse
import json
import os
import random
import shutil
import tempfile
import threading
from pathlib import Path

from resnet_ablate import store
from resnet_ablate.config import compose
from resnet_ablate.data import write_synthetic
from resnet_ablate.files import WriteError
from resnet_ablate.grid import quote
from resnet_ablate.report.compare import compare
from resnet_ablate.report.tables import MUST_AGREE, build, records
from resnet_ablate.sweep import run_cells
from resnet_ablate.validate import check_cells

CELL = ["model=resnet110", "model.depth=8", "data=synthetic", "data.synthetic_train=256", "data.synthetic_test=128",
        "train.batch_size=32", "train.iterations=8", "train.eval_every=4", "train.checkpoint_every=4",
        "train.milestones=[4,6]", "train.warmup_iterations=0", "train.device=cpu"]  # fmt: skip
BAD_VALUES = [5, -0.5, True, "0.05", None, float("nan"), float("inf"), [1], {"a": 1}, 10**400]
FIELDS = ["test_error", "wall_time", "iterations", "key", "config.seed", "config.model.name", "config.train"]


def overrides(root: Path, data: Path, *extra: str) -> list[str]:
    return [*CELL, f"store.root={quote(str(root))}", f"data.root={quote(str(data))}", *extra]


def shown_wrong(root: Path) -> int:
    """Numbers a reader would show that cannot be true: errors outside [0, 100], a run counted twice in a cell."""
    df = records(root)
    return int((~df["error"].between(0, 100)).sum()) + int(df.duplicated([*MUST_AGREE, "seed"]).sum())


def in_time(fn, seconds: float = 60):
    """``fn()``'s value, or ``TimeoutError`` when it waits longer than ``seconds`` (a reader blocked on a FIFO)."""
    box: list = []
    thread = threading.Thread(target=lambda: box.append(fn()), daemon=True)
    thread.start()
    thread.join(seconds)
    if not box:
        raise TimeoutError
    return box[0]


def attack_more(kind: str, rng: random.Random, root: Path, run: Path, data: Path, tmp: Path) -> int:
    """This campaign's attacks (the store's third): the wrong numbers each lets through."""
    if kind == "other-images":  # the same settings on other images of the same sizes: refused, not "done"
        other = tmp / "other"
        write_synthetic(other / "synthetic" / "256-128" / "cifar-10-batches-py", 256, 128, seed=rng.randint(1, 99))
        try:
            check_cells([compose(overrides(root, other, "seed=0"))])
        except ValueError:
            return 0
        return 1
    if kind == "diverged":  # a diverged seed counts in compare as it does in the table
        result = json.loads((run / "result.json").read_text())
        (run / "result.json").write_text(json.dumps({**result, "status": "diverged"}))
        df = records(root)
        table, _ = compare(df.assign(arm=df["seed"] % 2), "arm", [0, 1], {})
        return int(table["n"].sum() != len(df[df["status"].isin(["done", "diverged"])]))
    if kind == "stacked":  # a drop-path seed's numbers: the same alone and stacked with another
        ours = overrides(tmp / "alone", data, "model.drop_path=0.5", "shortcut=dropout")
        (alone,) = run_cells(compose([*ours, "seed=0"]))
        stacked = run_cells(compose([*ours, "store.root=" + quote(str(tmp / "stacked")), "launcher.seeds=[0,1]"]))
        return int(alone["test_error"] != stacked[0]["test_error"])
    if kind == "forged":  # a record's claims checked against itself: never counted
        result = json.loads((run / "result.json").read_text())
        forged = rng.choice([{"data": {**result["data"], "official": "cifar10"}}, {"iterations": rng.randint(1, 7)}])
        (run / "result.json").write_text(json.dumps({**result, **forged}))
        return int(run.name in set(records(root)["key"]))
    if kind == "fifo":  # readers answer at once; the cell trains again or refuses in one line
        name = rng.choice(["result.json", "lock", "config.yaml", "metrics.jsonl", "checkpoint.pt"])
        (run / name).unlink(missing_ok=True)
        os.mkfifo(run / name)
        if name != "result.json":
            (run / "result.json").unlink()
        in_time(lambda: records(root))
        return 0
    if kind == "deep":  # 1,000 levels of JSON: skipped with its reason, never a RecursionError
        name = rng.choice(["result.json", "metrics.jsonl"])
        deep = "[" * 1000 + "]" * 1000
        (run / name).write_text(deep if name == "result.json" else '{"iteration": 4, "x": ' + deep + "}\n")
        records(root)
        return 0
    return 0


def trial(kind: str, rng: random.Random, base: Path, tmp: Path, data: Path) -> dict[str, int]:
    root = tmp / "store"
    shutil.copytree(base, root)
    victim = tmp / "victim"
    victim.write_text("precious")
    run = rng.choice(sorted((root / "runs").iterdir()))
    outside_before = {p.name for p in tmp.iterdir()} - {root.name}
    found = {"wrong": 0, "outside": 0, "lost": 0, "hangs": 0}
    try:
        found["wrong"] += in_time(lambda: attack_more(kind, rng, root, run, data, tmp), 300)
    except TimeoutError:
        found["hangs"] += 1
        return found
    if kind == "link":
        name = rng.choice(["lock", "starts.jsonl", "metrics.jsonl", "result.json", "checkpoint.pt"])
        (run / name).unlink(missing_ok=True)
        (run / name).symlink_to(victim)
        (run / "result.json").unlink(missing_ok=True)
    elif kind == "copy":
        shutil.copytree(run, run.with_name(run.name + rng.choice([".bak", "-copy", "_old"])))
    elif kind == "wrong-typed":
        result = json.loads((run / "result.json").read_text())
        *parents, leaf = rng.choice(FIELDS).split(".")
        node = result
        for p in parents:
            node = node[p]
        node[leaf] = rng.choice(BAD_VALUES)
        (run / "result.json").write_text(json.dumps(result))
    elif kind == "torn":
        raw = (run / "result.json").read_bytes()
        (run / "result.json").write_bytes(raw[: rng.randrange(len(raw))])
    elif kind == "recipe":  # the paper's label on a short run: never a Δ
        n = rng.randint(2, 7)
        run_cells(compose(overrides(root, data, "budget=paper", f"train.iterations={n}")))
        result, _ = build("table2", records(root), {"depth": 8, "data": "synthetic", "iterations": n})
        found["wrong"] += int(result["delta"].notna().sum())
    elif kind == "odd-path":
        odd = tmp / ("st" + "".join(rng.choice(",()=' é;$") for _ in range(6)))
        shutil.move(root, odd)
        root = odd
    found["wrong"] += shown_wrong(root)
    for seed in (0, 1):
        try:
            in_time(lambda seed=seed: run_cells(compose(overrides(root, data, f"seed={seed}"))), 300)
        except TimeoutError:
            found["hangs"] += 1
            continue
        except WriteError:  # a planted link or FIFO refused: the user removes it; the cell is not lost
            for planted in (p for p in run.iterdir() if p.is_symlink() or p.is_fifo()):
                planted.unlink()
            run_cells(compose(overrides(root, data, f"seed={seed}")))
        directory = store.run_dir(compose(overrides(root, data, f"seed={seed}")))
        found["lost"] += not store.cell_status(directory).ended  # done, or diverged as its record says
    found["wrong"] += shown_wrong(root)
    found["outside"] += victim.read_text() != "precious"
    found["outside"] += {p.name for p in tmp.iterdir()} - {root.name, "other", "alone", "stacked"} != outside_before
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        base, data = work / "base", work / "data"
        for seed in (0, 1):
            run_cells(compose(overrides(base, data, f"seed={seed}")))
        totals = {"wrong": 0, "outside": 0, "lost": 0, "hangs": 0}
        kinds = ["link", "copy", "wrong-typed", "torn", "recipe", "odd-path"]
        kinds += ["other-images", "diverged", "stacked", "forged", "fifo", "deep"]
        tried = dict.fromkeys(kinds, 0)
        for i in range(args.trials):
            kind = kinds[i % len(kinds)]  # each kind as often as the others
            tried[kind] += 1
            tmp = work / f"t{i}"
            tmp.mkdir()
            for k, v in trial(kind, rng, base, tmp, data).items():
                totals[k] += v
            shutil.rmtree(tmp)
    print(f"{args.trials} attacks ({', '.join(f'{n} {k}' for k, n in tried.items())}): "
          f"{totals['wrong']} wrong numbers shown, {totals['outside']} writes outside the store, "
          f"{totals['lost']} runs lost, {totals['hangs']} hangs")  # fmt: skip


if __name__ == "__main__":
    main()
