"""One grid cell trained with the paper's recipe (PAPER.md §4): SGD, an iteration schedule with warm-up,
records per evaluation, atomic checkpoints, exact resume, and divergence reported as a result."""

from __future__ import annotations

import contextlib
import io
import math
import os
import platform
import random
import signal
import subprocess
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel

from . import __version__, distributed, store
from .config import Compile, Precision, identity
from .data import for_seed, make_data
from .distributed import Group
from .models import ResidualUnit, build_model
from .progress import print_evaluation
from .stack import seed_state, stack, stacked_state

Progress = Callable[[int, dict | None], None]


def lr_at(iteration: int, t: DictConfig) -> float:
    """Warm-up at ``warmup_lr``, then ``lr`` divided by 10 at each milestone (iterations, not epochs)."""
    if iteration < t.warmup_iterations:
        return t.warmup_lr
    return t.lr * t.lr_decay ** sum(iteration >= m for m in t.milestones)


def resolve_device(name: str, rank: int = 0) -> torch.device:
    """``auto``: the GPU of this rank when there is one, else the CPU."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no CUDA device is visible; use train.device=cpu or auto")
    if name in ("auto", "cuda"):
        return torch.device(f"cuda:{rank}" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = not deterministic
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)


def _rng_states(device: torch.device) -> dict[str, Any]:
    states = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def _set_rng_states(states: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(states["torch"])
    if "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], device)


def load_checkpoint(path: Path) -> dict | None:
    """The checkpoint at ``path``; a corrupt or truncated one is reported, removed, and training starts over."""
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        print(f"warning: checkpoint {path} is unreadable ({type(e).__name__}); restarting this run from scratch")
        path.unlink()
        return None


def _git_commit() -> str | None:
    with contextlib.suppress(Exception):
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        if out.returncode == 0:
            return out.stdout.strip()
    return None


@torch.compiler.set_stance("force_eager")
def gradient_flow(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """‖∂E/∂x_l‖ at every residual unit's input for one batch; weights, BN statistics and RNGs stay unchanged."""
    units = [m for m in model.modules() if isinstance(m, ResidualUnit)]
    inputs: list[torch.Tensor] = []
    hooks = [u.register_forward_pre_hook(lambda m, a: inputs.append(a[0])) for u in units]
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    rng = _rng_states(x.device)
    try:
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), inputs)
    finally:
        for h in hooks:
            h.remove()
        with torch.no_grad():
            for k, v in model.named_buffers():
                v.copy_(buffers[k])
        _set_rng_states(rng, x.device)
    return [g.float().norm().item() for g in grads]


@torch.no_grad()
@torch.compiler.set_stance("force_eager")  # evaluation runs uncompiled: only the training step compiles
def evaluate(model: torch.nn.Module, data, autocast) -> dict[str, float]:
    model.eval()
    loss = top1 = top5 = n = 0.0
    for x, y in data.test_batches():
        with autocast():
            out = model(x).float()
        loss += F.cross_entropy(out, y, reduction="sum").item()
        k = min(5, out.shape[1])
        hits = out.topk(k, 1).indices == y[:, None]
        top1 += (~hits[:, 0]).sum().item()
        top5 += (~hits.any(1)).sum().item()
        n += len(y)
    model.train()
    return {"test_loss": loss / n, "test_error": top1 / n, "test_error_top5": top5 / n}


class TrainStep:
    """One SGD step ``step(batches, lr)`` of k networks trained together (k = 1 unless seeds are stacked, see
    ``stack.py``): ``batches`` holds one (x, y) per network and ``forward`` maps k×N×… inputs to k×N×classes.
    Each network's summed loss and errors since the last ``stats.zero_()`` accumulate in ``stats`` (k×2) on the
    device, so a step never reads a value back to the host.

    With ``capture`` (``compile=graph|inductor`` on one CUDA device) the first ``WARMUP`` steps run eagerly on a
    side stream (cuDNN autotuning, momentum buffers, compilation), then the whole step (forward, backward, SGD
    update, statistics) is captured as one CUDA graph: every later step is a copy of the batches into the graph's
    inputs and one replay. The learning rate is a device tensor the graph reads, so the schedule still applies.
    """

    WARMUP = 3

    def __init__(self, forward, opt: torch.optim.Optimizer, autocast, k: int, capture: bool):
        self.forward, self.opt, self.autocast = forward, opt, autocast
        device = opt.param_groups[0]["params"][0].device
        self.lr = torch.zeros((), device=device)
        self.keep_lr()
        self.stats = torch.zeros(k, 2, dtype=torch.float64, device=device)  # per network: loss sum, errors
        self.capture, self.warm, self.graph, self.inputs = capture, 0, None, ()

    def keep_lr(self) -> None:
        """Point every param group at the lr tensor (after ``opt.load_state_dict`` replaced it)."""
        for param_group in self.opt.param_groups:
            param_group["lr"] = self.lr

    def _run(self, x: torch.Tensor, y: torch.Tensor) -> None:
        with self.autocast():
            out = self.forward(x)
            losses = F.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="none").view(y.shape).mean(1)
        losses.sum().backward()  # each network's gradient is its own loss's
        self.opt.step()
        self.stats += torch.stack([losses.detach().double() * y.shape[1], (out.argmax(2) != y).sum(1).double()], 1)

    def __call__(self, batches: list[tuple[torch.Tensor, torch.Tensor]], lr: float) -> None:
        self.lr.fill_(lr)
        if self.graph is not None:
            for i, batch in enumerate(batches):
                for static, new in zip(self.inputs, batch):
                    static[i].copy_(new)
            self.graph.replay()
            return
        x, y = (torch.stack(parts) for parts in zip(*batches))
        self.opt.zero_grad(set_to_none=True)
        if not self.capture:
            self._run(x, y)
            return
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self._run(x, y)
        torch.cuda.current_stream().wait_stream(side)
        self.warm += 1
        if self.warm == self.WARMUP:
            self.inputs = (x, y)
            self.opt.zero_grad(set_to_none=True)  # the graph's backward allocates the gradients in its own pool
            self.graph = torch.cuda.CUDAGraph()
            # recorded, not run; thread_local: a DataLoader's pin-memory thread may call CUDA meanwhile
            with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
                self._run(*self.inputs)


def check_together(cfg: DictConfig, k: int) -> None:
    """Seeds trained together (k > 1) run in one process with ``train.compile=graph`` or ``none``."""
    mode = Compile(cfg.train.compile)
    if k > 1 and (cfg.train.gpus > 1 or mode is Compile.inductor):
        raise ValueError(
            f"seeds trained together (launcher.seeds, launcher.seeds_together) need train.gpus=1 and "
            f"train.compile=graph or none; got train.gpus={cfg.train.gpus}, train.compile={mode.value}"
        )


def setup(cfgs: list[DictConfig], device: torch.device, group: Group | None = None):
    """The networks (one per config: a cell, or seeds of one cell stacked), their optimiser, the training step
    (a ``TrainStep``) and the eval autocast.

    On CUDA: bf16 autocast (``precision=auto`` or ``bf16``), channels_last, fused SGD, the step as one CUDA graph
    (``compile=graph``, the default); for a network alone, residual units compiled by inductor
    (``compile=inductor``). Several processes (``train.gpus``) run the step eagerly under DistributedDataParallel.
    """
    t = cfgs[0].train
    cuda = device.type == "cuda"
    world = group.world if group is not None else 1
    mode = Compile(t.compile)
    check_together(cfgs[0], len(cfgs))
    models = []
    for cfg in cfgs:
        torch.manual_seed(cfg.seed)  # a network's initialisation is its seed's, stacked or not
        models.append(build_model(cfg).to(device))
    if len(models) > 1:
        forward, params = stack(models, channels_last=cuda and t.channels_last)
    else:
        forward, models[0] = _single(models[0], t, device, world, mode)
        params = list(models[0].parameters())
    opt = torch.optim.SGD(
        params,
        lr=t.lr,
        momentum=t.momentum,
        nesterov=t.nesterov,
        weight_decay=t.weight_decay,
        fused=cuda or None,
    )
    precision = Precision(t.precision)
    use_bf16 = precision is Precision.bf16 or (cuda and precision is Precision.auto)

    def autocast():  # no weight-cast cache: its copies would outlive a graph capture
        return (
            torch.autocast(device.type, torch.bfloat16, cache_enabled=False) if use_bf16 else contextlib.nullcontext()
        )

    capture = cuda and world == 1 and mode is not Compile.none
    return models, opt, TrainStep(forward, opt, autocast, len(models), capture), autocast


def _single(model: torch.nn.Module, t: DictConfig, device: torch.device, world: int, mode: Compile):
    """(forward over a 1×N×… input, the model) for a network trained alone."""
    cuda = device.type == "cuda"
    channels_last = cuda and t.channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if mode is Compile.inductor:  # regional compilation: units of one shape share one compiled graph
        for unit in model.modules():
            if isinstance(unit, ResidualUnit):
                unit.compile()
    net = model
    if world > 1:
        if t.sync_bn:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        with warnings.catch_warnings():  # BN statistics stay per process, as in the paper (no buffer broadcast)
            warnings.simplefilter("ignore", FutureWarning)
            net = DistributedDataParallel(model, device_ids=[device.index] if cuda else None, broadcast_buffers=False)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return net(x[0].contiguous(memory_format=torch.channels_last) if channels_last else x[0])[None]

    return forward, model


@contextlib.contextmanager
def _stop_requests(wanted: bool):
    """While the block runs, SIGTERM (a scheduler's preemption, the local launcher's Ctrl-C) and SIGINT (Ctrl-C)
    record their number in the yielded list instead of stopping the process, so training can checkpoint first; a
    second one stops at once. Not in other threads, nor across DDP ranks (they could see it at different
    iterations)."""
    received: list[int] = []
    if not wanted or threading.current_thread() is not threading.main_thread():
        yield received
        return

    def request(signum, frame):
        if received:
            raise KeyboardInterrupt
        received.append(signum)

    previous = {s: signal.signal(s, request) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield received
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def train(cfg: DictConfig, directory: Path, progress: Progress | None = None) -> dict[str, Any]:
    """Train the cell of ``cfg`` in ``directory`` (resuming from its checkpoint) and write its result.json;
    with ``train.gpus`` > 1 in that many processes."""
    if cfg.train.gpus > 1 and "WORLD_SIZE" not in os.environ:
        if cfg.train.batch_size % cfg.train.gpus:
            raise ValueError(f"train.batch_size {cfg.train.batch_size} does not split over train.gpus={cfg.train.gpus}")
        plain = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
        distributed.spawn(cfg.train.gpus, train_seeds, [plain], [directory], print_evaluation if progress else None)
        return store.read_json(directory / "result.json")
    return train_seeds([cfg], [directory], progress)[0]


@dataclass
class _Run:
    """One network's share of ``train_seeds``."""

    cfg: DictConfig
    directory: Path
    data: Any
    model: torch.nn.Module
    resumed_from: list[int] = field(default_factory=list)
    flow_batch: tuple[torch.Tensor, torch.Tensor] | None = None
    row: dict = field(default_factory=dict)
    status: str = "running"
    diverged_at: int | None = None
    result: dict = field(default_factory=dict)


def train_seeds(cfgs: list[DictConfig], directories: list[Path], progress: Progress | None = None) -> list[dict]:
    """Train cells that differ only in their seed, and whose checkpoints are at one iteration, together in this
    process (stacked, ``stack.py``, when several); each resumes from and writes to its own directory, and its
    records, checkpoints and result are what it would have alone."""
    t = cfgs[0].train
    group = distributed.current()
    device = resolve_device(t.device, group.rank)
    seed_everything(cfgs[0].seed, t.deterministic)
    first = make_data(cfgs[0], device, group)
    models, opt, step, autocast = setup(cfgs, device, group)
    stats = step.stats  # per network: train loss sum, errors since the last evaluation
    runs = [
        _Run(cfg, directory, first if i == 0 else for_seed(first, cfg.seed), model)
        for i, (cfg, directory, model) in enumerate(zip(cfgs, directories, models))
    ]
    for r in runs:
        r.directory.mkdir(parents=True, exist_ok=True)
        if group.main:
            store.save_config(r.directory, r.cfg)

    start, elapsed = 0, 0.0
    ckpts = [load_checkpoint(r.directory / "checkpoint.pt") for r in runs]
    if len({c and c["iteration"] for c in ckpts}) > 1:
        raise ValueError(
            f"seeds trained together must resume from one iteration; found {[c and c['iteration'] for c in ckpts]}"
        )
    if ckpts[0] is not None:
        for r, ckpt in zip(runs, ckpts):
            r.model.load_state_dict(ckpt["model"])
        optimizers = [c["optimizer"] for c in ckpts]
        opt.load_state_dict(optimizers[0] if len(runs) == 1 else stacked_state(optimizers))
        step.keep_lr()
        start, elapsed = ckpts[0]["iteration"], ckpts[0]["elapsed"]
        _set_rng_states(ckpts[0]["rng"][group.rank], device)  # the global RNGs: one per process
        for i, (r, ckpt) in enumerate(zip(runs, ckpts)):
            r.resumed_from = [*ckpt["resumed_from"], start]
            stats[i].copy_(ckpt["stats"][group.rank])
            r.data.set_rng_state(ckpt["rng"][group.rank]["data"])
            print(f"resuming {r.directory.name} from its checkpoint at iteration {start}", flush=True)
    for r in runs:
        if group.main:
            for name in ("metrics.jsonl", "grad_flow.jsonl"):
                store.truncate_jsonl(r.directory / name, start)
        if t.grad_flow and group.main and hasattr(r.data, "train_x"):
            r.flow_batch = (r.data.train_x[: t.batch_size, :, 4:36, 4:36], r.data.train_y[: t.batch_size])
            if start == 0:
                norms = gradient_flow(r.model, *r.flow_batch)
                store.append_jsonl(r.directory / "grad_flow.jsonl", {"iteration": 0, "norms": norms})

    def save(iteration: int) -> None:
        rng = _rng_states(device)
        per_rank = group.gather(([{**rng, "data": r.data.rng_state()} for r in runs], stats.cpu()))
        if not group.main:
            return
        opt_state = opt.state_dict()
        for i, r in enumerate(runs):
            if r.status != "running":
                continue
            state = {
                "model": {k: v.clone() for k, v in r.model.state_dict().items()},  # a stack's view would save it all
                "optimizer": opt_state if len(runs) == 1 else seed_state(opt_state, i),
                "iteration": iteration,
                "resumed_from": r.resumed_from,
                "elapsed": elapsed,
                "stats": [s[i] for _, s in per_rank],
                "config": OmegaConf.to_container(r.cfg, resolve=True, enum_to_str=True),
                "rng": [rngs[i] for rngs, _ in per_rank],
            }
            buffer = io.BytesIO()
            torch.save(state, buffer)
            store.atomic_write(r.directory / "checkpoint.pt", buffer.getvalue())

    def finish(r: _Run, status: str, diverged_at: int | None = None) -> None:
        r.status, r.diverged_at = status, diverged_at
        r.result = _result(r, start, elapsed, device, len(runs))
        if group.main:
            store.write_json(r.directory / "result.json", r.result)

    for r in runs:
        r.model.train()
    tick, tick_iteration = time.perf_counter(), start
    with _stop_requests(group.world == 1) as stop:
        for it in range(start, t.iterations):
            if stop:  # preempted or interrupted: checkpoint here, before this iteration, and exit
                elapsed += time.perf_counter() - tick
                save(it)
                name = signal.Signals(stop[0]).name
                print(f"{name}: checkpoint saved at iteration {it}; the same command resumes", flush=True)
                raise SystemExit(128 + stop[0])
            step([r.data.train_batch(it) for r in runs], lr_at(it, t))
            done = it + 1
            if progress and group.main:
                progress(done, None)
            if done % t.eval_every and done != t.iterations:
                continue
            now = time.perf_counter()
            elapsed += now - tick
            sums = group.all_reduce(stats.clone()).tolist()
            seen = (done - (it // t.eval_every) * t.eval_every) * t.batch_size  # images since the last evaluation
            stats.zero_()
            for r, (loss_sum, errors) in zip(runs, sums):
                if r.status != "running":
                    continue
                if group.main:  # rank 0 evaluates and writes the records
                    r.row = {
                        "iteration": done,
                        "epoch": round(done / r.data.steps_per_epoch, 3),
                        "lr": lr_at(it, t),
                        "train_loss": loss_sum / seen,
                        "train_error": errors / seen,
                        **evaluate(r.model, r.data, autocast),
                        "images_per_s": (done - tick_iteration) * t.batch_size / (now - tick),
                        "elapsed": round(elapsed, 3),
                    }
                    store.append_jsonl(r.directory / "metrics.jsonl", r.row)
                    if r.flow_batch is not None:
                        norms = gradient_flow(r.model, *r.flow_batch)
                        store.append_jsonl(r.directory / "grad_flow.jsonl", {"iteration": done, "norms": norms})
                if not math.isfinite(loss_sum):  # summed over ranks, so every rank stops this network together
                    finish(r, "diverged", done)
            if progress and group.main:
                progress(done, runs[0].row)
            if all(r.status != "running" for r in runs):
                break
            if done % t.checkpoint_every == 0 or done == t.iterations:
                save(done)
            tick, tick_iteration = time.perf_counter(), done
    for r in runs:
        if r.status == "running":
            finish(r, "done")
    return [r.result for r in runs]


def _result(r: _Run, start: int, elapsed: float, device: torch.device, together: int) -> dict[str, Any]:
    return {
        "status": r.status,
        "key": r.directory.name,
        "test_error": r.row.get("test_error"),
        "test_error_top5": r.row.get("test_error_top5"),
        "train_loss": r.row.get("train_loss"),
        "iterations": r.row.get("iteration", start),
        "diverged_at": r.diverged_at,
        "resumed_from": r.resumed_from,
        "wall_time": round(elapsed, 3),
        "trained_together": together,  # networks stacked in its process (1: alone)
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "versions": {"resnet_ablate": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "git_commit": _git_commit(),
        "config": identity(r.cfg),
    }
