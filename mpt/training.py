"""The MPT training loop: joint CE + alignment steps, dev-based model selection, per-language test.

`fit(config)` runs a whole training run; `Trainer` exposes the same loop epoch by epoch with a full,
restorable state (prompt, translator, head, optimizer, RNG, history) for checkpointing and resume.
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from mpt.backbones import Backbone, load_backbone
from mpt.checkpoint import CHECKPOINT_FORMAT, CheckpointError, read_checkpoint, validate_checkpoint, write_checkpoint
from mpt.config import MPTConfig, config_from_saved
from mpt.data import NLIExample, RunData, few_shot, load_run_data
from mpt.losses import alignment_loss, classification_loss, joint_loss
from mpt.model import PromptedClassifier, resolve_pair_encoding
from mpt.precision import autocast, resolve_precision
from mpt.scoring import answer_logits


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names the epoch and step."""


@dataclass
class EpochRecord:
    """What one epoch produced; dev accuracies only on evaluation epochs (the target languages' only at the
    epochs English dev selected, unless `target_dev_every_epoch`)."""

    epoch: int
    steps: int
    loss: float
    ce_loss: float
    kl_loss: float
    dev_accuracy: dict[str, float] = field(default_factory=dict)
    best_epoch: int = 0
    best_dev_accuracy: float = 0.0
    seconds: float = 0.0

    @property
    def dev_average(self) -> float | None:
        return sum(self.dev_accuracy.values()) / len(self.dev_accuracy) if self.dev_accuracy else None


@dataclass
class FitResult:
    """Test accuracy per language with the best-dev state, and the run's history."""

    accuracy: dict[str, float]
    average: float
    average_target: float
    best_epoch: int
    best_dev_accuracy: float
    history: list[EpochRecord]
    config: dict
    correct: dict[str, list[int]] = field(default_factory=dict)  # language -> 1/0 per test row, in file order

    def to_dict(self) -> dict:
        return {
            "accuracy": self.accuracy,
            "average": self.average,
            "average_target": self.average_target,
            "best_epoch": self.best_epoch,
            "best_dev_accuracy": self.best_dev_accuracy,
            "history": [asdict(r) for r in self.history],
            "config": self.config,
            "correct": self.correct,
        }


@dataclass(frozen=True)
class StepPlan:
    """One training step: rows of the few-shot set (`Trainer.train_ids`) and of the parallel pairs."""

    number: int  # 1-based step of the epoch (named in errors)
    rows: list[int]
    pair_rows: list[int]  # empty when the alignment task is off


@dataclass(frozen=True)
class StepLosses:
    loss: float
    ce_loss: float
    kl_loss: float


EpochCallback = Callable[[EpochRecord, "Trainer"], None]


class Trainer:
    """One MPT run, advanced an epoch at a time; its whole state can be saved and restored."""

    def __init__(self, config: MPTConfig, backbone: Backbone | None = None, data: RunData | None = None) -> None:
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        self.device = resolve_device(config.device)
        self.backbone = backbone or load_backbone(config.backbone, config.num_layers, want_mlm=config.head != "linear")
        # `auto` resolved once, so the run's record (results, checkpoints, saved prompts) names what it ran in
        self.config = config = config.replace(
            precision=resolve_precision(config.precision, self.device),
            pair_encoding=resolve_pair_encoding(config.pair_encoding, self.backbone),
        )
        self.data = data or load_run_data(config)
        torch.manual_seed(config.seed)  # whatever else draws from torch's global RNG (the parts seed themselves)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.model = PromptedClassifier(config, self.backbone, self.generator).to(self.device)
        self.templater = self.model.templater()
        self.train_examples = few_shot(self.data.train_pool, config.shots_per_class, config.seed)
        # token ids, once: the few-shot set and the parallel pairs (source and target side)
        self.train_ids = self.templater.tokenize(
            [e.premise for e in self.train_examples], [e.hypothesis for e in self.train_examples]
        )
        self.train_labels = [e.label for e in self.train_examples]
        pairs = self.data.parallel
        self.pair_source_ids = self.templater.tokenize([p.premise for p in pairs], [p.hypothesis for p in pairs])
        self.pair_target_ids = self.templater.tokenize(
            [p.target_premise for p in pairs], [p.target_hypothesis for p in pairs]
        )
        self.pair_langs = [p.lang for p in pairs]
        if config.alignment_weight > 0 and not pairs:
            raise ValueError(
                "alignment_weight > 0 needs a parallel corpus, and the one given has no pairs for "
                f"{config.target_languages}: set parallel=mini|xnli|FILE or alignment_weight=0"
            )
        # (split, lang) -> (the examples, their token ids, labels): reused only for the very same examples
        self._eval_cache: dict[tuple[str, str], tuple[tuple[NLIExample, ...], list[list[int]], list[int]]] = {}
        self.optimizer = torch.optim.AdamW(
            self.model.trainable_parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        self.epoch = 0
        self.history: list[EpochRecord] = []
        self.best_epoch = 0
        self.best_dev_accuracy = -1.0
        self.best_state = self.model.trainable_state_dict()

    # --- the loop ---------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.epoch >= self.config.epochs

    @property
    def selected_record(self) -> EpochRecord | None:
        """The record of the epoch selected so far (best source dev), None before the first evaluation."""
        return next((r for r in self.history if r.epoch == self.best_epoch), None)

    def batch_plan(self, generator: torch.Generator | None = None) -> list[StepPlan]:
        """The steps of the next epoch: a shuffled pass over the few-shot set in batches, each with its slice of
        the shuffled parallel pairs (cycled; siamese: a run of consecutive pairs from a shuffled start, which
        share sentences: the hypothesis of pair i is the premise of pair i + 1 in a corpus of single sentences,
        an XNLI premise has three hypotheses). Draws from `generator` (default: the run's own, as training does;
        pass a copy to look ahead without changing the run); both encodings draw alike."""
        generator = self.generator if generator is None else generator
        config = self.config
        order = torch.randperm(len(self.train_ids), generator=generator).tolist()
        pair_order = torch.randperm(len(self.pair_langs), generator=generator).tolist()
        size = config.alignment_batch_size
        # the CE-only epochs draw the same orders as the joint ones, so the two-stage schedule changes nothing else
        aligned = config.alignment_weight > 0 and self.epoch + 1 > config.ce_only_epochs
        windows = config.pair_encoding == "siamese"  # what makes encoding each distinct sentence once pay
        count = len(pair_order)
        plan = []
        for index, start in enumerate(range(0, len(order), config.batch_size)):
            if not aligned:
                pair_rows = []
            elif windows:
                pair_rows = [(pair_order[index % count] + j) % count for j in range(size)]
            else:
                pair_rows = [pair_order[(index * size + j) % count] for j in range(size)]
            plan.append(StepPlan(number=index + 1, rows=order[start : start + config.batch_size], pair_rows=pair_rows))
        return plan

    def step(self, plan: StepPlan) -> StepLosses:
        """One optimizer step: CE on the plan's few-shot rows plus alignment on its parallel pairs."""
        config = self.config
        batch = self.templater.collate(
            [self.train_ids[i] for i in plan.rows],
            [self.train_labels[i] for i in plan.rows],
            [config.source_language] * len(plan.rows),
        ).to(self.device)
        with autocast(config.precision, self.device, training=True):
            ce = classification_loss(self.model(batch), batch.labels)
            kl = self._alignment_loss(plan.pair_rows) if plan.pair_rows else torch.zeros((), device=self.device)
            loss = joint_loss(ce, kl, config.alignment_weight if plan.pair_rows else 0.0)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"loss is {loss.item()} (CE {ce.item()}, KL {kl.item()}) at epoch {self.epoch}, step {plan.number}: "
                f"lower learning_rate (now {config.learning_rate}) or kl_temperature"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return StepLosses(loss.item(), ce.item(), kl.item())

    def train_epoch(self) -> EpochRecord:
        """One pass over the few-shot set (`batch_plan`, `step`), then dev evaluation and model selection."""
        started = time.perf_counter()
        plans = self.batch_plan()
        self.epoch += 1
        self.model.train()
        losses = [self.step(plan) for plan in plans]
        steps = len(losses)
        record = EpochRecord(
            epoch=self.epoch,
            steps=steps,
            loss=sum(x.loss for x in losses) / steps,
            ce_loss=sum(x.ce_loss for x in losses) / steps,
            kl_loss=sum(x.kl_loss for x in losses) / steps,
        )
        if self.epoch % self.config.eval_every == 0 or self.done:
            self._evaluate_dev(record)
        record.best_epoch, record.best_dev_accuracy = self.best_epoch, self.best_dev_accuracy
        record.seconds = time.perf_counter() - started
        self.history.append(record)
        return record

    def _evaluate_dev(self, record: EpochRecord) -> None:
        """Source-language dev accuracy; a better one selects this epoch. The target-language dev sets are
        read only at the epoch selected (the only one whose target dev accuracy anything uses), unless
        `target_dev_every_epoch` asks for their curves: the selected epoch's metrics are the same either way."""
        source = self.config.source_language
        source_dev = self.accuracy(self.data.dev[source], source, split="dev")
        selected = source_dev > self.best_dev_accuracy  # ties keep the earlier epoch
        record.dev_accuracy = {source: source_dev}
        if self.config.dev_all_languages and (selected or self.config.target_dev_every_epoch):
            record.dev_accuracy.update(
                {
                    lang: self.accuracy(examples, lang, split="dev")
                    for lang, examples in self.data.dev.items()
                    if lang != source
                }
            )
        if selected:
            self.best_dev_accuracy, self.best_epoch = source_dev, self.epoch
            self.best_state = self.model.trainable_state_dict()

    def _alignment_loss(self, pair_rows: list[int]) -> torch.Tensor:
        """KL(P_src || P_tgt) on the given parallel pairs: English with p_S, the translation with p_T."""
        source = self.templater.collate(
            [self.pair_source_ids[i] for i in pair_rows], None, [self.config.source_language] * len(pair_rows)
        ).to(self.device)
        target = self.templater.collate(
            [self.pair_target_ids[i] for i in pair_rows], None, [self.pair_langs[i] for i in pair_rows]
        ).to(self.device)
        teacher_context = torch.no_grad() if self.config.teacher_stop_gradient else contextlib.nullcontext()
        with teacher_context:
            source_logits = self.model(source)
        return alignment_loss(source_logits, self.model(target), self.config.kl_temperature)

    def run(self, callbacks: Sequence[EpochCallback] = ()) -> FitResult:
        """Train the remaining epochs, then test every language with the best-dev state."""
        while not self.done:
            record = self.train_epoch()
            for callback in callbacks:
                callback(record, self)
        return self.test()

    def test(self) -> FitResult:
        """Test every language with the selected (best source dev) state; per-row correctness included."""
        final_state = self.model.trainable_state_dict()
        self.model.load_trainable_state_dict(self.best_state)
        correct = {lang: self.correctness(examples, lang, split="test") for lang, examples in self.data.test.items()}
        self.model.load_trainable_state_dict(final_state)
        accuracy = {lang: sum(rows) / len(rows) for lang, rows in correct.items()}
        targets = [accuracy[lang] for lang in self.config.target_languages]
        return FitResult(
            accuracy=accuracy,
            average=sum(accuracy.values()) / len(accuracy),
            average_target=sum(targets) / len(targets),
            best_epoch=self.best_epoch,
            best_dev_accuracy=self.best_dev_accuracy,
            history=list(self.history),
            config=self.config.to_dict(),
            correct=correct,
        )

    def encoded(self, examples: Sequence[NLIExample], split: str, lang: str) -> tuple[list[list[int]], list[int]]:
        """Token ids and labels of `examples`, tokenised once per (split, language) and example set."""
        key, examples = (split, lang), tuple(examples)
        cached = self._eval_cache.get(key)
        if cached is None or cached[0] != examples:
            ids = self.templater.tokenize([e.premise for e in examples], [e.hypothesis for e in examples])
            cached = self._eval_cache[key] = (examples, ids, [e.label for e in examples])
        return cached[1], cached[2]

    def accuracy(self, examples: Sequence[NLIExample], lang: str, split: str = "eval") -> float:
        """Accuracy on `examples` in `lang`."""
        rows = self.correctness(examples, lang, split)
        return sum(rows) / len(rows)

    def correctness(self, examples: Sequence[NLIExample], lang: str, split: str = "eval") -> list[int]:
        """1 where the prediction on that example (in order) is right, else 0 (`mpt.scoring.answer_logits`:
        length-sorted batches, dynamic padding; siamese: each distinct sentence encoded once)."""
        ids, labels = self.encoded(examples, split, lang)
        predictions = (
            answer_logits(
                self.model, self.templater, ids, lang, self.config.eval_batch_size, self.config.precision, self.device
            )
            .argmax(dim=-1)
            .tolist()
        )
        return [int(p == label) for p, label in zip(predictions, labels)]

    # --- state ------------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Everything needed to continue this run exactly: weights, optimizer, RNG, selection, history."""
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.to_json(),
            "epoch": self.epoch,
            "model": self.model.trainable_state_dict(),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "generator": self.generator.get_state(),
            "best_epoch": self.best_epoch,
            "best_dev_accuracy": self.best_dev_accuracy,
            "best_state": self.best_state,
            "history": [asdict(r) for r in self.history],
        }

    def load_state_dict(self, state: dict) -> None:
        validate_checkpoint(state, "the state to load")
        saved = config_from_saved(json.loads(state["config"])).to_dict()
        current = self.config.to_dict()
        # the runtime knobs may change on resume (a trial moved to another node): not what the run is
        differing = sorted(
            k
            for k in current
            if k not in ("epochs", "device", "num_threads", "precision") and saved.get(k) != current[k]
        )
        if differing:
            raise CheckpointError(
                f"checkpoint was written with a different config ({differing}): resume with the "
                f"same settings, or start a new run"
            )
        self.model.load_trainable_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.epoch = int(state["epoch"])
        self.best_epoch = int(state["best_epoch"])
        self.best_dev_accuracy = float(state["best_dev_accuracy"])
        self.best_state = state["best_state"]
        self.history = [EpochRecord(**r) for r in state["history"]]

    def save(self, path: str | Path) -> Path:
        """Write the full state to `path` atomically (`mpt.checkpoint`)."""
        return write_checkpoint(path, self.state_dict())

    def load(self, path: str | Path) -> None:
        """Restore the state written by `save` (`mpt.checkpoint.read_checkpoint`: no pickled objects)."""
        self.load_state_dict(read_checkpoint(path))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device='{name}' but no CUDA device is available: use device='cpu' or 'auto'")
    return torch.device(name)


def fit(
    config: MPTConfig,
    callbacks: Sequence[EpochCallback] = (),
    resume_from: str | Path | None = None,
    backbone: Backbone | None = None,
    data: RunData | None = None,
) -> FitResult:
    """Train one MPT run from `config` (optionally resuming a saved state) and test it per language."""
    trainer = Trainer(config, backbone=backbone, data=data)
    if resume_from is not None:
        trainer.load(resume_from)
    return trainer.run(callbacks)
