"""Two networks of one shape run as one batched computation (``method.fused=true``).

:class:`FusedNetworkPair` is a drop-in for :class:`noisylab.methods.pair.NetworkPair`:
``pair(x)`` gives both networks' logits and ``pair.member(i)`` is network i on its own. The
two networks are built exactly as the plain pair builds them (``build()`` twice, first then
second), so the same seed gives the same initial weights. Their parameters and buffers are
then stacked along a new leading dimension of size 2 (``torch.func.stack_module_state``) and
put back into the first network, which from then on serves only as the *template*
``pair.stacked``: its parameter ``body.0.weight`` has shape ``(2, *shape)`` and holds both
networks' weights. The Lightning module's one optimizer (over ``self.parameters()``) updates
them and checkpoints carry them (``nets.stacked.body.0.weight``, ...). Calling
``pair.stacked`` directly fails (its weights have an extra dimension); call the pair.

The forward pass is ``vmap(functional_call)`` over the stacked dimension with the same input
for both networks (``in_dims=(0, 0, None)``); convolutions and matrix products become one
batched (grouped) kernel for both networks, and one backward serves both.

Dropout: ``randomness="different"`` draws a separate mask for each network, as two separate
networks would (the masks cannot equal the plain path's: the random numbers are drawn in
another order).

BatchNorm: the running statistics are stacked buffers passed to the vmapped call with
``in_dims=0``, so inside the vmap each network's BatchNorm sees its own slice. In train mode
vmap's batch rule for ``batch_norm`` normalises each network with its own batch statistics
and updates its own slice of ``running_mean``/``running_var`` (and ``num_batches_tracked``)
in place, exactly as the plain path does; in eval mode each network uses its own running
statistics. vmap only refuses an in-place update of an *unbatched* buffer from a batched
input (the "Patching Batch Norm" case of the torch.func docs), which cannot happen here:
every buffer is stacked. ``tests/test_fused.py`` checks the statistics against the plain
path after a training step.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

SIZE = 2


class FusedNetworkPair(nn.Module):
    """Two networks from ``build()`` with stacked weights, run in one vmapped call."""

    def __init__(self, build: Callable[[], nn.Module]):
        super().__init__()
        networks = [build() for _ in range(SIZE)]  # the plain path's build order and RNG use
        params, buffers = stack_module_state(networks)
        self.stacked = networks[0]  # the template: its tensors become the stacked ones
        for name, value in params.items():
            _assign(self.stacked, name, nn.Parameter(value.detach(), self.stacked.get_parameter(name).requires_grad))
        for name, value in buffers.items():
            _assign(self.stacked, name, value)
        # Not registered as submodules (a tuple): they hold no tensors of their own.
        self._members = tuple(FusedMember(self, i) for i in range(SIZE))

    def state(self, index: int | None = None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The stacked (parameters, buffers), or network ``index``'s slices of them (views:
        training through them updates the stacked tensors)."""
        params = dict(self.stacked.named_parameters())
        buffers = dict(self.stacked.named_buffers())
        if index is None:
            return params, buffers
        return ({k: v[index] for k, v in params.items()}, {k: v[index] for k, v in buffers.items()})

    def _call_one(self, params, buffers, x):
        return functional_call(self.stacked, (params, buffers), (x,))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        params, buffers = self.state()
        logits = vmap(self._call_one, in_dims=(0, 0, None), randomness="different")(params, buffers, x)
        return logits[0], logits[1]

    def member(self, i: int) -> nn.Module:
        """Network ``i`` on its own (for evaluation); its mode is the pair's."""
        return self._members[i]

    def export(self, i: int) -> nn.Module:
        """A standalone copy of network ``i``: a regular module of the built class."""
        network = copy.deepcopy(self.stacked)
        params, buffers = self.state(i)
        for name, value in params.items():
            _assign(network, name, nn.Parameter(value.detach().clone(), value.requires_grad))
        for name, value in buffers.items():
            _assign(network, name, value.clone())
        return network


def _assign(module: nn.Module, name: str, tensor: torch.Tensor) -> None:
    """Replaces the registered parameter or buffer ``name`` (dotted) of ``module``."""
    owner, _, leaf = name.rpartition(".")
    setattr(module.get_submodule(owner), leaf, tensor)


class FusedMember(nn.Module):
    """Network ``index`` of a :class:`FusedNetworkPair`, called through its slice of the
    stacked tensors. It shares the pair's mode: ``member.training`` is the pair's, and
    ``member.train()``/``member.eval()`` set the mode of the pair (both networks)."""

    def __init__(self, pair: FusedNetworkPair, index: int):
        super().__init__()
        self._pair = (pair,)  # a tuple: not a registered submodule (no cycle in state_dict)
        self.index = index

    @property
    def training(self) -> bool:  # type: ignore[override]
        return self._pair[0].training if hasattr(self, "_pair") else True

    @training.setter
    def training(self, mode: bool) -> None:  # nn.Module.__init__ sets it; the pair's mode rules
        pass

    def train(self, mode: bool = True) -> FusedMember:
        self._pair[0].train(mode)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pair = self._pair[0]
        return functional_call(pair.stacked, pair.state(self.index), (x,))

    def extra_repr(self) -> str:
        return f"index={self.index}"
