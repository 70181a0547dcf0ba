"""Hydra 1.3 loads sweepers only from the ``hydra_plugins`` namespace: this registers
noisylab's S2E schedule search (:class:`noisylab.s2e.S2ESweeper`) there."""

from noisylab.s2e import S2ESweeper as _S2ESweeper


class S2ESweeper(_S2ESweeper):
    """S2E schedule search (noisylab.s2e.S2ESweeper), registered as a Hydra plugin."""
