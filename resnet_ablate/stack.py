"""Seeds of one cell trained together as one stacked model (``launcher.seeds``).

The seeds' parameters and buffers are stacked along a new first dimension and one copy of the network runs under
``torch.func.vmap``: each convolution becomes one grouped convolution over the k seeds, so k seeds cost one set
of kernel launches with k times the work each instead of k sets. Each seed is still its own network: its own
initialisation (built after ``torch.manual_seed(seed)``), batches, BatchNorm statistics and loss; the loss
minimised is the sum of the seeds' losses, so no gradient crosses seeds and SGD updates each seed as if alone.

Every seed keeps a module whose parameters and buffers are views into the stack: evaluation, gradient flow and
checkpoints see an ordinary network, and a cell's checkpoint is the same whether it trained alone or stacked.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap


def stack(
    models: list[nn.Module], channels_last: bool = False
) -> tuple[Callable[[torch.Tensor], torch.Tensor], list[torch.Tensor]]:
    """(forward: k×N×C×H×W inputs → k×N×classes, the stacked parameters to optimise); each model becomes a view
    of its slice of the stack. ``channels_last``: the grouped convolutions run in channels-last memory format."""
    params, buffers = stack_module_state(models)
    params = {name: (_channels_last(p) if channels_last else p).detach().requires_grad_() for name, p in params.items()}
    shape = copy.deepcopy(models[0]).to("meta")  # the architecture, without memory
    with torch.no_grad():
        for i, model in enumerate(models):
            for name, p in model.named_parameters():
                p.data = params[name][i]
            for name in buffers:
                owner, _, leaf = name.rpartition(".")
                model.get_submodule(owner)._buffers[leaf] = buffers[name][i]

    def one(p, b, x):
        return functional_call(shape, (p, b), (x,))

    batched = vmap(one, randomness="error")  # masks come from each seed's own noise buffers (models/noise.py)

    def forward(x: torch.Tensor) -> torch.Tensor:
        if channels_last:  # the seeds' channels side by side: k×N×C×H×W laid out as N×H×W×k×C
            k, n, c, h, w = x.shape
            x = x.new_empty(n, h, w, k, c).permute(3, 0, 4, 1, 2).copy_(x)
        return batched(params, buffers, x)

    return forward, list(params.values())


def _channels_last(p: torch.Tensor) -> torch.Tensor:
    """A stacked conv weight (k×O×C×kh×kw) laid out as k×O×kh×kw×C: under vmap, the (k·O)×C×kh×kw weight of the
    grouped convolution is then channels-last, and so is each seed's view of it."""
    if p.dim() != 5:
        return p
    k, o, c, kh, kw = p.shape
    return p.new_empty(k, o, kh, kw, c).permute(0, 1, 4, 2, 3).copy_(p)


def seed_state(state: dict, i: int) -> dict:
    """Seed ``i``'s part of a stacked optimiser's ``state_dict``: what the seed's own optimiser would hold."""
    return {**state, "state": {j: {k: _slice(v, i) for k, v in s.items()} for j, s in state["state"].items()}}


def stacked_state(states: list[dict]) -> dict:
    """The stacked optimiser's ``state_dict`` from the seeds' own (``seed_state``'s inverse)."""
    first = states[0]["state"]
    return {
        **states[0],
        "state": {j: {k: _stack([st["state"][j][k] for st in states]) for k in s} for j, s in first.items()},
    }


def _slice(v, i: int):
    return v[i].clone() if torch.is_tensor(v) and v.dim() else v


def _stack(values: list):
    return torch.stack(values) if torch.is_tensor(values[0]) and values[0].dim() else values[0]
