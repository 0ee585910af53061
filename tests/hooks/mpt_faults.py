"""Fault injection and epoch accounting for the fault-tolerance tests (test code: the product has no hooks).

`install()` wraps `mpt.training.Trainer.train_epoch` (after an epoch trains, before the trial reports it)
and `ray.tune.report` (after the report and its checkpoint went through). Trial processes install it at
start-up through `sitecustomize.py` beside this file (`patch_on_import` patches each module as it loads), when this folder is on their PYTHONPATH and one of
these variables is set:

    MPT_FAULT_KILL_AT_EPOCH=K   the trial SIGKILLs its own process after training epoch K and before
                                reporting it, so the epoch's work is lost (a crash or an OOM kill)
    MPT_FAULT_HOLD_AT_EPOCH=K   after reporting epoch K (its checkpoint is saved) the trial stops making
                                progress until its process dies (a node about to be lost)
    MPT_FAULT_FAIL_AT_EPOCH=K   the trial raises after training epoch K and before reporting it, in every try
                                Tune gives it, so it ends FAILED (a trial that keeps running out of memory);
                                without the variable (a `--resume` started without it) it trains
    MPT_FAULT_HOLD_ON_NODE=ID   with MPT_FAULT_HOLD_AT_EPOCH: only a trial on the Ray node ID holds (the node a
                                test is about to lose)
    MPT_FAULT_MEET_NODES=N      after reporting epoch 1 a trial waits (10 minutes at most) until trials on N
    MPT_FAULT_MEET_DIR=PATH     Ray nodes have reported theirs (each leaves its node id in PATH): a study then runs
                                trials on N nodes, though one node's trial process could run them all (Tune
                                reuses a free process before another node's has started)
    MPT_FAULT_MEET_TRIALS=N     the same with MPT_FAULT_MEET_DIR, until N trials have reported epoch 1 (each
                                leaves its trial id): N trials then run at once, whatever each one's start-up
                                costs on a loaded machine (none can end before the N-th has started)
    MPT_FAULT_MARKER=PATH       required with any of these: the fault fires in the first trial to get there
                                (once, or in each of its tries for FAIL), which creates PATH and writes a JSON
                                line (trial id, epoch, pid, node id)
    MPT_FAULT_IN_EXPERIMENT=S   only trials of a Ray Tune experiment whose name contains S get there (e.g.
                                `-confirm`: a fault in the confirmation phase, none in the search)
    MPT_FAULT_SKIP=N            the first N trials to get there pass by (each leaves PATH.passI, I < N): the
                                fault fires in the next one, once N runs got past that point
    MPT_EPOCH_LOG=PATH          every trial appends a JSON line per epoch it actually trains (trial id,
                                epoch, pid, node id, start and end time, the file of mpt.training)

The variables (and PYTHONPATH) reach the trials through the environment of the processes that start Ray.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import time
import warnings

import patch_on_import

KILL_AT_EPOCH = "MPT_FAULT_KILL_AT_EPOCH"
HOLD_AT_EPOCH = "MPT_FAULT_HOLD_AT_EPOCH"
FAIL_AT_EPOCH = "MPT_FAULT_FAIL_AT_EPOCH"
HOLD_ON_NODE = "MPT_FAULT_HOLD_ON_NODE"
MEET_NODES, MEET_TRIALS, MEET_DIR = "MPT_FAULT_MEET_NODES", "MPT_FAULT_MEET_TRIALS", "MPT_FAULT_MEET_DIR"
MEET_TIMEOUT_S = 600
MARKER = "MPT_FAULT_MARKER"
IN_EXPERIMENT, SKIP = "MPT_FAULT_IN_EXPERIMENT", "MPT_FAULT_SKIP"
EPOCH_LOG = "MPT_EPOCH_LOG"


def where() -> dict:
    """The current trial, process, Ray node and time, and the file `mpt.training` came from (for the records the
    tests read)."""
    import ray
    from ray import tune

    with warnings.catch_warnings():  # outside a Tune trial Ray warns and returns None: the epoch still counts
        warnings.simplefilter("ignore")
        trial_id = tune.get_context().get_trial_id()
    node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    return {
        "trial_id": trial_id,
        "pid": os.getpid(),
        "node_id": node_id,
        "time": time.time(),
        "mpt_training": getattr(sys.modules.get("mpt.training"), "__file__", None),
    }


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
        raise RuntimeError(
            f"{variable} is set but {MARKER} is not: set {MARKER}=PATH, the file that makes the fault fire only once"
        )
    return int(text)


def _in_chosen_experiment() -> bool:
    """Whether this trial's Tune experiment is one $MPT_FAULT_IN_EXPERIMENT names (any, without it)."""
    text = os.environ.get(IN_EXPERIMENT)
    if not text:
        return True
    from ray import tune

    with warnings.catch_warnings():  # outside a Tune trial Ray warns and returns None: not a chosen experiment
        warnings.simplefilter("ignore")
        name = tune.get_context().get_experiment_name()
    return bool(name) and text in name


def _passes_by() -> bool:
    """True in the first $MPT_FAULT_SKIP trials to get here: each creates the next free PATH.passI."""
    for turn in range(int(os.environ.get(SKIP) or 0)):
        try:
            os.close(os.open(f"{os.environ[MARKER]}.pass{turn}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            return True
        except FileExistsError:
            continue
    return False


def _claim(epoch: int) -> bool:
    """True in the one trial that gets to fire the fault (it creates the marker file)."""
    if not _in_chosen_experiment() or (not os.path.exists(os.environ[MARKER]) and _passes_by()):
        return False
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


def _claimed_by_this_trial(epoch: int) -> bool:
    """True in every try of the trial that claimed the fault (the first to get there)."""
    if _claim(epoch):
        return True
    try:
        with open(os.environ[MARKER]) as marker:
            line = marker.readline()
    except FileNotFoundError:  # this trial passed by, or is not in the chosen experiment
        return False
    try:  # empty (or cut short) while the claiming trial writes it: that trial is another one
        return json.loads(line)["trial_id"] == where()["trial_id"]
    except ValueError:
        return False


class InjectedTrialFailure(RuntimeError):
    """The failure MPT_FAULT_FAIL_AT_EPOCH injects."""


def epoch_trained(epoch: int, seconds: float) -> None:
    """Call after training an epoch (which took `seconds`), before reporting it."""
    if _epoch_of(FAIL_AT_EPOCH) == epoch and _claimed_by_this_trial(epoch):
        raise InjectedTrialFailure(f"{FAIL_AT_EPOCH}={epoch}: this trial fails in every try")
    log = os.environ.get(EPOCH_LOG)
    if log:
        record = where()
        _append_line(log, {**record, "epoch": epoch, "started": record["time"] - seconds})
    if _epoch_of(KILL_AT_EPOCH) == epoch and _claim(epoch):
        os.kill(os.getpid(), signal.SIGKILL)


def epoch_reported(epoch: int) -> None:
    """Call after an epoch's report (and checkpoint) went through."""
    nodes, trials = int(os.environ.get(MEET_NODES) or 0), int(os.environ.get(MEET_TRIALS) or 0)
    meet = os.environ.get(MEET_DIR) if epoch == 1 and max(nodes, trials) > 1 else None
    if meet:
        os.makedirs(meet, exist_ok=True)
        here = where()
        _append_line(os.path.join(meet, here["node_id"] if nodes > 1 else here["trial_id"]), {"epoch": epoch})
    node = os.environ.get(HOLD_ON_NODE)
    if _epoch_of(HOLD_AT_EPOCH) == epoch and (not node or where()["node_id"] == node) and _claim(epoch):
        while True:  # until the node (and this process with it) goes away
            time.sleep(60)
    deadline = time.monotonic() + MEET_TIMEOUT_S
    while meet and len(os.listdir(meet)) < max(nodes, trials) and time.monotonic() < deadline:
        time.sleep(0.2)


VARIABLES = (KILL_AT_EPOCH, HOLD_AT_EPOCH, FAIL_AT_EPOCH, EPOCH_LOG, MEET_NODES, MEET_TRIALS)


def wrap_train_epoch(train_epoch):
    if getattr(train_epoch, "with_faults", False):  # installed twice: hook once
        return train_epoch

    @functools.wraps(train_epoch)
    def train_epoch_with_faults(self):
        record = train_epoch(self)
        epoch_trained(record.epoch, record.seconds)
        return record

    train_epoch_with_faults.with_faults = True
    return train_epoch_with_faults


def wrap_report(report):
    if getattr(report, "with_faults", False):
        return report

    @functools.wraps(report)
    def report_with_faults(metrics, *args, **kwargs):
        outcome = report(metrics, *args, **kwargs)
        if "epoch" in metrics:
            epoch_reported(int(metrics["epoch"]))
        return outcome

    report_with_faults.with_faults = True
    return report_with_faults


PATCHES = {
    "mpt.training": lambda module: setattr(module.Trainer, "train_epoch", wrap_train_epoch(module.Trainer.train_epoch)),
    "ray.tune": lambda module: setattr(module, "report", wrap_report(module.report)),
}


def install() -> None:
    """Patch the modules of PATCHES now if imported, else when they are imported (the wrappers hook once)."""
    patch_on_import.install(PATCHES)
