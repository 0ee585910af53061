"""The training loop: determinism, exact resume, model selection, errors, and the single-run CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from mpt.config import MPTConfig
from mpt.training import CheckpointError, NonFiniteLossError, Trainer, fit
from tests.conftest import ROWS


def _config(nli_dir, **overrides):
    values = dict(
        backbone="tiny-xlmr",
        data=str(nli_dir),
        parallel=str(nli_dir),
        target_languages=["de"],
        prompt_length=4,
        shots_per_class=3,
        batch_size=4,
        alignment_batch_size=2,
        epochs=3,
        translator_depth=1,
        alignment_weight=0.5,
        learning_rate=0.05,
        dev_all_languages=True,
    )
    values.update(overrides)
    return MPTConfig(**values)


def _history(result):
    return [(r.epoch, r.loss, r.ce_loss, r.kl_loss, r.dev_accuracy) for r in result.history]


def test_same_seed_gives_identical_metrics_and_another_seed_does_not(nli_dir, tiny_backbone):
    first = fit(_config(nli_dir), backbone=tiny_backbone)
    second = fit(_config(nli_dir), backbone=tiny_backbone)
    other = fit(_config(nli_dir, seed=1), backbone=tiny_backbone)
    assert _history(first) == _history(second) and first.accuracy == second.accuracy
    assert _history(first) != _history(other)
    assert set(first.accuracy) == {"en", "de"} and 1 <= first.best_epoch <= 3


def test_resume_from_checkpoint_ends_exactly_like_an_uninterrupted_run(nli_dir, tiny_backbone, tmp_path):
    config = _config(nli_dir, epochs=4, eval_every=2)
    uninterrupted = fit(config, backbone=tiny_backbone)
    interrupted = Trainer(config, backbone=tiny_backbone)
    interrupted.train_epoch()
    interrupted.train_epoch()
    interrupted.train_epoch()
    interrupted.save(tmp_path / "state.pt")
    resumed = fit(config, backbone=tiny_backbone, resume_from=tmp_path / "state.pt")
    assert _history(resumed) == _history(uninterrupted)
    assert resumed.accuracy == uninterrupted.accuracy and resumed.best_epoch == uninterrupted.best_epoch
    assert [r.dev_accuracy == {} for r in resumed.history] == [True, False, True, False]


def test_checkpoint_errors(nli_dir, tiny_backbone, tmp_path):
    trainer = Trainer(_config(nli_dir), backbone=tiny_backbone)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        trainer.load(corrupt)
    with pytest.raises(CheckpointError, match="does not exist"):
        trainer.load(tmp_path / "missing.pt")
    trainer.save(tmp_path / "ok.pt")
    other = Trainer(_config(nli_dir, prompt_length=5), backbone=tiny_backbone)
    with pytest.raises(CheckpointError, match=r"different config \(\['prompt_length'\]\)"):
        other.load(tmp_path / "ok.pt")


def test_non_finite_loss_names_epoch_and_step(nli_dir, tiny_backbone):
    with pytest.raises(NonFiniteLossError, match=r"at epoch 1, step 2: lower learning_rate"):
        fit(_config(nli_dir, learning_rate=float("inf")), backbone=tiny_backbone)


@pytest.mark.slow
def test_end_to_end_fit_on_the_mini_set_with_e5(e5_two_layers):
    config = MPTConfig(
        num_layers=2,
        epochs=2,
        shots_per_class=4,
        prompt_length=4,
        target_languages=["de", "sw"],
        max_eval_examples=30,
        alignment_batch_size=4,
    )
    result = fit(config, backbone=e5_two_layers)
    assert set(result.accuracy) == {"en", "de", "sw"}
    assert all(0.0 <= acc <= 1.0 for acc in result.accuracy.values())
    assert result.average == pytest.approx(sum(result.accuracy.values()) / 3)
    assert result.average_target == pytest.approx((result.accuracy["de"] + result.accuracy["sw"]) / 2)
    assert all(r.kl_loss > 0 for r in result.history)


@pytest.mark.slow
def test_cli_writes_results_json(tmp_path):
    out = tmp_path / "out.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mpt.train",
            "--data",
            "mini",
            "--epochs",
            "2",
            "--num-layers",
            "1",
            "--shots-per-class",
            "4",
            "--target-languages",
            "de,zh",
            "--max-eval-examples",
            "12",
            "--output",
            str(out),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(out.read_text())
    assert set(results["accuracy"]) == {"en", "de", "zh"}
    assert {"average", "average_target", "best_epoch", "config"} <= set(results)
    assert results["config"]["target_languages"] == ["de", "zh"]
    assert "average" in done.stdout and "zh" in done.stdout


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--alignment-weight", "1.5"], "'alignment_weight' = 1.5 is invalid: allowed a number in [0, 1]"),
        (["--data", "/nonexistent/dir"], "neither 'mini', 'xnli' nor an existing directory"),
        (["--backbone", "/nonexistent/model"], "cannot load backbone '/nonexistent/model'"),
        (["--num-layers", "two"], "expected int"),
    ],
)
def test_cli_bad_input_exits_nonzero_with_a_fix(argv, fragment):
    done = subprocess.run(
        [sys.executable, "-m", "mpt.train", *argv, "--quiet"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode != 0
    assert fragment in done.stderr


def test_target_dev_read_only_at_selected_epochs_gives_the_metrics_of_reading_it_every_epoch(nli_dir, tiny_backbone):
    eager = fit(_config(nli_dir, epochs=5, target_dev_every_epoch=True, learning_rate=0.3), backbone=tiny_backbone)
    lazy = fit(_config(nli_dir, epochs=5, learning_rate=0.3), backbone=tiny_backbone)
    assert lazy.best_epoch == eager.best_epoch and lazy.accuracy == eager.accuracy
    assert lazy.correct == eager.correct
    for lazy_record, eager_record in zip(lazy.history, eager.history):
        assert lazy_record.dev_accuracy["en"] == eager_record.dev_accuracy["en"]
        assert set(eager_record.dev_accuracy) == {"en", "de"}
        if lazy_record.epoch == lazy_record.best_epoch:  # a selecting epoch reads every dev language ...
            assert lazy_record.dev_accuracy == eager_record.dev_accuracy
        else:  # ... any other, English alone
            assert set(lazy_record.dev_accuracy) == {"en"}
    assert any(set(r.dev_accuracy) == {"en"} for r in lazy.history)  # the run had epochs to skip
    selected = [r for r in lazy.history if r.epoch == lazy.best_epoch][0]
    assert selected.dev_accuracy == [r for r in eager.history if r.epoch == eager.best_epoch][0].dev_accuracy


def test_test_correctness_per_row_gives_the_accuracy(nli_dir, tiny_backbone):
    result = fit(_config(nli_dir, epochs=1), backbone=tiny_backbone)
    for lang, rows in result.correct.items():
        assert len(rows) == len(ROWS) and set(rows) <= {0, 1}
        assert result.accuracy[lang] == sum(rows) / len(rows)


@pytest.mark.parametrize("backbone_fixture", ["tiny_backbone", "e5_two_layers"])
def test_paired_seeds_share_the_few_shot_sample_and_the_start_of_what_configurations_share(
    nli_dir, backbone_fixture, request
):
    backbone = request.getfixturevalue(backbone_fixture)
    extra = {"backbone": "e5-small", "num_layers": 2} if backbone_fixture == "e5_two_layers" else {}
    vanilla = Trainer(_config(nli_dir, translator_depth=0, alignment_weight=0.0, seed=3, **extra), backbone=backbone)
    mpt = Trainer(
        _config(nli_dir, translator_depth=2, alignment_weight=0.7, translator_hidden=32, seed=3, **extra),
        backbone=backbone,
    )
    other_seed = Trainer(_config(nli_dir, translator_depth=0, alignment_weight=0.0, seed=4, **extra), backbone=backbone)
    assert vanilla.train_examples == mpt.train_examples != other_seed.train_examples
    shared = [k for k in vanilla.model.trainable_state_dict() if not k.startswith("translator.")]
    assert shared and (backbone_fixture == "tiny_backbone" or any(k.startswith("head.") for k in shared))
    for key in shared:
        assert torch.equal(vanilla.model.trainable_state_dict()[key], mpt.model.trainable_state_dict()[key]), key
    assert not torch.equal(
        vanilla.model.trainable_state_dict()["prompt.weight"], other_seed.model.trainable_state_dict()["prompt.weight"]
    )
    assert [p.rows for p in vanilla.batch_plan()] == [p.rows for p in mpt.batch_plan()]  # the same batch order


def test_ce_only_epochs_hold_the_alignment_task_back_and_draw_the_same_batches(nli_dir, tiny_backbone):
    joint = Trainer(_config(nli_dir), backbone=tiny_backbone)
    staged = Trainer(_config(nli_dir, ce_only_epochs=2), backbone=tiny_backbone)
    for epoch in (1, 2, 3):
        joint_plan, staged_plan = joint.batch_plan(_copy(joint.generator)), staged.batch_plan(_copy(staged.generator))
        assert [p.rows for p in joint_plan] == [p.rows for p in staged_plan]
        assert all(p.pair_rows for p in joint_plan)
        assert all(bool(p.pair_rows) == (epoch > 2) for p in staged_plan)
        record = staged.train_epoch()
        assert (record.kl_loss == 0.0) == (epoch <= 2)
        joint.train_epoch()


def _copy(generator: torch.Generator) -> torch.Generator:
    """A generator in the same state: to look at the next epoch's plan without changing the run."""
    return torch.Generator().set_state(generator.get_state())
