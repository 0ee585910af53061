"""With MPT_TEST_OBJECTIVE=one_minus_alignment_weight every trial's objective is 1 - w instead of its dev
accuracy (test code: the product has no hooks), so that a study's trials differ by design and ASHA stops
some. Smoke-sized trials all score at chance (1/3, ties everywhere), where ASHA stops none."""

from __future__ import annotations

import os

import patch_on_import

OBJECTIVE = "MPT_TEST_OBJECTIVE"
HOOKS = ("one_minus_alignment_weight",)


def one_minus_alignment_weight(trainer, objective: str) -> float:
    return 1.0 - float(trainer.config.alignment_weight)


def install() -> None:
    """Replace `trainable.mpt_trial.objective_value` as $MPT_TEST_OBJECTIVE says."""
    name = os.environ.get(OBJECTIVE)
    if name not in HOOKS:
        raise RuntimeError(f"{OBJECTIVE}={name!r}: the only hook is {', '.join(HOOKS)}")
    patch_on_import.install({"trainable.mpt_trial": lambda module: setattr(module, "objective_value",
                                                                          one_minus_alignment_weight)})
