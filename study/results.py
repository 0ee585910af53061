"""The study's trial table (results/<study>/trials.json): what the report and `--confirm-top` read."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from trainable.metrics import TrialReport
from trainable.spec import META_KEYS

COMPLETE, FAILED, STOPPED, UNFINISHED = "COMPLETE", "FAILED", "STOPPED", "UNFINISHED"


@dataclass
class TrialRow:
    """One trial: its searched values, status, objective and per-language accuracies."""

    trial_id: str
    trial_number: int
    status: str  # COMPLETE | FAILED | STOPPED (early, by ASHA) | UNFINISHED (interrupted)
    params: dict[str, Any]
    reference: str | None = None
    objective: float | None = None
    test_accuracy: dict[str, float] = field(default_factory=dict)  # runs that evaluated test (confirmation)
    test_average: float | None = None
    test_average_target: float | None = None
    dev_accuracy: dict[str, float] = field(default_factory=dict)  # at the selected epoch
    dev_rows: dict[str, int] = field(default_factory=dict)
    test_correct: dict[str, str] = field(default_factory=dict)  # language -> "0110..." per test row
    error: str | None = None
    checkpoint: str | None = None  # the trial's last checkpoint (path or URI)
    seed: int | None = None  # confirmation runs only


def rows_from_results(result_grid, finished: bool) -> list[TrialRow]:
    """Trial rows from a Tune ResultGrid; `finished` says whether trials that did not train every epoch ended
    (stopped early) or were interrupted."""
    rows = []
    for result in result_grid:
        config = dict(result.config or {})
        report = TrialReport.from_result(result.metrics)
        if result.error is not None:
            status = FAILED
        elif report.trained_all_epochs:
            status = COMPLETE
        else:
            status = STOPPED if finished else UNFINISHED
        test = report.test
        checkpoint = result.checkpoint.path if result.checkpoint is not None else None
        rows.append(
            TrialRow(
                trial_id=str(report.trial_id or _trial_id_from_path(result.path)),
                trial_number=int(config.get("trial_number", len(rows))),
                status=status,
                params={k: v for k, v in config.items() if k not in META_KEYS},
                reference=config.get("reference"),
                objective=report.objective,
                test_accuracy=test.accuracy if test else {},
                test_average=test.average if test else None,
                test_average_target=test.average_target if test else None,
                dev_accuracy=report.selected_dev_accuracy,
                dev_rows=report.dev_rows,
                test_correct=test.correct if test else {},
                error=_error_line(result.error),
                checkpoint=checkpoint,
                seed=config.get("seed"),
            )
        )
    return sorted(rows, key=lambda row: (row.trial_number, row.seed or 0))


def trial_result(result_grid, trial_id: str):
    """The Tune result of trial `trial_id` in a ResultGrid (None if the grid has none)."""
    return next((r for r in result_grid if TrialReport.from_result(r.metrics).trial_id == trial_id), None)


def _trial_id_from_path(path: str) -> str:
    """A trial folder is named `<trainable>_<trial id>` (study.search.trial_dirname); ids are 8 hex digits."""
    match = re.search(r"_([0-9a-f]{8})$", Path(path).name)
    return match.group(1) if match else Path(path).name


def last_line(text: str) -> str:
    """The exception line of a traceback (what a table or the UI should show): its last non-empty line."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _error_line(error: BaseException | None) -> str | None:
    if error is None:
        return None
    return last_line(str(error)) or type(error).__name__


def save_rows(path: Path, rows: list[TrialRow]) -> None:
    from study.paths import write_atomically

    write_atomically(path, json.dumps([asdict(r) for r in rows], indent=1, ensure_ascii=False))


def load_rows(path: Path) -> list[TrialRow]:
    """The rows `save_rows` wrote; fields an older version stored and this one dropped are ignored."""
    known = {f.name for f in fields(TrialRow)}
    return [
        TrialRow(**{k: v for k, v in row.items() if k in known}) for row in json.loads(path.read_text(encoding="utf-8"))
    ]


def completed(rows: list[TrialRow]) -> list[TrialRow]:
    return [r for r in rows if r.status == COMPLETE and r.objective is not None]


def top_rows(rows: list[TrialRow], k: int) -> list[TrialRow]:
    """The k complete trials with the highest objective (ties: the earlier trial first)."""
    return sorted(completed(rows), key=lambda r: (-r.objective, r.trial_number))[:k]


def best_row(rows: list[TrialRow]) -> TrialRow | None:
    top = top_rows(rows, 1)
    return top[0] if top else None


def reference_row(rows: list[TrialRow], name: str) -> TrialRow | None:
    return next((r for r in rows if r.reference == name), None)
