"""The study's searchers through the calls Ray Tune makes (suggest, on_trial_result, on_trial_complete, save,
restore): TPE moves towards the optimum of a known objective, a failed trial that `--resume` retries ends as the
run it became, every Optuna trial carries what optuna-dashboard shows of it, and the confirmation's fixed configs
are handed out exactly once across a restore. No Ray trials. (Spaces, reference points, PRUNED trials and the
storage on resume: tests/test_search_spaces.py.)"""

from __future__ import annotations

import math
import pickle
import sys
from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from mpt.config import MPTConfig
from search_spaces import REFERENCE_POINTS, get_space

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # `study` is a folder of scripts, not an installed package

from study.optuna_storage import load_optuna_study, set_study_attributes  # noqa: E402
from study.search import FixedConfigs, make_searcher, tell_failed  # noqa: E402

BASE = MPTConfig(epochs=3, seed=7).to_dict()
TrialState = optuna.trial.TrialState


class FakeRunLinks:
    """What the study's TrialRunLinks answers, without MLflow; picklable, as Tune needs."""

    def __call__(self, trial_id: str) -> dict[str, str]:
        return {"mlflow_run_id": f"run-{trial_id}", "mlflow_run_url": f"http://127.0.0.1:5000/#/runs/run-{trial_id}"}


def searcher_for(tmp_path: Path, seed: int = 0, num_samples: int = 12, name: str = "units", **kwargs):
    url = str(tmp_path / name / "optuna.log")
    return make_searcher(
        get_space("alignment"), BASE, seed=seed, num_samples=num_samples, storage_url=url, study_name=name, **kwargs
    ), url


def train(searcher, trial_id: str, objective: float, *, error: bool = False, dev: dict | None = None) -> None:
    """What Tune tells the searcher of a trial that trains its 3 epochs (the objective rising to `objective`),
    or fails after the first with `error`."""
    results = [
        {
            "objective": objective * share,
            "epoch": epoch,
            "planned_epochs": 3,
            "best_epoch": epoch,
            **{f"selected_dev_acc_{lang}": acc for lang, acc in (dev or {}).items()},
        }
        for epoch, share in ((1, 0.5), (2, 0.75), (3, 1.0))
    ]
    if error:
        searcher.on_trial_result(trial_id, results[0])
        searcher.on_trial_complete(trial_id, None, error=True)
        return
    for result in results[:-1]:
        searcher.on_trial_result(trial_id, result)
    searcher.on_trial_complete(trial_id, results[-1])  # Tune hands the last result to this call alone


# --- TPE searches --------------------------------------------------------------------------------------------

OPTIMUM = {"alignment_weight": 0.8, "prompt_length": 16}


def distance(config: dict) -> float:
    """From the optimum of the known objective, 1 - distance: w on its scale, the prompt length in octaves / 4 (the
    frozen probe's length 0 as 1)."""
    return math.hypot(
        config["alignment_weight"] - OPTIMUM["alignment_weight"],
        math.log2(max(config["prompt_length"], 1) / OPTIMUM["prompt_length"]) / 4,
    )


def test_tpe_moves_towards_the_optimum_of_a_known_objective(tmp_path: Path, monkeypatch) -> None:
    """24 planned trials: 8 random start-up trials (the references first), then TPE. Each seed's 12 first
    trials are told before TPE's later suggestions are compared with the random ones (measured with the three
    references: TPE 0.43-0.88 of the random phase's mean distance over sampler seeds 0-7, 0.43-0.54 on the seeds
    0-2 tested here; with two references, RandomSampler in its place gave 0.76-1.29). The study is kept in
    memory: the journal file's fsync per write made this test 1-14 s on a busy disk."""
    import study.search

    monkeypatch.setattr(study.search, "open_storage", lambda url: optuna.storages.InMemoryStorage())
    random_phase, tpe_phase = [], []
    for seed in (0, 1, 2):
        searcher, _ = searcher_for(tmp_path, seed=seed, num_samples=24, name=f"tpe{seed}")
        distances = []
        for i in range(20):
            config = searcher.suggest(f"t{i}")
            distances.append(distance(config))
            train(searcher, f"t{i}", 1 - distances[-1])
        references = len(REFERENCE_POINTS)
        random_mean, tpe_mean = sum(distances[references:10]) / (10 - references), sum(distances[12:20]) / 8
        assert tpe_mean < 0.8 * random_mean, (seed, distances)
        random_phase.append(random_mean)
        tpe_phase.append(tpe_mean)
    assert sum(tpe_phase) < 0.65 * sum(random_phase), (tpe_phase, random_phase)


# --- failed trials, and a resume that retries them ----------------------------------------------------------


def test_a_failed_trial_is_fail_only_if_still_failed_when_the_search_ends(tmp_path: Path, caplog) -> None:
    searcher, url = searcher_for(tmp_path)
    for trial_id in ("a", "b", "c"):
        searcher.suggest(trial_id)
    train(searcher, "a", 0.5)
    train(searcher, "b", 0.4, error=True)  # failed twice: Tune gives up on it until --resume
    assert load_optuna_study(url, "units").trials[1].state == TrialState.RUNNING
    searcher.save(str(tmp_path / "searcher.pkl"))  # Tune's save; then the driver is killed

    resumed = pickle.loads(pickle.dumps(searcher))  # tuner.pkl, then the saved state
    resumed.restore(str(tmp_path / "searcher.pkl"))
    train(resumed, "b", 0.45)  # --resume retried it from its checkpoint: it succeeds
    train(resumed, "c", 0.3, error=True)  # and this one fails for good
    assert tell_failed(url, "units", [1, 2]) == [2]  # what the ended search tells: b is COMPLETE already
    trials = load_optuna_study(url, "units").trials
    assert [(t.state, t.value) for t in trials] == [
        (TrialState.COMPLETE, 0.5),
        (TrialState.COMPLETE, 0.45),
        (TrialState.FAIL, None),
    ]
    assert trials[1].intermediate_values == {1: 0.2, 2: 0.3375, 3: 0.45}  # epoch 1 as first reported
    assert tell_failed(url, "units", [2]) == []  # a second end of the search (another resume) changes nothing

    resumed.save(str(tmp_path / "searcher.pkl"))  # the search ended; a later --resume retries c successfully
    again = pickle.loads(pickle.dumps(resumed))
    again.restore(str(tmp_path / "searcher.pkl"))
    train(again, "c", 0.6)
    assert load_optuna_study(url, "units").trials[2].state == TrialState.FAIL  # Optuna cannot reopen it
    assert "trial 2, retried by --resume, succeeded, but its Optuna trial stays FAIL" in caplog.text


def test_the_searcher_limits_concurrency_and_hears_the_end_of_a_trial_resume_retried(tmp_path: Path) -> None:
    """Tune wraps the searcher in its ConcurrencyLimiter (max_concurrent_trials), whose own limit forgets a failed
    trial and would drop the end of its retry: the searcher keeps the limit itself."""
    from ray.tune.search import ConcurrencyLimiter

    searcher, url = searcher_for(tmp_path)
    limited = ConcurrencyLimiter(searcher, max_concurrent=2)
    assert limited.suggest("a") and limited.suggest("b") and limited.suggest("c") is None  # two at a time
    train(limited, "b", 0.4, error=True)
    assert limited.suggest("c")["trial_number"] == 2  # the failed trial's place
    limited.save(str(tmp_path / "searcher.pkl"))

    resumed = ConcurrencyLimiter(pickle.loads(pickle.dumps(searcher)), max_concurrent=2)  # as tune.run rebuilds it
    resumed.restore(str(tmp_path / "searcher.pkl"))
    assert resumed.suggest("d") is None  # a and c still run; b, failed, is retried by --resume
    train(resumed, "b", 0.45)
    assert load_optuna_study(url, "units").trials[1].state == TrialState.COMPLETE
    assert resumed.suggest("d") is None  # a and c still run
    train(resumed, "a", 0.5)
    assert resumed.suggest("d")["trial_number"] == 3


# --- what optuna-dashboard shows ----------------------------------------------------------------------------


def test_optuna_trials_carry_role_seed_dev_accuracy_and_their_mlflow_run(tmp_path: Path) -> None:
    searcher, url = searcher_for(tmp_path, run_info=FakeRunLinks())
    assert searcher.set_search_properties("objective", "max", {}) and searcher.set_search_properties(None, None, {})
    assert not searcher.set_search_properties("loss", "min", {})  # Tune's metric must be the searcher's
    for trial_id in ("a", "b", "c"):
        searcher.suggest(trial_id)
    train(searcher, "a", 0.4, dev={"en": 0.5, "de": 0.3})
    resumed = pickle.loads(pickle.dumps(searcher))  # the MLflow link survives Tune's pickle (tuner.pkl)
    train(resumed, "b", 0.45, dev={"en": 0.5, "de": 0.4})
    train(resumed, "c", 0.2, error=True, dev={"en": 0.2, "de": 0.2})
    tell_failed(url, "units", [2])  # attributes are set before a trial is told: Optuna refuses them after
    set_study_attributes(url, "units", {"verdict": "MPT beats vanilla", "mlflow_experiment_url": "http://x/#/1"})

    study = optuna.load_study(
        study_name="units", storage=JournalStorage(JournalFileBackend(url))
    )  # as docs/tracking.md says
    first, second, failed = (t.user_attrs for t in study.trials)
    # the reference points in their order (vanilla, paper_default, ...), then TPE's trials
    assert [first["role"], second["role"], failed["role"]] == [*REFERENCE_POINTS, "search", "search"][:3]
    assert {first["seed"], second["seed"], failed["seed"]} == {7}
    assert (first["selected_dev_acc_en"], first["selected_dev_acc_de"]) == (0.5, 0.3)
    assert (first["selected_epoch"], failed["selected_epoch"]) == (3, 1)  # the failed one's last report
    assert second["mlflow_run_id"] == "run-b" and second["mlflow_run_url"].endswith("run-b")
    assert failed["ray_trial_id"] == "c" and study.trials[2].state == TrialState.FAIL
    assert study.user_attrs == {"verdict": "MPT beats vanilla", "mlflow_experiment_url": "http://x/#/1"}


# --- the confirmation's fixed configs -----------------------------------------------------------------------


def test_fixed_configs_are_handed_out_exactly_once_across_a_restore(tmp_path: Path) -> None:
    configs = [{"trial_number": n, "seed": s} for n in (3, 0) for s in (1, 2)]
    searcher = FixedConfigs(configs)
    first = [searcher.suggest(f"t{i}") for i in range(2)]
    searcher.save(str(tmp_path / "fixed.pkl"))  # Tune's last save before the driver dies
    searcher.suggest("lost")  # started after the save: the resumed Tune does not know it

    resumed = FixedConfigs([])  # Tune rebuilds it from tuner.pkl, then restores its saved state
    resumed.restore(str(tmp_path / "fixed.pkl"))
    rest = [resumed.suggest(f"r{i}") for i in range(3)]
    assert rest[-1] == FixedConfigs.FINISHED
    assert first + rest[:-1] == configs  # each exactly once, in order: the lost one handed out again
    rest[0]["seed"] = 99
    assert resumed.configs[2] == configs[2]  # handed out as copies
