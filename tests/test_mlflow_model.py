"""What a study leaves to use: the best trial's trained-prompt directory, its MLflow pyfunc model (predicting as
`mpt.predict` does, offline), its Model Registry version, and the confirmation runs' directories, which
`mpt.evaluate` reproduces exactly. The session's shared smoke study (tests/smoke_studies.py) serves them all; its
best trial is an MPT configuration (a translator, p_T for the targets), not a reference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mpt import evaluate, predict
from mpt.data import load_nli
from mpt.pretrained import CONFIG_FILE, WEIGHTS_FILE, TrainedPrompt
from tests.smoke_studies import REGISTERED, SmokeStudy
from tests.smoke_studies import SHARED_NAME as STUDY


@pytest.fixture(scope="module")
def study(smoke_study: SmokeStudy) -> Path:
    """The study's working directory."""
    return smoke_study.cwd


def _best_row(cwd: Path) -> dict:
    rows = json.loads((cwd / "results" / STUDY / "trials.json").read_text())
    return max((r for r in rows if r["status"] == "COMPLETE"), key=lambda r: (r["objective"], -r["trial_number"]))


def _client(cwd: Path):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{cwd / 'results' / 'mlflow.db'}")


def _best_run(cwd: Path):
    client = _client(cwd)
    experiment = client.get_experiment_by_name(STUDY)
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.best_trial = 'true'")
    assert len(runs) == 1
    return runs[0]


def _pairs() -> list[tuple[str, str, str]]:
    """Pairs in English and both target languages: premise, hypothesis, language."""
    return [(e.premise, e.hypothesis, lang) for lang in ("en", "de", "fr") for e in load_nli("mini", "test", lang)[:4]]


@pytest.mark.slow
def test_the_best_trial_is_a_trained_prompt_directory(study, tmp_path) -> None:
    from study.settings import StudySettings
    from trainable.spec import trial_config

    study_dir = study / "results" / STUDY
    best_model = study_dir / "best_model"
    assert sorted(p.name for p in best_model.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    assert not (study_dir / "best_weights.safetensors").exists()  # one format, one loader
    best = _best_row(study)
    assert best["reference"] is None  # the MPT configuration the objective hook made win
    prompt = TrainedPrompt.from_pretrained(best_model)
    assert prompt.training["trial_number"] == best["trial_number"] and prompt.training["study"] == STUDY
    settings = StudySettings.from_json((study_dir / "study.json").read_text())
    searched = ("alignment_weight", "translator_depth", "prompt_length")
    expected = trial_config(settings.base_config, best["params"])
    assert {k: getattr(prompt.config, k) for k in searched} == {k: getattr(expected, k) for k in searched}
    assert prompt.config.pair_encoding == "siamese"  # e5-small's default: the pyfunc test below reads it
    assert _best_run(study).data.tags["trial_number"] == str(best["trial_number"])
    # its weights are the best trial's selected epoch: mpt.evaluate on dev gives the dev accuracy it was ranked by
    assert evaluate.main([str(best_model), "--split", "dev", "--output", str(tmp_path / "dev.json")]) == 0
    assert json.loads((tmp_path / "dev.json").read_text())["accuracy"] == best["dev_accuracy"]


@pytest.mark.slow
def test_the_pyfunc_model_predicts_as_mpt_predict(study, tmp_path) -> None:
    import mlflow
    import pandas as pd

    run = _best_run(study)
    mlflow.set_tracking_uri(f"sqlite:///{study / 'results' / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    assert model.metadata.get_input_schema().input_names() == ["premise", "hypothesis", "lang"]
    assert model.metadata.get_output_schema().input_names() == [
        "lang",
        "label",
        "prob_entailment",
        "prob_neutral",
        "prob_contradiction",
    ]
    assert model.metadata.saved_input_example_info is not None

    pairs = _pairs()
    frame = pd.DataFrame(pairs, columns=["premise", "hypothesis", "lang"])
    from_mlflow = model.predict(frame).to_dict(orient="records")
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("premise\thypothesis\tlang\n" + "".join("\t".join(p) + "\n" for p in pairs), encoding="utf-8")
    output = tmp_path / "preds.jsonl"
    best_model = study / "results" / STUDY / "best_model"
    assert predict.main([str(best_model), "--input", str(tsv), "--output", str(output)]) == 0
    from_cli = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert from_mlflow == from_cli  # the same labels and probabilities, exactly
    assert {r["lang"] for r in from_mlflow} == {"en", "de", "fr"}

    english = model.predict(frame[frame["lang"] == "en"][["premise", "hypothesis"]])  # no lang: the source's
    assert english.to_dict(orient="records") == [r for r in from_cli if r["lang"] == "en"]
    # the target languages go through the translator: p_T gives other probabilities than p_S on the same pairs
    german = frame[frame["lang"] == "de"]
    as_english = model.predict(german.assign(lang="en")).to_dict(orient="records")
    assert [r["prob_entailment"] for r in as_english] != [
        r["prob_entailment"] for r in from_mlflow if r["lang"] == "de"
    ]


@pytest.mark.slow
def test_register_model_makes_a_registry_version_of_the_best_run(study) -> None:
    from study.mlflow_model import log_trained_prompt

    client, run = _client(study), _best_run(study)
    versions = client.search_model_versions(f"name='{REGISTERED}'")
    assert len(versions) == 1 and versions[0].run_id == run.info.run_id
    assert versions[0].status == "READY"
    # a resumed study logs its best trial again: the run keeps its one model and one registry version
    uri = log_trained_prompt(
        f"sqlite:///{study / 'results' / 'mlflow.db'}",
        run.info.run_id,
        study / "results" / STUDY / "best_model",
        REGISTERED,
    )
    assert uri == versions[0].source
    assert len(client.search_model_versions(f"name='{REGISTERED}'")) == 1
    models = client.search_logged_models(experiment_ids=[run.info.experiment_id], filter_string="name = 'model'")
    assert [m.source_run_id for m in models] == [run.info.run_id]


@pytest.mark.slow
def test_confirmation_models_reproduce_the_test_accuracy_each_run_reported(study, tmp_path) -> None:
    """(Every confirmation run has its directory: tests/test_study.py.)"""
    from study.results import load_rows
    from study.tracking import run_name

    rows = load_rows(study / "results" / STUDY / "confirm.json")
    best = _best_row(study)["trial_number"]
    # the best trial's (an MPT configuration: p_T for the targets) and vanilla's, at each shot count; each costs
    # a backbone load
    chosen = [
        next(r for r in rows if r.trial_number == best and r.seed == 1 and r.params["shots_per_class"] == 4),
        next(r for r in rows if r.reference == "vanilla" and r.seed == 2 and r.params["shots_per_class"] == 8),
    ]
    for row in chosen:
        name = run_name("alignment", row.trial_number, row.params, phase="confirm").split(" ")[0]
        directory = study / "results" / STUDY / "confirm_models" / name
        assert TrainedPrompt.from_pretrained(directory).config.translator_depth == row.params["translator_depth"]
        assert evaluate.main([str(directory), "--output", str(tmp_path / "eval.json")]) == 0
        evaluated = json.loads((tmp_path / "eval.json").read_text())
        assert evaluated["accuracy"] == row.test_accuracy  # exactly, on CPU
        assert evaluated["average_target"] == pytest.approx(row.test_average_target, abs=1e-12)


def test_the_pyfunc_model_of_a_joint_prompt_answers_as_mpt_predict(tmp_path, tiny_backbone) -> None:
    """Without a study: a trained tiny-xlmr prompt (joint, its MLM verbalizer) logged on a run, loaded back through
    MLflow. The study's models above are siamese (the default on e5-small)."""
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient

    from mpt.config import MPTConfig
    from mpt.training import Trainer
    from study.mlflow_model import log_trained_prompt
    from tests.conftest import ROWS, write_nli

    for split in ("train", "dev", "test"):
        write_nli(tmp_path / f"{split}-en.tsv", ROWS * (3 if split == "train" else 1))
        write_nli(tmp_path / f"{split}-de.tsv", [(f"[de] {p}", f"[de] {h}", label) for p, h, label in ROWS])
    config = MPTConfig(
        backbone="tiny-xlmr",
        data=str(tmp_path),
        target_languages=["de"],
        prompt_length=4,
        shots_per_class=3,
        epochs=1,
        alignment_weight=0.0,
        device="cpu",
    )
    trainer = Trainer(config, backbone=tiny_backbone)
    directory = TrainedPrompt.from_trainer(trainer, trainer.run()).save_pretrained(tmp_path / "prompt")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("pairs", artifact_location=(tmp_path / "art").as_uri()))
    log_trained_prompt(uri, run.info.run_id, directory)
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    pairs = [(p, h, lang) for lang in ("en", "de") for p, h, _ in ROWS[:4]]
    from_mlflow = model.predict(pd.DataFrame(pairs, columns=["premise", "hypothesis", "lang"]))
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("premise\thypothesis\tlang\n" + "".join("\t".join(p) + "\n" for p in pairs), encoding="utf-8")
    assert predict.main([str(directory), "--input", str(tsv), "--output", str(tmp_path / "preds.jsonl")]) == 0
    from_cli = [json.loads(line) for line in (tmp_path / "preds.jsonl").read_text(encoding="utf-8").splitlines()]
    assert from_mlflow.to_dict(orient="records") == from_cli  # the same labels and probabilities, exactly
    assert json.loads((directory / CONFIG_FILE).read_text())["config"]["pair_encoding"] == "joint"
