"""The paper's training recipe (Sec. 4.1 of He et al. 2016 and Sec. 4.2 of He et al. 2015; docs/paper.md): SGD
with momentum and weight decay, a schedule in iterations with a warm-up for the deepest nets, cross-entropy, and
what an evaluation measures. The numbers live in ``conf/budget/*.yaml`` and ``TrainConfig``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from .checkpoint import rng_states, set_rng_states
from .models import ResidualUnit


def lr_at(iteration: int, t: DictConfig) -> float:
    """Warm-up at ``warmup_lr``, then ``lr`` divided by 10 at each milestone (iterations, not epochs)."""
    if iteration < t.warmup_iterations:
        return t.warmup_lr
    return t.lr * t.lr_decay ** sum(iteration >= m for m in t.milestones)


def sgd(params, t: DictConfig, fused: bool) -> torch.optim.SGD:
    """Momentum 0.9 and weight decay 1e-4 on every parameter (BN's included, as in the authors' code)."""
    return torch.optim.SGD(
        params, lr=t.lr, momentum=t.momentum, nesterov=t.nesterov, weight_decay=t.weight_decay, fused=fused or None
    )


def losses(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy per network, for k networks' outputs k×N×classes and labels k×N."""
    return F.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="none").view(y.shape).mean(1)


@torch.no_grad()
@torch.compiler.set_stance("force_eager")  # evaluation runs uncompiled: only the training step compiles
def evaluate(model: torch.nn.Module, data, autocast) -> dict[str, float]:
    """Test loss, top-1 and top-5 error over the whole test set (BN in inference mode)."""
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


@torch.compiler.set_stance("force_eager")
def _at_units(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, outputs: bool):
    """For one batch: each residual unit's input x_l (its output x_{l+1} with ``outputs``) and ∂E/∂ of it (None where
    none reaches it); weights, BN statistics and RNGs stay unchanged."""
    units = [m for m in model.modules() if isinstance(m, ResidualUnit)]
    seen: list[torch.Tensor] = []
    if outputs:
        hooks = [u.register_forward_hook(lambda m, a, out: seen.append(out)) for u in units]
    else:
        hooks = [u.register_forward_pre_hook(lambda m, a: seen.append(a[0])) for u in units]
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    rng = rng_states(x.device)
    try:
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), seen, allow_unused=True)
    finally:
        for h in hooks:
            h.remove()
        with torch.no_grad():
            for k, v in model.named_buffers():
                v.copy_(buffers[k])
        set_rng_states(rng, x.device)
    return seen, grads


def gradient_flow(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """‖∂E/∂x_l‖ at every residual unit's input for one batch (Eq. 5: the identity term carries ∂E/∂x_L to every
    unit); weights, BN statistics and RNGs stay unchanged."""
    _, grads = _at_units(model, x, y, outputs=False)
    return [g.float().norm().item() for g in grads]


def signal(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[list[float], list[float]]:
    """Signal propagation (Sec. 2, Eqs. 4–5): for one batch, the root-mean-square of each residual unit's output
    x_{l+1} on the way forward and of ∂E/∂x_{l+1} on the way back (per element both ways, so units of any width
    and batches of any size compare); weights, BN statistics and RNGs stay unchanged."""
    outputs, grads = _at_units(model, x, y, outputs=True)
    forward = [o.detach().float().pow(2).mean().sqrt().item() for o in outputs]
    return forward, [0.0 if g is None else g.float().pow(2).mean().sqrt().item() for g in grads]
