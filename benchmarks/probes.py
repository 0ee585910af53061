"""Programs run in fresh interpreters (no in-process caches): `python -m benchmarks.<probe>` from the
repository root; each prints one `RESULT <json>` line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "RESULT "


def emit(result: dict) -> None:
    """The probe's answer, as `run_probe` reads it."""
    print(PREFIX + json.dumps(result), flush=True)


def run_probe(module: str, argv: list[str], env: dict[str, str] | None = None, timeout: float = 900) -> dict:
    """Run `python -m benchmarks.<module> ARGV...` in a fresh interpreter and parse its RESULT line."""
    done = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )
    for line in done.stdout.splitlines():
        if line.startswith(PREFIX):
            return json.loads(line[len(PREFIX) :])
    raise RuntimeError(f"benchmark subprocess {module} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
