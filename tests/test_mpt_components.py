"""Config validation, translator, losses, prompt insertion and the frozen backbone."""

from __future__ import annotations

import pytest
import torch

from mpt.config import ConfigError, MPTConfig
from mpt.config_args import parse_value
from mpt.losses import alignment_loss, joint_loss
from mpt.model import PromptedClassifier, Templater
from mpt.translator import PerceptronStack, PromptTranslator


@pytest.mark.parametrize(
    "field, value, fragment",
    [
        ("alignment_weight", 1.5, "[0, 1]"),
        ("alignment_weight", -0.1, "[0, 1]"),
        ("translator_depth", -1, "[0, 16]"),
        ("head", "svm", "auto"),
        ("prompt_length", -1, "[0, 512]"),
        ("pair_encoding", "cross", "siamese"),
        ("target_languages", ["en"], "not including the source language"),
        ("precision", "fp8", "bf16"),
    ],
)
def test_config_errors_name_field_value_and_range(field, value, fragment):
    with pytest.raises(ConfigError) as err:
        MPTConfig(**{field: value})
    assert field in str(err.value) and repr(value) in str(err.value) and fragment in str(err.value)


def test_ce_only_epochs_must_leave_the_alignment_task_an_epoch():
    with pytest.raises(ConfigError) as err:
        MPTConfig(epochs=3, ce_only_epochs=3, alignment_weight=0.5)
    assert "'ce_only_epochs' = 3" in str(err.value) and "< epochs = 3" in str(err.value)
    assert "lower ce_only_epochs, raise epochs, or set alignment_weight=0" in str(err.value)
    assert MPTConfig(epochs=3, ce_only_epochs=2).ce_only_epochs == 2  # one joint epoch left
    assert MPTConfig(epochs=3, ce_only_epochs=5, alignment_weight=0.0).ce_only_epochs == 5  # nothing to disable


def test_config_round_trip_and_cli_parsing():
    config = MPTConfig(target_languages="de, fr", alignment_weight=0.25)
    assert config.target_languages == ["de", "fr"]
    assert MPTConfig.from_dict(config.to_dict()) == config
    assert parse_value("target_languages", "de,zh") == ["de", "zh"]
    assert parse_value("teacher_stop_gradient", "false") is False
    assert parse_value("num_layers", "none") is None
    with pytest.raises(ConfigError, match="unknown config field"):
        MPTConfig.from_dict({"promt_length": 3})
    # the one answer to "is the backbone loaded with its MLM head": every head but the linear one may use it
    assert [MPTConfig(head=kind).wants_mlm_head for kind in ("auto", "mlm", "linear")] == [True, True, False]


def test_translator_depth_zero_is_identity_and_parameters_grow_with_depth():
    prompt = torch.randn(5, 16)
    assert torch.equal(PerceptronStack(16, 8, depth=0)(prompt), prompt)
    counts = [sum(p.numel() for p in PerceptronStack(16, 8, depth=d).parameters()) for d in range(4)]
    assert counts[0] == 0 and counts[1] == 16 * 8 + 8 + 8 * 16 + 16
    assert counts == [counts[1] * d for d in range(4)]


def test_translator_block_is_the_papers_two_layer_perceptron():
    torch.manual_seed(0)
    translator = PerceptronStack(6, 4, depth=1)
    block, prompt = translator.blocks[0], torch.randn(3, 6)
    expected = (
        block.down.weight @ torch.relu(block.up.weight @ prompt.T + block.up.bias[:, None]) + block.down.bias[:, None]
    )
    assert torch.allclose(translator(prompt), expected.T, atol=1e-6)
    residual = PerceptronStack(6, 4, depth=1, residual=True)
    residual.load_state_dict(translator.state_dict())
    assert torch.allclose(residual(prompt), prompt + translator(prompt), atol=1e-6)


def test_per_language_translators_are_separate():
    translator = PromptTranslator(8, 4, depth=1, residual=False, mode="per_language", languages=["de", "fr"])
    prompt = torch.randn(2, 8)
    assert not torch.allclose(translator(prompt, "de"), translator(prompt, "fr"))
    with pytest.raises(KeyError, match="no translator for language 'zh'"):
        translator(prompt, "zh")


def test_kl_is_zero_for_equal_distributions_and_matches_definition():
    logits = torch.randn(4, 3)
    assert alignment_loss(logits, logits.clone()).abs().item() < 1e-7
    other = torch.randn(4, 3)
    p, q = logits.softmax(-1), other.softmax(-1)
    manual = (p * (p.log() - q.log())).sum(-1).mean()
    assert torch.allclose(alignment_loss(logits, other), manual, atol=1e-6)
    assert alignment_loss(logits, other).item() > 0
    assert torch.allclose(joint_loss(torch.tensor(2.0), torch.tensor(4.0), 0.25), torch.tensor(2.5))


def test_template_places_prompt_after_bos_and_mask_last(tiny_backbone):
    config = MPTConfig(backbone="tiny-xlmr", prompt_length=4, target_languages=["de"])
    templater = Templater(tiny_backbone.tokenizer, config.max_length)
    ids = templater.tokenize(["A man sleeps."], ["He rests"])[0]
    tokens = tiny_backbone.tokenizer.convert_ids_to_tokens(ids)
    assert tokens[0] == "<s>" and tokens[-1] == "</s>" and tokens.count("</s>") == 2
    mask_at = len(ids) - 2 - len(templater.tail)  # ... ? <mask> . </s>
    assert tokens[mask_at] == "<mask>" and tokens[mask_at - 1] == "▁?" and "".join(tokens[mask_at + 1 : -1]) == "▁."
    long = templater.tokenize(["word " * 400], ["other " * 400])[0]
    assert len(long) == config.max_length and long[mask_at - len(ids)] == templater.mask


def _train_one_epoch(config, backbone):
    from mpt.training import Trainer

    trainer = Trainer(config, backbone=backbone)
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.train_epoch()
    changed = {name for name, p in trainer.model.named_parameters() if not torch.equal(before[name], p)}
    return trainer, changed


def test_backbone_stays_frozen_and_w0_gives_translator_no_gradient(nli_dir, tiny_backbone):
    config = MPTConfig(
        backbone="tiny-xlmr",
        data=str(nli_dir),
        parallel=str(nli_dir),
        target_languages=["de"],
        prompt_length=4,
        alignment_weight=0.0,
        shots_per_class=2,
        translator_depth=2,
    )
    trainer, changed = _train_one_epoch(config, tiny_backbone)
    assert changed == {"prompt.weight"}
    assert all(p.grad is None for p in trainer.model.translator.parameters())
    trainer, changed = _train_one_epoch(config.replace(alignment_weight=0.5), tiny_backbone)
    translator = {f"translator.{n}" for n, _ in trainer.model.translator.named_parameters()}
    assert changed == {"prompt.weight"} | translator  # the backbone (encoder, MLM head) never moves
    assert all(p.grad is None and not p.requires_grad for p in tiny_backbone.encoder.parameters())
    assert all(p.grad is None for p in tiny_backbone.mlm_head.parameters())


def test_mlm_verbalizer_path_reads_label_words_at_the_mask(tiny_backbone, nli_dir):
    config = MPTConfig(
        backbone="tiny-xlmr",
        data=str(nli_dir),
        parallel=str(nli_dir),
        target_languages=["de"],
        prompt_length=4,
        label_words={"en": ["yes", "maybe", "no"], "de": ["ja", "vielleicht", "nein"]},
    )
    model = PromptedClassifier(config, tiny_backbone, torch.Generator().manual_seed(0))
    assert model.head_kind == "mlm" and model.linear_head is None
    templater = Templater(tiny_backbone.tokenizer, config.max_length)
    batch = templater.collate(templater.tokenize(["A man sleeps."] * 2, ["He rests"] * 2), [0, 1], ["en", "de"])
    with torch.no_grad():
        logits = model(batch)
        hidden, _ = model.hidden_states(batch, model.prompts_for(batch.langs))
        vocab = tiny_backbone.mlm_head(hidden[:, batch.mask_positions[0] + 4])
    tok = tiny_backbone.tokenizer
    en_ids = [tok.convert_tokens_to_ids(f"▁{w}") for w in ("yes", "maybe", "no")]
    assert logits.shape == (2, 3)
    assert torch.allclose(logits[0], vocab[0, en_ids], atol=1e-5)
    assert not torch.allclose(logits[1], vocab[1, en_ids])  # German uses its own words


def test_linear_head_path_on_e5(e5_two_layers, nli_dir):
    config = MPTConfig(
        data=str(nli_dir), parallel=str(nli_dir), target_languages=["de"], prompt_length=4, pair_encoding="joint"
    )
    for pooling in ("mean", "mask", "cls"):
        model = PromptedClassifier(config.replace(pooling=pooling), e5_two_layers, torch.Generator().manual_seed(0))
        assert model.head_kind == "linear" and model.mlm_head is None
        templater = model.templater()
        batch = templater.collate(
            templater.tokenize(["A man sleeps.", "Rain."], ["He rests", "Wet"]), [0, 2], ["en", "de"]
        )
        logits = model(batch)
        assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    with pytest.raises(ValueError, match="has none"):
        PromptedClassifier(config.replace(head="mlm"), e5_two_layers, torch.Generator())


def test_prefix_prompt_matches_peft_prompt_tuning(tiny_backbone):
    """Peer check: our `prefix` insertion equals HF PEFT's prompt tuning on the same backbone."""
    from peft import PromptTuningConfig, TaskType, get_peft_model

    config = MPTConfig(backbone="tiny-xlmr", prompt_length=5, prompt_position="prefix", target_languages=["de"])
    model = PromptedClassifier(config, tiny_backbone, torch.Generator().manual_seed(1))
    templater = Templater(tiny_backbone.tokenizer, config.max_length)
    batch = templater.collate(
        templater.tokenize(["A man sleeps on a long sofa.", "Rain."], ["He rests", "Wet"]), None, ["en", "en"]
    )
    with torch.no_grad():
        ours, _ = model.hidden_states(batch, model.prompts_for(batch.langs))
    peft_model = get_peft_model(
        tiny_backbone.encoder, PromptTuningConfig(task_type=TaskType.FEATURE_EXTRACTION, num_virtual_tokens=5)
    )
    try:
        with torch.no_grad():
            peft_model.prompt_encoder["default"].embedding.weight.copy_(model.prompt.weight)
            theirs = peft_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
    finally:
        peft_model.unload() if hasattr(peft_model, "unload") else None
    real = torch.cat([torch.ones(2, 5, dtype=torch.bool), batch.attention_mask.bool()], dim=1)
    assert theirs.shape == ours.shape
    assert torch.allclose(ours[real], theirs[real], atol=1e-5)


def test_config_flags_come_from_the_dataclass_with_their_help_and_parse_as_set_does():
    from mpt.config_args import ConfigArgumentParser, config_from_args, parse_assignments

    parser = ConfigArgumentParser()
    args = parser.parse_args(["--target-languages", "de,zh", "--num_layers", "none", "--no-teacher-stop-gradient"])
    config = config_from_args(args, {"epochs": 3})
    assert (config.target_languages, config.num_layers, config.teacher_stop_gradient, config.epochs) == (
        ["de", "zh"],
        None,
        False,
        3,
    )
    assert config_from_args(parser.parse_args([])) == MPTConfig()  # nothing given: the dataclass defaults
    assert parse_assignments(["target_languages=de,zh", "num_layers=none"]) == {
        "target_languages": ["de", "zh"],
        "num_layers": None,
    }
    help_text = parser.format_help()
    assert "--prompt-length" in help_text and "soft prompt length L" in help_text
    with pytest.raises(ConfigError, match="is not KEY=VALUE"):
        parse_assignments(["num_layers"])


def test_malformed_yaml_config_file_is_a_clear_error_with_exit_status_2(tmp_path, capsys):
    from mpt.train import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: 0.01\nepochs: [1, 2\n")
    assert main(["--config", str(bad), "--quiet"]) == 2
    assert "is not valid YAML at line 3" in capsys.readouterr().err
