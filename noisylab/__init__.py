"""noisylab: learning with noisy labels, one framework for every method."""

__version__ = "0.1.0"
