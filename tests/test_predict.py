"""`python -m mpt.predict`: TSV and JSONL input, with and without a `lang` column, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mpt import predict
from mpt.config import LABELS, MPTConfig
from mpt.pretrained import TrainedPrompt
from mpt.training import Trainer
from tests.conftest import ROWS, write_nli

PAIRS = [(p, h) for p, h, _ in ROWS[:5]]
LANGS = ["en", "de", "de", "en", "de"]


def _saved_prompt(tmp_path_factory, backbone, **fields) -> Path:
    """A trained tiny-xlmr prompt with a per-language translator (en -> de), saved."""
    data = tmp_path_factory.mktemp("data")
    for split in ("train", "dev", "test"):
        write_nli(data / f"{split}-en.tsv", ROWS * (3 if split == "train" else 1))
        write_nli(data / f"{split}-de.tsv", [(f"[de] {p}", f"[de] {h}", label) for p, h, label in ROWS])
    config = MPTConfig(
        backbone="tiny-xlmr",
        data=str(data),
        target_languages=["de"],
        prompt_length=4,
        shots_per_class=3,
        batch_size=4,
        epochs=1,
        alignment_weight=0.0,
        learning_rate=0.05,
        translator_mode="per_language",
        eval_batch_size=2,
        device="cpu",
        **fields,
    )
    trainer = Trainer(config, backbone=backbone)
    directory = tmp_path_factory.mktemp("prompt") / "saved"
    TrainedPrompt.from_trainer(trainer, trainer.run()).save_pretrained(directory)
    return directory


def _one_by_one(directory: Path, backbone) -> list[dict]:
    """What the loaded prompt answers for PAIRS in LANGS, pair by pair (one pair per call: no batching)."""
    prompt = TrainedPrompt.from_pretrained(directory, backbone=backbone)
    return [prompt.predict([p], [h], [lang])[0] for (p, h), lang in zip(PAIRS, LANGS)]


@pytest.fixture(scope="module")
def prompt_dir(tmp_path_factory, tiny_backbone) -> Path:
    return _saved_prompt(tmp_path_factory, tiny_backbone)


@pytest.fixture(scope="module")
def expected(prompt_dir, tiny_backbone) -> list[dict]:
    return _one_by_one(prompt_dir, tiny_backbone)


def _run(prompt_dir: Path, tmp_path: Path, input_file: Path, *flags: str) -> list[dict]:
    output = tmp_path / "preds.jsonl"
    assert predict.main([str(prompt_dir), "--input", str(input_file), "--output", str(output), *flags]) == 0
    return [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]


def _same(found: list[dict], wanted: list[dict]) -> None:
    assert [r["label"] for r in found] == [r["label"] for r in wanted]
    assert [r["lang"] for r in found] == [r["lang"] for r in wanted]
    for got, want in zip(found, wanted):  # batched with others vs alone: padding may move the last bits
        for label in LABELS:
            assert got[f"prob_{label}"] == pytest.approx(want[f"prob_{label}"], abs=1e-5)


def test_tsv_with_a_lang_column(prompt_dir, expected, tmp_path) -> None:
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text(
        "premise\thypothesis\tlang\tlabel\n"
        + "".join(f"{p}\t{h}\t{lang}\tneutral\n" for (p, h), lang in zip(PAIRS, LANGS)),
        encoding="utf-8",
    )
    found = _run(prompt_dir, tmp_path, pairs)
    _same(found, expected)
    for row in found:
        assert set(row) == {"lang", "label", *(f"prob_{label}" for label in LABELS)}
        assert sum(row[f"prob_{label}"] for label in LABELS) == pytest.approx(1.0, abs=1e-6)
        assert row["label"] == max(LABELS, key=lambda label: row[f"prob_{label}"])


def test_a_siamese_prompt_predicts_as_it_answers_pair_by_pair(tmp_path_factory, tiny_backbone, tmp_path) -> None:
    directory = _saved_prompt(tmp_path_factory, tiny_backbone, head="linear", pair_encoding="siamese")
    pairs = tmp_path / "pairs.tsv"  # premises shared by several hypotheses: encoded once per batch
    pairs.write_text(
        "premise\thypothesis\tlang\n" + "".join(f"{p}\t{h}\t{lang}\n" for (p, h), lang in zip(PAIRS, LANGS)),
        encoding="utf-8",
    )
    _same(_run(directory, tmp_path, pairs), _one_by_one(directory, tiny_backbone))


def test_jsonl_with_and_without_lang(prompt_dir, expected, tmp_path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    rows = [
        {"premise": p, "hypothesis": h, **({"lang": lang} if lang == "de" else {})}
        for (p, h), lang in zip(PAIRS, LANGS)
    ]  # rows without lang take --lang's default: the source language
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    _same(_run(prompt_dir, tmp_path, pairs), expected)


def test_no_lang_column_takes_the_lang_flag(prompt_dir, tmp_path, tiny_backbone) -> None:
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("hypothesis\tpremise\n" + "".join(f"{h}\t{p}\n" for p, h in PAIRS), encoding="utf-8")
    german = _run(prompt_dir, tmp_path, pairs, "--lang", "de")
    english = _run(prompt_dir, tmp_path, pairs)
    assert {r["lang"] for r in german} == {"de"} and {r["lang"] for r in english} == {"en"}
    prompt = TrainedPrompt.from_pretrained(prompt_dir, backbone=tiny_backbone)
    for lang, found in (("de", german), ("en", english)):
        probabilities = prompt.predict_proba([p for p, _ in PAIRS], [h for _, h in PAIRS], [lang] * len(PAIRS))
        assert torch.equal(torch.tensor([[r[f"prob_{label}"] for label in LABELS] for r in found]), probabilities)
    assert german != english  # p_T is not p_S


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("empty.tsv", "", "has no pairs"),
        ("header-only.tsv", "premise\thypothesis\n", "pair per line after the header"),
        ("no-header.tsv", "A man sleeps.\tA person rests.\n", "the header has no column(s) ['premise', 'hypothesis']"),
        ("short-row.tsv", "premise\thypothesis\nA man sleeps.\n", "line 2: 1 tab-separated field(s)"),
        ("empty-field.tsv", "premise\thypothesis\nA man sleeps.\t \n", "line 2: empty ['hypothesis']"),
        ("missing.jsonl", '{"premise": "A man sleeps."}\n', "line 1: missing column(s) ['hypothesis']"),
        ("broken.jsonl", '{"premise": "A man\n', "line 1: not valid JSON"),
        (
            "unknown-lang.jsonl",
            '{"premise": "a", "hypothesis": "b", "lang": "fr"}\n',
            "unknown language(s) ['fr']: this prompt has a per-language translator for ['de']",
        ),
        ("pairs.csv", "premise,hypothesis\n", "give a .tsv (with a header line) or .jsonl file"),
    ],
)
def test_bad_input_is_a_clear_error(prompt_dir, tmp_path, capsys, name, text, message) -> None:
    (tmp_path / name).write_text(text, encoding="utf-8")
    output = tmp_path / "preds.jsonl"
    assert predict.main([str(prompt_dir), "--input", str(tmp_path / name), "--output", str(output)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not output.exists()


def test_missing_input_and_directory(prompt_dir, tmp_path, capsys) -> None:
    output = str(tmp_path / "preds.jsonl")
    assert predict.main([str(prompt_dir), "--input", str(tmp_path / "none.tsv"), "--output", output]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "ok.tsv").write_text("premise\thypothesis\na\tb\n", encoding="utf-8")
    assert predict.main([str(tmp_path), "--input", str(tmp_path / "ok.tsv"), "--output", output]) == 2
    assert "not a trained-prompt directory" in capsys.readouterr().err
    assert predict.main([str(prompt_dir), "--input", str(tmp_path / "ok.tsv"), "--lang", "fr", "--output", output]) == 2
    assert "unknown language(s) ['fr']" in capsys.readouterr().err
