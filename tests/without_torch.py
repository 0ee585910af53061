"""Running code in a Python process in which importing torch or transformers fails: what must work without them
(`study/run.py --help`, every preflight refusal, reading a backbone's config) is run there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# Prepended to a script: from then on importing torch or transformers raises, and `attempted` lists each try.
BLOCK_TORCH = """
import importlib.abc, sys

attempted = []


class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers"):
            attempted.append(name)
            raise ImportError(f"{name} is blocked in this test")
        return None


sys.meta_path.insert(0, Blocker())
"""

# Runs the script sys.argv[1] once per argument list in sys.argv[2] (JSON) and prints, as one JSON line, what
# each exited with and wrote, and the imports of torch or transformers attempted.
RUN_SCRIPT = (
    BLOCK_TORCH
    + """
import contextlib, io, json, runpy

script, outcomes = sys.argv[1], []
for argv in json.loads(sys.argv[2]):
    sys.argv, out, err = [script, *argv], io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_path(script, run_name="__main__")
            code = 0
        except SystemExit as exit:
            code = exit.code
    outcomes.append({"code": code, "out": out.getvalue(), "err": err.getvalue()})
print(json.dumps({"outcomes": outcomes, "attempted": attempted}))
"""
)


def run_without_torch(script: Path, argvs: list[list[str]], cwd: Path, **env: str) -> dict:
    """`script` run with each of `argvs` in one process without torch or transformers (offline, as the tests are):
    {"outcomes": [{"code", "out", "err"}, ...], "attempted": [imports of torch or transformers tried]}."""
    done = subprocess.run(
        [sys.executable, "-c", RUN_SCRIPT, str(script), json.dumps(argvs)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])
