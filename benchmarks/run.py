"""Benchmarks of mpt-study (issue 7): `python benchmarks/run.py [--quick] [--study] [--only PARTS]`.

The entry point of the `benchmarks` package (see its docstring, and `--help`); run from the repository root.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# the package's modules are imported as `benchmarks.<name>`, never from this folder as top-level modules
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
