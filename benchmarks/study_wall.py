"""Benchmark 7: wall minutes of the smoke study and (with --study) the default study, each run as
`python study/run.py --space alignment ...` in a scratch folder."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.context import STUDY_SPACE, RunContext
from benchmarks.probes import ROOT
from benchmarks.timing import load_text, spread
from mpt.config import LABELS


def run_study_cli(extra: list[str], timeout: float) -> tuple[float, str, list]:
    """Wall seconds of `python study/run.py --space alignment ...` run in a scratch folder (its results,
    Ray storage and MLflow database stay out of the repository's results/), how many trials it ran, and its
    trial table (results/<study>/trials.json)."""
    from study.results import load_rows

    scratch = Path(tempfile.mkdtemp(prefix="mpt-bench-study-"))
    try:
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, str(ROOT / "study" / "run.py"), "--space", STUDY_SPACE, *extra],
            cwd=scratch,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(
                f"the study failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
            )
        found = re.search(r"^study \S+: .*?(\d+) trials", done.stdout, re.MULTILINE)
        # the search's trials and the confirmation's runs (the only ones that evaluate test)
        rows = {
            name: [row for table in scratch.glob(f"results/*/{name}") for row in load_rows(table)]
            for name in ("trials.json", "confirm.json")
        }
        return wall, found.group(1) if found else "?", rows
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def study_quality_lines(rows: dict[str, list]) -> list[str]:
    """What the timed study learned (chance: 1 / the number of labels): not a target, a check that its minutes
    bought a result. Test accuracies come from the confirmation runs; the search ranks on dev."""
    from study.results import COMPLETE, best_row, completed

    best = best_row(rows["trials.json"])
    runs = [r for r in rows["confirm.json"] if r.status == COMPLETE and r.test_average is not None]
    if best is None or not runs:
        return [
            "- no complete search trial in trials.json, or no confirmation run with test accuracies in confirm.json"
        ]
    english = [r.test_accuracy["en"] for r in runs if "en" in r.test_accuracy]
    confirmed = [r.test_average for r in runs if r.trial_number == best.trial_number]
    return [
        f"- what it learned (chance {1 / len(LABELS):.3f}): test accuracy averaged over languages, per "
        f"confirmation run: {spread([r.test_average for r in runs])}; English test: {spread(english)}",
        f"- the trial the search ranks first (objective {best.objective:.3f}, {len(completed(rows['trials.json']))}"
        f" complete search trials): confirmed test average over its seeds {spread(confirmed)}; its values "
        f"{json.dumps(best.params, sort_keys=True)}",
    ]


def command(extra: list[str]) -> str:
    return " ".join(["python study/run.py --space", STUDY_SPACE, *extra])


def run(ctx: RunContext) -> None:
    if ctx.study_reason:  # the outcomes are already marked skipped
        return
    smoke, counts = ctx.outcomes["study_smoke_min"], []
    for _ in range(ctx.args.smoke_rounds):
        wall, trials, _ = run_study_cli(["--smoke"], timeout=900)
        smoke.values.append(wall / 60)
        counts.append(trials)
        print(f"[study] --smoke: {wall:.0f} s, {trials} trials; load {load_text()}", flush=True)
    smoke.record(
        smoke.values,
        [
            f"`{command(['--smoke'])}` in a scratch folder, subprocess wall time (interpreter "
            f"start and imports included); trials: {', '.join(counts)}",
            f"- minutes: {spread(smoke.values)}",
        ],
    )
    default = ctx.outcomes["study_default_min"]
    if not ctx.args.study:
        default.skipped = "skipped: needs --study (the default study's own wall time more)"
        return
    wall, trials, rows = run_study_cli([], timeout=3600)
    default.record(
        [wall / 60],
        [
            f"`{command([])}` in a scratch folder, subprocess wall time (interpreter start "
            f"and imports included); {trials} trials",
            f"- minutes: {spread([wall / 60])}",
            *study_quality_lines(rows),
        ],
    )
    print(f"[study] default: {wall:.0f} s, {trials} trials; load {load_text()}", flush=True)
