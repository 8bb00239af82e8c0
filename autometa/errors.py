"""The library's errors.

Every error autometa raises on bad input derives from :class:`AutometaError` *and* from the
matching built-in exception, so ``except ValueError`` keeps working for callers who do not know
about autometa. Messages follow one grammar: what was wrong, what was got, what to do.
"""

from __future__ import annotations


class AutometaError(Exception):
    """Base class of every error raised by autometa."""


class ConfigError(AutometaError, ValueError):
    """A configuration, argument or search space is invalid."""


class TaskSpecError(AutometaError, ValueError):
    """A task distribution was asked for something its data cannot give (ways, shots, ...)."""


class DataNotFoundError(AutometaError, FileNotFoundError):
    """A dataset file was not found in any place autometa looks."""


class DataIntegrityError(AutometaError, ValueError):
    """A dataset file exists but its content or checksum is wrong."""


class CheckpointError(AutometaError, ValueError):
    """A checkpoint could not be read or does not match the run it is loaded into."""


class BackendUnavailableError(AutometaError, ImportError):
    """An optional dependency (Ray, NNI, ...) is needed but not installed."""


class UnsupportedFeatureError(AutometaError, TypeError):
    """A component was asked to do something it cannot do (rather than silently ignoring it)."""


class ResultsDirError(AutometaError, FileExistsError):
    """A results directory belongs to another command, or holds results that would be overwritten."""


class ClusterUnreachableError(AutometaError, ConnectionError):
    """A cluster (Ray's ``--address``) did not answer within the connection timeout."""


class NumericalError(AutometaError, FloatingPointError):
    """A computation produced NaN or inf."""


def check(condition: bool, message: str, error: type[AutometaError] = ConfigError) -> None:
    """Raise ``error(message)`` unless ``condition`` holds. For user input, never ``assert``."""
    if not condition:
        raise error(message)
