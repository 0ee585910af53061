"""The check each script of `study/` makes first when started as a file (`python study/run.py`): Python must
import the package `study` from the checkout the script is in, not from another installed copy. The scripts run
this file with `runpy.run_path` (it cannot be imported as `study.checkout` before the check has passed)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def require_this_checkout(script: str) -> None:
    """Exit with the fix when `study` would import from anywhere but the folder of `script`."""
    found = importlib.util.find_spec("study")
    if found is None or Path(found.origin).resolve().parent != Path(script).resolve().parent:
        sys.exit(
            f"error: {script} runs from a checkout that is not installed ('study' imports from "
            f"{Path(found.origin).parent if found else 'nowhere'}): run `pip install -e .` in "
            f"{Path(script).resolve().parent.parent}, or put that folder on PYTHONPATH"
        )
