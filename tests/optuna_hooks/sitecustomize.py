"""A test hook (test code: the product has none): with MPT_TEST_OBJECTIVE=one_minus_alignment_weight, every
trial's objective is 1 - w instead of its dev accuracy, so that a study's trials differ by design and ASHA
stops some. Smoke-sized trials all score at chance (1/3, ties everywhere), where ASHA stops none.

Installed in every Python process that starts with this folder on its PYTHONPATH (the study's driver and its
Ray trial processes): `trainable.mpt_trial.objective_value` is replaced when that module is first imported.
"""

import importlib.abc
import importlib.util
import os
import sys

OBJECTIVE = "MPT_TEST_OBJECTIVE"
TARGET = "trainable.mpt_trial"


def one_minus_alignment_weight(trainer, objective: str) -> float:
    return 1.0 - float(trainer.config.alignment_weight)


class _PatchOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != TARGET:
            return None
        sys.meta_path.remove(self)  # find the real spec without finding ourselves
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        loader = spec.loader

        class PatchingLoader(importlib.abc.Loader):
            def create_module(self, spec):
                return loader.create_module(spec)

            def exec_module(self, module):
                loader.exec_module(module)
                module.objective_value = one_minus_alignment_weight

        spec.loader = PatchingLoader()
        return spec


if os.environ.get(OBJECTIVE) == "one_minus_alignment_weight":
    sys.meta_path.insert(0, _PatchOnImport())
elif os.environ.get(OBJECTIVE):
    raise RuntimeError(f"{OBJECTIVE}={os.environ[OBJECTIVE]!r}: the only hook is one_minus_alignment_weight")
