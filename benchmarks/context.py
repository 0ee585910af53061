"""What one benchmark run collects: an `Outcome` per target, notes, fixes and the GPU record."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from benchmarks.timing import med

if TYPE_CHECKING:
    from mpt.training import RunData

STUDY_SPACE = "alignment"  # the study the benchmarks time: `python study/run.py --space alignment`
STUDY_UNAVAILABLE = "skipped: study not available"
NOT_SELECTED = "skipped: not selected (--only)"


@dataclass
class Outcome:
    """One target's verdict: the measured median (per-round min-max), the target, met or missed."""

    name: str
    item: int
    target: str  # e.g. "<=1.05"
    values: list[float] = field(default_factory=list)  # per-round measured ratios
    met: bool | None = None  # None: not run
    skipped: str = ""
    details: list[str] = field(default_factory=list)  # markdown lines for RESULTS.md

    @property
    def value(self) -> float | None:
        return med(self.values) if self.values else None

    def record(self, values: list[float], details: list[str], extra_ok: bool = True) -> None:
        """The per-round values and the RESULTS.md lines, judged against the target."""
        self.values, self.details = values, details
        self.judge(extra_ok)

    def judge(self, extra_ok: bool = True) -> None:
        op, bound = self.target[:2], float(self.target[2:])
        self.met = extra_ok and (self.value <= bound if op == "<=" else self.value >= bound)

    def final_line(self) -> str:
        if self.value is None:
            return f"{self.name} - {self.target} {self.skipped or 'skipped'}"
        return f"{self.name} {self.value:.3f} {self.target} {'met' if self.met else 'missed'}"


@dataclass(frozen=True)
class Fix:
    """A change made to mpt/ for a missed target, with the numbers this run measured before and after."""

    file: str
    what: str
    why: str
    before: str
    after: str


@dataclass
class RunContext:
    """The state of one run, handed to every part: its options and what the parts record."""

    args: argparse.Namespace
    outcomes: dict[str, Outcome]
    notes: list[str] = field(default_factory=list)
    fixes: list[Fix] = field(default_factory=list)
    gpu_lines: list[str] = field(default_factory=lambda: ["not selected (--only)"])
    flop_encoder_config: object = None  # the encoder config of the FLOP-counted steps, when they ran
    study_reason: str = ""  # why `study/run.py` cannot run ('' when it can)
    _data: "RunData | None" = None

    def run_data(self) -> "RunData":
        """The default config's data (mini set, parallel pairs), loaded once for the parts that share it."""
        if self._data is None:
            from mpt.config import MPTConfig
            from mpt.training import load_run_data

            self._data = load_run_data(MPTConfig())
        return self._data
