"""End-to-end tests of `python study/run.py` and `python study/report.py` (Ray, Optuna, MLflow).

The study runs are `--smoke` studies (e5-small cut to 1 layer, 2 epochs, 4 shots per class, 12 eval
examples, 2 target languages) in a temporary working directory, so ./results is theirs alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mpt.precision import resolve_precision

REPO_ROOT = Path(__file__).resolve().parent.parent
RUN = REPO_ROOT / "study" / "run.py"
REPORT = REPO_ROOT / "study" / "report.py"
SMOKE_LANGUAGES = ["en", "de", "fr"]
SMOKE_EPOCHS = 2
STUDY_TIMEOUT_S = 600


def run_cli(script: Path, *args: str, cwd: Path, timeout: int = STUDY_TIMEOUT_S) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=study_env())


def study_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env["RAY_DEDUP_LOGS"] = "1"
    return env


def mlflow_runs(cwd: Path, experiment: str, phase: str = "search") -> tuple[list, list]:
    """(parent runs, child trial runs of the phase) of a study's MLflow experiment."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{cwd / 'results' / 'mlflow.db'}")
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment}"
    runs = client.search_runs([found.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("mpt_study.run_type") == "study"]
    children = [r for r in runs if r.data.tags.get("mpt_study.run_type") == "trial"
                and r.data.tags.get("mpt_study.phase") == phase]
    return parents, children


def loss_steps(cwd: Path, run_id: str) -> list[int]:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{cwd / 'results' / 'mlflow.db'}")
    return sorted(m.step for m in client.get_metric_history(run_id, "loss"))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# (bad input: tests/test_faults_input.py)


# --- a whole smoke study ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    cwd = tmp_path_factory.mktemp("smoke")
    # the confirmation as a shot-count sweep: at the smoke base's 4 shots per class and at 8
    done = run_cli(RUN, "--space", "alignment", "--smoke", "--confirm-top", "1", "--confirm-seeds", "2",
                   "--confirm-shots", "4,8", cwd=cwd)
    assert done.returncode == 0, done.stderr[-4000:]
    return cwd, done


@pytest.mark.slow
def test_smoke_study_records_every_trial_in_mlflow(smoke_study) -> None:
    cwd, _ = smoke_study
    parents, children = mlflow_runs(cwd, "alignment-smoke")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    assert parent.data.params["space"] == "alignment"
    assert parent.data.tags["version.ray"] and parent.data.tags["backbone"] == "e5-small"
    settings = json.loads((cwd / "results" / "alignment-smoke" / "study.json").read_text())
    assert len(children) == settings["num_samples"] == 4
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.status == "FINISHED"
        assert child.info.run_name.startswith("alignment-")
        assert not any(key.startswith("test_") for key in child.data.metrics)  # the search never looks at test
        for lang in SMOKE_LANGUAGES:  # dev_avg objective: dev of every language at the selected epoch
            assert 0.0 <= child.data.metrics[f"selected_dev_acc_{lang}"] <= 1.0
        for name in ("dev_acc_en", "objective", "loss", "kl_loss"):
            assert name in child.data.metrics
        assert loss_steps(cwd, child.info.run_id) == list(range(1, SMOKE_EPOCHS + 1))  # step = epoch
        assert {"alignment_weight", "translator_depth", "prompt_length"} <= set(child.data.params)
        # the params are the config as given, the runtime tags what the trial ran on (placement, `auto` resolved)
        assert child.data.params["precision"] == "auto" and child.data.params["device"] == "auto"
        assert (child.data.tags["runtime_device"], child.data.tags["runtime_num_threads"]) == ("cpu", "1")
        assert child.data.tags["runtime_precision"] == resolve_precision("auto", torch.device("cpu"))
    assert sum(c.data.tags.get("best_trial") == "true" for c in children) == 1


@pytest.mark.slow
def test_smoke_study_evaluates_the_baselines_first(smoke_study) -> None:
    cwd, _ = smoke_study
    _, children = mlflow_runs(cwd, "alignment-smoke")
    by_reference = {c.data.tags.get("mpt_study.reference"): c for c in children}
    vanilla, paper = by_reference["vanilla"], by_reference["paper_default"]
    assert vanilla.data.params["translator_depth"] == "0" and float(vanilla.data.params["alignment_weight"]) == 0.0
    assert paper.data.params["translator_depth"] == "1" and float(paper.data.params["alignment_weight"]) == 0.5
    assert vanilla.data.tags["trial_number"] == "0" and paper.data.tags["trial_number"] == "1"
    assert vanilla.data.metrics["kl_loss"] == 0.0  # no alignment task in the vanilla baseline
    rows = json.loads((cwd / "results" / "alignment-smoke" / "trials.json").read_text())
    assert [r["trial_number"] for r in rows] == [0, 1, 2, 3]
    assert all(r["status"] == "COMPLETE" for r in rows)
    assert [r["reference"] for r in rows[:2]] == ["vanilla", "paper_default"]


@pytest.mark.slow
def test_smoke_study_writes_the_report_and_the_trained_prompts(smoke_study) -> None:
    cwd, done = smoke_study
    study_dir = cwd / "results" / "alignment-smoke"
    report = (study_dir / "report.md").read_text()
    assert report.startswith("# Study `alignment-smoke`\n\n## Verdict") and "vanilla" in report
    plots = ["confirmed_accuracy.png", "search_per_language.png", *(f"objective_vs_{p}.png" for p in
                                                                     ("alignment_weight", "translator_depth",
                                                                      "prompt_length"))]
    for plot in plots:
        assert (study_dir / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({plot})" in report
    lines = done.stdout.rstrip().splitlines()  # the console: per-language rows, then the verdict, last
    assert any(all(lang in line for lang in SMOKE_LANGUAGES) and "targets" in line for line in lines)
    assert lines[-1].startswith("Verdict: ") and " vs vanilla on the 2 target languages: " in lines[-1]

    from mpt.pretrained import TrainedPrompt

    best = TrainedPrompt.from_pretrained(study_dir / "best_model")  # the best trial's trained prompt
    assert best.config.prompt_length >= 1
    assert sorted(p.name for p in (study_dir / "confirm_models").iterdir()) == sorted(
        f"alignment-confirm-{r['trial_number']:03d}-seed{r['seed']}-k{r['params']['shots_per_class']}"
        for r in json.loads((study_dir / "confirm.json").read_text()))


@pytest.mark.slow
def test_report_regenerates_from_stored_results(smoke_study) -> None:
    cwd, _ = smoke_study
    study_dir = cwd / "results" / "alignment-smoke"
    before = (study_dir / "report.md").read_text()
    for file in [study_dir / "report.md", *study_dir.glob("*.png")]:
        file.unlink()
    done = run_cli(REPORT, "alignment-smoke", cwd=cwd, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (study_dir / "report.md").read_text() == before
    assert (study_dir / "search_per_language.png").is_file()
    missing = run_cli(REPORT, "no-such-study", cwd=cwd, timeout=120)
    assert missing.returncode == 2 and "no study 'no-such-study'" in missing.stderr


@pytest.mark.slow
def test_existing_name_without_resume_is_refused_and_changes_nothing(smoke_study) -> None:
    cwd, _ = smoke_study
    results = cwd / "results"
    watched = [results / "mlflow.db", results / "alignment-smoke" / "trials.json",
               results / "alignment-smoke" / "study.json"]
    before = {path: digest(path) for path in watched}
    done = run_cli(RUN, "--space", "alignment", "--smoke", cwd=cwd, timeout=120)
    assert done.returncode == 2
    assert "already exists" in done.stderr and "--resume" in done.stderr and "--name" in done.stderr
    assert {path: digest(path) for path in watched} == before
    changed = run_cli(RUN, "--space", "alignment", "--smoke", "--resume", "--objective", "dev_en", cwd=cwd,
                      timeout=120)
    assert changed.returncode == 2 and "objective" in changed.stderr
    assert {path: digest(path) for path in watched} == before


@pytest.mark.slow
def test_confirmation_reruns_the_best_vanilla_and_the_paper_default_with_paired_seeds(smoke_study) -> None:
    cwd, done = smoke_study
    study_dir = cwd / "results" / "alignment-smoke"
    rows = json.loads((study_dir / "trials.json").read_text())
    best = max((r for r in rows if r["status"] == "COMPLETE"), key=lambda r: (r["objective"], -r["trial_number"]))
    confirm = json.loads((study_dir / "confirm.json").read_text())
    configurations = {best["trial_number"], 0, 1}  # 0: vanilla, 1: the paper default
    assert {(r["trial_number"], r["seed"], r["params"]["shots_per_class"]) for r in confirm} == {
        (n, s, k) for n in configurations for s in (1, 2) for k in (4, 8)}
    assert all(r["status"] == "COMPLETE" and r["test_accuracy"] for r in confirm)
    for row in confirm:  # scored per test row, for the paired intervals
        assert all(row["test_correct"][lang].count("1") / len(row["test_correct"][lang]) ==
                   pytest.approx(row["test_accuracy"][lang]) for lang in SMOKE_LANGUAGES)
    for row in confirm:  # the confirmed configuration itself, with only the seed and the shots changed
        original = next(r for r in rows if r["trial_number"] == row["trial_number"])
        assert {k: v for k, v in row["params"].items() if k not in ("seed", "shots_per_class")} == {
            k: v for k, v in original["params"].items() if k != "seed"}
    report = (study_dir / "report.md").read_text()
    lines = done.stdout.rstrip().splitlines()
    verdict = lines[-1][len("Verdict: "):]  # the base config's K, 4, is the headline; K = 8 is said just before
    assert verdict.startswith("4 shots per class: ") and lines[-2].startswith("Verdict at 8 shots per class: ")
    assert f"**{verdict}**" in report and "2 paired seeds" in verdict and "### Transfer gap" in report
    assert "this study detects gains >= " in verdict and "**What this study could detect**" in report
    assert "### Shot-count sweep" in report and "](shot_sweep.png)" in report
    assert (study_dir / "shot_sweep.png").read_bytes()[:4] == b"\x89PNG"
    parents, confirm_runs = mlflow_runs(cwd, "alignment-smoke", phase="confirm")
    assert parents[0].data.tags["verdict"] == verdict
    gain = [parents[0].data.metrics[f"gain_avg_target{end}"] for end in ("_low", "", "_high")]
    assert gain == sorted(gain) and f"{100 * gain[1]:+.1f} pp" in verdict
    assert f"{100 * parents[0].data.metrics['mde_avg_target']:.1f} pp" in verdict
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{cwd / 'results' / 'mlflow.db'}")
    for name in ("sweep_gain_avg_target", "sweep_trial0_vanilla_test_acc_targets"):  # charted against K
        assert sorted(m.step for m in client.get_metric_history(parents[0].info.run_id, name)) == [4, 8]
    artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id, "report")}
    assert "report/shot_sweep.png" in artifacts
    assert len(confirm_runs) == len(confirm)
    assert all(run.info.run_name.startswith("alignment-confirm-") for run in confirm_runs)


@pytest.mark.slow
def test_asha_study_with_the_strict_english_dev_objective(tmp_path: Path) -> None:
    done = run_cli(RUN, "--space", "translator", "--smoke", "--scheduler", "asha", "--objective", "dev_en",
                   "--set", "epochs=3", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    rows = json.loads((tmp_path / "results" / "translator-smoke" / "trials.json").read_text())
    assert {r["status"] for r in rows} <= {"COMPLETE", "STOPPED"}
    references = [r for r in rows if r["reference"]]
    assert len(references) == 2 and all(r["status"] == "COMPLETE" for r in references)  # ASHA spares them
    _, children = mlflow_runs(tmp_path, "translator-smoke")
    for child in children:
        assert "dev_acc_en" in child.data.metrics
        assert "dev_acc_de" not in child.data.metrics  # strict zero-shot: no target-language dev at all
        stopped = next(r for r in rows if r["trial_id"] == child.data.tags["ray.trial_id"])["status"] == "STOPPED"
        assert (child.data.tags.get("stopped_early") == "true") == stopped


# --- interrupt and resume ---------------------------------------------------------------------------

def finished_trials(experiment: Path) -> int:
    """Trials whose result.json already holds their last epoch's report."""
    from trainable.metrics import TrialReport

    return sum(bool(lines) and TrialReport.from_result(json.loads(lines[-1])).trained_all_epochs
               for lines in (path.read_text().splitlines() for path in experiment.glob("*/result.json")))


@pytest.mark.slow
def test_interrupted_study_resumes_without_rerunning_or_duplicating(tmp_path: Path) -> None:
    planned = 6  # interrupted after 2: enough left to still be running when the signal lands
    args = ["--space", "alignment", "--smoke", "--name", "interrupted", "--num-samples", str(planned), "--no-confirm"]
    process = subprocess.Popen([sys.executable, str(RUN), *args], cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=study_env())
    experiment = tmp_path / "results" / "ray" / "interrupted"
    deadline = time.monotonic() + STUDY_TIMEOUT_S
    while finished_trials(experiment) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert process.poll() is None, "the study ended before it could be interrupted"
    process.send_signal(signal.SIGINT)  # what Ctrl+C sends: Tune saves its state and stops
    _, stderr = process.communicate(timeout=STUDY_TIMEOUT_S)
    assert process.returncode == 130, stderr[-4000:]
    assert "--resume" in stderr

    _, children = mlflow_runs(tmp_path, "interrupted")
    finished_before = {c.data.tags["ray.trial_id"]: c.info.end_time for c in children if c.info.status == "FINISHED"}
    assert 2 <= len(finished_before) < planned

    done = run_cli(RUN, *args, "--resume", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    parents, children = mlflow_runs(tmp_path, "interrupted")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    trial_ids = [c.data.tags["ray.trial_id"] for c in children]
    assert len(children) == planned and len(set(trial_ids)) == planned  # no duplicate runs
    assert all(c.info.status == "FINISHED" for c in children)
    for child in children:
        trial_id = child.data.tags["ray.trial_id"]
        if trial_id in finished_before:  # not rerun: its run was not touched again
            assert child.info.end_time == finished_before[trial_id]
        assert loss_steps(tmp_path, child.info.run_id) == list(range(1, SMOKE_EPOCHS + 1))
    rows = json.loads((tmp_path / "results" / "interrupted" / "trials.json").read_text())
    # the searcher kept its history: trial numbers continue and the references ran once
    assert sorted(r["trial_number"] for r in rows) == list(range(planned))
    assert sorted(r["reference"] for r in rows if r["reference"]) == ["paper_default", "vanilla"]
    assert all(r["status"] == "COMPLETE" for r in rows)
    assert (tmp_path / "results" / "interrupted" / "report.md").is_file()
