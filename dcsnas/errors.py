"""User-facing errors: the CLI prints their message and exits with code 2, without a traceback."""


class DcsnasError(Exception):
    """Base class of errors caused by the user's input (config, data, files), not by a bug."""

    exit_code = 2


class ConfigError(DcsnasError):
    """A config file or override is invalid: unknown key, wrong type, value out of range."""


class DataError(DcsnasError):
    """A data set on disk is missing, malformed or inconsistent."""
