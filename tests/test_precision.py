"""Precision: `auto` resolves by what the device computes natively, bf16 runs on CPU in bf16 with fp32 weights,
and a bf16 run is recorded, resumed and reloaded in the precision it ran in."""

from __future__ import annotations

import pytest
import torch

from mpt.config import ConfigError, MPTConfig
from mpt.precision import autocast, resolve_precision
from mpt.pretrained import TrainedPrompt
from mpt.training import Trainer, fit
from tests.test_mpt_training import _config

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    "avx512_bf16, amx, expected", [(True, False, "bf16"), (False, True, "bf16"), (False, False, "fp32")]
)
def test_auto_takes_bf16_only_where_the_cpu_computes_it_natively(monkeypatch, avx512_bf16, amx, expected) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert resolve_precision("auto", CPU) == expected
    assert resolve_precision("fp32", CPU) == "fp32" and resolve_precision("bf16", CPU) == "bf16"  # as asked
    with pytest.raises(ValueError, match="precision 'fp16' is unknown: choose one of fp32, bf16, auto"):
        resolve_precision("fp16", CPU)
    with pytest.raises(ConfigError, match="'precision' = 'fp16' is invalid"):
        MPTConfig(precision="fp16")


def test_bf16_computes_in_bf16_and_keeps_the_trainable_weights_and_their_gradients_in_fp32(
    nli_dir, tiny_backbone
) -> None:
    trainer = Trainer(_config(nli_dir, precision="bf16"), backbone=tiny_backbone)
    batch = trainer.templater.collate(trainer.train_ids[:4], trainer.train_labels[:4], ["en"] * 4)
    linear = next(m for m in tiny_backbone.encoder.modules() if isinstance(m, torch.nn.Linear))
    seen = []
    hook = linear.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    try:
        for precision in ("bf16", "fp32"):
            with autocast(precision, CPU, training=True):
                trainer.model(batch)
    finally:
        hook.remove()
    assert seen == [torch.bfloat16, torch.float32]  # the encoder's matmuls
    losses = trainer.step(trainer.batch_plan()[0])
    assert torch.isfinite(torch.tensor(losses.loss))
    for parameter in trainer.model.trainable_parameters():
        assert parameter.dtype == torch.float32 and parameter.grad.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in tiny_backbone.encoder.parameters())  # the shared backbone is as it was


def test_a_run_records_the_precision_auto_resolved_to(nli_dir, tiny_backbone, monkeypatch) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    result = fit(_config(nli_dir, precision="auto", epochs=1), backbone=tiny_backbone)
    assert result.config["precision"] == "bf16"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert Trainer(_config(nli_dir, precision="auto"), backbone=tiny_backbone).config.precision == "fp32"


def test_bf16_is_deterministic_differs_from_fp32_and_reloads_exactly(nli_dir, tiny_backbone, tmp_path) -> None:
    config = _config(nli_dir, precision="bf16")
    first, second = Trainer(config, backbone=tiny_backbone), Trainer(config, backbone=tiny_backbone)
    fp32 = fit(config.replace(precision="fp32"), backbone=tiny_backbone)
    results = [trainer.run() for trainer in (first, second)]
    assert [r.loss for r in results[0].history] == [r.loss for r in results[1].history]
    assert [r.loss for r in results[0].history] != [r.loss for r in fp32.history]  # it did run in another precision
    saved = TrainedPrompt.from_trainer(first, results[0]).save_pretrained(tmp_path / "prompt")
    loaded = TrainedPrompt.from_pretrained(saved, backbone=tiny_backbone)
    assert loaded.config.precision == "bf16"
    for lang, examples in first.data.test.items():  # evaluated as the run evaluated: the same accuracy
        assert loaded.accuracy(examples, lang) == results[0].accuracy[lang]


def test_a_checkpoint_resumes_in_another_precision(nli_dir, tiny_backbone, tmp_path) -> None:
    # the runtime knobs (device, threads, precision) may change on resume, e.g. a trial moved to another node
    trainer = Trainer(_config(nli_dir, precision="bf16"), backbone=tiny_backbone)
    trainer.train_epoch()
    trainer.save(tmp_path / "state.pt")
    resumed = Trainer(_config(nli_dir, precision="fp32"), backbone=tiny_backbone)
    resumed.load(tmp_path / "state.pt")
    assert resumed.epoch == 1 and resumed.config.precision == "fp32"
