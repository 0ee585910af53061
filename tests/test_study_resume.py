"""A study interrupted in both of its phases ends as the uninterrupted one: Ctrl+C (SIGINT) during the search,
`--resume`, the driver SIGKILLed during the confirmation, `--resume` again. It has the search and confirmation
settings of the session's shared smoke study (tests/smoke_studies.py: one trial at a time, an MPT configuration
wins, 2 paired seeds; no shot-count sweep, so its confirmation is the shared study's runs at the base K), so it
must end with the same trials, the same confirmation runs and the same verdict, and with exactly the planned
trials and runs, one MLflow run each.

The faults come from tests/hooks (mpt_faults): a trial holds after reporting its first epoch (checkpoint
saved), in the search the third trial to get there, in the confirmation the third run. The driver is interrupted
while it holds. `MPT_EPOCH_LOG` records every epoch a trial actually trains.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.smoke_studies import (
    CONFIRM_SEEDS,
    RUN,
    SEARCH_ARGS,
    SMOKE_EPOCHS,
    STUDY_TIMEOUT_S,
    WINNER_OBJECTIVE,
    SmokeStudy,
    run_cli,
    study_env,
)
from tests.test_faults import (
    epochs_of,
    epochs_trained,
    kill_process_group,
    metric_history,
    saved_as_finished,
    study_runs,
    trial_folders,
    trial_rows,
)

NAME = "resumed"
ARGS = [*SEARCH_ARGS, "--name", NAME]
SEARCH_PLANNED = 5  # the smoke study's trials
CONFIRM_EXPERIMENT = f"{NAME}-confirm-top1x{len(CONFIRM_SEEDS)}"  # study.tuner's name for the confirmation
HELD_AFTER = 2  # runs of a phase that pass epoch 1 before one holds there


def held_trial(marker: Path, experiment: Path, driver: subprocess.Popen) -> str:
    """Wait until a trial holds (it wrote `marker`) and the driver has its first epoch's report; its trial id."""
    deadline = time.monotonic() + STUDY_TIMEOUT_S
    while time.monotonic() < deadline and driver.poll() is None:
        if marker.exists() and marker.read_text().strip():
            trial_id = json.loads(marker.read_text())["trial_id"]
            result = experiment / f"train_mpt_{trial_id}" / "result.json"
            if result.exists() and result.read_text().strip():  # the driver processed the report
                return trial_id
        time.sleep(0.2)
    driver.kill()
    raise AssertionError(f"no trial held at epoch 1 (driver exit {driver.poll()}): {driver.communicate()[1][-3000:]}")


def start(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(RUN), *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finished_runs(cwd: Path, phase: str) -> dict[str, object]:
    """Ray trial id -> MLflow run of the phase's trials."""
    return {
        r.data.tags["ray.trial_id"]: r for r in study_runs(cwd, NAME)[1] if r.data.tags.get("mpt_study.phase") == phase
    }


@pytest.fixture(scope="module")
def resumed(tmp_path_factory) -> dict:
    cwd = tmp_path_factory.mktemp("resumed")
    log = cwd / "epochs.jsonl"
    env = study_env(MPT_TEST_OBJECTIVE=WINNER_OBJECTIVE, MPT_EPOCH_LOG=str(log))
    hold = {"MPT_FAULT_HOLD_AT_EPOCH": "1", "MPT_FAULT_SKIP": str(HELD_AFTER)}
    search, confirmation = cwd / "results" / "ray" / NAME, cwd / "results" / "ray" / CONFIRM_EXPERIMENT
    record: dict = {"cwd": cwd, "log": log}

    # 1. Ctrl+C while the search's third trial holds at its first epoch
    driver = start(ARGS, cwd, {**env, **hold, "MPT_FAULT_MARKER": str(cwd / "held-search.json")})
    try:
        record["search_held"] = held_trial(cwd / "held-search.json", search, driver)
        record["search_runs"] = {i: (r.info.status, r.info.end_time) for i, r in finished_runs(cwd, "search").items()}
        driver.send_signal(signal.SIGINT)  # what Ctrl+C sends: Tune saves its state and stops
        _, record["sigint_stderr"] = driver.communicate(timeout=STUDY_TIMEOUT_S)
        record["sigint_exit"] = driver.returncode
    finally:
        kill_process_group(driver.pid)
    record["search_epochs"] = epochs_trained(log)

    # 2. resumed; the driver is killed while the confirmation's third run holds at its first epoch
    driver = start(
        [*ARGS, "--resume"],
        cwd,
        {
            **env,
            **hold,
            "MPT_FAULT_IN_EXPERIMENT": CONFIRM_EXPERIMENT,
            "MPT_FAULT_MARKER": str(cwd / "held-confirm.json"),
        },
    )
    try:
        record["confirm_held"] = held_trial(cwd / "held-confirm.json", confirmation, driver)
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=60)
    finally:
        kill_process_group(driver.pid)
    time.sleep(2)  # let the trial processes of the dead Ray instance die
    record["confirm_epochs"] = epochs_trained(log)
    record["confirm_saved_finished"] = saved_as_finished(confirmation)
    record["confirm_started"] = set(trial_folders(confirmation))
    record["confirm_runs"] = {i: r.info.run_id for i, r in finished_runs(cwd, "confirm").items()}

    # 3. resumed to its end, without a fault
    record["done"] = run_cli(RUN, *ARGS, "--resume", cwd=cwd, env=env)
    assert record["done"].returncode == 0, record["done"].stderr[-4000:]
    return record


@pytest.mark.slow
def test_ctrl_c_in_the_search_exits_resumable(resumed) -> None:
    assert resumed["sigint_exit"] == 130, resumed["sigint_stderr"][-4000:]
    assert "interrupted during the search" in resumed["sigint_stderr"] and "--resume" in resumed["sigint_stderr"]
    statuses = [status for status, _ in resumed["search_runs"].values()]
    assert statuses.count("FINISHED") == HELD_AFTER and len(statuses) == HELD_AFTER + 1


@pytest.mark.slow
def test_the_search_resumes_to_exactly_its_trials_without_training_any_again(resumed) -> None:
    cwd, records = resumed["cwd"], epochs_trained(resumed["log"])
    rows = trial_rows(cwd, NAME)
    # the searcher kept its history: trial numbers continue and the references ran once
    assert sorted(r["trial_number"] for r in rows) == list(range(SEARCH_PLANNED))
    assert sorted(r["reference"] for r in rows if r["reference"]) == ["paper_default", "probe", "vanilla"]
    assert all(r["status"] == "COMPLETE" for r in rows)
    runs = finished_runs(cwd, "search")
    assert sorted(runs) == sorted(r["trial_id"] for r in rows)  # one MLflow run per trial
    for trial_id, run in runs.items():
        assert run.info.status == "FINISHED"
        assert [step for step, _ in metric_history(cwd, run.info.run_id, "loss")] == list(range(1, SMOKE_EPOCHS + 1))
        before = resumed["search_runs"].get(trial_id)
        if before and before[0] == "FINISHED":  # finished before Ctrl+C: its run was not touched again
            assert run.info.end_time == before[1]
        # every trial trained each epoch once: the held one continued from its first epoch's checkpoint
        assert epochs_of(records, trial_id) == list(range(1, SMOKE_EPOCHS + 1)), trial_id
    assert epochs_of(resumed["search_epochs"], resumed["search_held"]) == [1]


@pytest.mark.slow
def test_the_confirmation_resumes_to_exactly_its_runs_one_mlflow_run_each(resumed) -> None:
    cwd, records = resumed["cwd"], epochs_trained(resumed["log"])
    rows = json.loads((cwd / "results" / NAME / "confirm.json").read_text())
    best = max(trial_rows(cwd, NAME), key=lambda r: (r["objective"], -r["trial_number"]))["trial_number"]
    assert sorted((r["trial_number"], r["seed"]) for r in rows) == sorted(
        (n, s) for n in (0, 1, 2, best) for s in CONFIRM_SEEDS
    )  # vanilla, the paper default, the probe, the best
    assert all(r["status"] == "COMPLETE" for r in rows)
    runs = finished_runs(cwd, "confirm")
    assert sorted(runs) == sorted(r["trial_id"] for r in rows)  # no run lost or doubled
    before, after_kill = resumed["confirm_runs"], records[len(resumed["confirm_epochs"]) :]
    assert resumed["confirm_held"] in before and len(resumed["confirm_saved_finished"]) >= HELD_AFTER
    for trial_id, run in runs.items():
        assert run.info.status == "FINISHED"
        assert run.info.run_id == before.get(trial_id, run.info.run_id)  # a run begun before the kill continued
        assert [step for step, _ in metric_history(cwd, run.info.run_id, "loss")] == list(range(1, SMOKE_EPOCHS + 1))
        assert set(epochs_of(records, trial_id)) == set(range(1, SMOKE_EPOCHS + 1))
    for trial_id in resumed["confirm_saved_finished"]:  # finished before the kill: not trained again
        assert epochs_of(after_kill, trial_id) == []
    held = epochs_of(records, resumed["confirm_held"])  # continued from its checkpoint, at most redoing one epoch
    assert held[:1] == [1] and len(held) <= SMOKE_EPOCHS + 1
    assert {r["trial_id"] for r in after_kill} <= set(runs)  # the search, finished, trained nothing after the kill
    assert len(records) <= SEARCH_PLANNED * SMOKE_EPOCHS + len(rows) * SMOKE_EPOCHS + 1
    parents, _ = study_runs(cwd, NAME)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"


@pytest.mark.slow
def test_the_resumed_study_ends_as_the_uninterrupted_one(resumed, smoke_study: SmokeStudy) -> None:
    """The same trials, the same confirmation runs (the shared study's at the base K) and the same verdict."""
    cwd = resumed["cwd"]

    def searched(rows: list[dict]) -> dict:
        return {r["trial_number"]: (r["params"], r["objective"], r["dev_accuracy"]) for r in rows}

    assert searched(trial_rows(cwd, NAME)) == searched(json.loads((smoke_study.study_dir / "trials.json").read_text()))
    base_shots = json.loads((smoke_study.study_dir / "study.json").read_text())["base_config"]["shots_per_class"]

    def runs(rows: list[dict]) -> dict:  # the confirmation's runs at the base shot count
        return {
            (r["trial_number"], r["seed"]): (r["test_accuracy"], r["test_correct"])
            for r in rows
            if r["params"].get("shots_per_class", base_shots) == base_shots
        }

    assert runs(json.loads((cwd / "results" / NAME / "confirm.json").read_text())) == runs(
        json.loads((smoke_study.study_dir / "confirm.json").read_text())
    )
    verdict = resumed["done"].stdout.rstrip().splitlines()[-1]
    uninterrupted = smoke_study.done.stdout.rstrip().splitlines()[-1]
    assert verdict.startswith("Verdict: MPT (trial ")
    assert verdict == uninterrupted.replace(f"Verdict: {base_shots} shots per class: ", "Verdict: ")
    parents, _ = study_runs(cwd, NAME)
    assert parents[0].data.tags["verdict"] == verdict[len("Verdict: ") :]
    assert (cwd / "results" / NAME / "report.md").read_text().count(verdict[len("Verdict: ") :]) >= 1
