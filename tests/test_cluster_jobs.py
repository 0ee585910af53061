"""The team deployment, for real (docs/cluster.md): a Ray cluster of two `ray start` nodes with token
authentication, studies submitted as Ray Jobs (`ray job submit --working-dir`), one MLflow server whose backend
store is PostgreSQL (artifacts proxied through it), the Optuna studies in a PostgreSQL database, and Ray storage
in a folder both nodes see.

One scenario serves the tests (it takes minutes on 2 cores):
1. study A is submitted alone and stopped mid-search with `ray job stop`;
2. A is submitted again with `--resume`, and study B (the same flags, another name) at the same time: two
   studies at once against one MLflow server and one PostgreSQL database;
3. while they run, the worker node is lost (every process of it killed at once) while it holds a trial between
   epochs (the fault hook of tests/hooks holds the first trial on that node to report epoch 1);
4. both studies finish on the head.
Then a node without torch joins, and a study refuses to start; and an unreachable cluster is refused (the bad
input of the cluster path).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.services import BIN, running_mlflow_server, running_ray_cluster

REPO_ROOT = Path(__file__).resolve().parent.parent
HOOKS = REPO_ROOT / "tests" / "hooks"
STUDY_A, STUDY_B = "team-a", "team-b"
PLANNED, EPOCHS, SEEDS = 4, 2, 2  # 2 epochs: the lost node's trial trains its first there, its second on the head
JOB_TIMEOUT_S = 600
EPOCH_METRICS = ("loss", "ce_loss", "selected_dev_acc_en", "dev_acc_en")  # search and confirmation runs alike
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
DATABASE_ERRORS = (
    "database is locked",
    "deadlock detected",
    "OperationalError",
    "could not serialize",
    "UniqueViolation",
    "IntegrityError",
)


@pytest.fixture(scope="module")
def team(postgres, tmp_path_factory):
    """The services a team runs: PostgreSQL (databases `mlflow` and `optuna`), the MLflow server on it, and a
    Ray cluster (head and one worker, one CPU each) whose nodes can read the database password (PGPASSWORD, so
    no URL a job is submitted with carries it)."""
    root = tmp_path_factory.mktemp("team")
    mlflow_backend = postgres.createdb("mlflow")
    postgres.createdb("optuna")
    shared = root / "shared"  # the folder every node sees (one machine: any folder)
    with running_mlflow_server(root, mlflow_backend, workers=2) as server:
        with running_ray_cluster(head_cpus=1, worker_cpus=1, env={"PGPASSWORD": postgres.password}) as cluster:
            yield SimpleNamespace(
                cluster=cluster,
                mlflow=server,
                postgres=postgres,
                shared=shared,
                optuna_url=f"postgresql+psycopg://{postgres.user}@127.0.0.1:{postgres.port}/optuna",
                head=cluster.node_id("head"),
                worker=cluster.node_id("worker"),
            )


def study_command(team, name: str, *extra: str, address: str = "auto", optuna_url: str = "") -> list[str]:
    """The study as docs/cluster.md submits it (a smoke study with a short confirmation)."""
    return [
        "python",
        "study/run.py",
        "--space",
        "alignment",
        "--smoke",
        "--name",
        name,
        "--num-samples",
        str(PLANNED),
        "--set",
        f"epochs={EPOCHS}",
        "--confirm-seeds",
        str(SEEDS),
        "--address",
        address,
        "--storage-path",
        (team.shared / "ray").as_uri(),
        "--results-dir",
        str(team.shared / "results"),
        "--mlflow-tracking-uri",
        team.mlflow.url,
        "--optuna-storage",
        optuna_url or team.optuna_url,
        *extra,
    ]


def submit(team, submission_id: str, command: list[str], runtime_env: dict | None = None) -> None:
    extra = ["--runtime-env-json", json.dumps(runtime_env)] if runtime_env else []
    subprocess.run(
        [
            f"{BIN}/ray",
            "job",
            "submit",
            "--address",
            team.cluster.dashboard,
            "--working-dir",
            str(REPO_ROOT),
            "--submission-id",
            submission_id,
            "--no-wait",
            *extra,
            "--",
            *command,
        ],
        env=team.cluster.env(),
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )


def job_status(team, submission_id: str) -> str:
    return team.cluster.jobs().get_job_status(submission_id).value


def wait_for_jobs(team, *submission_ids: str) -> dict[str, str]:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while True:
        statuses = {sid: job_status(team, sid) for sid in submission_ids}
        if all(status in TERMINAL for status in statuses.values()):
            return statuses
        assert time.monotonic() < deadline, {sid: team.cluster.jobs().get_job_logs(sid)[-3000:] for sid in statuses}
        time.sleep(1)


def mlflow_runs(team, name: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(team.mlflow.url)
    experiment = client.get_experiment_by_name(name)
    return [] if experiment is None else client.search_runs([experiment.experiment_id], max_results=1000)


def trial_runs(team, name: str, phase: str | None = None) -> list:
    return [
        run
        for run in mlflow_runs(team, name)
        if run.data.tags.get("mpt_study.run_type") == "trial"
        and (phase is None or run.data.tags.get("mpt_study.phase") == phase)
    ]


def steps(team, run, key: str) -> list[int]:
    from mlflow import MlflowClient

    return sorted(m.step for m in MlflowClient(team.mlflow.url).get_metric_history(run.info.run_id, key))


def optuna_trials(team, name: str) -> dict[int, tuple]:
    import optuna

    study = optuna.load_study(study_name=name, storage=optuna_url_with_password(team))
    return {t.number: (t.state.name, t.params, t.value) for t in study.get_trials(deepcopy=False)}


def epoch_nodes(team, name: str) -> dict[str, list[tuple[int, str]]]:
    """Ray trial id -> (epoch, node id) of every report in its result.json, search and confirmation alike: the
    nodes a trial ran on, epoch by epoch, as Ray Tune stored them in the shared storage."""
    found = {}
    for results in (team.shared / "ray").glob(f"{name}*/train_mpt_*/result.json"):
        reports = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
        found[results.parent.name.rsplit("_", 1)[1]] = [(r["epoch"], r["runtime_node_id"]) for r in reports]
    return found


def hooks(**variables: str) -> dict:
    """A Ray Job's runtime env that installs the test hooks of tests/hooks in its trial processes."""
    return {"env_vars": {"PYTHONPATH": str(HOOKS), **variables}}


@pytest.fixture(scope="module")
def scenario(team):
    cluster, marker = team.cluster, team.shared / "held-trial.json"
    team.shared.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    # 1. A alone, stopped once a trial finished and before all did. Its trials wait at epoch 1 until one has
    # reported from each node: Tune reuses the head's trial process before the worker's has started otherwise.
    submit(
        team,
        "team-a-1",
        study_command(team, STUDY_A),
        hooks(MPT_FAULT_MEET_NODES="2", MPT_FAULT_MEET_DIR=str(team.shared / "met-1")),
    )
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while not [r for r in trial_runs(team, STUDY_A) if r.info.status == "FINISHED"]:
        assert job_status(team, "team-a-1") not in TERMINAL, cluster.jobs().get_job_logs("team-a-1")[-3000:]
        assert time.monotonic() < deadline, cluster.jobs().get_job_logs("team-a-1")[-3000:]
        time.sleep(0.3)
    cluster.jobs().stop_job("team-a-1")  # `ray job stop team-a-1` (the same Jobs API call, without its start-up)
    stopped = wait_for_jobs(team, "team-a-1")["team-a-1"]
    before = {
        "finished": {
            r.data.tags["ray.trial_id"]: r.info.end_time
            for r in trial_runs(team, STUDY_A)
            if r.info.status == "FINISHED"
        },
        "optuna": optuna_trials(team, STUDY_A),
        "nodes": epoch_nodes(team, STUDY_A),
    }
    # 2. A resumed and B at once; 3. the first trial on the worker to report epoch 1 holds until the node is lost
    # (the others wait at epoch 1 until it has: some trial then runs on the worker)
    faults = hooks(
        MPT_FAULT_MEET_NODES="2",
        MPT_FAULT_MEET_DIR=str(team.shared / "met-2"),
        MPT_FAULT_HOLD_AT_EPOCH="1",
        MPT_FAULT_HOLD_ON_NODE=team.worker,
        MPT_FAULT_MARKER=str(marker),
    )
    submit(team, "team-a-2", study_command(team, STUDY_A, "--resume"), faults)
    submit(team, "team-b-1", study_command(team, STUDY_B), faults)
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while not marker.exists():
        statuses = [job_status(team, sid) for sid in ("team-a-2", "team-b-1")]
        assert not all(s in TERMINAL for s in statuses), "both studies ended before a trial held on the worker"
        assert time.monotonic() < deadline, "no trial reached epoch 1 on the worker"
        time.sleep(0.5)
    held = json.loads(marker.read_text())
    cluster.kill("worker")
    # 4. both finish on the head
    statuses = wait_for_jobs(team, "team-a-2", "team-b-1")
    print(f"\ncluster scenario: {time.monotonic() - started:.0f} s")  # the wall time the report gives
    logs = {sid: cluster.jobs().get_job_logs(sid) for sid in ("team-a-1", "team-a-2", "team-b-1")}
    cli = {
        command: subprocess.run(
            [f"{BIN}/ray", "job", command, "--address", cluster.dashboard, "team-b-1"],
            env=cluster.env(),
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
        for command in ("status", "logs")
    }
    return SimpleNamespace(stopped=stopped, statuses=statuses, before=before, held=held, logs=logs, cli=cli)


@pytest.mark.slow
def test_both_studies_end_after_the_stop_the_resume_and_the_lost_node(team, scenario) -> None:
    assert scenario.stopped == "STOPPED"
    for sid, status in scenario.statuses.items():  # printed in full: pytest shortens a long assertion message
        if status != "SUCCEEDED":
            print(f"--- job {sid} ended {status}; the end of its log:\n{scenario.logs[sid][-8000:]}")
    assert scenario.statuses == {"team-a-2": "SUCCEEDED", "team-b-1": "SUCCEEDED"}
    assert 1 <= len(scenario.before["finished"]) < PLANNED  # stopped mid-search


@pytest.mark.slow
def test_a_study_submitted_as_a_job_ran_trials_on_both_nodes(team, scenario) -> None:
    """Study A's trials before the stop, epoch by epoch from their result.json in the shared storage."""
    nodes = {node for reports in scenario.before["nodes"].values() for _, node in reports}
    assert nodes == {team.head, team.worker}


@pytest.mark.slow
def test_the_lost_nodes_trial_moved_to_the_head_and_lost_no_epoch(team, scenario) -> None:
    nodes = {name: epoch_nodes(team, name) for name in (STUDY_A, STUDY_B)}
    held = scenario.held
    assert held["node_id"] == team.worker and held["epoch"] == 1
    [moved] = [
        reports for trials in nodes.values() for trial_id, reports in trials.items() if trial_id == held["trial_id"]
    ]
    # epoch 1 on the worker, then continued from its checkpoint on the head: no epoch trained twice or lost
    assert [epoch for epoch, _ in moved] == list(range(1, EPOCHS + 1))
    assert moved[0][1] == team.worker and {node for _, node in moved[1:]} == {team.head}
    [study] = [name for name, trials in nodes.items() if held["trial_id"] in trials]
    assert {node for reports in nodes[study].values() for _, node in reports} == {team.head, team.worker}
    [run] = [r for r in trial_runs(team, study) if r.data.tags["ray.trial_id"] == held["trial_id"]]
    assert run.data.tags["runtime_node_id"] == team.head and run.info.status == "FINISHED"
    assert steps(team, run, "loss") == list(range(1, EPOCHS + 1))


@pytest.mark.slow
@pytest.mark.parametrize("name", [STUDY_A, STUDY_B])
def test_each_study_has_exactly_its_trials_runs_and_verdict(team, scenario, name) -> None:
    """A (stopped and resumed) ends as B (never interrupted): the planned trials, one MLflow run each with every
    epoch once, one Optuna trial each, the confirmation's runs and the verdict."""
    search = trial_runs(team, name, "search")
    assert sorted(int(r.data.tags["trial_number"]) for r in search) == list(range(PLANNED))
    assert len({r.data.tags["ray.trial_id"] for r in search}) == PLANNED
    confirm = trial_runs(team, name, "confirm")
    configurations = {r.data.tags["trial_number"] for r in confirm}
    study_dir = team.shared / "results" / name
    # vanilla, the paper default and the probe, beside the best trial (the message: what to look at when it fails)
    ended = [
        (r["trial_number"], r["reference"], r["status"], r.get("error"))
        for r in json.loads((study_dir / "trials.json").read_text())
    ]
    assert {"0", "1", "2"} <= configurations, (
        ended,
        scenario.logs.get(f"{name}-2", scenario.logs[f"{name}-1"])[-4000:],
    )
    assert sorted(
        (r.data.tags["trial_number"], r.info.run_name.rsplit("-seed", 1)[1].split()[0]) for r in confirm
    ) == sorted((c, str(s)) for c in configurations for s in range(1, SEEDS + 1))
    for run in search + confirm:
        assert run.info.status == "FINISHED", run.info.run_name
        for key in EPOCH_METRICS:  # every epoch once: none lost by the stop, the node or the other study
            assert steps(team, run, key) == list(range(1, EPOCHS + 1)), (run.info.run_name, key)
    [parent] = [r for r in mlflow_runs(team, name) if r.data.tags.get("mpt_study.run_type") == "study"]
    assert parent.info.status == "FINISHED" and " vs vanilla on the 2 target languages: " in parent.data.tags["verdict"]
    assert "gain_avg_target" in parent.data.metrics
    from mlflow import MlflowClient

    # the artifacts went through the server's proxy into its artifact store, none around it
    assert parent.info.artifact_uri.startswith("mlflow-artifacts:/")
    assert "report/report.md" in {
        a.path for a in MlflowClient(team.mlflow.url).list_artifacts(parent.info.run_id, "report")
    }
    assert list(team.mlflow.artifacts.rglob("report.md")) and not (team.shared / "results" / "mlartifacts").exists()
    rows = json.loads((study_dir / "trials.json").read_text())
    assert sorted(r["trial_number"] for r in rows) == list(range(PLANNED))
    assert all(r["status"] == "COMPLETE" for r in rows)
    assert f"**{parent.data.tags['verdict']}**" in (study_dir / "report.md").read_text()  # the report opens with it
    optuna = optuna_trials(team, name)  # in PostgreSQL: no trial lost or duplicated by the stop and resume
    assert sorted(optuna) == list(range(PLANNED)) and {s for s, _, _ in optuna.values()} == {"COMPLETE"}


@pytest.mark.slow
def test_the_resumed_study_ends_as_the_uninterrupted_one(team, scenario) -> None:
    """A and B differ only in their names, and a resumed trial continues bit for bit (tests/test_faults): the
    reference trials end alike, and every configuration both confirmed has the same test accuracies per seed.
    (TPE's own suggestions may differ: the resume asks the restored sampler again.)"""

    def ended(name: str) -> tuple[dict, dict]:
        rows = json.loads((team.shared / "results" / name / "trials.json").read_text())
        confirmed = json.loads((team.shared / "results" / name / "confirm.json").read_text())
        return (
            {r["trial_number"]: (r["params"], r["objective"]) for r in rows if r["reference"]},
            {
                (json.dumps({k: v for k, v in r["params"].items() if k != "seed"}, sort_keys=True), r["seed"]): r[
                    "test_accuracy"
                ]
                for r in confirmed
            },
        )

    (references_a, confirmed_a), (references_b, confirmed_b) = ended(STUDY_A), ended(STUDY_B)
    assert sorted(references_a) == [0, 1, 2] and references_a == references_b
    both = confirmed_a.keys() & confirmed_b.keys()
    assert len(both) >= 3 * SEEDS  # vanilla, the paper default and the probe at least
    assert {key: confirmed_a[key] for key in both} == {key: confirmed_b[key] for key in both}


@pytest.mark.slow
def test_the_resume_left_what_finished_before_the_stop_as_it_was(team, scenario) -> None:
    runs = {r.data.tags["ray.trial_id"]: r for r in trial_runs(team, STUDY_A, "search")}
    for trial_id, end_time in scenario.before["finished"].items():
        assert runs[trial_id].info.end_time == end_time
    after = optuna_trials(team, STUDY_A)
    done = {n: t for n, t in scenario.before["optuna"].items() if t[0] == "COMPLETE"}
    assert done and all(after[n] == t for n, t in done.items())


@pytest.mark.slow
def test_two_studies_at_once_meet_no_database_error(team, scenario) -> None:
    for sid, log in scenario.logs.items():
        assert not [error for error in DATABASE_ERRORS if error in log], (sid, log[-3000:])
    # what `ray job status` and `ray job logs` show of a finished study
    assert "Job 'team-b-1' succeeded" in scenario.cli["status"]
    assert f"MLflow: open {team.mlflow.url}" in scenario.cli["logs"] and "Verdict:" in scenario.cli["logs"]


@pytest.mark.slow
def test_a_node_without_torch_is_refused_before_anything_is_written(team, tmp_path) -> None:
    """A node joins whose Python cannot import torch (the hook of tests/hooks hides it): the study names the node
    and the missing module, exits 2, and writes nothing: no results, no MLflow experiment, no Optuna study."""
    team.cluster.add_worker("bare", 1, team.cluster.env(PYTHONPATH=str(HOOKS), MPT_TEST_HIDE_MODULES="torch"))
    try:  # from the checkout, as a driver on a node of the cluster runs (its folder is on the workers' path)
        done = subprocess.run(
            [
                f"{BIN}/{word}" if word == "python" else word
                for word in study_command(
                    team, "refused", address=team.cluster.address, optuna_url=optuna_url_with_password(team)
                )
            ],
            cwd=REPO_ROOT,
            env=team.cluster.env(),
            capture_output=True,
            text=True,
            timeout=JOB_TIMEOUT_S,
        )
    finally:
        team.cluster.kill("bare")
    assert done.returncode == 2, done.stderr[-3000:]
    assert "cannot import torch" in done.stderr and "ModuleNotFoundError" in done.stderr
    assert "Install the same Python environment on every node" in done.stderr
    assert not (team.shared / "results" / "refused").exists() and not list((team.shared / "ray").glob("refused*"))
    assert not mlflow_runs(team, "refused")
    import optuna

    assert "refused" not in optuna.study.get_all_study_names(optuna_url_with_password(team))


def optuna_url_with_password(team) -> str:
    return team.optuna_url.replace(f"{team.postgres.user}@", f"{team.postgres.user}:{team.postgres.password}@")


def test_an_unreachable_address_is_refused_in_seconds_before_anything_is_written(tmp_path) -> None:
    """No cluster at --address: exit 2 naming it, nothing written (Ray itself retried for minutes)."""
    from tests.services import free_port, service_env

    port = free_port()
    done = subprocess.run(
        [
            f"{BIN}/python",
            str(REPO_ROOT / "study" / "run.py"),
            "--space",
            "alignment",
            "--smoke",
            "--name",
            "unreachable",
            "--address",
            f"127.0.0.1:{port}",
        ],
        cwd=tmp_path,
        env=service_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert f"cannot reach the Ray cluster at --address 127.0.0.1:{port}" in done.stderr
    assert "ConnectionRefusedError" in done.stderr and "ray start --head" in done.stderr
    assert list(tmp_path.iterdir()) == []
