"""Fast tests of the study's parts: spaces, searcher, scheduler, trainable, MLflow tracker, report."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest

from mpt.config import MPTConfig
from search_spaces import PAPER_DEFAULT, VANILLA, get_space, probe
from study.errors import StudyError
from study.paths import StudyPaths, write_atomically
from study.results import COMPLETE, FAILED, TrialRow, save_rows
from study.settings import StudySettings

SMOKE = {"num_layers": 1, "epochs": 2, "shots_per_class": 4, "max_eval_examples": 12, "target_languages": ["de", "fr"]}


# --- search spaces ------------------------------------------------------------------------------------

# (the spaces themselves, their reference points and the searcher's Optuna record: tests/test_search_spaces.py;
# the searcher through Tune's calls: tests/test_searcher.py)


# --- searcher and scheduler --------------------------------------------------------------------------


def test_asha_never_stops_a_reference_trial() -> None:
    from ray.tune.schedulers import TrialScheduler

    from study.search import make_scheduler

    scheduler = make_scheduler("asha", epochs=4)
    strong = SimpleNamespace(trial_id="strong", config={})
    weak = SimpleNamespace(trial_id="weak", config={})
    vanilla = SimpleNamespace(trial_id="vanilla", config={"reference": VANILLA})
    for trial in (strong, weak, vanilla):
        scheduler.on_trial_add(None, trial)
    result = {"training_iteration": 1}
    assert scheduler.on_trial_result(None, strong, {**result, "objective": 0.9}) == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, weak, {**result, "objective": 0.1}) == TrialScheduler.STOP
    assert scheduler.on_trial_result(None, vanilla, {**result, "objective": 0.1}) == TrialScheduler.CONTINUE


def test_multi_node_cluster_refuses_node_local_storage() -> None:
    from study.preflight import check_shared_storage

    two_nodes = [{"Alive": True}, {"Alive": True}]
    with pytest.raises(StudyError, match="shared storage.*s3://"):
        check_shared_storage("/home/me/results/ray", two_nodes)
    check_shared_storage("s3://bucket/mpt", two_nodes)
    check_shared_storage("/home/me/results/ray", [{"Alive": True}, {"Alive": False}])


def test_trials_asking_for_more_than_any_node_has_are_refused() -> None:
    from study.preflight import check_trial_resources

    nodes = [
        {"Alive": True, "Resources": {"CPU": 8.0, "GPU": 2.0}},
        {"Alive": True, "Resources": {"CPU": 4.0}},
        {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}},
    ]  # a dead node offers nothing
    check_trial_resources(8, 0.5, nodes)
    check_trial_resources(2, 2, nodes)
    with pytest.raises(
        StudyError,
        match=r"--gpus-per-trial 4 but the largest node of the Ray cluster has 2 GPUs "
        r"\(2 node\(s\)\): its trials would wait forever; start nodes with GPUs",
    ):
        check_trial_resources(1, 4, nodes)
    with pytest.raises(StudyError, match=r"--cpus-per-trial 16 but .* has 8 CPUs .*; lower --cpus-per-trial to 8"):
        check_trial_resources(16, 0, nodes)
    with pytest.raises(StudyError, match="has 0 GPUs.*--gpus-per-trial 0"):
        check_trial_resources(1, 1, [{"Alive": True, "Resources": {"CPU": 2.0}}])
    # a cluster's autoscaler may add a GPU node: a warning with the same fix, not a refusal
    warning = check_trial_resources(1, 1, [{"Alive": True, "Resources": {"CPU": 2.0}}], address="auto")
    assert warning.startswith(
        "--gpus-per-trial 1 but the largest node of the Ray cluster has 0 GPUs (1 node(s)): "
        "its trials wait until the cluster adds such a node; if it cannot, start nodes with GPUs"
    )
    assert check_trial_resources(1, 0, [{"Alive": True, "Resources": {"CPU": 2.0}}], address="auto") is None


# --- the trainable, without a Ray cluster ----------------------------------------------------------------


class FakeTune:
    """Stands in for `ray.tune` inside the trainable: keeps every report and a copy of each checkpoint."""

    def __init__(self, store: Path, resume_from=None) -> None:
        from ray import tune

        self.Checkpoint = tune.Checkpoint
        self.store = store
        self.resume_from = resume_from
        self.reports: list[dict] = []
        self.checkpoints: list = []

    def get_checkpoint(self):
        return self.resume_from

    def report(self, metrics: dict, *, checkpoint=None) -> None:
        self.reports.append(dict(metrics))
        kept = self.store / f"checkpoint_{len(self.reports)}"
        shutil.copytree(checkpoint.path, kept)  # the trainable deletes its temporary folder
        self.checkpoints.append(self.Checkpoint.from_directory(str(kept)))


def test_trainable_reports_every_epoch_and_resumes_from_its_checkpoint(tmp_path: Path, monkeypatch) -> None:
    from mpt.training import load_run_data
    from trainable import mpt_trial

    base = MPTConfig(**SMOKE, dev_all_languages=True, num_threads=1)
    data = load_run_data(base)
    params = {"alignment_weight": 0.5, "kl_temperature": 2.0, "trial_number": 7, "reference": None}

    search = FakeTune(tmp_path / "search")
    monkeypatch.setattr(mpt_trial, "tune", search)
    mpt_trial.train_mpt(params, base_config=base, objective="dev_avg", data=data)
    assert not any(key.startswith("test_") for report in search.reports for key in report)  # a search trial: dev only

    whole = FakeTune(tmp_path / "whole")
    monkeypatch.setattr(mpt_trial, "tune", whole)
    mpt_trial.train_mpt(params, base_config=base, objective="dev_avg", data=data, evaluate_test=True)
    assert [r["epoch"] for r in whole.reports] == [1, 2] and whole.reports[-1]["planned_epochs"] == 2
    assert "test_acc_en" not in whole.reports[0]
    last = whole.reports[-1]
    for lang in ("en", "de", "fr"):
        assert 0.0 <= last[f"test_acc_{lang}"] <= 1.0 and f"selected_dev_acc_{lang}" in last
        rows = last[f"test_correct_{lang}"]
        assert set(rows) <= {"0", "1"} and rows.count("1") / len(rows) == pytest.approx(last[f"test_acc_{lang}"])
    assert last["test_acc_avg_target"] == pytest.approx((last["test_acc_de"] + last["test_acc_fr"]) / 2)
    best = whole.reports[last["best_epoch"] - 1]
    assert last["objective"] == pytest.approx(best["dev_acc_avg"])  # dev_avg at the selected epoch
    assert all(last[f"selected_dev_acc_{lang}"] == best[f"dev_acc_{lang}"] for lang in ("en", "de", "fr"))

    resumed = FakeTune(tmp_path / "resumed", resume_from=whole.checkpoints[0])
    monkeypatch.setattr(mpt_trial, "tune", resumed)
    mpt_trial.train_mpt(params, base_config=base, objective="dev_avg", data=data, evaluate_test=True)
    assert [r["epoch"] for r in resumed.reports] == [2]  # epoch 1 is not trained again
    for key in ("loss", "objective", "test_acc_en", "test_acc_de", "test_acc_fr", "test_correct_de"):
        assert resumed.reports[0][key] == pytest.approx(last[key])  # and continues exactly


def test_dev_en_objective_is_the_english_dev_accuracy_of_the_selected_epoch() -> None:
    from trainable.mpt_trial import objective_value

    history = [SimpleNamespace(epoch=1, dev_average=0.5), SimpleNamespace(epoch=2, dev_average=0.7)]
    trainer = SimpleNamespace(best_epoch=1, best_dev_accuracy=0.4, history=history, selected_record=history[0])
    assert objective_value(trainer, "dev_en") == 0.4
    assert objective_value(trainer, "dev_avg") == 0.5
    assert objective_value(SimpleNamespace(best_dev_accuracy=-1.0, selected_record=None), "dev_en") == 0.0
    with pytest.raises(ValueError, match="dev_avg, dev_en"):
        objective_value(trainer, "test")


# --- the MLflow tracker -----------------------------------------------------------------------------------


def test_tracker_marks_a_failed_trial_and_never_duplicates_runs_or_steps(tmp_path: Path, mlflow_uri: str) -> None:
    from mlflow import MlflowClient

    from study.tracking import StudyTracker, find_runs, get_or_create_experiment, start_study_run

    uri = mlflow_uri
    client = MlflowClient(uri)
    experiment = get_or_create_experiment(client, "units", (tmp_path / "artifacts").as_uri())
    parent = start_study_run(client, experiment, "units", {"space": "alignment"}, {})
    base = MPTConfig(**SMOKE)
    tracker = StudyTracker(uri, "units", "alignment", base)
    tracker.setup()
    error = "Traceback (most recent call last):\n  ...\nNonFiniteLossError: loss is nan at epoch 2, step 1"
    trial = SimpleNamespace(
        trial_id="0123abcd",
        config={"alignment_weight": 0.25, "trial_number": 5},
        last_result={"epoch": 1, "loss": 1.5, "dev_acc_en": 0.3, "selected_dev_acc_en": 0.3},
        get_error=lambda: error,
        error_file=None,
    )
    tracker.on_trial_start(0, [], trial)
    tracker.on_trial_result(0, [], trial, {"epoch": 1, "loss": 1.5, "objective": 0.3, "dev_acc_en": 0.3})

    restored = pickle.loads(pickle.dumps(tracker))  # what Tune does to its callbacks on resume
    restored.setup()
    restored.on_trial_start(0, [], trial)
    restored.on_trial_result(0, [], trial, {"epoch": 1, "loss": 1.5, "objective": 0.3})  # re-reported epoch
    restored.on_trial_result(0, [], trial, {"epoch": 2, "loss": float("nan"), "objective": 0.3})
    restored.on_trial_error(0, [], trial)

    runs = find_runs(client, experiment, mpt_study__run_type="trial")
    assert len(runs) == 1
    run = client.get_run(runs[0].info.run_id)
    assert run.info.run_name == "alignment-005 w=0.25"
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert run.info.status == "FAILED"
    assert run.data.tags["error"].startswith("NonFiniteLossError: loss is nan")
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"trial_config.json", "error.txt", "results_per_language.csv"} <= artifacts


def test_runs_of_trials_the_resumed_study_lost_are_retired_and_the_others_linked(
    tmp_path: Path, mlflow_uri: str
) -> None:
    """A driver killed before Tune saved a started trial leaves its MLflow run behind; the resumed study's rows
    do not know that trial. Its run is KILLED and deleted, every other run left alone; the searcher's link to a
    trial's run (Optuna user attributes) names the run the tracker created."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    from study.mlflow_parent_run import StudyRun
    from study.tracking import TrialRunLinks

    uri = mlflow_uri
    record = StudyRun(
        StudySettings(name="units", space="alignment", mlflow_tracking_uri=uri, base_config=MPTConfig(**SMOKE))
    )
    record.start(tmp_path)  # results root
    for phase, trial_ids in (("search", ("kept0001", "kept0002", "lost0003")), ("confirm", ("conf0001",))):
        tracker = record.tracker(phase)
        tracker.setup()
        for number, trial_id in enumerate(trial_ids):
            tracker.on_trial_start(0, [], SimpleNamespace(trial_id=trial_id, config={"trial_number": number}))
    record.retire_lost_trials([TrialRow("kept0001", 0, COMPLETE, {}), TrialRow("kept0002", 1, "UNFINISHED", {})])

    runs = {
        run.data.tags["ray.trial_id"]: run
        for run in MlflowClient(uri).search_runs([record.experiment_id], run_view_type=ViewType.ALL)
        if "ray.trial_id" in run.data.tags
    }
    lost = runs.pop("lost0003")
    assert (lost.info.status, lost.info.lifecycle_stage) == ("KILLED", "deleted") and "lost" in lost.data.tags
    assert sorted(runs) == ["conf0001", "kept0001", "kept0002"]  # the confirmation's runs are not the search's
    for run in runs.values():
        assert (run.info.status, run.info.lifecycle_stage, "lost" in run.data.tags) == ("RUNNING", "active", False)
    run_id = runs["kept0002"].info.run_id
    assert TrialRunLinks(uri, "units")("kept0002") == {
        "mlflow_run_id": run_id,
        "mlflow_run_url": f"http://127.0.0.1:5000/#/experiments/{record.experiment_id}/runs/{run_id}",
    }
    assert TrialRunLinks(uri, "units")("nosuch00") == {}


# --- the report ---------------------------------------------------------------------------------------------


def synthetic_study(root: Path, trials: int = 10, confirmed: bool = True) -> StudyPaths:
    """A study's files as run.py writes them: search rows with dev accuracies, and (confirmed) the confirmation
    rows of the best trial (#9), vanilla and the paper default over 3 seeds, scored per test row."""
    paths = StudyPaths("synthetic", root, str(root / "ray"))
    base = MPTConfig(**SMOKE)
    write_atomically(
        paths.settings_file,
        StudySettings(
            name="synthetic", space="alignment", num_samples=trials, base_config=base, mlflow_tracking_uri="sqlite://"
        ).to_json(),
    )
    rows = []
    for number in range(trials):
        weight = 0.0 if number == 0 else 0.5 if number == 1 else number / trials
        dev = {"en": 0.5 + weight / 4, "de": 0.4 + weight / 4, "fr": 0.3 + weight / 4}
        rows.append(
            TrialRow(
                trial_id=f"{number:08x}",
                trial_number=number,
                status=COMPLETE,
                params={"alignment_weight": weight, "translator_depth": number % 3, "prompt_length": 4 + number},
                reference={0: VANILLA, 1: PAPER_DEFAULT}.get(number),
                objective=0.3 + weight / 2,
                dev_accuracy=dev,
                dev_rows={lang: 40 for lang in dev},
            )
        )
    rows.append(
        TrialRow(
            trial_id="deadbeef",
            trial_number=trials,
            status=FAILED,
            params={"alignment_weight": 0.3},
            error="NonFiniteLossError: loss is nan",
        )
    )
    save_rows(paths.trials_file, rows)
    record_in_optuna(paths, base.to_dict(), rows)
    if confirmed:
        confirm = []
        for number, reference, lift in ((9, None, 0.2), (0, VANILLA, 0.0), (1, PAPER_DEFAULT, 0.0)):
            for seed in (1, 2, 3):
                correct = {
                    lang: "1" * round(40 * (acc + (lift if lang != "en" else 0)))
                    for lang, acc in {"en": 0.6, "de": 0.4, "fr": 0.3}.items()
                }
                correct = {lang: ones + "0" * (40 - len(ones)) for lang, ones in correct.items()}
                confirm.append(
                    TrialRow(
                        trial_id=f"c{number}{seed}",
                        trial_number=number,
                        status=COMPLETE,
                        params={"alignment_weight": 0.5, "seed": seed},
                        reference=reference,
                        seed=seed,
                        test_correct=correct,
                    )
                )
        save_rows(paths.confirm_file, confirm)
    return paths


def record_in_optuna(paths: StudyPaths, base: dict, rows: list[TrialRow]) -> None:
    """The Optuna study the searcher keeps: each row's searched values, as the alignment space suggests them."""
    from study.optuna_storage import OPTUNA_JOURNAL_FILE, open_storage

    study = optuna.create_study(
        study_name=paths.name, direction="maximize", storage=open_storage(str(paths.study_dir / OPTUNA_JOURNAL_FILE))
    )
    for row in rows:
        record = probe(get_space("alignment"), base, row.params)
        done = row.status == COMPLETE
        study.add_trial(
            optuna.trial.create_trial(
                params=record.params,
                distributions=record.distributions,
                value=row.objective if done else None,
                state=optuna.trial.TrialState.COMPLETE if done else optuna.trial.TrialState.FAIL,
            )
        )


def test_report_opens_with_the_verdict_then_the_search_on_dev_and_its_plots(tmp_path: Path) -> None:
    from study.report import write_report

    paths = synthetic_study(tmp_path)
    written = write_report(paths)
    report = paths.report_file.read_text()
    verdict = written.verdict.line
    assert verdict.startswith("MPT (trial 9) vs vanilla on the 2 target languages: +20.0 pp [+")
    # the same rows in every seed: only the rows vary, and no number of seeds gets under what they allow
    assert "], 3 paired seeds: better than vanilla (with 3 seeds this study detects gains >= " in verdict
    assert verdict.endswith(
        "no number of seeds would detect 2 pp on these 40 test rows: their variation alone allows >= 15.3 pp)"
    )
    assert report.index("## Verdict") < report.index(verdict) < report.index("## Search")
    assert written.summary.rstrip().endswith(f"Verdict: {verdict}")
    assert "| #0 vanilla | 3 | 60.0 [" in report and "### Transfer gap" in report  # accuracies, the gap
    # the search table: dev, one seed, Wilson intervals (trial #9 has 0.5 + 0.9 / 4 = 72.5% on 40 English rows)
    assert "| en | 72.5 [57.2, 83.9] | 50.0 [35.2, 64.8] | +22.5 |" in report
    assert "NonFiniteLossError" in report  # the failed trial and its reason
    for plot in (
        "confirmed_accuracy.png",
        "gain_vs_distance.png",
        "search_per_language.png",
        "objective_vs_alignment_weight.png",
    ):
        assert (paths.study_dir / plot).read_bytes()[:4] == b"\x89PNG"
        assert f"]({plot})" in report


def test_report_without_confirmation_says_there_is_no_verdict(tmp_path: Path) -> None:
    from study.report import write_report

    paths = synthetic_study(tmp_path, confirmed=False)
    written = write_report(paths)
    assert written.verdict is None and "no test accuracy was measured" in written.summary
    assert "No verdict: the study ran without the confirmation" in paths.report_file.read_text()


def test_report_html_is_self_contained_with_every_plot_inline(tmp_path: Path) -> None:
    """What the MLflow UI shows: the same report, tables as tables, the plots as data URIs (no file links)."""
    import base64
    import re

    from study.report import write_report

    paths = synthetic_study(tmp_path)
    write_report(paths)
    page = paths.report_html_file.read_text(encoding="utf-8")
    assert "<td>de</td>" in page.replace(' style="text-align: left;"', "") and "<h2>Verdict" in page
    sources = re.findall(r'<img[^>]*src="([^"]+)"', page)
    plots = sorted(paths.study_dir.glob("*.png"))
    assert len(sources) == len(plots) >= 3
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    inlined = {base64.b64decode(s.split(",", 1)[1]) for s in sources}
    assert inlined == {plot.read_bytes() for plot in plots}


def test_report_of_a_study_without_results_says_how_to_continue(tmp_path: Path) -> None:
    from study.report import write_report

    paths = synthetic_study(tmp_path)
    paths.trials_file.unlink()
    with pytest.raises(StudyError, match="--resume"):
        write_report(paths)


def test_a_trial_report_reads_back_from_its_tune_result_and_leaves_the_averages_out() -> None:
    from study.tracking import per_language_rows
    from trainable.metrics import Runtime, TestResult, TrialReport

    report = TrialReport(
        epoch=3,
        planned_epochs=3,
        loss=1.0,
        ce_loss=0.8,
        kl_loss=0.2,
        dev_accuracy={"en": 0.1, "sw": 0.2},
        dev_rows={"en": 150, "sw": 150},
        dev_average=0.15,
        best_epoch=2,
        selected_dev_accuracy={"en": 0.6, "sw": 0.3},
        objective=0.45,
        epoch_seconds=9.5,
        runtime=Runtime("cpu", "bf16", 2),
        test=TestResult({"en": 0.5, "de": 0.4}, 0.45, 0.4, {"en": "10", "de": "01"}),
    )
    metrics = report.to_report()
    assert metrics["test_acc_avg_target"] == 0.4 and metrics["selected_dev_acc_sw"] == 0.3
    assert metrics["runtime_precision"] == "bf16" and metrics["test_correct_de"] == "01"
    tune_result = {**metrics, "trial_id": "0123abcd", "training_iteration": 3, "time_total_s": 30.0}
    assert TrialReport.from_result(tune_result) == TrialReport(
        **{**vars(report), "trial_id": "0123abcd", "time_total_s": 30.0}
    )
    assert report.trained_all_epochs and not TrialReport(epoch=2, planned_epochs=3).trained_all_epochs
    assert TrialReport.from_result(None) == TrialReport()  # a trial that failed before its first report
    assert TrialReport.from_result({"training_iteration": 2}).epoch == 2  # Tune's count: one report an epoch
    assert set(report.tracked_metrics()) == {
        "loss",
        "ce_loss",
        "kl_loss",
        "dev_acc_en",
        "dev_acc_sw",
        "dev_acc_avg",
        "selected_dev_acc_en",
        "selected_dev_acc_sw",
        "objective",
        "best_epoch",
        "epoch_seconds",
        "test_acc_en",
        "test_acc_de",
        "test_acc_avg",
        "test_acc_avg_target",
    }
    # a confirmation run ranks nothing: no `objective` in MLflow (English dev, which selected its epoch, is there)
    assert set(report.tracked_metrics(ranked=False)) == set(report.tracked_metrics()) - {"objective"}
    # results_per_language.csv: a column only where every language has a value
    search = TrialReport(epoch=3, selected_dev_accuracy={"en": 0.6, "sw": 0.3}).to_report()
    assert per_language_rows(search) == [
        {"language": "en", "dev_accuracy": 0.6},
        {"language": "sw", "dev_accuracy": 0.3},
    ]
    confirm = TrialReport(
        epoch=3, selected_dev_accuracy={"en": 0.6}, test=TestResult({"en": 0.5, "sw": 0.4})
    ).to_report()
    assert per_language_rows(confirm) == [
        {"language": "en", "test_accuracy": 0.5},
        {"language": "sw", "test_accuracy": 0.4},
    ]
    assert per_language_rows(tune_result) == []  # neither measure has every language: no table of holes


def test_git_state_names_the_commit_and_whether_tracked_files_changed(tmp_path: Path) -> None:
    import subprocess

    from study.environment import git_state

    assert git_state(tmp_path) is None  # not a checkout
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "file.txt").write_text("one")
    subprocess.run([*git, "add", "file.txt"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "one"], cwd=tmp_path, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    (tmp_path / "untracked.txt").write_text("not tracked: not a change")
    assert git_state(tmp_path) == (head, False)
    (tmp_path / "file.txt").write_text("two")
    assert git_state(tmp_path) == (head, True)


def test_a_failed_trials_error_is_read_from_its_local_folder_before_storage_has_it(tmp_path: Path) -> None:
    """Tune calls back on a trial error before the error file reaches the storage folder (get_error: None)."""
    from types import SimpleNamespace

    from study.tracking import trial_error_text

    error_file = tmp_path / "error.txt"
    error_file.write_text("Failure # 1\nTraceback ...\nNonFiniteLossError: loss is nan at epoch 2, step 3\n")
    trial = SimpleNamespace(error_file=str(error_file), get_error=lambda: None)
    assert trial_error_text(trial).rstrip().endswith("loss is nan at epoch 2, step 3")
    lost = SimpleNamespace(error_file=str(tmp_path / "missing.txt"), get_error=lambda: None)
    assert "see the Ray logs" in trial_error_text(lost)


def test_confirm_shots_are_parsed_checked_and_kept_by_a_resume() -> None:
    from study import cli, tuner

    request = cli.request_from_args(cli.parse_args(["--smoke", "--confirm-shots", "16,4,16"]))
    assert request.settings.confirm_shots == [4, 16]
    assert cli.request_from_args(cli.parse_args(["--smoke"])).settings.confirm_shots == []  # the base config's K
    for bad in ("4,x", "0,4", ","):
        with pytest.raises(StudyError, match="--confirm-shots"):
            cli.request_from_args(cli.parse_args(["--smoke", "--confirm-shots", bad]))
    with pytest.raises(StudyError, match="--no-confirm contradicts"):
        cli.request_from_args(cli.parse_args(["--smoke", "--no-confirm", "--confirm-shots", "4"]))
    stored = StudySettings.from_json(request.settings.to_json())  # as study.json keeps it
    assert stored.confirm_shots == [4, 16]
    cli.request_from_args(cli.parse_args(["--smoke", "--resume"])).refuse_changes(stored)  # the stored list applies
    with pytest.raises(StudyError, match="confirm_shots"):
        cli.request_from_args(cli.parse_args(["--smoke", "--resume", "--confirm-shots", "4,8"])).refuse_changes(stored)
    too_many = cli.request_from_args(cli.parse_args(["--smoke", "--confirm-shots", "4,100000"])).settings
    with pytest.raises(StudyError, match="--confirm-shots 100000 is more than the training data has"):
        tuner.load_study_data(too_many)  # before anything is written


def test_the_confirmation_retrains_the_references_even_when_their_search_trial_failed(capsys) -> None:
    """Without vanilla there is no verdict: a reference whose search trial failed (e.g. its node lost twice) is
    retrained from scratch like any candidate, each configuration once, the best first."""
    from study.tuner import confirmation_candidates

    rows = [
        TrialRow("v0", 0, FAILED, {"translator_depth": 0}, VANILLA, objective=None),
        TrialRow("p1", 1, COMPLETE, {"translator_depth": 1}, PAPER_DEFAULT, objective=0.40),
        TrialRow("m2", 2, COMPLETE, {"translator_depth": 2}, objective=0.45),
    ]
    assert [r.trial_number for r in confirmation_candidates(rows, top=1)] == [2, 0, 1]
    assert "vanilla reference's search trial #0 ended FAILED" in capsys.readouterr().out
    assert [r.trial_number for r in confirmation_candidates(rows, top=2)] == [2, 1, 0]  # each once
