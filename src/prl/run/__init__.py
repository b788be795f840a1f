"""The run: training, evaluation, checkpoints, the run folder and its logs, and the command line."""
