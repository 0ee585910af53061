"""The study's console while it runs: a table of its trials, named as in MLflow, and the study's progress.

`StudyConsole` is a Ray Tune `ProgressReporter` (the legacy output engine's reporter API: Ray 2.60's new engine,
on by default, ignores `RunConfig(progress_reporter=...)`, so study/run.py sets `RAY_AIR_NEW_OUTPUT=0`).
It prints, at most every `interval_s` seconds and at once when a trial starts, ends or fails:

    study alignment (search): 3/8 trials done, 2 running, 3 pending | elapsed 2:10, about 3:35 left
    resources: 2.0/2 CPUs, 0/0 GPUs | best objective 0.373 (alignment-001 paper_default)
    trial                                 status    epoch  objective  dev en    time
    alignment-000 vanilla                 done        6/6      0.360   0.373    1:02
    alignment-003 w=0.92 T=1.5 align_bs=4 running     2/6      0.351   0.347    0:21
    ...

The objective is the study's (`--objective`) at the epoch selected so far, `dev en` the latest dev accuracy in
the source language (the base config's `source_language`), `time` the trial's training time; the estimate of
the time left follows this session's rate of epochs. A failed trial's error is named under the table once; Ray
logs its full traceback.

`TrialNamer` gives Tune's trials the same names (`trial_name_creator`), so Ray's own messages (a failed
trial's traceback) name trials as the console and MLflow do. Both take the names from
`study.tracking.trial_run_name`. Everything here is pickled with Tune's experiment state: no open streams.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from ray.tune import ProgressReporter

from study.results import last_line
from study.tracking import trial_error_text, trial_run_name
from trainable.metrics import TrialReport

STATUS = {"PENDING": "pending", "RUNNING": "running", "PAUSED": "paused", "TERMINATED": "done", "ERROR": "FAILED"}
MAX_NAME_WIDTH = 60  # longer trial names are cut (MLflow has them whole)


class TrialNamer:
    """`TuneConfig(trial_name_creator=...)`: a trial's name is its MLflow run's."""

    def __init__(self, space: str, phase: str) -> None:
        self.space, self.phase = space, phase

    def __call__(self, trial) -> str:
        return trial_run_name(self.space, self.phase, trial.config)


class StudyConsole(ProgressReporter):
    """What a researcher reads while a study runs (see the module's docstring)."""

    def __init__(
        self,
        study: str,
        space: str,
        phase: str,
        planned: int,
        epochs: int,
        source_language: str,
        interval_s: float = 30.0,
    ):
        self.study, self.space, self.phase = study, space, phase
        self.planned, self.epochs, self.interval_s = planned, epochs, interval_s
        self.source_language = source_language
        self._reset()

    def _reset(self, start_time: float | None = None) -> None:
        self._start = start_time or time.time()
        self._last_print = 0.0
        self._last_state: dict[str, tuple] = {}  # trial id -> (status, epoch) at the last print
        self._baseline: float | None = None  # epochs already done when this session's first report came
        self._reported_errors: set[str] = set()

    def setup(
        self, start_time: float | None = None, total_samples: int | None = None, metric=None, mode=None, **kwargs
    ) -> None:
        self._reset(start_time)  # also after a resume: elapsed and the rate are this session's

    def should_report(self, trials: list, done: bool = False) -> bool:
        state = {t.trial_id: (t.status, _epoch(t)) for t in trials}
        if state == self._last_state:
            return False  # also at the end: the last table already shows how every trial ended
        if done:
            return True
        statuses = {k: v[0] for k, v in state.items()}
        if statuses != {k: v[0] for k, v in self._last_state.items()}:  # a trial started, ended or failed
            return True
        return time.time() - self._last_print >= self.interval_s

    def report(self, trials: list, done: bool, *sys_info: str) -> None:
        self._last_print = time.time()
        self._last_state = {t.trial_id: (t.status, _epoch(t)) for t in trials}
        print(self.render(trials, sys_info, now=self._last_print), file=sys.stdout, flush=True)

    def render(self, trials: list, sys_info: tuple[str, ...] = (), now: float | None = None) -> str:
        """The table and its header (also what a test reads)."""
        now = now or time.time()
        rows = sorted(trials, key=lambda t: (int(t.config.get("trial_number", 0)), t.config.get("seed", 0)))
        width = min(MAX_NAME_WIDTH, max([len("trial"), *(len(self.name(t)) for t in rows)]))
        lines = [
            self._progress_line(rows, now),
            self._resources_line(rows, sys_info),
            f"{'trial':<{width}}  {'status':<8} {'epoch':>6} {'objective':>10} "
            f"{'dev ' + self.source_language:>7} {'time':>7}",
        ]
        lines += [self._trial_line(t, width) for t in rows]
        for trial in rows:
            if trial.status == "ERROR" and trial.trial_id not in self._reported_errors:
                self._reported_errors.add(trial.trial_id)
                error = last_line(trial_error_text(trial)) or "no error message"
                lines.append(
                    f"{self.name(trial)} FAILED: {error} (the full trace is above and in "
                    f"{trial.error_file or 'its trial folder'})"
                )
        return "\n".join(lines) + "\n"

    def name(self, trial) -> str:
        return trial_run_name(self.space, self.phase, trial.config)

    def _progress_line(self, trials: list, now: float) -> str:
        counts = {
            status: sum(STATUS.get(t.status, t.status.lower()) == status for t in trials)
            for status in ("done", "FAILED", "running", "pending", "paused")
        }
        ended = counts["done"] + counts["FAILED"]
        parts = [f"{ended}/{self.planned} trials done" + (f" ({counts['FAILED']} failed)" if counts["FAILED"] else "")]
        parts += [f"{counts[s]} {s}" for s in ("running", "paused") if counts[s]]
        pending = counts["pending"] + max(0, self.planned - len(trials))  # and those not suggested yet
        if pending:
            parts.append(f"{pending} pending")
        elapsed = now - self._start
        return (
            f"study {self.study} ({self.phase}): {', '.join(parts)} | elapsed {_clock(elapsed)}, "
            f"{self._remaining(trials, elapsed)}"
        )

    def _remaining(self, trials: list, elapsed: float) -> str:
        """Time left at this session's rate of epochs (ASHA's early stops make it an overestimate)."""
        total = self.planned * self.epochs
        done_epochs = sum(self._epochs_of(t) if t.status in ("TERMINATED", "ERROR") else _epoch(t) for t in trials)
        if self._baseline is None:
            self._baseline = done_epochs
        if (
            done_epochs >= total
            or len(trials) >= self.planned
            and all(t.status in ("TERMINATED", "ERROR") for t in trials)
        ):
            return "finished"
        trained = done_epochs - self._baseline
        if trained <= 0 or elapsed <= 0:
            return "time left: estimating"
        return f"about {_clock((total - done_epochs) * elapsed / trained)} left"

    def _resources_line(self, trials: list, sys_info: tuple[str, ...]) -> str:
        parts = []
        for info in sys_info:  # Tune's "Logical resource usage: 2.0/2 CPUs, 0/0 GPUs" (and its scheduler)
            if info.startswith("Logical resource usage:"):
                parts.append("resources: " + info.split(":", 1)[1].strip())
        objectives = {t.trial_id: TrialReport.from_result(t.last_result).objective for t in trials}
        scored = [t for t in trials if isinstance(objectives[t.trial_id], (int, float))]
        if scored:
            best = max(scored, key=lambda t: objectives[t.trial_id])
            parts.append(f"best objective {objectives[best.trial_id]:.3f} ({self.name(best)})")
        return " | ".join(parts) if parts else "resources: -"

    def _trial_line(self, trial, width: int) -> str:
        report = TrialReport.from_result(trial.last_result)
        name = self.name(trial)
        if len(name) > width:
            name = name[: width - 1] + "…"
        epoch = f"{report.epoch}/{self._epochs_of(trial)}"
        seconds = report.time_total_s
        return (
            f"{name:<{width}}  {STATUS.get(trial.status, trial.status.lower()):<8} {epoch:>6} "
            f"{_number(report.objective):>10} {_number(report.dev_accuracy.get(self.source_language)):>7} "
            f"{_clock(seconds) if seconds else '-':>7}"
        )

    def _epochs_of(self, trial) -> int:
        """The trial's planned epochs: what it reports, else its searched value, else the study's."""
        return int(
            TrialReport.from_result(trial.last_result).planned_epochs or trial.config.get("epochs") or self.epochs
        )


def _epoch(trial) -> int:
    return TrialReport.from_result(trial.last_result).epoch


def _number(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
