"""Shared measuring: wall and CPU time of a call, medians with their spread, budgeted interleaved rounds.

`torch.utils.benchmark.Timer` does not fit these benchmarks: it times one statement on its own (with its
own warm-up runs and thread setting) and summarises its repeats, while every comparison here is a ratio
of two or more sides run alternately, round by round, each once per round, in wall and in CPU time.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Callable, Iterator


def timed(fn: Callable[[], object]) -> float:
    """Wall seconds of one call."""
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def timed_cpu(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds): CPU time is the cross-check that other processes'
    load does not bias a comparison (with one torch thread, CPU time is the work done)."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def med(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float], digits: int = 3) -> str:
    """'median [min-max] (n)' of a series."""
    if not values:
        return "-"
    return f"{med(values):.{digits}g} [{min(values):.{digits}g}-{max(values):.{digits}g}] (n={len(values)})"


def ratios(numerators: list[float], denominators: list[float]) -> list[float]:
    """Per-round ratios of two series measured in the same rounds."""
    return [a / b for a, b in zip(numerators, denominators, strict=True)]


class Rounds:
    """Interleaved rounds: at least `least`, at most `most`, and no new round once `budget_s` is spent."""

    def __init__(self, least: int, most: int, budget_s: float) -> None:
        self.least, self.most, self.budget_s = least, most, budget_s
        self.started = time.perf_counter()

    def __iter__(self) -> Iterator[int]:
        done = 0
        while done < self.least or (done < self.most and time.perf_counter() - self.started < self.budget_s):
            yield done
            done += 1


def alternating(sides: list, index: int) -> list:
    """The sides in their order on even rounds, reversed on odd ones."""
    return sides if index % 2 == 0 else sides[::-1]


def load_text() -> str:
    """The machine's load average (1/5/15 min), for the progress lines and RESULTS.md."""
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"
