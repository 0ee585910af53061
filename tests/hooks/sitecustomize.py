"""Installs the test hooks of this folder in every Python process that starts with it on its PYTHONPATH (the
study's driver and its Ray trial processes, in the tests that put it there), as the environment asks:
`mpt_faults` for a fault or epoch-log variable, `objective_hook` for MPT_TEST_OBJECTIVE, `hidden_modules` for
MPT_TEST_HIDE_MODULES."""

import os

if any(
    os.environ.get(name)
    for name in (
        "MPT_FAULT_KILL_AT_EPOCH",
        "MPT_FAULT_HOLD_AT_EPOCH",
        "MPT_FAULT_FAIL_AT_EPOCH",
        "MPT_EPOCH_LOG",
        "MPT_FAULT_MEET_NODES",
        "MPT_FAULT_MEET_TRIALS",
    )
):
    import mpt_faults

    mpt_faults.install()
if os.environ.get("MPT_TEST_OBJECTIVE"):
    import objective_hook

    objective_hook.install()
if os.environ.get("MPT_TEST_HIDE_MODULES"):
    import hidden_modules

    hidden_modules.install()
