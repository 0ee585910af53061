"""With MPT_TEST_HIDE_MODULES=torch,psycopg the named modules (and their submodules) cannot be imported in this
process (test code: the product has no hooks): what a machine without those packages sees, for the tests of
the clear errors a missing package gets."""

from __future__ import annotations

import importlib.abc
import os
import sys

HIDE = "MPT_TEST_HIDE_MODULES"


class HiddenModules(importlib.abc.MetaPathFinder):
    def __init__(self, names: set[str]) -> None:
        self.names = names

    def find_spec(self, fullname, path, target=None):
        if fullname.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


def install() -> None:
    names = {name.strip() for name in os.environ.get(HIDE, "").split(",") if name.strip()}
    for name in list(sys.modules):  # none should be loaded this early; be sure
        if name.split(".")[0] in names:
            del sys.modules[name]
    sys.meta_path.insert(0, HiddenModules(names))
