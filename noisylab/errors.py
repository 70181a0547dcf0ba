"""User-facing errors: one clear sentence, a non-zero exit, no traceback.

Anything the user can fix (a bad config value, missing dataset files, a model that does
not fit the data) raises a subclass of :class:`NoisyLabError`; ``noisylab.train.main``
prints its message and exits with status 2.
"""


class NoisyLabError(Exception):
    """A problem with the user's input, reported as one sentence."""


class ConfigError(NoisyLabError):
    """A config value is invalid (noise rate out of range, unknown method, ...)."""


class DatasetError(NoisyLabError):
    """Dataset files are missing or corrupt; the message says where they must be."""


class DivergenceError(NoisyLabError):
    """Training diverged (a non-finite or exploding loss, non-finite weights): the message
    names the epoch and step, and what to change."""
