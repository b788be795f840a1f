"""The errors prl raises: one for causes a user can fix, one for failures inside workers."""


class ConfigError(ValueError):
    """A cause the user can fix (bad option, unknown env, unsupported space); the message says how.

    The command line prints its message as one sentence and exits with code 2.
    """


class WorkerError(RuntimeError):
    """A worker process failed; the message names the worker and carries its traceback."""
