"""End-to-end tests of `python study/run.py` and `python study/report.py` (Ray, Optuna, MLflow) on the session's
shared smoke study (tests/smoke_studies.py, the `smoke_study` fixture of tests/conftest.py): an MPT configuration
wins its search (the tests/hooks objective w * depth), and the confirmation sweeps two shot counts.

Interrupting and resuming a study: tests/test_faults.py; an ASHA study with the strict English-dev objective:
tests/test_optuna_storage.py; bad input: tests/test_faults_input.py.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import torch

from mpt.precision import resolve_precision
from tests.smoke_studies import (
    CONFIRM_SEEDS,
    REPORT,
    SHARED_NAME,
    SMOKE_EPOCHS,
    SMOKE_LANGUAGES,
    SWEEP,
    SmokeStudy,
    run_cli,
    study_runs,
)


def mlflow_runs(cwd: Path, experiment: str, phase: str = "search") -> tuple[list, list]:
    """(parent runs, child trial runs of the phase) of a study's MLflow experiment."""
    parents, children = study_runs(f"sqlite:///{cwd / 'results' / 'mlflow.db'}", experiment)
    return parents, [r for r in children if r.data.tags.get("mpt_study.phase") == phase]


def loss_steps(cwd: Path, run_id: str) -> list[int]:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{cwd / 'results' / 'mlflow.db'}")
    return sorted(m.step for m in client.get_metric_history(run_id, "loss"))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def best_search_row(rows: list[dict]) -> dict:
    """The search's best trial as the study ranks them: the highest objective, the earlier trial on ties."""
    return max((r for r in rows if r["status"] == "COMPLETE"), key=lambda r: (r["objective"], -r["trial_number"]))


# --- the shared smoke study ----------------------------------------------------------------------------


@pytest.mark.slow
def test_smoke_study_records_every_trial_in_mlflow(smoke_study: SmokeStudy) -> None:
    cwd = smoke_study.cwd
    parents, children = mlflow_runs(cwd, SHARED_NAME)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    assert parent.data.params["space"] == "alignment"
    assert parent.data.tags["version.ray"] and parent.data.tags["backbone"] == "e5-small"
    settings = json.loads((smoke_study.study_dir / "study.json").read_text())
    assert len(children) == settings["num_samples"] == 5
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
def test_smoke_study_evaluates_the_baselines_first(smoke_study: SmokeStudy) -> None:
    _, children = mlflow_runs(smoke_study.cwd, SHARED_NAME)
    by_reference = {c.data.tags.get("mpt_study.reference"): c for c in children}
    vanilla, paper, probe = by_reference["vanilla"], by_reference["paper_default"], by_reference["probe"]
    assert vanilla.data.params["translator_depth"] == "0" and float(vanilla.data.params["alignment_weight"]) == 0.0
    assert paper.data.params["translator_depth"] == "1" and float(paper.data.params["alignment_weight"]) == 0.5
    assert vanilla.data.tags["trial_number"] == "0" and paper.data.tags["trial_number"] == "1"
    # the frozen probe: no prompt, no translator, no alignment task (its run's params are what it ran with)
    assert (probe.data.params["prompt_length"], probe.data.params["translator_depth"]) == ("0", "0")
    assert probe.data.tags["trial_number"] == "2" and probe.data.tags["mpt_study.role"] == "probe"
    assert vanilla.data.metrics["kl_loss"] == 0.0  # no alignment task in the vanilla baseline
    rows = json.loads((smoke_study.study_dir / "trials.json").read_text())
    assert [r["trial_number"] for r in rows] == [0, 1, 2, 3, 4]
    assert all(r["status"] == "COMPLETE" for r in rows)
    assert [r["reference"] for r in rows[:3]] == ["vanilla", "paper_default", "probe"]


@pytest.mark.slow
def test_an_mpt_configuration_wins_the_search(smoke_study: SmokeStudy) -> None:
    """The objective hook (w * depth) ranks the trials; its winner is a TPE suggestion, not a reference, and the
    study names it as the best wherever it names one."""
    rows = json.loads((smoke_study.study_dir / "trials.json").read_text())
    for row in rows:  # each trial reported the hook's value of its own configuration
        assert row["objective"] == pytest.approx(row["params"]["alignment_weight"] * row["params"]["translator_depth"])
    best = best_search_row(rows)
    assert best["reference"] is None and best["params"]["translator_depth"] >= 1, (
        f"the hook no longer makes an MPT configuration win: {[(r['trial_number'], r['objective']) for r in rows]}"
    )
    parents, children = mlflow_runs(smoke_study.cwd, SHARED_NAME)
    assert parents[0].data.tags["best_trial_number"] == str(best["trial_number"])
    (tagged,) = [c for c in children if c.data.tags.get("best_trial") == "true"]
    assert tagged.data.tags["trial_number"] == str(best["trial_number"])
    assert parents[0].data.metrics["best_objective"] == pytest.approx(best["objective"])


@pytest.mark.slow
def test_smoke_study_writes_the_report_and_the_trained_prompts(smoke_study: SmokeStudy) -> None:
    study_dir, done = smoke_study.study_dir, smoke_study.done
    report = (study_dir / "report.md").read_text()
    assert report.startswith(f"# Study `{SHARED_NAME}`\n\n## Verdict") and "vanilla" in report
    plots = [
        "confirmed_accuracy.png",
        "search_per_language.png",
        *(f"objective_vs_{p}.png" for p in ("alignment_weight", "translator_depth", "prompt_length")),
    ]
    for plot in plots:
        assert (study_dir / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({plot})" in report
    lines = done.stdout.rstrip().splitlines()  # the console: per-language rows, then the verdict, last
    assert any(all(lang in line for lang in SMOKE_LANGUAGES) and "targets" in line for line in lines)
    assert lines[-1].startswith("Verdict: ") and " vs vanilla on the 2 target languages: " in lines[-1]

    # a trained prompt per confirmation run (the best trial's own, best_model/: tests/test_mlflow_model.py)
    assert sorted(p.name for p in (study_dir / "confirm_models").iterdir()) == sorted(
        f"alignment-confirm-{r['trial_number']:03d}-seed{r['seed']}-k{r['params']['shots_per_class']}"
        for r in json.loads((study_dir / "confirm.json").read_text())
    )


@pytest.mark.slow
def test_report_regenerates_from_stored_results(smoke_study: SmokeStudy, capsys) -> None:
    from study import report

    cwd, study_dir = smoke_study.cwd, smoke_study.study_dir
    written = [study_dir / "report.md", study_dir / "report.html", *study_dir.glob("*.png")]
    before = {file: file.read_bytes() for file in written}
    try:
        for file in written:
            file.unlink()
        done = run_cli(REPORT, SHARED_NAME, cwd=cwd, timeout=120)
        assert done.returncode == 0, done.stderr
        assert (study_dir / "report.md").read_bytes() == before[study_dir / "report.md"]
        assert all(file.is_file() for file in written)
        capsys.readouterr()
        assert report.main(["no-such-study", "--results-dir", str(cwd / "results")]) == 2
        assert "no study 'no-such-study'" in capsys.readouterr().err
    finally:  # the shared study stays as the other tests expect it
        for file, content in before.items():
            file.write_bytes(content)


@pytest.mark.slow
def test_a_resume_that_would_change_the_study_is_refused_and_changes_nothing(
    smoke_study: SmokeStudy, monkeypatch, capsys
) -> None:
    """(An existing name without --resume: tests/test_faults_input.py.)"""
    from study import run as study_run
    from study import tuner as study_tuner

    results = smoke_study.cwd / "results"
    watched = [results / "mlflow.db", smoke_study.study_dir / "trials.json", smoke_study.study_dir / "study.json"]
    before = {path: digest(path) for path in watched}
    monkeypatch.chdir(smoke_study.cwd)
    monkeypatch.setattr(study_tuner, "start_ray", lambda address: pytest.fail("a refused resume started Ray"))
    capsys.readouterr()
    code = study_run.main(["--space", "alignment", "--smoke", "--resume", "--objective", "dev_en"])
    err = capsys.readouterr().err
    assert code == study_run.EXIT_BAD_INPUT and "objective" in err and "Traceback" not in err, err
    assert {path: digest(path) for path in watched} == before


@pytest.mark.slow
def test_confirmation_reruns_the_best_and_the_references_with_paired_seeds(smoke_study: SmokeStudy) -> None:
    cwd, done, study_dir = smoke_study.cwd, smoke_study.done, smoke_study.study_dir
    rows = json.loads((study_dir / "trials.json").read_text())
    best = best_search_row(rows)
    confirm = json.loads((study_dir / "confirm.json").read_text())
    configurations = {best["trial_number"], 0, 1, 2}  # 0: vanilla, 1: the paper default, 2: the frozen probe
    assert len(configurations) == 4  # the best is no reference (test_an_mpt_configuration_wins_the_search)
    assert {(r["trial_number"], r["seed"], r["params"]["shots_per_class"]) for r in confirm} == {
        (n, s, k) for n in configurations for s in CONFIRM_SEEDS for k in SWEEP
    }
    assert len(confirm) == len(configurations) * len(CONFIRM_SEEDS) * len(SWEEP)
    assert all(r["status"] == "COMPLETE" and r["test_accuracy"] for r in confirm)
    for row in confirm:  # scored per test row, for the paired intervals
        assert all(
            row["test_correct"][lang].count("1") / len(row["test_correct"][lang])
            == pytest.approx(row["test_accuracy"][lang])
            for lang in SMOKE_LANGUAGES
        )
    for row in confirm:  # the confirmed configuration itself, with only the seed and the shots changed
        original = next(r for r in rows if r["trial_number"] == row["trial_number"])
        assert {k: v for k, v in row["params"].items() if k not in ("seed", "shots_per_class")} == {
            k: v for k, v in original["params"].items() if k != "seed"
        }
    report = (study_dir / "report.md").read_text()
    lines = done.stdout.rstrip().splitlines()
    verdict = lines[-1][len("Verdict: ") :]  # the base config's K, 4, is the headline; K = 8 is said just before
    # the headline is the search's best, an MPT configuration, against vanilla (not the paper default)
    assert verdict.startswith(f"4 shots per class: MPT (trial {best['trial_number']}) vs vanilla on the 2 target ")
    assert lines[-2].startswith(f"Verdict at 8 shots per class: MPT (trial {best['trial_number']}) vs vanilla ")
    assert f"**{verdict}**" in report and "2 paired seeds" in verdict and "### Transfer gap" in report
    # and vanilla and the MPT best against the frozen probe, with their paired intervals
    assert re.search(
        rf"; vanilla vs the frozen probe: [+-]\d+\.\d pp \[[+-]\d+\.\d, [+-]\d+\.\d\]; MPT \(trial "
        rf"{best['trial_number']}\) vs the frozen probe: [+-]\d+\.\d pp \[",
        verdict,
    ), verdict
    assert "| vs the frozen probe |" in report and "| #2 frozen probe | 2 |" in report
    assert "this study detects gains >= " in verdict and "**What this study could detect**" in report
    assert "### Shot-count sweep" in report and "](shot_sweep.png)" in report
    assert (study_dir / "shot_sweep.png").read_bytes()[:4] == b"\x89PNG"
    parents, confirm_runs = mlflow_runs(cwd, SHARED_NAME, phase="confirm")
    assert parents[0].data.tags["verdict"] == verdict
    gain = [parents[0].data.metrics[f"gain_avg_target{end}"] for end in ("_low", "", "_high")]
    assert gain == sorted(gain) and f"{100 * gain[1]:+.1f} pp" in verdict
    assert f"{100 * parents[0].data.metrics['mde_avg_target']:.1f} pp" in verdict
    assert f"frozen probe: {100 * parents[0].data.metrics['gain_vanilla_vs_probe_avg_target']:+.1f} pp" in verdict
    from mlflow import MlflowClient

    client = MlflowClient(smoke_study.tracking_uri)
    for name in (
        "sweep_gain_avg_target",
        "sweep_trial0_vanilla_test_acc_targets",
        "sweep_trial2_frozen_probe_test_acc_targets",
        f"sweep_trial{best['trial_number']}_MPT_test_acc_targets",
    ):  # charted against K
        assert sorted(m.step for m in client.get_metric_history(parents[0].info.run_id, name)) == list(SWEEP), name
    artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id, "report")}
    assert "report/shot_sweep.png" in artifacts
    assert len(confirm_runs) == len(confirm)
    assert all(run.info.run_name.startswith("alignment-confirm-") for run in confirm_runs)
