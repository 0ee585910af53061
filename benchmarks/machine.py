"""The machine, software and commit a run is recorded with."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from benchmarks.probes import ROOT


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def memory_text() -> str:
    try:
        line = next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal"))
        return f"{int(line.split()[1]) / 2**20:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        return "?"


def machine_info(threads: int) -> dict[str, str]:
    import peft
    import torch
    import transformers

    return {
        "cpu": f"{cpu_name()}, {os.cpu_count()} logical CPUs, {memory_text()} RAM",
        "software": f"Python {platform.python_version()}, torch {torch.__version__}, transformers "
        f"{transformers.__version__}, peft {peft.__version__}, {platform.system()} "
        f"{platform.release()}",
        "threads": f"{threads} torch threads (intra-op); MKL {torch.backends.mkl.is_available()}, "
        f"oneDNN {torch.backends.mkldnn.is_available()}",
    }


def git_commit() -> str:
    from study.environment import git_state

    state = git_state(ROOT)
    return "?" if state is None else f"{state[0][:7]}{' + uncommitted changes' if state[1] else ''}"
