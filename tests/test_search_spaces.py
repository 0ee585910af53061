"""The search spaces (define-by-run, conditional) and the study's searcher over them: what each space searches,
the reference points, values passed on as suggested, early-stopped trials told to Optuna as PRUNED, the Optuna
storage matched again on resume, and importances over trials with different parameter sets. No Ray trials."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest

from mpt.config import MPTConfig
from search_spaces import PAPER_DEFAULT, PROBE, REFERENCE_POINTS, SPACES, VANILLA, UnknownSpaceError, get_space, probe
from study.errors import StudyError
from study.optuna_storage import SearchedParameters, load_optuna_study
from study.settings import StudySettings
from trainable.spec import trial_config

BASE = MPTConfig(epochs=4).to_dict()
TRANSLATOR_DETAILS = {"translator_hidden", "translator_residual", "translator_mode"}
KL_DETAILS = {"kl_temperature", "alignment_batch_size", "teacher_stop_gradient", "ce_only_epochs"}
TrialState = optuna.trial.TrialState


def sampled_trials(name: str, count: int = 60, base: dict = BASE) -> list[optuna.trial.FrozenTrial]:
    """Optuna's records of `count` random trials of a space (plus its two extreme corners: depth 0, w 0)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    study.enqueue_trial({"translator_depth": 0, "alignment_weight": 0.0})
    for _ in range(count):
        trial = study.ask()
        get_space(name).define(trial, base)
        study.tell(trial, 0.0)
    return study.trials


def searched(name: str) -> set[str]:
    return {p for t in sampled_trials(name) for p in t.params}


# --- what the spaces search ----------------------------------------------------------------------------


def test_the_spaces_search_what_the_design_card_and_the_issue_say() -> None:
    assert list(SPACES) == ["alignment", "kl", "prompt", "translator", "full"]
    # the design card: "Optuna searches prompt length, alignment weight and translator depth"
    assert searched("alignment") == {"prompt_length", "alignment_weight", "translator_depth"}
    assert searched("kl") == {"alignment_weight", *KL_DETAILS}
    assert searched("prompt") == {"prompt_length", "prompt_init", "learning_rate"}
    assert searched("translator") == {"translator_depth", *TRANSLATOR_DETAILS}
    assert searched("full") == searched("alignment") | searched("kl") | searched("prompt") | searched("translator")
    with pytest.raises(UnknownSpaceError, match="alignment, kl, prompt, translator, full"):
        get_space("nope")


@pytest.mark.parametrize("name", ["translator", "full"])
def test_translator_details_are_searched_only_with_a_translator(name: str) -> None:
    trials = sampled_trials(name)
    identity = [t for t in trials if t.params["translator_depth"] == 0]
    deep = [t for t in trials if t.params["translator_depth"] > 0]
    assert identity and deep
    assert all(not TRANSLATOR_DETAILS & set(t.params) for t in identity)
    assert all(TRANSLATOR_DETAILS <= set(t.params) for t in deep)


@pytest.mark.parametrize("name", ["kl", "full"])
def test_alignment_details_are_searched_only_with_an_alignment_task(name: str) -> None:
    trials = sampled_trials(name)
    without = [t for t in trials if t.params["alignment_weight"] == 0]
    aligned = [t for t in trials if t.params["alignment_weight"] > 0]
    assert without and aligned
    assert all(not KL_DETAILS & set(t.params) for t in without)
    assert all(KL_DETAILS <= set(t.params) for t in aligned)


@pytest.mark.parametrize("name", list(SPACES))
def test_every_suggestion_is_a_valid_config(name: str) -> None:
    for trial in sampled_trials(name, count=30):
        MPTConfig.from_dict({**BASE, **trial.params})  # raises ConfigError on any out-of-range value


def test_ce_only_epochs_leave_the_alignment_task_at_least_one_epoch() -> None:
    values = {t.params["ce_only_epochs"] for t in sampled_trials("kl", count=80) if "ce_only_epochs" in t.params}
    assert values == {0, 1, 2, 3}  # epochs 4: joint from the start (0) up to the last epoch aligned only (3)
    one_epoch = sampled_trials("kl", count=10, base={**BASE, "epochs": 1})
    assert all("ce_only_epochs" not in t.params for t in one_epoch)  # only 0 is possible: nothing to search
    assert MPTConfig().ce_only_epochs == 0  # joint training from the start stays the default


# --- the searcher ------------------------------------------------------------------------------------------


def make(
    tmp_path: Path, space: str, name: str = "units", resume: bool = False, storage: str | None = None, seed: int = 3
):
    from study.search import make_searcher

    url = storage or str(tmp_path / name / "optuna.log")
    return make_searcher(
        get_space(space), BASE, seed=seed, num_samples=12, storage_url=url, study_name=name, resume=resume
    ), url


@pytest.mark.parametrize("name", list(SPACES))
def test_reference_points_come_first_in_every_space_with_only_what_they_search(tmp_path: Path, name: str) -> None:
    base = MPTConfig(epochs=4, translator_depth=3, alignment_weight=0.9).to_dict()
    from study.search import make_searcher

    url = str(tmp_path / "optuna.log")
    searcher = make_searcher(get_space(name), base, seed=0, num_samples=8, storage_url=url, study_name=name)
    vanilla, paper, frozen = searcher.suggest("a"), searcher.suggest("b"), searcher.suggest("c")
    assert (vanilla["reference"], paper["reference"], frozen["reference"]) == (VANILLA, PAPER_DEFAULT, PROBE)
    assert (vanilla["trial_number"], paper["trial_number"], frozen["trial_number"]) == (0, 1, 2)
    for config, (depth, weight, length) in ((vanilla, (0, 0.0, 16)), (paper, (1, 0.5, 16)), (frozen, (0, 0.0, 0))):
        run = trial_config(MPTConfig.from_dict(base), config)
        assert (run.translator_depth, run.alignment_weight, run.prompt_length) == (depth, weight, length)
    recorded = load_optuna_study(url, name).trials
    # vanilla and the probe have no translator and no alignment task: nothing of theirs is searched in them
    assert not (TRANSLATOR_DETAILS | KL_DETAILS) & (set(recorded[0].params) | set(recorded[2].params))
    for trial, config in zip(recorded, (vanilla, paper)):  # the config holds the suggested values as suggested
        assert {k: config[k] for k in trial.params} == trial.params
    # a space that searches the prompt length from 4 cannot record the probe's 0: Optuna keeps the base's value
    # there (not a random draw), and the trial runs with 0
    assert recorded[2].params.get("prompt_length", 16) == 16


def test_the_probe_is_skipped_on_an_mlm_backbone_and_confirmed_with_the_other_references(tmp_path: Path) -> None:
    """prompt length 0 leaves an MLM verbalizer nothing to train (MPTConfig refuses it): such a study runs vanilla
    and the paper default, then TPE, instead of crashing on the probe; elsewhere the confirmation retrains it."""
    from study.results import COMPLETE, TrialRow
    from study.search import make_searcher
    from study.tuner import confirmation_candidates, skipped_references

    def skipped(**fields) -> tuple[str, ...]:
        return skipped_references(StudySettings(name="x", space="alignment", base_config=MPTConfig(**fields)))

    assert skipped(backbone="tiny-xlmr") == (PROBE,)  # a masked LM: head auto answers through its verbalizer
    assert skipped(backbone="tiny-xlmr", head="linear") == skipped() == ()  # a linear head: the probe runs
    searcher = make_searcher(
        get_space("alignment"),
        BASE,
        seed=0,
        num_samples=6,
        study_name="mlm",
        storage_url=str(tmp_path / "optuna.log"),
        skip_references=skipped(backbone="tiny-xlmr"),
    )
    roles = [searcher.suggest(t).get("reference") for t in "abc"]
    assert roles == [VANILLA, PAPER_DEFAULT, None]  # the third trial is TPE's
    rows = [
        TrialRow(f"t{n}", n, COMPLETE, {}, reference, objective)
        for n, reference, objective in (
            (0, VANILLA, 0.4),
            (1, PAPER_DEFAULT, 0.41),
            (2, PROBE, 0.45),
            (3, None, 0.5),
            (4, None, 0.3),
        )
    ]
    assert [r.trial_number for r in confirmation_candidates(rows, 1)] == [3, 0, 1, 2]
    assert [r.trial_number for r in confirmation_candidates(rows, 2)] == [3, 2, 0, 1]  # the probe once


def test_search_trials_carry_exactly_the_suggested_values_and_tpe_is_seeded(tmp_path: Path) -> None:
    searcher, url = make(tmp_path, "full", name="a")
    configs = [searcher.suggest(f"t{i}") for i in range(5)]
    for trial, config in zip(load_optuna_study(url, "a").trials, configs):
        extra = {k: v for k, v in config.items() if k not in trial.params}
        # the full space searches every reference field: a reference adds only its name, a search trial nothing
        assert set(extra) == (
            {"trial_number", "reference"} if trial.number < len(REFERENCE_POINTS) else {"trial_number"}
        )
        if config.get("reference") == PROBE:  # but cannot record the probe's prompt length 0 (it searches 4..64)
            assert (config["prompt_length"], trial.params["prompt_length"]) == (0, BASE["prompt_length"])
            continue
        assert {k: config[k] for k in trial.params} == trial.params  # nothing rewritten or dropped
        assert config["trial_number"] == trial.number
    again, _ = make(tmp_path, "full", name="b")
    assert [again.suggest(f"t{i}") for i in range(5)] == configs  # seeded: the same study twice
    other, _ = make(tmp_path, "full", name="c", seed=4)
    assert [other.suggest(f"t{i}") for i in range(5)][2:] != configs[2:]


def report_epochs(searcher, trial_id: str, objectives: list[float], planned: int = 4) -> dict:
    """Tune's calls for a trial's epochs but the last, whose result it hands to on_trial_complete alone when a
    scheduler stops the trial (at max_t too); returns that result."""
    results = [
        {"objective": value, "epoch": epoch, "planned_epochs": planned, "training_iteration": epoch}
        for epoch, value in enumerate(objectives, start=1)
    ]
    for result in results[:-1]:
        searcher.on_trial_result(trial_id, result)
    return results[-1]


def test_early_stopped_trials_are_pruned_with_their_intermediate_values(tmp_path: Path) -> None:
    from study.search import tell_failed

    searcher, url = make(tmp_path, "alignment")
    for trial_id in ("done", "stopped", "failed", "nan"):
        searcher.suggest(trial_id)
    last = report_epochs(searcher, "done", [0.3, 0.4, 0.5, 0.6])
    searcher.on_trial_result("done", last)  # a trial that ends by itself: Tune reports its last result, then ends it
    searcher.on_trial_complete("done", last)
    searcher.on_trial_complete("stopped", report_epochs(searcher, "stopped", [0.2, 0.25]))  # ASHA: 2 of 4 epochs
    searcher.on_trial_complete("failed", report_epochs(searcher, "failed", [0.2]), error=True)
    searcher.on_trial_complete("nan", report_epochs(searcher, "nan", [0.2, 0.2, 0.2, math.nan]))
    done, stopped, failed, nan = load_optuna_study(url, "units").trials
    assert (done.state, done.value, done.intermediate_values) == (
        TrialState.COMPLETE,
        0.6,
        {1: 0.3, 2: 0.4, 3: 0.5, 4: 0.6},
    )
    assert (stopped.state, stopped.value, stopped.intermediate_values) == (TrialState.PRUNED, 0.25, {1: 0.2, 2: 0.25})
    # a NaN objective fails for good; an error waits for the search's end, since --resume may retry the trial
    assert (failed.state, nan.state) == (TrialState.RUNNING, TrialState.FAIL)
    tell_failed(url, "units", [failed.number])
    assert load_optuna_study(url, "units").trials[failed.number].state == TrialState.FAIL


def test_a_restored_searcher_continues_the_same_optuna_trials(tmp_path: Path) -> None:
    """Tune resumes from its last save of the searcher; the storage has moved on since."""
    import pickle

    searcher, url = make(tmp_path, "full")
    for trial_id in ("a", "b", "c"):
        searcher.suggest(trial_id)
    report_epochs(searcher, "a", [0.1, 0.2])
    searcher.save(str(tmp_path / "searcher.pkl"))  # Tune's last save before the driver dies
    searcher.on_trial_complete("a", report_epochs(searcher, "a", [0.1, 0.2, 0.3, 0.4]))  # finished since
    lost = searcher.suggest("d")  # a trial Tune started since: the resumed Tune does not know it

    resumed = pickle.loads(pickle.dumps(searcher))  # what Tune keeps in tuner.pkl, then its saved state
    resumed.restore(str(tmp_path / "searcher.pkl"))
    resumed.on_trial_complete("a", report_epochs(resumed, "a", [0.9, 0.9, 0.9, 0.9]))  # rerun: not told again
    again = resumed.suggest("e")
    assert {k: v for k, v in again.items() if k != "trial_number"} == {
        k: v for k, v in lost.items() if k != "trial_number"
    } and again["trial_number"] == lost["trial_number"] == 3
    assert resumed.suggest("f")["trial_number"] == 4  # then new ones
    trials = load_optuna_study(url, "units").trials
    assert [t.number for t in trials] == [0, 1, 2, 3, 4]  # no duplicate
    assert (trials[0].state, trials[0].value, trials[0].intermediate_values) == (
        TrialState.COMPLETE,
        0.4,
        {1: 0.1, 2: 0.2, 3: 0.3, 4: 0.4},
    )


def test_the_optuna_study_is_new_unless_resumed(tmp_path: Path) -> None:
    searcher, url = make(tmp_path, "alignment")
    searcher.suggest("a")
    with pytest.raises(StudyError, match="already has a study 'units'.*another --name"):
        make(tmp_path, "alignment")
    # a resume that Tune cannot restore (killed before its first save) starts Tune over, and the study with it
    restarted, _ = make(tmp_path, "alignment", resume=True)
    assert restarted.suggest("b")["reference"] == VANILLA
    assert len(load_optuna_study(url, "units").trials) == len(REFERENCE_POINTS)  # the references, enqueued again


def test_a_database_url_is_an_rdb_storage(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cluster.db'}"
    searcher, _ = make(tmp_path, "kl", storage=url)
    searcher.suggest("a")
    searcher.on_trial_complete("a", report_epochs(searcher, "a", [0.1, 0.2, 0.3, 0.4]))
    study = optuna.load_study(study_name="units", storage=url)  # what any Optuna tool does with the URL
    assert study.trials[0].state == TrialState.COMPLETE and study.trials[0].params == {"alignment_weight": 0.0}
    with pytest.raises(StudyError, match="cannot open the Optuna storage.*--optuna-storage"):
        make(tmp_path, "kl", storage="nosuchdriver://host/db")


def test_a_reader_of_a_missing_journal_does_not_create_it(tmp_path: Path) -> None:
    from study.optuna_storage import searched_parameters

    missing = tmp_path / "old" / "optuna.log"
    record = searched_parameters(str(missing), "old")
    assert record.study is None and "missing" in record.problem and not missing.exists()


# --- importances over trials with different parameter sets --------------------------------------------


def test_importances_count_every_complete_trial_of_a_conditional_space() -> None:
    from study.search_figures import MIN_TRIALS_FOR_IMPORTANCE, parameter_importances

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        get_space("translator").define(trial, BASE)
        # the objective follows the width, a parameter only depth > 0 trials have (depth 0: the mean width's)
        study.tell(trial, trial.params.get("translator_hidden", 240) / 512)
    pruned = study.ask()
    get_space("translator").define(pruned, BASE)
    study.tell(pruned, state=TrialState.PRUNED)
    assert {len(t.params) for t in study.trials} == {1, 4}  # different parameter sets
    importances = parameter_importances(SearchedParameters(study))
    assert set(importances) == {"translator_depth", *TRANSLATOR_DETAILS}
    assert max(importances, key=importances.get) == "translator_hidden"
    assert parameter_importances(SearchedParameters(study)) == importances  # the same report every time
    small = optuna.create_study(direction="maximize")
    for trial in study.trials[: MIN_TRIALS_FOR_IMPORTANCE - 1]:
        small.add_trial(trial)
    assert parameter_importances(SearchedParameters(small)) is None


def test_probe_reports_what_a_point_searches() -> None:
    record = probe(get_space("full"), BASE, {**BASE, "translator_depth": 0, "alignment_weight": 0.0})
    assert set(record.params) == {
        "alignment_weight",
        "translator_depth",
        "prompt_length",
        "prompt_init",
        "learning_rate",
    }
