"""With MPT_TEST_OBJECTIVE=NAME every trial's objective is the hook NAME's value of its config instead of its dev
accuracy (test code: the product has no hooks). Smoke-sized trials all score at chance (1/3, ties everywhere,
the earliest trial, vanilla, wins them), so without a hook neither a scheduler nor a winner is observable:

    one_minus_alignment_weight    1 - w: trials differ by design, and ASHA stops some
    alignment_weight_times_depth  w * translator depth: a configuration that aligns through a translator wins;
                                  the references score 0 (vanilla) and 0.5 (the paper default, w 0.5 at depth 1),
                                  so an MPT configuration with w * depth > 0.5 beats both
"""

from __future__ import annotations

import os

import patch_on_import

OBJECTIVE = "MPT_TEST_OBJECTIVE"


def one_minus_alignment_weight(trainer, objective: str) -> float:
    return 1.0 - float(trainer.config.alignment_weight)


def alignment_weight_times_depth(trainer, objective: str) -> float:
    return float(trainer.config.alignment_weight) * int(trainer.config.translator_depth)


HOOKS = {hook.__name__: hook for hook in (one_minus_alignment_weight, alignment_weight_times_depth)}


def install() -> None:
    """Replace `trainable.mpt_trial.objective_value` as $MPT_TEST_OBJECTIVE says."""
    name = os.environ.get(OBJECTIVE)
    if name not in HOOKS:
        raise RuntimeError(f"{OBJECTIVE}={name!r}: the hooks are {', '.join(HOOKS)}")
    patch_on_import.install({"trainable.mpt_trial": lambda module: setattr(module, "objective_value", HOOKS[name])})
