"""What training must do, observed on a real encoder (e5-small cut to 2 layers, fp32): the loss falls, the
best-dev state is the one tested, targets get their translated prompt, a per-language translator learns from its
own language only, the alignment term pulls the student towards a teacher that it leaves alone (stop-gradient),
and w weighs the two terms as (1 - w) and w. tiny-xlmr cannot show any of this: its answers barely move.

The data: the nine conftest rows, which the model learns to fit within a few epochs; the English dev set has
the same rows with rotated labels, so what the model learns makes it worse on dev, an early epoch is the one
dev selects, and the last state is measurably not it.
"""

from __future__ import annotations

import pytest
import torch

from mpt.config import MPTConfig
from mpt.losses import alignment_loss
from mpt.training import StepPlan, Trainer, load_run_data
from tests.conftest import ROWS, write_nli

ROTATED = {"entailment": "neutral", "neutral": "contradiction", "contradiction": "entailment"}
TARGETS = ["de", "fr"]


@pytest.fixture(scope="module")
def learning_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("learning")
    write_nli(directory / "train-en.tsv")
    write_nli(directory / "test-en.tsv")
    write_nli(directory / "dev-en.tsv", [(p, h, ROTATED[label]) for p, h, label in ROWS])
    sentences = list(dict.fromkeys([p for p, _, _ in ROWS] + [h for _, h, _ in ROWS]))
    for lang in TARGETS:
        for split in ("dev", "test"):
            write_nli(
                directory / f"{split}-{lang}.tsv", [(f"[{lang}] {p}", f"[{lang}] {h}", label) for p, h, label in ROWS]
            )
        (directory / f"parallel-{lang}.tsv").write_text(
            "".join(f"{s}\t[{lang}] {s}\n" for s in sentences), encoding="utf-8"
        )
    return directory


def _config(directory, **overrides) -> MPTConfig:
    values = dict(
        backbone="e5-small",
        num_layers=2,
        precision="fp32",
        data=str(directory),
        parallel=str(directory),
        target_languages=TARGETS,
        prompt_length=4,
        shots_per_class=3,
        batch_size=3,
        alignment_batch_size=4,
        translator_hidden=32,
        epochs=10,
        learning_rate=5e-3,
        seed=0,
    )
    values.update(overrides)
    return MPTConfig(**values)


@pytest.fixture(scope="module")
def trained(learning_dir, e5_two_layers):
    """One whole run (depth 1, w 0.5) with the trainable state after every epoch."""
    trainer = Trainer(_config(learning_dir), backbone=e5_two_layers)
    states = {}
    result = trainer.run([lambda record, t: states.setdefault(record.epoch, t.model.trainable_state_dict())])
    return trainer, result, states


def _correctness_with(trainer: Trainer, state: dict, lang: str) -> list[int]:
    final = trainer.model.trainable_state_dict()
    trainer.model.load_trainable_state_dict(state)
    try:
        return trainer.correctness(trainer.data.test[lang], lang, split="test")
    finally:
        trainer.model.load_trainable_state_dict(final)


def test_training_lowers_the_loss_and_fits_the_rows_it_trains_on(trained):
    trainer, result, _ = trained
    ce = [record.ce_loss for record in result.history]
    assert ce[-1] < 0.9 * ce[0], ce  # gradient ascent would raise it
    assert sum(ce[-3:]) < sum(ce[:3]), ce
    assert trainer.accuracy(trainer.train_examples, "en") >= 7 / 9  # chance: 1/3


def test_the_best_dev_state_not_the_last_is_the_one_tested(trained):
    trainer, result, states = trained
    dev = [record.dev_accuracy["en"] for record in result.history]
    assert result.best_epoch == dev.index(max(dev)) + 1 and result.best_dev_accuracy == max(dev)  # ties: earliest
    assert result.best_epoch < trainer.config.epochs, dev  # the fixture's point: dev prefers an early state
    for lang in ["en", *TARGETS]:
        selected = _correctness_with(trainer, states[result.best_epoch], lang)
        assert result.correct[lang] == selected, lang
        assert result.accuracy[lang] == sum(selected) / len(selected)
    # the last state answers the test rows differently, so testing it would have been noticed
    assert _correctness_with(trainer, states[trainer.config.epochs], "en") != result.correct["en"]


def test_targets_get_the_translated_prompt_and_depth_zero_is_the_source_prompt(trained, learning_dir, e5_two_layers):
    trainer, _, _ = trained
    vanilla = Trainer(_config(learning_dir, translator_depth=0, epochs=1), backbone=e5_two_layers)
    vanilla.train_epoch()
    with torch.no_grad():
        source = trainer.model.prompt_for("en")
        for lang in TARGETS:
            target = trainer.model.prompt_for(lang)
            assert target.shape == source.shape and not torch.allclose(target, source), lang
            assert torch.equal(vanilla.model.prompt_for(lang), vanilla.model.prompt_for("en")), lang


def _pairs_of(trainer: Trainer, lang: str, count: int = 4) -> list[int]:
    rows = [i for i, pair_lang in enumerate(trainer.pair_langs) if pair_lang == lang][:count]
    assert len(rows) == count, trainer.pair_langs
    return rows


@pytest.mark.parametrize("lang", TARGETS)
def test_a_per_language_translator_learns_from_its_own_language_only(lang, learning_dir, e5_two_layers):
    trainer = Trainer(
        _config(learning_dir, translator_mode="per_language", alignment_weight=1.0), backbone=e5_two_layers
    )
    before = trainer.model.trainable_state_dict()
    trainer.step(StepPlan(number=1, rows=[0, 1, 2], pair_rows=_pairs_of(trainer, lang)))
    after = trainer.model.trainable_state_dict()
    for other in TARGETS:
        keys = [k for k in after if k.startswith(f"translator.translators.{other}.")]
        assert keys, sorted(after)
        moved = [k for k in keys if not torch.equal(before[k], after[k])]
        assert moved == (keys if other == lang else []), (lang, other, moved)


def test_kl_at_temperature_t_is_t_squared_times_the_kl_of_the_softened_distributions():
    generator = torch.Generator().manual_seed(0)
    teacher, student = (3 * torch.randn(5, 3, generator=generator) for _ in range(2))
    for temperature in (0.5, 2.0, 4.0):
        p, q = (teacher / temperature).softmax(-1), (student / temperature).softmax(-1)
        by_hand = temperature**2 * (p * (p.log() - q.log())).sum(-1).mean()
        assert torch.allclose(alignment_loss(teacher, student, temperature), by_hand, rtol=1e-5), temperature
    assert not torch.allclose(alignment_loss(teacher, student, 2.0), alignment_loss(teacher, student, 1.0))


def _gradients(trainer: Trainer, plan: StepPlan) -> dict[str, torch.Tensor]:
    """The gradient of one training step's loss on every trainable parameter (zero where it had none)."""
    trainer.step(plan)
    return {
        f"{name}.{key}": (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
        for name, module in trainer.model.trainable_modules().items()
        for key, p in module.named_parameters()
    }


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-7) for k in a)


def test_w_weighs_the_ce_term_by_one_minus_w_and_the_alignment_term_by_w(learning_dir, e5_two_layers):
    """Gradients of one step from the same start (paired seeds start alike whatever w): at w = 1 the few-shot
    rows contribute nothing and at w = 0 the pairs nothing, so those are the two terms' own gradients; any
    other w mixes them as (1 - w) and w. A step without pairs (a CE-only epoch) is CE at full weight."""
    config = _config(learning_dir)
    data = load_run_data(config)

    def gradient(w, rows=(0, 1, 2), pairs=(0, 1, 2, 3)):
        trainer = Trainer(config.replace(alignment_weight=w), backbone=e5_two_layers, data=data)
        return _gradients(trainer, StepPlan(number=1, rows=list(rows), pair_rows=list(pairs)))

    ce, kl = gradient(0.0), gradient(1.0)
    assert not _close(ce, kl)
    assert _close(kl, gradient(1.0, rows=(3, 4, 5))), "at w = 1 the few-shot rows must not matter"
    assert _close(ce, gradient(0.0, pairs=(4, 5, 6, 7))), "at w = 0 the parallel pairs must not matter"
    for w in (0.25, 0.75):
        mixed = gradient(w)
        assert _close(mixed, {k: (1 - w) * ce[k] + w * kl[k] for k in ce}), w
    assert _close(gradient(0.25, pairs=()), ce), "a step without pairs trains on CE at full weight"


class _TranslatorOutputs:
    """Keeps what the translator returns during a step (p_T, one tensor per call) and their gradients."""

    def __init__(self, translator: torch.nn.Module) -> None:
        self.inputs, self.outputs = [], []
        self.handle = translator.register_forward_hook(self._keep)

    def _keep(self, module, args, output) -> None:
        self.inputs.append(args[0].detach().clone())
        output.retain_grad()
        self.outputs.append(output)


@pytest.mark.parametrize("stop_gradient", [True, False])
def test_alignment_pulls_the_student_towards_a_teacher_it_leaves_alone(stop_gradient, learning_dir, e5_two_layers):
    """At w = 1 the step's gradient on p_S is the student's alone (p_S -> p_T -> KL, the translator's chain
    rule applied to the gradient that reached p_T) with `teacher_stop_gradient`; without it the teacher's
    gradient is added (the teacher moves too)."""
    trainer = Trainer(
        _config(learning_dir, alignment_weight=1.0, teacher_stop_gradient=stop_gradient), backbone=e5_two_layers
    )
    start = trainer.model.trainable_state_dict()
    seen = _TranslatorOutputs(trainer.model.translator)
    try:
        gradient = _gradients(trainer, StepPlan(number=1, rows=[0, 1, 2], pair_rows=_pairs_of(trainer, "de")))
    finally:
        seen.handle.remove()
    assert seen.outputs and all(x.grad is not None for x in seen.outputs)
    trainer.model.load_trainable_state_dict(start)  # the translator as it was during the step
    source = start["prompt.weight"].clone().requires_grad_(True)
    assert all(torch.equal(x, source.detach()) for x in seen.inputs)
    translated = trainer.model.translator(source, "de")
    (student_path,) = torch.autograd.grad(translated, source, grad_outputs=sum(x.grad for x in seen.outputs))
    teacher_path = gradient["prompt.weight"] - student_path
    if stop_gradient:
        assert torch.allclose(teacher_path, torch.zeros_like(teacher_path), atol=1e-6 * student_path.abs().max())
    else:
        assert teacher_path.abs().max() > 1e-3 * student_path.abs().max()


def test_alignment_steps_bring_the_targets_answers_to_the_teachers(learning_dir, e5_two_layers):
    """Small steps (lr 1e-4, where a step's first-order effect dominates) of the alignment term alone: the KL of
    the same pairs falls step by step (measured 6.8e-4, 6.2e-4, 5.7e-4, 5.2e-4 for seed 0)."""
    trainer = Trainer(_config(learning_dir, alignment_weight=1.0, learning_rate=1e-4), backbone=e5_two_layers)
    plan = StepPlan(number=1, rows=[0, 1, 2], pair_rows=_pairs_of(trainer, "de"))
    kl = [trainer.step(plan).kl_loss for _ in range(4)]  # each the KL before its step's update
    assert all(later < earlier for earlier, later in zip(kl, kl[1:])) and kl[-1] < 0.9 * kl[0], kl
