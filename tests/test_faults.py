"""Fault injection: a study survives a killed driver and a NaN loss, loses no MLflow metric under concurrent
writers, logs no secret, and never unpickles a checkpoint (a killed trial:
tests/test_faults_trials.py; a lost node: tests/test_cluster_jobs.py).

The studies are `--smoke` studies in temporary working directories. The faults come from the test hooks in
`tests/hooks/` (installed in the trial processes by its `sitecustomize.py`, driven by environment
variables the trials inherit; the product has no fault code) and from signals; `MPT_EPOCH_LOG` makes every
trial record each epoch it actually trains.
"""

from __future__ import annotations

import ast
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fault_records import (
    epochs_of,
    epochs_trained,
    has_finished,
    kill_process_group,
    metric_history,
    mlflow_client,
    optuna_trials,
    run_study,
    saved_as_finished,
    study_runs,
    trial_folders,
    trial_rows,
)
from tests.smoke_studies import REPO_ROOT, RUN, SMOKE_EPOCHS, STUDY_TIMEOUT_S, study_env

# what every completed trial logs at every epoch (the target languages' dev only at the epochs English dev selects)
EPOCH_METRICS = ("loss", "ce_loss", "kl_loss", "objective", "dev_acc_en", "selected_dev_acc_de")


# --- 1. the driver is killed mid-study, then resumed ----------------------------------------------------

KILLED = "killed"
KILLED_PLANNED = 6


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory) -> dict:
    """A study whose driver is SIGKILLed once 2 trials finished while others ran and one had failed in every
    try (MPT_FAULT_FAIL_AT_EPOCH), then resumed without that fault, so the failed trial trains.

    `--cpus-per-trial 0.5` runs 4 trials at once on 2 cores: the concurrency test reads the same study."""
    cwd = tmp_path_factory.mktemp("killed")
    log = cwd / "epochs.jsonl"
    env = study_env(MPT_EPOCH_LOG=str(log))
    failing = {
        **env,
        "MPT_FAULT_FAIL_AT_EPOCH": "1",
        "MPT_FAULT_MARKER": str(cwd / "failed-trial.json"),
        # the first three trials to report epoch 1 wait there for each other (tests/hooks): three train at the same
        # time however slowly each process starts on a loaded machine (a clean-clone CI run saw only two at once)
        "MPT_FAULT_MEET_TRIALS": "3",
        "MPT_FAULT_MEET_DIR": str(cwd / "met"),
    }
    # 4 layers instead of the smoke study's 1: a smoke trial trains for about a second in bf16, over before Ray
    # has started the next trial processes, and the concurrency test needs trials that train at the same time
    args = [
        "--space",
        "alignment",
        "--smoke",
        "--name",
        KILLED,
        "--num-samples",
        str(KILLED_PLANNED),
        "--cpus-per-trial",
        "0.5",
        "--no-confirm",
        "--set",
        "num_layers=4",
    ]
    experiment = cwd / "results" / "ray" / KILLED
    with open(cwd / "first-run.log", "w") as output:
        driver = subprocess.Popen(
            [sys.executable, str(RUN), *args],
            cwd=cwd,
            env=failing,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + STUDY_TIMEOUT_S
            while driver.poll() is None and time.monotonic() < deadline:
                folders = trial_folders(experiment)
                finished = [i for i, folder in folders.items() if has_finished(folder)]
                failed = saved_as_finished(experiment, "ERROR")
                if len(finished) >= 2 and failed and len(folders) > len(finished) + len(failed):
                    break
                time.sleep(0.2)
            assert driver.poll() is None, "the study ended before its driver could be killed"
            driver.send_signal(signal.SIGKILL)
            driver.wait(timeout=60)
        finally:
            kill_process_group(driver.pid)
    time.sleep(2)  # let the trial processes of the dead Ray instance die
    before = {
        "finished": {i for i, folder in trial_folders(experiment).items() if has_finished(folder)},
        "saved_finished": saved_as_finished(experiment),
        "failed": saved_as_finished(experiment, "ERROR"),
        "started": set(trial_folders(experiment)),
        "epochs": epochs_trained(log),
        "optuna": optuna_trials(experiment),
        "runs": {r.data.tags["ray.trial_id"]: r for r in study_runs(cwd, KILLED)[1]},
    }
    before["histories"] = {
        trial_id: {key: metric_history(cwd, run.info.run_id, key) for key in EPOCH_METRICS}
        for trial_id, run in before["runs"].items()
        if run.info.status == "FINISHED"
    }
    resumed = run_study([*args, "--resume"], cwd, env)  # without the fault: the failed trial trains
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    return {"cwd": cwd, "log": log, "experiment": experiment, "before": before, "resumed": resumed}


@pytest.mark.slow
def test_killed_driver_resumes_to_exactly_the_planned_trials(killed_and_resumed) -> None:
    cwd, before = killed_and_resumed["cwd"], killed_and_resumed["before"]
    assert 2 <= len(before["finished"]) < KILLED_PLANNED  # killed mid-study: some done, some running
    rows = trial_rows(cwd, KILLED)
    assert len(rows) == KILLED_PLANNED and all(r["status"] == "COMPLETE" for r in rows)
    assert sorted(r["trial_number"] for r in rows) == list(range(KILLED_PLANNED))  # no trial lost or doubled
    assert sorted(r["reference"] for r in rows if r["reference"]) == ["paper_default", "probe", "vanilla"]
    assert (cwd / "results" / KILLED / "report.md").is_file()


@pytest.mark.slow
def test_killed_driver_does_not_train_finished_trials_again(killed_and_resumed) -> None:
    before = killed_and_resumed["before"]
    records = epochs_trained(killed_and_resumed["log"])
    after_kill = records[len(before["epochs"]) :]
    assert before["saved_finished"] and before["saved_finished"] <= before["finished"]
    for trial_id in before["saved_finished"]:
        assert epochs_of(records, trial_id) == list(range(1, SMOKE_EPOCHS + 1))
        assert epochs_of(after_kill, trial_id) == []
    trial_ids = {row["trial_id"] for row in trial_rows(killed_and_resumed["cwd"], KILLED)}
    # not yet saved as finished at the kill (running, or finished since Tune's last save of its state)
    running = before["started"] - before["saved_finished"]
    # a trial started after Tune's last save of its state is unknown to the resumed study, which runs
    # that searcher suggestion again as a new trial: only a trial running at the kill can be lost
    assert {r["trial_id"] for r in records} - trial_ids <= running
    for trial_id in trial_ids:  # every trial trained each epoch; a running one at most redid its current one
        assert set(epochs_of(records, trial_id)) == set(range(1, SMOKE_EPOCHS + 1))
    assert len(records) <= KILLED_PLANNED * SMOKE_EPOCHS + len(running)


@pytest.mark.slow
def test_killed_driver_keeps_the_optuna_history(killed_and_resumed) -> None:
    before = killed_and_resumed["before"]["optuna"]
    after = optuna_trials(killed_and_resumed["experiment"])
    rows = {row["trial_id"]: row for row in trial_rows(killed_and_resumed["cwd"], KILLED)}
    (failed,) = killed_and_resumed["before"]["failed"]
    # failed in every try, but the search had not ended: not FAIL, so the resume's retry ends COMPLETE below
    assert before[rows[failed]["trial_number"]][0] == "RUNNING"
    # result.json has a trial's last result before Tune completes the trial and saves the searcher
    finished_before = {number: trial for number, trial in before.items() if trial[0] == "COMPLETE"}
    assert len(finished_before) >= 1
    for number, trial in finished_before.items():
        assert after[number] == trial
    assert sorted(after) == list(range(KILLED_PLANNED))  # no Optuna trial lost or duplicated by the kill
    assert all(state == "COMPLETE" for state, _, _ in after.values())
    for row in trial_rows(killed_and_resumed["cwd"], KILLED):  # each trial ran its Optuna trial's values
        recorded = dict(after[row["trial_number"]][1])
        ran = {k: row["params"][k] for k in recorded}
        if row["reference"] == "probe":  # but the probe's prompt length 0, which the space (4..64) cannot record:
            # Optuna holds the base config's 4 there
            assert (ran.pop("prompt_length"), recorded.pop("prompt_length")) == (0, 4)
        assert ran == recorded


@pytest.mark.slow
def test_optuna_trials_name_their_role_seed_dev_accuracy_and_mlflow_run(killed_and_resumed) -> None:
    """What optuna-dashboard shows of each trial, read through Optuna's API, after the kill and the resume."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    cwd = killed_and_resumed["cwd"]
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(cwd / "results" / KILLED / "optuna.log")))
    trials = optuna.load_study(study_name=KILLED, storage=storage).trials
    seed = json.loads((cwd / "results" / KILLED / "study.json").read_text())["base_config"]["seed"]
    runs = {run.data.tags["ray.trial_id"]: run for run in study_runs(cwd, KILLED)[1]}
    for row in trial_rows(cwd, KILLED):
        attrs, run = trials[row["trial_number"]].user_attrs, runs[row["trial_id"]]
        assert (attrs["role"], attrs["seed"], attrs["ray_trial_id"]) == (
            row["reference"] or "search",
            seed,
            row["trial_id"],
        )
        assert attrs["mlflow_run_id"] == run.info.run_id
        assert attrs["mlflow_run_url"] == (
            f"http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
        )
        dev = {key: value for key, value in attrs.items() if key.startswith("selected_dev_acc_")}
        assert dev == {f"selected_dev_acc_{lang}": acc for lang, acc in row["dev_accuracy"].items()} and dev


@pytest.mark.slow
def test_killed_driver_leaves_one_mlflow_run_per_trial_with_its_whole_history(killed_and_resumed) -> None:
    cwd, before = killed_and_resumed["cwd"], killed_and_resumed["before"]
    parents, children = study_runs(cwd, KILLED)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    trial_ids = [c.data.tags["ray.trial_id"] for c in children]
    assert len(children) == KILLED_PLANNED and len(set(trial_ids)) == KILLED_PLANNED  # no duplicate runs
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.info.run_id == before["runs"].get(child.data.tags["ray.trial_id"], child).info.run_id
        for key in EPOCH_METRICS:
            steps = [step for step, _ in metric_history(cwd, child.info.run_id, key)]
            assert steps == list(range(1, SMOKE_EPOCHS + 1)), (key, steps)
    for trial_id, histories in before["histories"].items():  # what was logged before the kill stays as it was
        run_id = before["runs"][trial_id].info.run_id
        assert {key: metric_history(cwd, run_id, key) for key in EPOCH_METRICS} == histories


# --- 6. concurrency on the SQLite MLflow store ----------------------------------------------------------


@pytest.mark.slow
def test_concurrent_trials_lose_no_metric_and_never_lock_the_database(killed_and_resumed) -> None:
    cwd = killed_and_resumed["cwd"]
    records = epochs_trained(killed_and_resumed["log"])
    spans: dict[str, tuple[float, float]] = {}  # trial id -> (start of its first epoch, end of its last)
    for record in records:
        first, last = spans.get(record["trial_id"], (record["started"], record["time"]))
        spans[record["trial_id"]] = (min(first, record["started"]), max(last, record["time"]))
    at_once = max(sum(first <= start <= last for first, last in spans.values()) for start, _ in spans.values())
    assert at_once >= 3, f"the trials did not train at the same time: {spans}"
    output = (
        (cwd / "first-run.log").read_text()
        + killed_and_resumed["resumed"].stdout
        + killed_and_resumed["resumed"].stderr
    )
    assert "database is locked" not in output and "OperationalError" not in output
    _, children = study_runs(cwd, KILLED)
    points = sum(len(metric_history(cwd, c.info.run_id, key)) for c in children for key in EPOCH_METRICS)
    assert points == KILLED_PLANNED * SMOKE_EPOCHS * len(EPOCH_METRICS)


NEIGHBOUR = """
import sys, time
from pathlib import Path
from mlflow import MlflowClient
from mlflow.entities import Metric
client = MlflowClient(sys.argv[1])
run = client.create_run(client.create_experiment("neighbour"), run_name="neighbour")
step, stop = 0, Path(sys.argv[2])
while not stop.exists():
    step += 1
    client.log_batch(run.info.run_id, metrics=[Metric("points", float(step), int(time.time() * 1000), step)],
                     synchronous=True)
    time.sleep(0.05)  # at most 20 writes a second: a writer beside the study, not a busy loop on a 2-core machine
client.set_terminated(run.info.run_id)
print(step)
"""


# --- 4. a NaN loss, with another process writing to the same MLflow store --------------------------------

NAN = "nan"


@pytest.fixture(scope="module")
def nan_study(tmp_path_factory) -> dict:
    """The translator space with an absurd learning rate, 1e6: a trial with a translator (depth >= 1)
    diverges to NaN in its first epoch, one without (the vanilla baseline) trains on. Meanwhile another
    process writes to the same SQLite MLflow store; the hub repository URI carries credentials."""
    cwd = tmp_path_factory.mktemp("nan")
    (cwd / "results").mkdir()
    tracking_uri = f"sqlite:///{cwd / 'results' / 'mlflow.db'}"
    mlflow_client(cwd).search_experiments()  # create the database before two processes write to it
    stop = cwd / "stop-neighbour"
    neighbour = subprocess.Popen(
        [sys.executable, "-c", NEIGHBOUR, tracking_uri, str(stop)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        done = run_study(
            [
                "--space",
                "translator",
                "--smoke",
                "--name",
                NAN,
                "--num-samples",
                "3",
                "--no-confirm",
                "--max-concurrent",  # one trial process: what this study checks needs no trials at once
                "1",
                "--set",
                "learning_rate=1e6",
                "--set",
                f"xnli_repo={SECRET_URI}",
            ],
            cwd,
            study_env(HF_TOKEN=SECRET_TOKEN, MLFLOW_TRACKING_PASSWORD=SECRET_TOKEN),
        )
    finally:
        stop.touch()
        out, err = neighbour.communicate(timeout=120)
    assert done.returncode == 0, done.stderr[-4000:]
    assert neighbour.returncode == 0, err[-3000:]
    return {"cwd": cwd, "done": done, "neighbour_points": int(out.strip()), "neighbour_err": err}


SECRET_TOKEN = "hunter2-not-for-mlflow"
SECRET_URI = f"https://analyst:{SECRET_TOKEN}@hub.example.org/xnli?access_token={SECRET_TOKEN}"


@pytest.mark.slow
def test_nan_trial_fails_naming_epoch_and_step_and_the_others_finish(nan_study) -> None:
    cwd = nan_study["cwd"]
    rows = {r["trial_number"]: r for r in trial_rows(cwd, NAN)}
    assert len(rows) == 3
    vanilla = next(r for r in rows.values() if r["reference"] == "vanilla")
    paper = next(r for r in rows.values() if r["reference"] == "paper_default")
    assert vanilla["status"] == "COMPLETE" and vanilla["dev_accuracy"]
    assert paper["status"] == "FAILED"
    for row in rows.values():
        if row["status"] == "FAILED":
            assert re.search(
                r"NonFiniteLossError: loss is (nan|inf|-inf) .* at epoch \d+, step \d+: lower "
                r"learning_rate",
                row["error"],
            ), row["error"]
        else:
            assert row["status"] == "COMPLETE" and row["params"]["translator_depth"] == 0
    optuna_states = {number: state for number, (state, _, _) in optuna_trials(cwd / "results" / "ray" / NAN).items()}
    assert optuna_states == {n: ("FAIL" if r["status"] == "FAILED" else "COMPLETE") for n, r in rows.items()}
    _, children = study_runs(cwd, NAN)
    by_number = {int(c.data.tags["trial_number"]): c for c in children}
    assert by_number[paper["trial_number"]].info.status == "FAILED"
    assert re.search(r"at epoch \d+, step \d+", by_number[paper["trial_number"]].data.tags["error"])
    report = (cwd / "results" / NAN / "report.md").read_text()
    failed_line = next(line for line in report.splitlines() if line.startswith(f"| {paper['trial_number']} |"))
    assert re.search(
        r"\| failed: [\w.]*NonFiniteLossError: loss is (nan|inf|-inf) .* at epoch \d+, step \d+", failed_line
    ), failed_line


@pytest.mark.slow
def test_another_writer_on_the_sqlite_store_loses_nothing(nan_study) -> None:
    cwd = nan_study["cwd"]
    assert "database is locked" not in nan_study["done"].stderr + nan_study["neighbour_err"]
    client = mlflow_client(cwd)
    neighbour = client.search_runs([client.get_experiment_by_name("neighbour").experiment_id])[0]
    points = nan_study["neighbour_points"]
    assert points > 10  # it did write while the study ran
    assert metric_history(cwd, neighbour.info.run_id, "points") == [(s, float(s)) for s in range(1, points + 1)]
    _, children = study_runs(cwd, NAN)
    for child in children:
        if child.info.status == "FINISHED":
            for key in EPOCH_METRICS:
                assert [s for s, _ in metric_history(cwd, child.info.run_id, key)] == [1, 2], key


# --- 7. safety ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_no_secret_reaches_mlflow_params_or_tags(nan_study) -> None:
    cwd = nan_study["cwd"]
    parents, children = study_runs(cwd, NAN)
    assert parents[0].data.params["base.xnli_repo"].startswith("https://***@hub.example.org/xnli")
    for run in [*parents, *children]:
        for key, value in {**run.data.params, **run.data.tags}.items():
            assert SECRET_TOKEN not in value, f"secret in {key} of {run.info.run_name}"
    assert SECRET_TOKEN not in nan_study["done"].stdout


def test_redaction_removes_credentials_from_uris() -> None:
    from study.uris import redact

    assert redact("https://user:tok@host:5000/path") == "https://***@host:5000/path"
    assert (
        redact("s3://bucket/x?X-Amz-Signature=abc&region=eu&token=t1")
        == "s3://bucket/x?X-Amz-Signature=***&region=eu&token=***"
    )
    assert redact("results/ray") == "results/ray" and redact("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


class _RunsCode:
    """Unpickling this object creates a file: what a malicious checkpoint would do."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_checkpoints_are_read_without_running_pickled_code(tmp_path: Path) -> None:
    import torch

    from mpt.training import CheckpointError, Trainer
    from study.preflight import damaged_checkpoints

    proof = tmp_path / "code-ran"
    trial = tmp_path / "experiment" / "train_mpt_0000abcd" / "checkpoint_000000"
    trial.mkdir(parents=True)
    with open(trial / "state.pt", "wb") as handle:  # a torch-format file whose payload is a pickled call
        torch.save({"format": 1, "epoch": 1, "model": {}, "optimizer": _RunsCode(str(proof))}, handle)
    assert not proof.exists()
    with pytest.raises(CheckpointError, match="corrupt or not an mpt-study checkpoint"):
        # the trainable's restore (Trainer.load reads the file before it touches the trainer)
        Trainer.load(object.__new__(Trainer), trial / "state.pt")
    # what `--resume` checks first
    assert [path for path, _ in damaged_checkpoints(str(tmp_path / "experiment"))] == [trial / "state.pt"]
    assert not proof.exists()
    torch.load(trial / "state.pt", weights_only=False)  # the file does run code when fully unpickled
    assert proof.exists()


def test_every_torch_load_refuses_pickled_objects() -> None:
    """Checkpoints and weights: `torch.load(..., weights_only=True)` or safetensors, nowhere `pickle`."""
    calls = []
    for folder in ("mpt", "trainable", "study"):
        for source in (REPO_ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(source.read_text(), str(source))):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "load"
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "torch"
                ):
                    keywords = {k.arg: k.value for k in node.keywords}
                    safe = isinstance(keywords.get("weights_only"), ast.Constant) and keywords["weights_only"].value
                    calls.append((f"{source.relative_to(REPO_ROOT)}:{node.lineno}", safe))
    assert calls, "no torch.load found: the check looks in the wrong place"
    assert [where for where, safe in calls if not safe] == []


@pytest.mark.slow
def test_mlflow_ui_commands_bind_to_localhost(nan_study) -> None:
    """The documented commands and the one a finished study prints: the UI is not opened to the network."""
    docs = [REPO_ROOT / "README.md", REPO_ROOT / "results" / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
    commands = [
        line
        for doc in docs
        for line in doc.read_text().replace("\\\n", " ").splitlines()  # continued lines: one command
        if re.search(r"mlflow (ui|server)\b", line)
    ]
    printed = [line for line in nan_study["done"].stdout.splitlines() if "MLflow:" in line]
    assert commands and len(printed) == 1
    assert printed[0].endswith(f"MLflow: python study/ui.py {NAN}")  # which binds to 127.0.0.1 (test_ui)
    for line in commands:
        assert re.search(r"--host 127\.0\.0\.1(\s|$)", line) and "0.0.0.0" not in line, line


def test_the_product_has_no_fault_injection_code():
    """The hooks live in tests/hooks/ only: nothing the study runs reads a fault variable."""
    for folder in ("mpt", "trainable", "study", "search_spaces"):
        for source in (REPO_ROOT / folder).rglob("*.py"):
            text = source.read_text(encoding="utf-8")
            assert "MPT_FAULT" not in text and "MPT_EPOCH_LOG" not in text, source
