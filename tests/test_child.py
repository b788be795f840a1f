"""The child-process skeleton: set-up, errors carried to the parent as data, and the parent watched."""

import multiprocessing
import os
import pickle

import numpy as np
import pytest
import torch

from prl import seeding
from prl.collection.child import ChildError, child_main
from prl.errors import ConfigError, WorkerError


def failing_body(channel, message):
    channel.send(("started", torch.get_num_threads(), float(np.random.random()), float(torch.rand(1))))
    raise KeyError(message)


def echo_body(channel):
    while (message := channel.recv()) is not None:
        channel.send(("echo", message))


def run_child(body, *args, index=3, seed=7, threads=1):
    context = multiprocessing.get_context("spawn")
    parent_conn, child_conn = context.Pipe(duplex=True)
    process = context.Process(target=child_main, args=(body, child_conn, os.getpid(), index, threads, seed, *args))
    process.start()
    child_conn.close()
    return process, parent_conn


def test_an_exception_in_a_child_reaches_the_parent_as_data_and_names_where_it_came_from():
    process, conn = run_child(failing_body, "no such leaf")
    try:
        started = conn.recv()
        kind, index, error = conn.recv()
    finally:
        process.join(timeout=30)
        conn.close()
    assert started[:2] == ("started", 1)
    assert (kind, index, error.type_name) == ("error", 3, "KeyError")
    assert "failing_body" in error.trace and "no such leaf" in error.message
    raised = error.exception("worker 3")
    assert isinstance(raised, WorkerError)
    assert str(raised).startswith("KeyError in worker 3: 'no such leaf'\nTraceback")
    assert process.exitcode == 0  # reported, then ended in order


def test_a_child_seeds_its_global_generators_from_its_stream():
    draws = []
    for _ in range(2):
        process, conn = run_child(failing_body, "x", seed=seeding.process_seed(5, 1))
        draws.append(conn.recv()[2:])
        conn.recv()
        process.join(timeout=30)
        conn.close()
    assert draws[0] == draws[1]
    np.random.seed(seeding.process_seed(5, 1))
    torch.manual_seed(seeding.process_seed(5, 1))
    assert draws[0] == (float(np.random.random()), float(torch.rand(1)))


def test_a_child_serves_until_told_to_exit():
    process, conn = run_child(echo_body)
    conn.send("ping")
    assert conn.recv() == ("echo", "ping")
    conn.send(None)
    process.join(timeout=30)
    assert process.exitcode == 0
    conn.close()


def test_prl_errors_keep_their_type_and_message_across_processes():
    config_error = pickle.loads(pickle.dumps(ChildError.of(ConfigError("use --device cpu."))))
    assert isinstance(config_error.exception("worker 0"), ConfigError)
    assert str(config_error.exception("worker 0")) == "use --device cpu."
    worker_error = ChildError.of(WorkerError("in Ray actor 1: lost"))
    assert str(worker_error.exception("the Ray driver")) == "in Ray actor 1: lost"
    assert worker_error.trace == ""


@pytest.mark.parametrize("where", ["worker 2", "the inference server", "the Ray driver"])
def test_other_errors_name_the_child(where):
    try:
        raise RuntimeError("out of memory")
    except RuntimeError as error:
        carried = ChildError.of(error)
    assert str(carried.exception(where)).startswith(f"RuntimeError in {where}: out of memory\n")
