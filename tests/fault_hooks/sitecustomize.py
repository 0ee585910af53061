"""Installs the fault-injection hooks of `mpt_faults` in every Python process that starts with this folder on
its PYTHONPATH and a fault variable set (the study's driver and its Ray trial processes, in the fault tests)."""

import os

if any(os.environ.get(name) for name in ("MPT_FAULT_KILL_AT_EPOCH", "MPT_FAULT_HOLD_AT_EPOCH", "MPT_EPOCH_LOG")):
    import mpt_faults

    mpt_faults.install()
