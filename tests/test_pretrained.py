"""Trained-prompt directories: save/load round trip, the backbone check, damaged directories, and
`python -m mpt.evaluate` reproducing what the run reported."""

from __future__ import annotations

import json

import pytest
import torch

from mpt import evaluate, train
from mpt.backbones import load_backbone
from mpt.config import MPTConfig
from mpt.pretrained import CONFIG_FILE, WEIGHTS_FILE, PretrainedError, TrainedPrompt
from mpt.training import Trainer
from tests.conftest import ROWS

PREMISES = [p for p, _, _ in ROWS]
HYPOTHESES = [h for _, h, _ in ROWS]


def _config(nli_dir, **overrides) -> MPTConfig:
    values = dict(
        backbone="tiny-xlmr",
        data=str(nli_dir),
        parallel=str(nli_dir),
        target_languages=["de"],
        prompt_length=4,
        shots_per_class=3,
        batch_size=4,
        alignment_batch_size=2,
        epochs=2,
        translator_depth=1,
        alignment_weight=0.5,
        learning_rate=0.05,
        eval_batch_size=4,
        device="cpu",
    )
    values.update(overrides)
    return MPTConfig(**values)


def _logits(prompt: TrainedPrompt, langs) -> torch.Tensor:
    batch = prompt.templater.collate(prompt.templater.tokenize(PREMISES, HYPOTHESES), None, langs)
    with torch.inference_mode():
        return prompt.model(batch)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(),
        dict(head="linear", pooling="mask", translator_mode="per_language"),
        dict(head="linear", pair_encoding="siamese", translator_mode="per_language"),
    ],
    ids=["mlm-shared", "linear-per-language", "siamese-per-language"],
)
def test_round_trip_gives_identical_logits(nli_dir, tiny_backbone, tmp_path, overrides) -> None:
    trainer = Trainer(_config(nli_dir, **overrides), backbone=tiny_backbone)
    result = trainer.run()
    saved = TrainedPrompt.from_trainer(trainer, result)
    saved.save_pretrained(tmp_path / "prompt")
    assert sorted(p.name for p in (tmp_path / "prompt").iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]  # no pickle
    loaded = TrainedPrompt.from_pretrained(tmp_path / "prompt")  # loads the backbone it names
    assert loaded.model.head_kind == saved.model.head_kind
    assert loaded.config.pair_encoding == saved.config.pair_encoding == overrides.get("pair_encoding", "joint")
    assert set(loaded.model.trainable_state_dict()) == set(trainer.best_state)
    for key, value in trainer.best_state.items():
        assert torch.equal(loaded.model.trainable_state_dict()[key], value), key
    langs = ["en", "de"] * 4 + ["en"]
    assert torch.equal(_logits(loaded, langs), _logits(saved, langs))
    assert loaded.training["accuracy"] == result.accuracy and loaded.training["best_epoch"] == result.best_epoch
    record = json.loads((tmp_path / "prompt" / CONFIG_FILE).read_text())
    assert record["backbone"]["name"] == "tiny-xlmr" and len(record["backbone"]["fingerprint"]) == 64
    assert MPTConfig.from_dict(record["config"]) == trainer.config


@pytest.fixture(scope="module")
def saved_prompt(tmp_path_factory, tiny_backbone):
    """One trained, saved tiny-xlmr prompt (shared translator) and the directory it is in."""
    from tests.conftest import write_nli

    data = tmp_path_factory.mktemp("data")
    for split in ("train", "dev", "test"):
        write_nli(data / f"{split}-en.tsv", ROWS * (3 if split == "train" else 1))
        write_nli(data / f"{split}-de.tsv", [(f"[de] {p}", f"[de] {h}", label) for p, h, label in ROWS])
    trainer = Trainer(_config(data, alignment_weight=0.0), backbone=tiny_backbone)
    directory = tmp_path_factory.mktemp("prompt") / "saved"
    TrainedPrompt.from_trainer(trainer, trainer.run()).save_pretrained(directory)
    return directory


def test_another_backbone_is_refused(saved_prompt) -> None:
    fewer_layers = load_backbone("tiny-xlmr", num_layers=1)
    with pytest.raises(PretrainedError, match=r"trained on backbone 'tiny-xlmr'.*fingerprint.*other weights"):
        TrainedPrompt.from_pretrained(saved_prompt, backbone=fewer_layers)
    perturbed = load_backbone("tiny-xlmr")  # same names and shapes, other values: a different checkpoint
    with torch.no_grad():
        for parameter in perturbed.encoder.parameters():
            parameter.add_(1e-3 * torch.randn_like(parameter))
    with pytest.raises(PretrainedError, match="backbone it was trained on"):
        TrainedPrompt.from_pretrained(saved_prompt, backbone=perturbed)


def test_the_same_backbone_is_accepted_and_an_unseen_language_uses_the_shared_translator(
    saved_prompt, tiny_backbone
) -> None:
    prompt = TrainedPrompt.from_pretrained(saved_prompt, backbone=tiny_backbone)
    probabilities = prompt.predict_proba(PREMISES[:2], HYPOTHESES[:2], ["sw", "en"])  # sw: not in the run
    assert probabilities.shape == (2, 3)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(2))


def test_damaged_directories_are_refused_with_the_fix(saved_prompt, tmp_path) -> None:
    with pytest.raises(PretrainedError, match="not a directory"):
        TrainedPrompt.from_pretrained(tmp_path / "missing")
    with pytest.raises(PretrainedError, match=f"no {CONFIG_FILE}"):
        TrainedPrompt.from_pretrained(tmp_path)
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / CONFIG_FILE).write_text((saved_prompt / CONFIG_FILE).read_text())
    with pytest.raises(PretrainedError, match=f"no {WEIGHTS_FILE}"):
        TrainedPrompt.from_pretrained(damaged)
    (damaged / WEIGHTS_FILE).write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    with pytest.raises(PretrainedError, match="damaged"):
        TrainedPrompt.from_pretrained(damaged)
    record = json.loads((saved_prompt / CONFIG_FILE).read_text())
    (damaged / CONFIG_FILE).write_text(json.dumps({**record, "format": 99}))
    with pytest.raises(PretrainedError, match="another version"):
        TrainedPrompt.from_pretrained(damaged)


@pytest.mark.parametrize("encoding", [[], ["--head", "linear", "--pair-encoding", "siamese"]], ids=["joint", "siamese"])
def test_evaluate_reproduces_the_accuracies_the_run_reported(nli_dir, tmp_path, capsys, encoding) -> None:
    flags = [
        "--backbone",
        "tiny-xlmr",
        "--data",
        str(nli_dir),
        "--parallel",
        str(nli_dir),
        "--target-languages",
        "de",
        "--prompt-length",
        "4",
        "--shots-per-class",
        "3",
        "--batch-size",
        "4",
        "--epochs",
        "2",
        "--learning-rate",
        "0.05",
        "--eval-batch-size",
        "4",
        "--device",
        "cpu",
        "--quiet",
        *encoding,
    ]
    assert train.main([*flags, "--output", str(tmp_path / "run.json"), "--save", str(tmp_path / "prompt")]) == 0
    reported = json.loads((tmp_path / "run.json").read_text())
    assert reported["config"]["pair_encoding"] == ("siamese" if encoding else "joint")
    assert evaluate.main([str(tmp_path / "prompt"), "--output", str(tmp_path / "eval.json")]) == 0
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    assert evaluated["accuracy"] == reported["accuracy"]  # exactly, on CPU
    for key in ("average", "average_target", "best_epoch", "best_dev_accuracy", "config"):
        assert evaluated[key] == reported[key], key
    assert set(reported) - {"correct"} <= set(evaluated)  # the shape of mpt.train --output
    out = capsys.readouterr().out
    assert "de" in out and "targets" in out
    assert (
        evaluate.main(
            [str(tmp_path / "prompt"), "--languages", "en", "--split", "dev", "--output", str(tmp_path / "dev.json")]
        )
        == 0
    )
    assert list(json.loads((tmp_path / "dev.json").read_text())["accuracy"]) == ["en"]


def test_evaluate_bad_input_exits_2(saved_prompt, tmp_path, capsys) -> None:
    assert evaluate.main([str(tmp_path / "nothing")]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert evaluate.main([str(saved_prompt), "--languages", "fr"]) == 2  # the test data has no French file
    assert "test-fr" in capsys.readouterr().err
    assert evaluate.main([str(saved_prompt), "--output", str(tmp_path / "no" / "out.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
