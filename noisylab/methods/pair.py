"""Two networks of the same shape trained on the same batch (Co-teaching, Co-teaching+,
JoCoR, Decoupling). ``pair(x)`` returns both networks' logits; ``pair.member(i)`` is
network i on its own (for evaluation).

One optimizer holds both networks' parameters: for Adam and SGD, whose updates are
elementwise with per-parameter state, that is the same as two optimizers, and one
backward of ``loss1 + loss2`` gives each network exactly the gradient of its own loss
(``loss1`` does not depend on network 2, and vice versa).

``fused=True`` selects :class:`noisylab.methods.fused.FusedNetworkPair`, which runs both
networks as one batched (vmapped) computation and must give the same results.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class NetworkPair(nn.Module):
    def __init__(self, build: Callable[[], nn.Module]):
        super().__init__()
        self.first, self.second = build(), build()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.first(x), self.second(x)

    def member(self, i: int) -> nn.Module:
        return (self.first, self.second)[i]


def make_pair(build: Callable[[], nn.Module], fused: bool = False) -> nn.Module:
    if fused:
        from noisylab.methods.fused import FusedNetworkPair

        return FusedNetworkPair(build)
    return NetworkPair(build)


class MeanOfNetworks(nn.Module):
    """The mean of several networks' logits (DivideMix's and ELR+'s test-time ensemble). The
    networks are held in a plain tuple, not registered: their weights stay where they live."""

    def __init__(self, *networks: nn.Module):
        super().__init__()
        self.members = tuple(networks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([network(x) for network in self.members]).mean(dim=0)
