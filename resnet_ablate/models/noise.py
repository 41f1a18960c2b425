"""The random masks a network draws for itself (stochastic depth, dropout shortcuts), counter-based: a uniform
number is a hash (splitmix64) of the network's key, the draw's number and the element's index. A seed's masks
are then the same trained alone or stacked with any other seeds (under vmap each seed's buffers are its own, where
one shared generator would hand each seed draws that depend on its stack-mates) and after a resume (the counter is
a buffer: checkpoints hold it)."""

from __future__ import annotations

import torch
from torch import nn

_MASK = (1 << 64) - 1


def _signed(v: int) -> int:
    """A 64-bit pattern as the int64 that holds it."""
    v &= _MASK
    return v - (1 << 64) if v >> 63 else v


_GOLDEN, _MIX1, _MIX2 = (_signed(c) for c in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB))


def _shift(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 patterns (torch's ``>>`` on int64 is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _splitmix(x):
    """splitmix64's finaliser on int64 tensors or Python ints (products wrap modulo 2^64, as the algorithm needs:
    a tensor's do, an int is wrapped)."""
    wrap = (lambda v: v) if isinstance(x, torch.Tensor) else _signed
    x = wrap((x ^ _shift(x, 30)) * _MIX1)
    x = wrap((x ^ _shift(x, 27)) * _MIX2)
    return x ^ _shift(x, 31)


def key(seed: int, stream: int) -> int:
    """The key of a network's ``stream``-th noise source, from the network's seed (plain integers: a network
    built on the meta device is keyed too)."""
    return _splitmix(_signed(seed * 0x9E3779B97F4A7C15 + stream + 1))


class Noise(nn.Module):
    """A source of U[0, 1) draws of any shape; each training step's call is a fresh draw. ``seed`` sets its key
    (``seed_noise``: every source of a network, from the network's seed)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("key", torch.zeros((), dtype=torch.int64))
        self.register_buffer("draws", torch.zeros((), dtype=torch.int64))

    def uniform(self, like: torch.Tensor) -> torch.Tensor:
        """U[0, 1) in ``like``'s shape, dtype and device (a multi-process run's ranks: each its own numbers)."""
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        index = torch.arange(rank * like.numel(), (rank + 1) * like.numel(), device=like.device).view(like.shape)
        bits = _splitmix(_splitmix(self.key * _GOLDEN + self.draws) + index)
        self.draws += 1
        return (_shift(bits, 11).to(torch.float64) * 2.0**-53).to(like.dtype)


def seed_noise(net: nn.Module, seed: int) -> None:
    """Key each noise source of ``net`` from its seed (the n-th source gets stream n)."""
    with torch.no_grad():
        for stream, source in enumerate(m for m in net.modules() if isinstance(m, Noise)):
            source.key.fill_(key(seed, stream))
