"""User-facing errors: one clear sentence, a non-zero exit, no traceback.

Anything the user can fix (a bad config value, missing dataset files, a model that does
not fit the data) raises a subclass of :class:`NoisyLabError`; ``noisylab.train.main``
prints its message and exits with status 2.
"""


class NoisyLabError(Exception):
    """A problem with the user's input, reported as one sentence."""

    def __init__(self, message: str = "", *args):
        # A DataLoader worker's error comes back as type(error)(<the worker's traceback as text>)
        # (torch's ExceptionWrapper): keep the sentence, its last line, without the class name.
        if isinstance(message, str) and "\nOriginal Traceback" in message:
            message = message.rstrip().splitlines()[-1].split(": ", 1)[-1]
        super().__init__(message, *args)


class ConfigError(NoisyLabError):
    """A config value is invalid (noise rate out of range, unknown method, ...)."""


class DatasetError(NoisyLabError):
    """Dataset files are missing or corrupt; the message says where they must be."""


class DivergenceError(NoisyLabError):
    """Training diverged (a non-finite or exploding loss, non-finite weights): the message
    names the epoch and step, and what to change."""
