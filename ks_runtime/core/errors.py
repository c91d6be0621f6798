"""Exceptions a user can act on. The CLIs turn them into one line and a non-zero exit code."""


class KSError(Exception):
    """Base of every error this project raises on purpose."""


class DataError(KSError):
    """A dataset, label file or frame is malformed; the message names the file and the line or frame."""


class ConfigError(KSError):
    """A config field is unknown or of the wrong type; the message names the field."""


class CheckpointError(KSError):
    """A checkpoint is truncated, from another model config or another AU list."""


class OutputError(KSError):
    """An output (CSV, plot, overlay video) cannot be written; the message names the file."""


class BundleError(KSError):
    """A model bundle fails its checks; the message names the file and the field."""
