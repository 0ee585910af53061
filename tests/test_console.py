"""The study's console (study.console): what it shows while a study runs, on fake trials. (A real study's
console: tests/test_install.py.)"""

from __future__ import annotations

from types import SimpleNamespace

from study.console import StudyConsole, TrialNamer
from study.tracking import trial_run_name


def fake_trial(
    trial_id: str, number: int, status: str, epoch: int = 0, objective: float | None = None, **config
) -> SimpleNamespace:
    result = {} if not epoch else {"epoch": epoch, "objective": objective, "dev_acc_en": 0.5, "time_total_s": 65.0}
    return SimpleNamespace(
        trial_id=trial_id, status=status, config={"trial_number": number, **config}, last_result=result, error_file=None
    )


def test_table_names_trials_as_mlflow_and_shows_epochs_objective_and_progress() -> None:
    console = StudyConsole("demo", "alignment", "search", planned=4, epochs=6, source_language="en")
    console.setup(start_time=1000.0)
    trials = [
        fake_trial("a", 0, "TERMINATED", 6, 0.36, reference="vanilla", alignment_weight=0.0),
        fake_trial("b", 1, "RUNNING", 3, 0.41, alignment_weight=0.92, kl_temperature=1.5),
        fake_trial("c", 2, "PENDING", alignment_weight=0.1),
    ]
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


# The console of a real study (a trial that finishes, one that fails, no Ray noise): tests/test_install.py, which
# runs that study with the installed tool.
