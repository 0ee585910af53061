"""Fault injection: a study survives a killed driver, a killed trial process, a lost node and a NaN loss,
loses no MLflow metric under concurrent writers, logs no secret, and never unpickles a checkpoint.

The studies are `--smoke` studies in temporary working directories. The faults come from the test hooks in
`tests/hooks/` (installed in the trial processes by its `sitecustomize.py`, driven by environment
variables the trials inherit; the product has no fault code) and from signals and
`ray.cluster_utils.Cluster`; `MPT_EPOCH_LOG` makes every trial record each epoch it actually trains.
"""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import smoke_studies
from tests.smoke_studies import HOOKS as FAULT_HOOKS
from tests.smoke_studies import REPO_ROOT, RUN, SMOKE_EPOCHS, STUDY_TIMEOUT_S, study_env

# what every completed trial logs at every epoch (the target languages' dev only at the epochs English dev selects)
EPOCH_METRICS = ("loss", "ce_loss", "kl_loss", "objective", "dev_acc_en", "selected_dev_acc_de")


# --- helpers --------------------------------------------------------------------------------------------

def run_study(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(RUN), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=STUDY_TIMEOUT_S)


def epochs_trained(log: Path) -> list[dict]:
    """The MPT_EPOCH_LOG records: one per epoch a trial actually trained."""
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def epochs_of(records: list[dict], trial_id: str) -> list[int]:
    return [r["epoch"] for r in records if r["trial_id"] == trial_id]


def trial_folders(experiment: Path) -> dict[str, Path]:
    """Ray trial id -> trial folder (named `train_mpt_<id>` by study.search.trial_dirname)."""
    return {folder.name.rsplit("_", 1)[1]: folder for folder in experiment.glob("train_mpt_*") if folder.is_dir()}


def has_finished(folder: Path) -> bool:
    """Whether the trial's result.json holds its final report (that of its last planned epoch)."""
    from trainable.metrics import TrialReport

    results = folder / "result.json"
    lines = results.read_text().splitlines() if results.exists() else []
    return bool(lines) and TrialReport.from_result(json.loads(lines[-1])).trained_all_epochs


def saved_as_finished(experiment: Path, status: str = "TERMINATED") -> set[str]:
    """The trials Tune's last saved experiment state records as finished (TERMINATED; or as `status`, e.g.
    ERROR): what a resume knows.

    A trial can write its final result.json and be killed with the driver before Tune saves its state; the
    resume then continues it from the checkpoint the saved state names, and it trains its last epoch again."""
    states = sorted(experiment.glob("experiment_state-*.json"))
    if not states:
        return set()
    try:
        trials = [json.loads(data) for data, _ in json.loads(states[-1].read_text())["trial_data"]]
    except ValueError:  # read while Tune rewrites it (polling a running study): nothing known yet
        return set()
    return {t["trial_id"] for t in trials if t["status"] == status}


def optuna_trials(experiment: Path) -> dict[int, tuple[str, dict, float | None]]:
    """Optuna number -> (state, params, value), from the study's Optuna storage (results/NAME/optuna.log) as
    `optuna.load_study` reads it."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(experiment.parent.parent / experiment.name
                                                                    / "optuna.log")))
    study = optuna.load_study(study_name=experiment.name, storage=storage)
    return {t.number: (t.state.name, t.params, t.value) for t in study.get_trials(deepcopy=False)}


def mlflow_client(cwd: Path):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{cwd / 'results' / 'mlflow.db'}")


def study_runs(cwd: Path, experiment: str) -> tuple[list, list]:
    """(parent runs, trial runs) of a study's MLflow experiment."""
    return smoke_studies.study_runs(f"sqlite:///{cwd / 'results' / 'mlflow.db'}", experiment)


def metric_history(cwd: Path, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in mlflow_client(cwd).get_metric_history(run_id, key))


def trial_rows(cwd: Path, name: str) -> list[dict]:
    return json.loads((cwd / "results" / name / "trials.json").read_text())


def kill_process_group(pid: int) -> None:
    """SIGKILL what is left of a process group we started (Ray helpers a killed driver leaves behind)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


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
    failing = {**env, "MPT_FAULT_FAIL_AT_EPOCH": "1", "MPT_FAULT_MARKER": str(cwd / "failed-trial.json")}
    # 4 layers instead of the smoke study's 1: a smoke trial trains for about a second in bf16, over before Ray
    # has started the next trial processes, and the concurrency test needs trials that train at the same time
    args = ["--space", "alignment", "--smoke", "--name", KILLED, "--num-samples", str(KILLED_PLANNED),
            "--cpus-per-trial", "0.5", "--no-confirm", "--set", "num_layers=4"]
    experiment = cwd / "results" / "ray" / KILLED
    with open(cwd / "first-run.log", "w") as output:
        driver = subprocess.Popen([sys.executable, str(RUN), *args], cwd=cwd, env=failing, stdout=output,
                                  stderr=subprocess.STDOUT, start_new_session=True)
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
    before["histories"] = {trial_id: {key: metric_history(cwd, run.info.run_id, key) for key in EPOCH_METRICS}
                           for trial_id, run in before["runs"].items() if run.info.status == "FINISHED"}
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
    after_kill = records[len(before["epochs"]):]
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
        assert (attrs["role"], attrs["seed"], attrs["ray_trial_id"]) == (row["reference"] or "search", seed,
                                                                         row["trial_id"])
        assert attrs["mlflow_run_id"] == run.info.run_id
        assert attrs["mlflow_run_url"] == (f"http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs/"
                                           f"{run.info.run_id}")
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
    output = (cwd / "first-run.log").read_text() + killed_and_resumed["resumed"].stdout \
        + killed_and_resumed["resumed"].stderr
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
    time.sleep(0.02)
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
    neighbour = subprocess.Popen([sys.executable, "-c", NEIGHBOUR, tracking_uri, str(stop)], cwd=cwd,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        done = run_study(["--space", "translator", "--smoke", "--name", NAN, "--num-samples", "3", "--no-confirm",
                          "--set", "learning_rate=1e6", "--set", f"xnli_repo={SECRET_URI}"], cwd,
                         study_env(HF_TOKEN=SECRET_TOKEN, MLFLOW_TRACKING_PASSWORD=SECRET_TOKEN))
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
            assert re.search(r"NonFiniteLossError: loss is (nan|inf|-inf) .* at epoch \d+, step \d+: lower "
                             r"learning_rate", row["error"]), row["error"]
        else:
            assert row["status"] == "COMPLETE" and row["params"]["translator_depth"] == 0
    optuna_states = {number: state for number, (state, _, _) in
                     optuna_trials(cwd / "results" / "ray" / NAN).items()}
    assert optuna_states == {n: ("FAIL" if r["status"] == "FAILED" else "COMPLETE") for n, r in rows.items()}
    _, children = study_runs(cwd, NAN)
    by_number = {int(c.data.tags["trial_number"]): c for c in children}
    assert by_number[paper["trial_number"]].info.status == "FAILED"
    assert re.search(r"at epoch \d+, step \d+", by_number[paper["trial_number"]].data.tags["error"])
    report = (cwd / "results" / NAN / "report.md").read_text()
    failed_line = next(line for line in report.splitlines() if line.startswith(f"| {paper['trial_number']} |"))
    assert re.search(r"\| failed: [\w.]*NonFiniteLossError: loss is (nan|inf|-inf) .* at epoch \d+, step \d+",
                     failed_line), failed_line


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
    assert redact("s3://bucket/x?X-Amz-Signature=abc&region=eu&token=t1") == \
        "s3://bucket/x?X-Amz-Signature=***&region=eu&token=***"
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
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                        and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
                    keywords = {k.arg: k.value for k in node.keywords}
                    safe = isinstance(keywords.get("weights_only"), ast.Constant) and keywords["weights_only"].value
                    calls.append((f"{source.relative_to(REPO_ROOT)}:{node.lineno}", safe))
    assert calls, "no torch.load found: the check looks in the wrong place"
    assert [where for where, safe in calls if not safe] == []


@pytest.mark.slow
def test_mlflow_ui_commands_bind_to_localhost(nan_study) -> None:
    """The documented commands and the one a finished study prints: the UI is not opened to the network."""
    docs = [REPO_ROOT / "README.md", REPO_ROOT / "results" / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
    commands = [line for doc in docs
                for line in doc.read_text().replace("\\\n", " ").splitlines()  # continued lines: one command
                if re.search(r"mlflow (ui|server)\b", line)]
    printed = [line for line in nan_study["done"].stdout.splitlines() if "MLflow:" in line]
    assert commands and len(printed) == 1
    assert printed[0].endswith(f"MLflow: python study/ui.py {NAN}")  # which binds to 127.0.0.1 (test_ui)
    for line in commands:
        assert re.search(r"--host 127\.0\.0\.1(\s|$)", line) and "0.0.0.0" not in line, line


# --- 2. a trial process is killed mid-training ----------------------------------------------------------

class RecordingTune:
    """Stands in for `ray.tune` inside the trainable: restores from `checkpoint`, keeps every report."""

    def __init__(self, checkpoint=None) -> None:
        from ray import tune

        self.Checkpoint, self.checkpoint, self.reports = tune.Checkpoint, checkpoint, []

    def get_checkpoint(self):
        return self.checkpoint

    def report(self, metrics: dict, *, checkpoint=None) -> None:
        self.reports.append(dict(metrics))


def test_trial_whose_damaged_checkpoint_was_deleted_trains_from_its_first_epoch(tmp_path: Path,
                                                                                  monkeypatch) -> None:
    """What `--resume` advises for a damaged checkpoint: delete its state.pt; the trial then starts over."""
    from mpt.config import MPTConfig
    from mpt.training import load_run_data
    from study.settings import SMOKE_BASE, STUDY_BASE_DEFAULTS
    from trainable import mpt_trial

    base = MPTConfig.from_dict({**STUDY_BASE_DEFAULTS, **SMOKE_BASE, "dev_all_languages": True, "num_threads": 1})
    data = load_run_data(base)
    params = {"alignment_weight": 0.5, "trial_number": 3, "reference": None}
    log = tmp_path / "epochs.jsonl"
    monkeypatch.setenv("MPT_EPOCH_LOG", str(log))
    monkeypatch.syspath_prepend(str(FAULT_HOOKS))
    import mpt_faults

    from mpt.training import Trainer

    monkeypatch.setattr(Trainer, "train_epoch", mpt_faults.wrap_train_epoch(Trainer.train_epoch))
    emptied = tmp_path / "checkpoint_000000"
    emptied.mkdir()
    restarted = RecordingTune(RecordingTune().Checkpoint.from_directory(str(emptied)))
    monkeypatch.setattr(mpt_trial, "tune", restarted)
    mpt_trial.train_mpt(params, base_config=base, objective="dev_avg", data=data)
    fresh = RecordingTune()
    monkeypatch.setattr(mpt_trial, "tune", fresh)
    mpt_trial.train_mpt(params, base_config=base, objective="dev_avg", data=data)
    assert [r["epoch"] for r in restarted.reports] == [1, 2]
    assert [r["epoch"] for r in epochs_trained(log)] == [1, 2, 1, 2]
    drop = ("epoch_seconds",)  # wall-clock time, the one value that differs between two runs
    assert [{k: v for k, v in r.items() if k not in drop} for r in restarted.reports] == \
        [{k: v for k, v in r.items() if k not in drop} for r in fresh.reports]

CRASH = "crash"
CRASH_EPOCHS = 3
KILL_AT_EPOCH = 2


@pytest.mark.slow
def test_killed_trial_continues_from_its_checkpoint_bit_identically(tmp_path: Path) -> None:
    import torch

    from mpt.backbones import load_backbone
    from mpt.training import Trainer
    from study.settings import StudySettings
    from study.tuner import load_study_data
    from trainable.spec import trial_config

    log, marker = tmp_path / "epochs.jsonl", tmp_path / "fault-fired"
    done = run_study(["--space", "alignment", "--smoke", "--name", CRASH, "--num-samples", "2", "--no-confirm",
                      "--test-in-search", "--set", f"epochs={CRASH_EPOCHS}"], tmp_path,
                     study_env(MPT_EPOCH_LOG=str(log), MPT_FAULT_KILL_AT_EPOCH=str(KILL_AT_EPOCH),
                               MPT_FAULT_MARKER=str(marker)))
    assert done.returncode == 0, done.stderr[-4000:]
    killed = json.loads(marker.read_text())
    records = epochs_trained(log)
    # epoch 2 was trained, lost with the process, and trained again from the epoch-1 checkpoint
    assert epochs_of(records, killed["trial_id"]) == [1, 2, 2, 3]
    pids = [r["pid"] for r in records if r["trial_id"] == killed["trial_id"]]
    assert pids[:2] == [killed["pid"]] * 2 and killed["pid"] not in pids[2:]
    rows = trial_rows(tmp_path, CRASH)
    assert [r["status"] for r in rows] == ["COMPLETE", "COMPLETE"]

    # the same trials without a fault, in this process: identical losses, accuracies and weights
    settings = StudySettings.from_json((tmp_path / "results" / CRASH / "study.json").read_text())
    base = settings.trial_base_config(num_threads=1)  # what make_trainable passes with --cpus-per-trial 1
    data = load_study_data(settings)
    _, children = study_runs(tmp_path, CRASH)
    runs = {c.data.tags["ray.trial_id"]: c for c in children}
    threads = torch.get_num_threads()
    try:
        for row in rows:
            config = trial_config(base, row["params"])
            trainer = Trainer(config, backbone=load_backbone(config.backbone, config.num_layers,
                                                             want_mlm=config.wants_mlm_head), data=data)
            result = trainer.run()
            assert row["test_accuracy"] == result.accuracy
            run_id = runs[row["trial_id"]].info.run_id
            assert metric_history(tmp_path, run_id, "loss") == [(r.epoch, r.loss) for r in result.history]
            [state_file] = (tmp_path / "results" / "ray" / CRASH / f"train_mpt_{row['trial_id']}").glob(
                "checkpoint_*/state.pt")
            saved = torch.load(state_file, weights_only=True)
            assert saved["epoch"] == CRASH_EPOCHS
            for part in ("model", "best_state"):
                expected = trainer.state_dict()[part]
                assert saved[part].keys() == expected.keys()
                assert all(torch.equal(saved[part][k], expected[k]) for k in expected), (row["trial_id"], part)
    finally:
        torch.set_num_threads(threads)


# --- 3. a node of a multi-node cluster is lost ---------------------------------------------------------

NODES = "nodes"


@pytest.mark.slow
def test_study_survives_the_loss_of_a_node(tmp_path: Path, monkeypatch) -> None:
    from ray.cluster_utils import Cluster

    log, marker = tmp_path / "epochs.jsonl", tmp_path / "fault-fired"
    # the node processes (and so the trials) inherit these; the first trial to report epoch 1 then hangs
    # there, so that its node can be removed while it holds a trial with a checkpoint
    for key, value in study_env(MPT_EPOCH_LOG=str(log), MPT_FAULT_HOLD_AT_EPOCH="1", MPT_FAULT_MARKER=str(marker),
                                PYTHONPATH=str(REPO_ROOT)).items():
        monkeypatch.setenv(key, value)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})  # trials run on the workers only
    try:
        workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        shared = tmp_path / "shared"  # one file system that every node of this machine sees
        driver = subprocess.Popen(
            [sys.executable, str(RUN), "--space", "alignment", "--smoke", "--name", NODES, "--num-samples", "3",
             "--no-confirm", "--set", "epochs=3", "--address", cluster.address, "--storage-path", shared.as_uri()],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + STUDY_TIMEOUT_S
        while not marker.exists() and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert marker.exists(), "no trial reached epoch 1"
        held = json.loads(marker.read_text())
        lost = next(node for node in workers if node.node_id == held["node_id"])
        cluster.remove_node(lost, allow_graceful=False)
        _, stderr = driver.communicate(timeout=STUDY_TIMEOUT_S)
        assert driver.returncode == 0, stderr[-4000:]
    finally:
        cluster.shutdown()

    records = epochs_trained(log)
    assert len({r["node_id"] for r in records}) == 2  # trials ran on both worker nodes
    moved = [r for r in records if r["trial_id"] == held["trial_id"]]
    assert [r["epoch"] for r in moved] == [1, 2, 3]  # not restarted: continued from its epoch-1 checkpoint
    assert moved[0]["node_id"] == held["node_id"] and {r["node_id"] for r in moved[1:]} == {
        next(node.node_id for node in workers if node is not lost)}
    rows = trial_rows(tmp_path, NODES)
    assert len(rows) == 3 and all(r["status"] == "COMPLETE" for r in rows)
    _, children = study_runs(tmp_path, NODES)
    run = next(c for c in children if c.data.tags["ray.trial_id"] == held["trial_id"])
    assert run.info.status == "FINISHED"
    assert [step for step, _ in metric_history(tmp_path, run.info.run_id, "loss")] == [1, 2, 3]


def test_the_product_has_no_fault_injection_code():
    """The hooks live in tests/hooks/ only: nothing the study runs reads a fault variable."""
    for folder in ("mpt", "trainable", "study", "search_spaces"):
        for source in (REPO_ROOT / folder).rglob("*.py"):
            text = source.read_text(encoding="utf-8")
            assert "MPT_FAULT" not in text and "MPT_EPOCH_LOG" not in text, source
