"""Patching a module right after it is first imported (test code: the hooks of this folder use it), so a
process's start-up imports nothing heavy and the patch holds whoever imports the module first."""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from typing import Callable

Patch = Callable[[object], None]


class PatchOnImport(importlib.abc.MetaPathFinder):
    """Applies `patches[name](module)` when module `name` has been executed."""

    def __init__(self, patches: dict[str, Patch]) -> None:
        self.patches = patches

    def find_spec(self, fullname, path, target=None):
        if fullname not in self.patches:
            return None
        sys.meta_path.remove(self)  # find the real spec without finding ourselves
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        loader, patch = spec.loader, self.patches[fullname]

        class PatchingLoader(importlib.abc.Loader):
            def create_module(self, spec):
                return loader.create_module(spec)

            def exec_module(self, module):
                loader.exec_module(module)
                patch(module)

        spec.loader = PatchingLoader()
        return spec


def install(patches: dict[str, Patch]) -> None:
    """Patch the modules of `patches` now where imported, the others when they are imported."""
    pending = {}
    for name, patch in patches.items():
        if name in sys.modules:
            patch(sys.modules[name])
        else:
            pending[name] = patch
    if pending:
        sys.meta_path.insert(0, PatchOnImport(pending))
