"""The errors prl raises: for causes a user can fix, for failures inside workers, and for a run stopped by anything else."""


class ConfigError(ValueError):
    """A cause the user can fix (bad option, unknown env, unsupported space); the message says how.

    The command line prints its message as one sentence and exits with code 2.
    """


class WorkerError(RuntimeError):
    """A worker process failed; the message names the worker and carries its traceback."""


class RunFailed(RuntimeError):
    """Training stopped on an error that is neither a worker's nor the user's to fix by an option (an env failing in
    evaluation, CUDA out of memory); the message names it and how to resume the saved run, and it is the `__cause__`."""
