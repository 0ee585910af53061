"""The study's console (study.console): what it shows while a study runs, and what it leaves out.

The end-to-end test runs a `--smoke` study whose second trial diverges (learning rate 1e6), so the console
must show a finished trial, a failed one and the failure's full traceback.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from study.console import StudyConsole, TrialNamer
from study.tracking import trial_run_name

REPO_ROOT = Path(__file__).resolve().parent.parent
RUN = REPO_ROOT / "study" / "run.py"


def fake_trial(trial_id: str, number: int, status: str, epoch: int = 0, objective: float | None = None,
               **config) -> SimpleNamespace:
    result = {} if not epoch else {"epoch": epoch, "objective": objective, "dev_acc_en": 0.5, "time_total_s": 65.0}
    return SimpleNamespace(trial_id=trial_id, status=status, config={"trial_number": number, **config},
                           last_result=result, error_file=None)


def test_table_names_trials_as_mlflow_and_shows_epochs_objective_and_progress() -> None:
    console = StudyConsole("demo", "alignment", "search", planned=4, epochs=6, source_language="en")
    console.setup(start_time=1000.0)
    trials = [fake_trial("a", 0, "TERMINATED", 6, 0.36, reference="vanilla", alignment_weight=0.0),
              fake_trial("b", 1, "RUNNING", 3, 0.41, alignment_weight=0.92, kl_temperature=1.5),
              fake_trial("c", 2, "PENDING", alignment_weight=0.1)]
    console.render(trials, now=1000.0)  # the session's first look: its baseline of epochs done
    trials[1].last_result["epoch"] = 4
    text = console.render(trials, ("Logical resource usage: 2.0/2 CPUs, 1.0/2 GPUs",), now=1060.0)
    lines = text.splitlines()
    # one epoch trained in the minute since the first look, 14 of 4 x 6 epochs to go
    assert lines[0] == "study demo (search): 1/4 trials done, 1 running, 2 pending | elapsed 1:00, about 14:00 left"
    running_name = trial_run_name("alignment", "search", trials[1].config)
    assert running_name.startswith("alignment-001 ")
    assert lines[1] == f"resources: 2.0/2 CPUs, 1.0/2 GPUs | best objective 0.410 ({running_name})"
    assert lines[2].split() == ["trial", "status", "epoch", "objective", "dev", "en", "time"]
    running = next(line for line in lines if line.startswith(running_name + " "))
    assert running.split()[-5:] == ["running", "4/6", "0.410", "0.500", "1:05"]
    assert lines[3].startswith("alignment-000 vanilla ") and "done" in lines[3] and "6/6" in lines[3]
    assert "pending" in lines[5] and "0/6" in lines[5]


def test_the_dev_column_is_the_source_languages() -> None:
    """A study whose few-shot set is French shows French dev, not English."""
    console = StudyConsole("demo", "alignment", "search", planned=1, epochs=6, source_language="fr")
    trial = fake_trial("a", 0, "RUNNING", 2, 0.4)
    trial.last_result["dev_acc_fr"] = 0.25
    header, line = console.render([trial]).splitlines()[2:4]
    assert header.split()[-3:] == ["dev", "fr", "time"]
    assert line.split()[-3:] == ["0.400", "0.250", "1:05"]


def test_reports_on_status_changes_at_once_and_on_epochs_at_most_every_interval() -> None:
    console = StudyConsole("demo", "alignment", "search", planned=2, epochs=2, source_language="en", interval_s=3600)
    trials = [fake_trial("a", 0, "PENDING")]
    assert console.should_report(trials)
    console.report(trials, False)
    assert not console.should_report(trials)  # nothing changed
    trials[0].status = "RUNNING"
    assert console.should_report(trials)  # a trial started
    console.report(trials, False)
    trials[0].last_result = {"epoch": 1}
    assert not console.should_report(trials)  # a new epoch, but within the interval
    assert console.should_report(trials, done=True)  # the end, with news
    console.report(trials, True)
    assert not console.should_report(trials, done=True)  # the last table already shows it


def test_failed_trial_is_named_with_its_error_once() -> None:
    console = StudyConsole("demo", "translator", "search", planned=1, epochs=2, source_language="en")
    trial = fake_trial("a", 0, "ERROR", reference="vanilla")
    trial.error_file = None
    trial.get_error = lambda: "Traceback (most recent call last):\n  ...\nValueError: loss is nan at epoch 1"
    first = console.render([trial])
    assert "translator-000 vanilla FAILED: ValueError: loss is nan at epoch 1" in first
    assert "FAILED: ValueError" not in console.render([trial])  # the table still says FAILED, the error once


def test_trial_namer_gives_tune_the_mlflow_run_name() -> None:
    trial = SimpleNamespace(config={"trial_number": 3, "seed": 5, "alignment_weight": 0.5})
    assert TrialNamer("alignment", "confirm")(trial) == trial_run_name("alignment", "confirm", trial.config)
    assert TrialNamer("alignment", "confirm")(trial).startswith("alignment-confirm-003-seed5")


@pytest.mark.slow
def test_study_console_shows_the_trials_progress_and_errors_and_not_ray_noise(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_DEDUP_LOGS": "0"}  # every line a trial prints, undeduplicated
    env.pop("RAY_AIR_NEW_OUTPUT", None)  # the study's own default decides the output engine
    done = subprocess.run([sys.executable, str(RUN), "--space", "translator", "--smoke", "--name", "console",
                           "--num-samples", "2", "--no-confirm", "--set", "learning_rate=1e6"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    out, err = done.stdout, done.stderr

    client = MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("console")
    names = sorted(r.info.run_name for r in client.search_runs([experiment.experiment_id])
                   if r.data.tags.get("mpt_study.role") == "trial")
    assert names == ["translator-000 vanilla", "translator-001 paper_default"]
    tables = out.split("study console (search): ")[1:]
    assert len(tables) >= 3  # pending, running, ended: the console speaks while the study runs
    for name in names:  # the console's trial names are MLflow's
        assert any(line.startswith(name + " ") for table in tables for line in table.splitlines())
    assert any(" running " in table for table in tables)
    final = tables[-1]
    assert final.startswith("2/2 trials done (1 failed) | elapsed ") and "finished" in final.splitlines()[0]
    vanilla = next(line for line in final.splitlines() if line.startswith("translator-000 vanilla "))
    fields = vanilla.split()
    assert fields[2:4] == ["done", "2/2"] and all(re.fullmatch(r"[01]\.\d{3}", f) for f in fields[4:6]), vanilla
    assert re.search(r"translator-001 paper_default +FAILED", final)
    assert re.search(r"elapsed \d+:\d\d, about \d+:\d\d left", out)  # the estimate, once an epoch was trained
    assert "translator-001 paper_default FAILED: mpt.training.NonFiniteLossError: loss is nan" in out

    # the failure in full, naming the trial as MLflow does
    assert "Trial task failed for trial translator-001 paper_default" in err
    assert "Traceback (most recent call last)" in err and "raise NonFiniteLossError(" in err
    # what the console leaves out: per-epoch checkpoint lines, Tune's hash names and its default tables
    console = out + err
    assert "Checkpoint successfully created" not in console
    assert not re.search(r"\btrain_mpt_[0-9a-f]{8}\b(?!/)", console)  # (a trial folder in a path may say it)
    assert "Trial status:" not in console and "╭" not in console and "Result for " not in console
