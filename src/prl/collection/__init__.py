"""Collection: the interface the training loop collects through, and everything behind it.

Shared buffers and weights, the worker process and its rollouts, the local pool, central
inference, the Ray backend, process start-up and shutdown, and the failure rules they share.
"""
