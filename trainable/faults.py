"""Fault injection and epoch accounting for the fault-tolerance tests; inert unless these are set:

    MPT_FAULT_KILL_AT_EPOCH=K   the trial SIGKILLs its own process after training epoch K and before
                                reporting it, so the epoch's work is lost (a crash or an OOM kill)
    MPT_FAULT_HOLD_AT_EPOCH=K   after reporting epoch K (its checkpoint is saved) the trial stops making
                                progress until its process dies (a node about to be lost)
    MPT_FAULT_MARKER=PATH       required with either: the fault fires once, in the first trial to get there,
                                which creates PATH and writes a JSON line (trial id, epoch, pid, node id)
    MPT_EPOCH_LOG=PATH          every trial appends a JSON line per epoch it actually trains (trial id,
                                epoch, pid, node id, start and end time)

The variables reach the trials through the environment of the processes that start Ray.
"""

from __future__ import annotations

import json
import os
import signal
import time
import warnings

KILL_AT_EPOCH = "MPT_FAULT_KILL_AT_EPOCH"
HOLD_AT_EPOCH = "MPT_FAULT_HOLD_AT_EPOCH"
MARKER = "MPT_FAULT_MARKER"
EPOCH_LOG = "MPT_EPOCH_LOG"


def where() -> dict:
    """The current trial, process, Ray node and time (for the records the tests read)."""
    import ray
    from ray import tune

    with warnings.catch_warnings():  # outside a Tune trial Ray warns and returns None: the epoch still counts
        warnings.simplefilter("ignore")
        trial_id = tune.get_context().get_trial_id()
    node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    return {"trial_id": trial_id, "pid": os.getpid(), "node_id": node_id, "time": time.time()}


def _append_line(path: str, record: dict) -> None:
    # one write() of a short line to an O_APPEND file: lines from concurrent trials do not interleave
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())
    finally:
        os.close(fd)


def _epoch_of(variable: str) -> int | None:
    text = os.environ.get(variable)
    if not text:
        return None
    if not os.environ.get(MARKER):
        raise RuntimeError(f"{variable} is set but {MARKER} is not: set {MARKER}=PATH, the file that makes the "
                           f"fault fire only once")
    return int(text)


def _claim(epoch: int) -> bool:
    """True in the one trial that gets to fire the fault (it creates the marker file)."""
    try:
        fd = os.open(os.environ[MARKER], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    try:
        os.write(fd, (json.dumps({**where(), "epoch": epoch}) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def epoch_trained(epoch: int, seconds: float) -> None:
    """Call after training an epoch (which took `seconds`), before reporting it."""
    log = os.environ.get(EPOCH_LOG)
    if log:
        record = where()
        _append_line(log, {**record, "epoch": epoch, "started": record["time"] - seconds})
    if _epoch_of(KILL_AT_EPOCH) == epoch and _claim(epoch):
        os.kill(os.getpid(), signal.SIGKILL)


def epoch_reported(epoch: int) -> None:
    """Call after an epoch's report (and checkpoint) went through."""
    if _epoch_of(HOLD_AT_EPOCH) == epoch and _claim(epoch):
        while True:  # until the node (and this process with it) goes away
            time.sleep(60)
