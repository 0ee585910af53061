"""A study's Optuna study, as Optuna's own tools read it: an ASHA smoke study kept in a database given with
`--optuna-storage`, whose stopped trials Optuna records as PRUNED with their per-epoch values and whose
finished ones as COMPLETE. (The default journal storage and a driver kill: tests/test_faults.py.) The same study
ranks by the strict zero-shot objective (`--objective dev_en`): its trials evaluate no target-language dev.

The tests/hooks objective hook makes each trial's objective 1 - w: smoke trials all score at chance, where ASHA
stops nothing. One trial at a time (`--max-concurrent 1`) and seeded TPE make ASHA's decisions reproducible.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from search_spaces import PROBE, REFERENCE_POINTS

REPO_ROOT = Path(__file__).resolve().parent.parent
RUN = REPO_ROOT / "study" / "run.py"
HOOKS = REPO_ROOT / "tests" / "hooks"
NAME, TRIALS, EPOCHS = "asha", 6, 2
TrialState = optuna.trial.TrialState


def run_study(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    path = os.pathsep.join(filter(None, [str(HOOKS), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": path, "MPT_TEST_OBJECTIVE": "one_minus_alignment_weight"}
    return subprocess.run(
        [sys.executable, str(RUN), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def no_confirmation() -> list[str]:
    """The search alone, where this version has a confirmation phase (it would add runs this test does not read)."""
    from study.cli import build_parser

    return ["--no-confirm"] if "--no-confirm" in build_parser().format_help() else []


@pytest.fixture(scope="module")
def asha_study(tmp_path_factory) -> dict:
    cwd = tmp_path_factory.mktemp("asha")
    storage = f"sqlite:///{cwd / 'cluster' / 'optuna.db'}"
    (cwd / "cluster").mkdir()
    args = [
        "--space",
        "alignment",
        "--smoke",
        "--name",
        NAME,
        "--scheduler",
        "asha",
        "--num-samples",
        str(TRIALS),
        "--max-concurrent",
        "1",
        "--optuna-storage",
        storage,
        "--objective",
        "dev_en",
        *no_confirmation(),
    ]
    done = run_study(args, cwd)
    assert done.returncode == 0, done.stderr[-4000:]
    epochs = {}  # trial number -> [(epoch, objective) Tune received]
    for result in (cwd / "results" / "ray" / NAME).glob("*/result.json"):
        lines = [json.loads(line) for line in result.read_text().splitlines()]
        epochs[lines[0]["config"]["trial_number"]] = [(line["epoch"], line["objective"]) for line in lines]
    rows = json.loads((cwd / "results" / NAME / "trials.json").read_text())
    return {
        "cwd": cwd,
        "storage": storage,
        "args": args,
        "epochs": epochs,
        "rows": {row["trial_number"]: row for row in rows},
    }


@pytest.mark.slow
def test_stopped_trials_are_pruned_and_finished_ones_complete(asha_study) -> None:
    study = optuna.load_study(study_name=NAME, storage=asha_study["storage"])  # as docs/tracking.md says to read it
    trials, rows, epochs = study.trials, asha_study["rows"], asha_study["epochs"]
    assert [t.number for t in trials] == list(range(TRIALS)) == sorted(rows)
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert pruned and len(pruned) + len(complete) == TRIALS
    for trial in trials:
        reported = dict(epochs[trial.number])
        assert trial.intermediate_values == pytest.approx(reported)  # one value per epoch, as Tune received them
        assert trial.value == pytest.approx(reported[max(reported)])
        stopped = max(reported) < EPOCHS
        assert trial.state == (TrialState.PRUNED if stopped else TrialState.COMPLETE)
        assert rows[trial.number]["status"] == ("STOPPED" if stopped else "COMPLETE")
        ran, recorded = {k: rows[trial.number]["params"][k] for k in trial.params}, dict(trial.params)
        if rows[trial.number]["reference"] == PROBE:  # prompt length 0, which the space (4..64, log) cannot record:
            assert (ran.pop("prompt_length"), recorded.pop("prompt_length")) == (0, 4)  # Optuna holds the base's 4
        assert ran == recorded  # run as suggested
    assert all(t.state == TrialState.COMPLETE for t in trials[:2])  # ASHA never stops the references
    # Optuna's PRUNED trials are exactly those Tune's result files show stopped before the last epoch, and each
    # keeps what it reached (its last intermediate value) for TPE to learn from, as Optuna's pruners intend
    stopped = {number for number, reported in epochs.items() if max(epoch for epoch, _ in reported) < EPOCHS}
    assert {t.number: t.value for t in study.get_trials(states=(TrialState.PRUNED,))} == pytest.approx(
        {number: epochs[number][-1][1] for number in stopped}
    )


@pytest.mark.slow
def test_the_report_names_what_optuna_recorded(asha_study) -> None:
    report = (asha_study["cwd"] / "results" / NAME / "report.md").read_text()
    assert "searching alignment_weight, translator_depth, prompt_length" in report
    assert f"- Optuna: study `{NAME}` in `{asha_study['storage']}`" in report
    for param in ("alignment_weight", "translator_depth", "prompt_length"):
        assert f"](objective_vs_{param}.png)" in report


@pytest.mark.slow
def test_a_resume_keeps_the_optuna_storage(asha_study) -> None:
    cwd = asha_study["cwd"]
    moved = run_study(["--name", NAME, "--resume", "--optuna-storage", str(cwd / "elsewhere.log")], cwd, timeout=120)
    assert moved.returncode == 2 and "optuna_storage" in moved.stderr and "--resume" in moved.stderr
    assert not (cwd / "elsewhere.log").exists()


@pytest.mark.slow
def test_asha_spares_the_references_and_the_strict_objective_reads_english_dev_only(asha_study) -> None:
    from tests.smoke_studies import study_runs

    rows = asha_study["rows"]
    assert {r["status"] for r in rows.values()} <= {"COMPLETE", "STOPPED"}
    references = [r for r in rows.values() if r["reference"]]
    assert len(references) == len(REFERENCE_POINTS) and all(r["status"] == "COMPLETE" for r in references)  # spared
    _, children = study_runs(f"sqlite:///{asha_study['cwd'] / 'results' / 'mlflow.db'}", NAME)
    assert len(children) == TRIALS
    for child in children:
        assert "dev_acc_en" in child.data.metrics
        assert "dev_acc_de" not in child.data.metrics  # strict zero-shot: no target-language dev at all
        stopped = (
            next(r for r in rows.values() if r["trial_id"] == child.data.tags["ray.trial_id"])["status"] == "STOPPED"
        )
        assert (child.data.tags.get("stopped_early") == "true") == stopped
