"""Pair encodings (joint, siamese, auto) and the frozen probe: what `auto` resolves to and records, the refused
combinations, each distinct sentence encoded once, a language's prompt on both sentences, the probe's cached
features, and runs and prompts written before `pair_encoding` existed."""

from __future__ import annotations

import json

import pytest
import torch

from mpt.backbones import E5_CONVENTIONS, InputConventions
from mpt.config import ConfigError, MPTConfig
from mpt.model import PromptedClassifier
from mpt.pretrained import CONFIG_FILE, TrainedPrompt
from mpt.scoring import answer_logits
from mpt.training import CheckpointError, Trainer
from tests.test_mpt_training import _config

SIAMESE = dict(head="linear", pair_encoding="siamese")
PREMISE = "A man is playing a guitar on the street."
HYPOTHESES = ["A person is making music.", "The man is a famous singer.", "The man is asleep in bed."]


def _e5_config(nli_dir, **overrides) -> MPTConfig:
    return _config(nli_dir, backbone="e5-small", num_layers=2, precision="fp32", **overrides)


def test_auto_is_siamese_without_an_mlm_head_joint_with_one_and_the_run_records_it(
    nli_dir, tiny_backbone, e5_two_layers, tmp_path
):
    e5 = Trainer(_e5_config(nli_dir), backbone=e5_two_layers)
    assert e5.config.pair_encoding == "siamese" and e5.model.conventions == E5_CONVENTIONS
    for head in ("auto", "linear"):  # tiny-xlmr has an MLM head: joint, whichever head answers
        assert Trainer(_config(nli_dir, head=head), backbone=tiny_backbone).config.pair_encoding == "joint"
    e5.save(tmp_path / "state.pt")
    assert json.loads(torch.load(tmp_path / "state.pt")["config"])["pair_encoding"] == "siamese"
    assert e5.test().config["pair_encoding"] == "siamese"


@pytest.mark.parametrize(
    "fields, fragment",
    [
        (dict(head="mlm", pair_encoding="siamese"), "set pair_encoding=joint, or head=linear for siamese"),
        (dict(pooling="mask", pair_encoding="siamese"), "set pooling=mean or cls for siamese, or pair_encoding=joint"),
        (dict(head="mlm", prompt_length=0), "give a length >= 1, or head=linear for the frozen probe"),
    ],
)
def test_bad_combinations_are_refused_at_config_time_with_the_fix(fields, fragment):
    with pytest.raises(ConfigError, match="is invalid") as err:
        MPTConfig(**fields)
    assert fragment in str(err.value)


@pytest.mark.parametrize(
    "fields, fragment",
    [
        (dict(pair_encoding="siamese"), "resolved to the MLM verbalizer of 'tiny-xlmr'"),  # head auto -> mlm
        (dict(prompt_length=0), "set head=linear for the frozen probe"),
    ],
)
def test_bad_combinations_are_refused_when_auto_resolves_to_them(tiny_backbone, fields, fragment):
    with pytest.raises(ValueError, match=fragment):
        PromptedClassifier(
            MPTConfig(backbone="tiny-xlmr", target_languages=["de"], **fields), tiny_backbone, torch.Generator()
        )


def test_siamese_encodes_a_shared_premise_once_with_the_logits_of_encoding_it_per_hypothesis(nli_dir, tiny_backbone):
    trainer = Trainer(_config(nli_dir, precision="fp32", **SIAMESE), backbone=tiny_backbone)
    model, templater = trainer.model, trainer.templater
    pairs = templater.tokenize([PREMISE] * 3 + [PREMISE], [*HYPOTHESES, HYPOTHESES[0]])
    langs = ["en", "en", "en", "de"]  # the German row's texts get p_T: distinct from the English ones
    once, each = templater.collate(pairs, None, langs), templater.collate(pairs, None, langs, dedup=False)
    assert (len(once.texts.keys), len(each.texts.keys)) == (6, 8)
    with torch.no_grad():
        assert torch.allclose(model(once), model(each), atol=1e-5)
    # evaluation: the split's distinct sentences once, then every pair, against pair batches of both sentences
    ids, _ = trainer.encoded(trainer.data.test["en"], "test", "en")
    scored = answer_logits(model, templater, ids, "en", 4, "fp32", trainer.device)
    with torch.no_grad():
        per_pair = torch.cat(
            [
                model(templater.collate(ids[i : i + 4], None, ["en"] * len(ids[i : i + 4]), dedup=False))
                for i in range(0, len(ids), 4)
            ]
        )
    assert len({t for pair in ids for t in pair}) < 2 * len(ids)  # three hypotheses share each premise
    assert torch.allclose(scored, per_pair, atol=1e-5)


def test_a_languages_prompt_reaches_both_sentences_of_its_pairs(nli_dir, tiny_backbone):
    config = _config(
        nli_dir, target_languages=["de", "fr"], translator_mode="per_language", precision="fp32", **SIAMESE
    )
    model = PromptedClassifier(config, tiny_backbone, torch.Generator().manual_seed(0))
    templater = model.templater()
    pairs = templater.tokenize([PREMISE] * 3, [HYPOTHESES[0]] * 3)
    batch = templater.collate(pairs, None, ["en", "de", "fr"])
    with torch.no_grad():
        before = model.text_features(batch.texts)
        bias = model.translator.translators["de"].blocks[0].down.bias  # move p_T of German only (not by a constant:
        bias.add_(torch.randn(bias.shape, generator=torch.Generator().manual_seed(0)))  # LayerNorm removes that)
        after = model.text_features(batch.texts)
    moved = [not torch.allclose(a, b) for a, b in zip(before, after)]
    rows = {lang: (int(batch.first[i]), int(batch.second[i])) for i, lang in enumerate(batch.langs)}
    assert [moved[row] for row in rows["de"]] == [True, True]  # premise and hypothesis
    assert not any(moved[row] for lang in ("en", "fr") for row in rows[lang])


def test_siamese_alignment_batches_are_runs_of_consecutive_pairs_drawn_as_joint_draws(nli_dir, tiny_backbone):
    joint = Trainer(_config(nli_dir, head="linear"), backbone=tiny_backbone)
    siamese = Trainer(_config(nli_dir, **SIAMESE), backbone=tiny_backbone)
    for _ in range(2):
        joint_plan, siamese_plan = joint.batch_plan(), siamese.batch_plan()
        assert [p.rows for p in joint_plan] == [p.rows for p in siamese_plan]  # paired across encodings
        count = len(siamese.pair_langs)
        for plan in siamese_plan:
            start = plan.pair_rows[0]
            assert plan.pair_rows == [(start + j) % count for j in range(len(plan.pair_rows))]
    batch = siamese.templater.collate(
        [siamese.pair_source_ids[i] for i in plan.pair_rows], None, ["en"] * len(plan.pair_rows)
    )
    assert len(batch.texts.keys) == len(plan.pair_rows) + 1  # sentence i: hypothesis of pair i - 1, premise of i


@pytest.mark.parametrize("encoding", ["joint", "siamese"])
def test_the_probe_trains_only_the_head_and_encodes_each_text_once(nli_dir, tiny_backbone, encoding):
    config = _config(
        nli_dir,
        head="linear",
        pair_encoding=encoding,
        prompt_length=0,
        translator_depth=0,
        alignment_weight=0.0,
        precision="fp32",
    )
    trainer = Trainer(config, backbone=tiny_backbone)
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    calls = []
    hook = tiny_backbone.encoder.register_forward_hook(lambda module, inputs, output: calls.append(1))
    try:
        trainer.train_epoch()
        first_epoch = len(calls)
        trainer.train_epoch()
    finally:
        hook.remove()
    changed = {name for name, p in trainer.model.named_parameters() if not torch.equal(before[name], p)}
    assert changed == {"linear_head.classifier.weight", "linear_head.classifier.bias"}
    assert trainer.model.prompt.weight.shape[0] == 0
    assert first_epoch > 0 and len(calls) == first_epoch  # the second epoch, training and dev, encoded nothing


@pytest.mark.parametrize("encoding", ["joint", "siamese"])
def test_cached_probe_features_give_the_logits_of_uncached_ones(nli_dir, tiny_backbone, encoding):
    config = _config(
        nli_dir,
        head="linear",
        pair_encoding=encoding,
        prompt_length=0,
        translator_depth=0,
        alignment_weight=0.0,
        precision="fp32",
        epochs=3,
    )
    cached, uncached = Trainer(config, backbone=tiny_backbone), Trainer(config, backbone=tiny_backbone)
    uncached.model.features_frozen = False
    results = [trainer.run() for trainer in (cached, uncached)]
    assert cached.model._feature_cache and not uncached.model._feature_cache
    assert [r.loss for r in results[0].history] == pytest.approx([r.loss for r in results[1].history], abs=1e-6)
    assert results[0].accuracy == results[1].accuracy
    ids, _ = cached.encoded(cached.data.test["de"], "test", "de")
    logits = [answer_logits(t.model, t.templater, ids, "de", 4, "fp32", t.device) for t in (cached, uncached)]
    assert torch.allclose(logits[0], logits[1], atol=1e-5)


def test_runs_and_prompts_written_before_pair_encoding_existed_load_as_joint(nli_dir, e5_two_layers, tmp_path):
    joint = Trainer(_e5_config(nli_dir, pair_encoding="joint", epochs=1), backbone=e5_two_layers)
    result = joint.run()
    state = joint.state_dict()
    old = json.loads(state["config"])
    del old["pair_encoding"]
    state["config"] = json.dumps(old)
    Trainer(_e5_config(nli_dir, pair_encoding="joint", epochs=1), backbone=e5_two_layers).load_state_dict(state)
    with pytest.raises(CheckpointError, match=r"different config \(\['pair_encoding'\]\)"):
        Trainer(_e5_config(nli_dir, epochs=1), backbone=e5_two_layers).load_state_dict(state)  # auto: siamese now

    directory = TrainedPrompt.from_trainer(joint, result).save_pretrained(tmp_path / "prompt")
    record = json.loads((directory / CONFIG_FILE).read_text())
    del record["config"]["pair_encoding"], record["backbone"]["input"]
    (directory / CONFIG_FILE).write_text(json.dumps(record))
    loaded = TrainedPrompt.from_pretrained(directory, backbone=e5_two_layers)
    assert loaded.config.pair_encoding == "joint" and loaded.model.conventions == InputConventions()
    for lang, examples in joint.data.test.items():
        assert loaded.accuracy(examples, lang) == result.accuracy[lang]


def test_a_saved_prompt_applies_the_input_conventions_it_records(nli_dir, e5_two_layers, tmp_path):
    trainer = Trainer(_e5_config(nli_dir, epochs=1), backbone=e5_two_layers)
    result = trainer.run()
    directory = TrainedPrompt.from_trainer(trainer, result).save_pretrained(tmp_path / "prompt")
    record = json.loads((directory / CONFIG_FILE).read_text())
    assert record["backbone"]["input"] == {"text_prefix": "query: ", "normalize": True}
    assert record["config"]["pair_encoding"] == "siamese"
    loaded = TrainedPrompt.from_pretrained(directory, backbone=e5_two_layers)
    ids = loaded.templater.texts(["Rain."])[0]
    assert e5_two_layers.tokenizer.decode(ids[1:-1]) == "query: Rain." and (ids[0], ids[-1]) == (0, 2)  # <s>, </s>
    with torch.no_grad():
        features = loaded.model.text_features(
            loaded.templater.collate_texts(loaded.templater.texts(HYPOTHESES), ["en"] * 3)
        )
    assert torch.allclose(features.norm(dim=-1), torch.ones(3), atol=1e-5)  # e5: normalised mean pooling
    for lang, examples in trainer.data.test.items():
        assert loaded.accuracy(examples, lang) == result.accuracy[lang]
    record["backbone"]["input"] = {"text_prefix": "", "normalize": False}  # the record, not the backbone, rules
    (directory / CONFIG_FILE).write_text(json.dumps(record))
    bare = TrainedPrompt.from_pretrained(directory, backbone=e5_two_layers)
    assert bare.model.conventions == InputConventions()
    assert not torch.allclose(
        bare.predict_proba([PREMISE], HYPOTHESES[:1], ["en"]), loaded.predict_proba([PREMISE], HYPOTHESES[:1], ["en"])
    )
