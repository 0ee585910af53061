"""Benchmarks of mpt-study (issue 7): `python -m benchmarks.run [--quick] [--study] [--only PARTS]`.

The entry point of the `benchmarks` package (see its docstring, and `--help`), run as a module from the
repository root: the benchmarks are the checkout's tool, not installed with the package, and `-m` imports them
as `benchmarks.<name>` (never from this folder as top-level modules).
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):
    sys.exit(
        "run the benchmarks as a module, from the repository root: python -m benchmarks.run " + " ".join(sys.argv[1:])
    )

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
