"""MLflow records of a study: every trial run carries its whole config, and a study tracked on a real MLflow
tracking server gets all its records there.

The server test starts `mlflow server` on loopback as a team would run it (its own SQLite backend and
artifact root, artifacts proxied through the server), runs a `--smoke` study against it, and reads everything
back over the server's REST API only. (A study stopped and resumed on a server, PostgreSQL behind it, two studies
at once: tests/test_cluster_jobs.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

import pytest

from mpt.config import MPTConfig
from search_spaces import REFERENCE_POINTS
from tests.services import running_mlflow_server

REPO_ROOT = Path(__file__).resolve().parent.parent
RUN = REPO_ROOT / "study" / "run.py"
STUDY = "served"
PLANNED = 4
EPOCHS = 2  # --smoke's
CONFIG_FIELDS = {f.name for f in fields(MPTConfig)}
TIMEOUT_S = 600


# --- every field of a trial's config is a param ------------------------------------------------------------


def test_a_trial_run_logs_every_config_field_and_tags_the_searched_ones(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from study.tracking import SEARCHED_TAG, StudyTracker, get_or_create_experiment

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    get_or_create_experiment(MlflowClient(uri), "whole", (tmp_path / "artifacts").as_uri())
    base = MPTConfig(translator_depth=2, num_layers=4)
    tracker = StudyTracker(uri, "whole", "alignment", base)
    trial = SimpleNamespace(
        trial_id="abc123",
        config={"alignment_weight": 0.25, "kl_temperature": 2.0, "trial_number": 3, "reference": None},
    )
    run = MlflowClient(uri).get_run(tracker.run_id(trial))
    assert set(run.data.params) == CONFIG_FIELDS  # the bookkeeping keys are tags, not params
    assert run.data.params["translator_depth"] == "2"  # not searched here: the UI can still filter by it
    assert run.data.params["alignment_weight"] == "0.25" and run.data.params["num_layers"] == "4"
    assert run.data.params["target_languages"] == json.dumps(MPTConfig().target_languages)
    assert run.data.tags[SEARCHED_TAG] == "alignment_weight,kl_temperature"
    assert run.info.run_name.startswith("alignment-003 ")


# --- a real tracking server ----------------------------------------------------------------------------------


class Server:
    """The REST API of an MLflow tracking server (only what the test reads)."""

    def __init__(self, url: str, root: Path) -> None:
        self.url, self.root = url, root

    def get(self, endpoint: str, **query) -> bytes:
        with urllib.request.urlopen(f"{self.url}{endpoint}?{urllib.parse.urlencode(query)}", timeout=30) as response:
            return response.read()

    def api(self, endpoint: str, body: dict | None = None, **query) -> dict:
        if body is None:
            return json.loads(self.get(f"/api/2.0/mlflow/{endpoint}", **query))
        request = urllib.request.Request(
            f"{self.url}/api/2.0/mlflow/{endpoint}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def runs(self, experiment: str) -> list[dict]:
        found = self.api("experiments/get-by-name", experiment_name=experiment)["experiment"]
        found = self.api("runs/search", {"experiment_ids": [found["experiment_id"]], "max_results": 1000})
        return found.get("runs", [])

    def metric_steps(self, run_id: str, key: str) -> list[int]:
        history = self.api("metrics/get-history", run_id=run_id, metric_key=key).get("metrics", [])
        return sorted(int(m.get("step", 0)) for m in history)

    def artifacts(self, root: str, path: str = "") -> list[str]:
        """Every artifact file under an artifact URI (a run's, a logged model's), walked through the server's
        artifact proxy."""
        folder = f"{proxied(root)}/{path}".rstrip("/")
        listing = json.loads(self.get("/api/2.0/mlflow-artifacts/artifacts", path=folder))
        files = []
        for entry in listing.get("files", []):
            child = f"{path}/{entry['path']}".strip("/")
            files += self.artifacts(root, child) if entry["is_dir"] else [child]
        return files

    def download(self, root: str, path: str) -> bytes:
        return self.get(f"/api/2.0/mlflow-artifacts/artifacts/{proxied(root)}/{path}")


def proxied(artifact_uri: str) -> str:
    """The path under the server's artifact root of a proxied artifact URI."""
    assert artifact_uri.startswith("mlflow-artifacts:/"), artifact_uri  # the client never writes the store itself
    return artifact_uri[len("mlflow-artifacts:/") :].strip("/")


def artifact_uri(run: dict) -> str:
    return run["info"]["artifact_uri"]


def tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def params(run: dict) -> dict[str, str]:
    return {p["key"]: p["value"] for p in run["data"].get("params", [])}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    with running_mlflow_server(root, f"sqlite:///{root / 'backend.db'}") as running:
        yield Server(running.url, root)


def study_command(url: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(RUN),
        "--space",
        "alignment",
        "--smoke",
        "--name",
        STUDY,
        "--num-samples",
        str(PLANNED),
        "--no-confirm",
        "--max-concurrent",  # one trial process: what this study checks needs no trials at once
        "1",
        "--mlflow-tracking-uri",
        url,
        *extra,
    ]  # the search's records suffice


@pytest.fixture(scope="module")
def served_study(server, tmp_path_factory):
    """A smoke study tracked on the server."""
    cwd = tmp_path_factory.mktemp("served-study")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        study_command(server.url), cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S, env=env
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return SimpleNamespace(cwd=cwd, runs=server.runs(STUDY))


@pytest.mark.slow
def test_parent_and_trial_runs_arrive_with_their_configs_and_epochs(server, served_study) -> None:
    runs = served_study.runs
    parents = [r for r in runs if tags(r).get("mpt_study.run_type") == "study"]
    trials = [r for r in runs if tags(r).get("mpt_study.run_type") == "trial"]
    assert len(parents) == 1 and parents[0]["info"]["status"] == "FINISHED"
    assert params(parents[0])["space"] == "alignment" and params(parents[0])["num_samples"] == str(PLANNED)
    # one run per trial, each nested under the study and finished
    assert len(trials) == PLANNED and len({tags(t)["ray.trial_id"] for t in trials}) == PLANNED
    assert sorted(int(tags(t)["trial_number"]) for t in trials) == list(range(PLANNED))
    for trial in trials:
        trial_tags = tags(trial)
        assert trial_tags["mlflow.parentRunId"] == parents[0]["info"]["run_id"]
        assert trial["info"]["status"] == "FINISHED"
        assert set(params(trial)) == CONFIG_FIELDS
        searched = trial_tags["mpt_study.searched"].split(",")
        assert searched and set(searched) <= CONFIG_FIELDS
        if trial_tags.get("mpt_study.reference"):  # what a reference point sets, logged with the rest
            point = REFERENCE_POINTS[trial_tags["mpt_study.reference"]]
            assert set(point) <= set(searched)
            assert {k: float(params(trial)[k]) for k in point} == {k: float(v) for k, v in point.items()}
        for key in ("loss", "ce_loss", "objective", "dev_acc_en"):  # every epoch once
            assert server.metric_steps(trial["info"]["run_id"], key) == list(range(1, EPOCHS + 1)), key


@pytest.mark.slow
def test_the_study_run_opens_with_its_answer_and_links_optuna_to_the_server(server, served_study) -> None:
    """The best trial's run is marked, the study run's description opens with the verdict (its links are routes
    of whatever UI serves it), and optuna-dashboard's study links to the experiment on the server."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    runs = served_study.runs
    parent = next(r for r in runs if tags(r).get("mpt_study.run_type") == "study")
    [best] = [r for r in runs if tags(r).get("best_trial") == "true"]
    assert tags(best)["mpt_study.role"] in ("best", f"best ({tags(best).get('mpt_study.reference')})")
    description = tags(parent)["mlflow.note.content"]
    assert description.startswith("**Verdict:** none: the study ran without the confirmation (--no-confirm)")
    assert f"(#/experiments/{parent['info']['experiment_id']}/runs/{best['info']['run_id']})" in description
    journal = JournalFileBackend(str(served_study.cwd / "results" / STUDY / "optuna.log"))
    study = optuna.load_study(study_name=STUDY, storage=JournalStorage(journal))
    assert study.user_attrs["mlflow_experiment_url"] == (
        f"{server.url}/#/experiments/{parent['info']['experiment_id']}/runs?workflowType=machine_learning"
    )


@pytest.mark.slow
def test_the_report_and_every_artifact_arrive_through_the_server(server, served_study) -> None:
    runs = served_study.runs
    parent = next(r for r in runs if tags(r).get("mpt_study.run_type") == "study")
    trials = [r for r in runs if tags(r).get("mpt_study.run_type") == "trial"]
    study_dir = served_study.cwd / "results" / STUDY

    report = server.artifacts(artifact_uri(parent))
    local = sorted(f"report/{p.name}" for p in study_dir.iterdir() if p.suffix in (".md", ".html", ".png", ".json"))
    assert {"report/report.md", "report/report.html"} <= set(local) and any(p.endswith(".png") for p in local)
    assert sorted(report) == local
    for path in ("report/report.md", "report/report.html", "report/trials.json"):
        assert server.download(artifact_uri(parent), path) == (study_dir / Path(path).name).read_bytes(), path

    for trial in trials:
        files = server.artifacts(artifact_uri(trial))
        assert "trial_config.json" in files, files
        stored = json.loads(server.download(artifact_uri(trial), "trial_config.json"))["config"]
        as_params = {
            k: json.dumps(v, sort_keys=True) if isinstance(v, (list, dict)) else str(v) for k, v in stored.items()
        }
        assert as_params == params(trial)  # the run's params: the config its trial_config.json records
    # the best trial's model (an MLflow logged model: its artifacts live beside the runs')
    [best] = [t for t in trials if tags(t).get("best_trial") == "true"]
    [output] = best["outputs"]["model_outputs"]
    model = server.api(f"logged-models/{output['model_id']}")["model"]["info"]
    model_files = server.artifacts(model["artifact_uri"])
    assert "MLmodel" in model_files
    for weights in sorted((study_dir / "best_model").iterdir()):  # the trained prompt, byte for byte
        [path] = [f for f in model_files if f.endswith(f"/best_model/{weights.name}")]
        assert server.download(model["artifact_uri"], path) == weights.read_bytes()

    # everything listed is in the server's artifact root, and nothing went around the server
    roots = [artifact_uri(r) for r in runs] + [model["artifact_uri"]]
    listed = {f"{proxied(root)}/{path}" for root in roots for path in server.artifacts(root)}
    stored = {
        str(p.relative_to(server.root / "artifacts")) for p in (server.root / "artifacts").rglob("*") if p.is_file()
    }
    assert listed == stored
    assert not (served_study.cwd / "mlruns").exists() and not (served_study.cwd / "results" / "mlartifacts").exists()
    assert not (served_study.cwd / "results" / "mlflow.db").exists()
