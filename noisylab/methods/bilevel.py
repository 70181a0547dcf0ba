"""What the bilevel methods (L2RW, Meta-Weight-Net, SOSELETO, MSLG, IEG) share: a trusted
clean set beside the noisy batches, one network, and the look-ahead of
:mod:`noisylab.methods.lookahead` set from the method's ``lookahead`` config block.

A training batch is ``{"noisy": {x, y, index}, "trusted": {x, y, index}}``; the trusted
loader cycles, so every noisy batch comes with a trusted one (as the papers' meta batches).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from noisylab.errors import ConfigError
from noisylab.methods.base import LNLMethod
from noisylab.methods.lookahead import Forward, LookaheadSettings, MetaGradient, alignment_gradient, meta_gradient


def trusted_loss(x: torch.Tensor, y: torch.Tensor) -> Callable[[Forward], torch.Tensor]:
    """The outer loss of the family: mean cross-entropy on a trusted batch."""
    return lambda forward: F.cross_entropy(forward(x), y)


class BilevelMethod(LNLMethod):
    needs_trusted = True
    reported = ("net",)

    def __init__(self, lookahead, **settings):
        super().__init__(**settings)
        self.lookahead = LookaheadSettings.of(lookahead)
        self.add_network("net", self.build_network)

    def meta_gradient(self, inner: Callable[[Forward], torch.Tensor], outer: Callable[[Forward], torch.Tensor],
                      wrt: Sequence[torch.Tensor]) -> MetaGradient:
        """∂ outer(θ̂)/∂ wrt for one look-ahead step of the network on ``inner``."""
        return meta_gradient(self.net, self.optimizer("net"), inner, outer, wrt, self.lookahead)

    def alignment_gradient(self, per_sample_loss: Callable[[Forward], torch.Tensor],
                           outer: Callable[[Forward], torch.Tensor], outer_decay: float = 0.0) -> MetaGradient:
        """The same for per-sample weights at zero, without a double backward
        (``lookahead.alignment_gradient``, ``outer_decay`` its weight decay of the outer loss),
        at the look-ahead's lr (``lookahead.lr`` or the optimiser's current one)."""
        lr = self.lookahead.lr or self.optimizer("net").param_groups[0]["lr"]
        return alignment_gradient(self.net, per_sample_loss, outer, lr, self.lookahead.batchnorm, outer_decay)

    def refuse_optimizer_step(self, gradient: str) -> None:
        """For a ``gradient`` setting computed by ``lookahead.alignment_gradient`` (no step, or
        one plain SGD step at zero weights): a look-ahead with the optimiser's step would be
        ignored, so it is refused."""
        if self.lookahead.step != "sgd":
            raise ConfigError(f"method.lookahead.step={self.lookahead.step} needs method.gradient=lookahead; "
                              f"method.gradient={gradient} takes no optimiser step.")
