"""The MPT training loop: joint CE + alignment steps, dev-based model selection, per-language test.

`fit(config)` runs a whole training run; `Trainer` exposes the same loop epoch by epoch with a full,
restorable state (prompt, translator, head, optimizer, RNG, history) for checkpointing and resume.
"""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from mpt.backbones import Backbone, load_backbone
from mpt.config import MPTConfig
from mpt.data import NLIExample, ParallelPair, few_shot, load_nli, load_parallel
from mpt.losses import alignment_loss, classification_loss, joint_loss
from mpt.model import PromptedClassifier, Templater

CHECKPOINT_FORMAT = 1


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names the epoch and step."""


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message says why and what to do."""


@dataclass
class RunData:
    """Everything a run reads: the source training pool, dev and test per language, parallel pairs."""

    train_pool: list[NLIExample]
    dev: dict[str, list[NLIExample]]
    test: dict[str, list[NLIExample]]
    parallel: list[ParallelPair]


def load_run_data(config: MPTConfig) -> RunData:
    """Load every split a run of `config` needs (the parallel corpus only when alignment is on)."""
    limit = config.max_eval_examples
    dev_languages = config.languages if config.dev_all_languages else [config.source_language]
    return RunData(
        train_pool=load_nli(config.data, "train", config.source_language, config.xnli_repo),
        dev={lang: load_nli(config.data, "dev", lang, config.xnli_repo, limit) for lang in dev_languages},
        test={lang: load_nli(config.data, "test", lang, config.xnli_repo, limit) for lang in config.languages},
        parallel=(load_parallel(config.parallel, config.target_languages, config.xnli_repo, config.source_language)
                  if config.alignment_weight > 0 else []),
    )


@dataclass
class EpochRecord:
    """What one epoch produced; dev accuracies only on evaluation epochs."""

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

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy, "average": self.average, "average_target": self.average_target,
                "best_epoch": self.best_epoch, "best_dev_accuracy": self.best_dev_accuracy,
                "history": [asdict(r) for r in self.history], "config": self.config}


EpochCallback = Callable[[EpochRecord, "Trainer"], None]


class Trainer:
    """One MPT run, advanced an epoch at a time; its whole state can be saved and restored."""

    def __init__(self, config: MPTConfig, backbone: Backbone | None = None, data: RunData | None = None) -> None:
        self.config = config
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        self.device = resolve_device(config.device)
        if config.precision == "bf16" and self.device.type != "cuda":
            raise ValueError("precision='bf16' runs under CUDA autocast and needs a CUDA device: use "
                             "precision='fp32' on CPU")
        self.backbone = backbone or load_backbone(config.backbone, config.num_layers,
                                                  want_mlm=config.head != "linear")
        self.data = data or load_run_data(config)
        torch.manual_seed(config.seed)  # translator and head initialisation
        self.generator = torch.Generator().manual_seed(config.seed)
        self.model = PromptedClassifier(config, self.backbone, self.generator).to(self.device)
        self.templater = Templater(self.backbone.tokenizer, config.max_length)
        self.train_examples = few_shot(self.data.train_pool, config.shots_per_class, config.seed)
        self._train_ids = self.templater.encode([e.premise for e in self.train_examples],
                                                [e.hypothesis for e in self.train_examples])
        self._train_labels = [e.label for e in self.train_examples]
        pairs = self.data.parallel
        self._pair_source_ids = self.templater.encode([p.premise for p in pairs], [p.hypothesis for p in pairs])
        self._pair_target_ids = self.templater.encode([p.target_premise for p in pairs],
                                                      [p.target_hypothesis for p in pairs])
        self._pair_langs = [p.lang for p in pairs]
        if config.alignment_weight > 0 and not pairs:
            raise ValueError("alignment_weight > 0 needs a parallel corpus, and the one given has no pairs for "
                             f"{config.target_languages}: set parallel=mini|xnli|FILE or alignment_weight=0")
        self._eval_cache: dict[tuple[str, str], tuple[list[list[int]], list[int]]] = {}
        self.optimizer = torch.optim.AdamW(self.model.trainable_parameters(), lr=config.learning_rate,
                                           weight_decay=config.weight_decay)
        self.epoch = 0
        self.history: list[EpochRecord] = []
        self.best_epoch = 0
        self.best_dev_accuracy = -1.0
        self.best_state = self.model.trainable_state_dict()

    # --- the loop ---------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.epoch >= self.config.epochs

    def train_epoch(self) -> EpochRecord:
        """One pass over the few-shot set, each step pairing a CE batch with an alignment batch."""
        config, started = self.config, time.perf_counter()
        self.epoch += 1
        self.model.train()
        order = torch.randperm(len(self._train_ids), generator=self.generator).tolist()
        pair_order = torch.randperm(len(self._pair_langs), generator=self.generator).tolist()
        totals = {"loss": 0.0, "ce": 0.0, "kl": 0.0}
        steps = 0
        for step, start in enumerate(range(0, len(order), config.batch_size), start=1):
            rows = order[start:start + config.batch_size]
            batch = self.templater.collate([self._train_ids[i] for i in rows], [self._train_labels[i] for i in rows],
                                           [config.source_language] * len(rows)).to(self.device)
            with self._autocast():
                ce = classification_loss(self.model(batch), batch.labels)
                kl = (self._alignment_step_loss(pair_order, step - 1) if config.alignment_weight > 0
                      else torch.zeros((), device=self.device))
                loss = joint_loss(ce, kl, config.alignment_weight)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"loss is {loss.item()} (CE {ce.item()}, KL {kl.item()}) at epoch {self.epoch}, step {step}: "
                    f"lower learning_rate (now {config.learning_rate}) or kl_temperature")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            totals["loss"] += loss.item()
            totals["ce"] += ce.item()
            totals["kl"] += kl.item()
            steps += 1
        record = EpochRecord(epoch=self.epoch, steps=steps, loss=totals["loss"] / steps, ce_loss=totals["ce"] / steps,
                             kl_loss=totals["kl"] / steps)
        if self.epoch % config.eval_every == 0 or self.done:
            record.dev_accuracy = {lang: self.accuracy(examples, lang, split="dev")
                                   for lang, examples in self.data.dev.items()}
            source_dev = record.dev_accuracy[config.source_language]
            if source_dev > self.best_dev_accuracy:  # ties keep the earlier epoch
                self.best_dev_accuracy, self.best_epoch = source_dev, self.epoch
                self.best_state = self.model.trainable_state_dict()
        record.best_epoch, record.best_dev_accuracy = self.best_epoch, self.best_dev_accuracy
        record.seconds = time.perf_counter() - started
        self.history.append(record)
        return record

    def _alignment_step_loss(self, pair_order: list[int], step_index: int) -> torch.Tensor:
        """KL(P_src || P_tgt) on the step's slice of this epoch's shuffled parallel pairs (cycled)."""
        size = self.config.alignment_batch_size
        rows = [pair_order[(step_index * size + j) % len(pair_order)] for j in range(size)]
        source = self.templater.collate([self._pair_source_ids[i] for i in rows], None,
                                        [self.config.source_language] * size).to(self.device)
        target = self.templater.collate([self._pair_target_ids[i] for i in rows], None,
                                        [self._pair_langs[i] for i in rows]).to(self.device)
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
        final_state = self.model.trainable_state_dict()
        self.model.load_trainable_state_dict(self.best_state)
        accuracy = {lang: self.accuracy(examples, lang, split="test") for lang, examples in self.data.test.items()}
        self.model.load_trainable_state_dict(final_state)
        targets = [accuracy[lang] for lang in self.config.target_languages]
        return FitResult(accuracy=accuracy, average=sum(accuracy.values()) / len(accuracy),
                         average_target=sum(targets) / len(targets), best_epoch=self.best_epoch,
                         best_dev_accuracy=self.best_dev_accuracy, history=list(self.history),
                         config=self.config.to_dict())

    @torch.inference_mode()
    def accuracy(self, examples: Sequence[NLIExample], lang: str, split: str = "eval",
                 pad_to_max_length: bool = False) -> float:
        """Accuracy on `examples` in `lang`, batching length-sorted sequences with dynamic padding."""
        key = (split, lang)
        if key not in self._eval_cache or len(self._eval_cache[key][0]) != len(examples):
            ids = self.templater.encode([e.premise for e in examples], [e.hypothesis for e in examples])
            self._eval_cache[key] = (ids, [e.label for e in examples])
        ids, labels = self._eval_cache[key]
        self.model.eval()
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        correct = 0
        size = self.config.eval_batch_size
        for start in range(0, len(order), size):
            rows = order[start:start + size]
            sequences = [ids[i] for i in rows]
            if pad_to_max_length:  # the slow baseline the benchmarks compare against
                sequences = [s + [self.templater.pad] * (self.config.max_length - len(s)) for s in sequences]
            batch = self.templater.collate(sequences, [labels[i] for i in rows], [lang] * len(rows))
            if pad_to_max_length:
                batch.attention_mask = torch.tensor([[1] * len(ids[i]) + [0] * (self.config.max_length - len(ids[i]))
                                                     for i in rows])
            batch = batch.to(self.device)
            with self._autocast():
                predictions = self.model(batch).argmax(dim=-1)
            correct += int((predictions == batch.labels).sum())
        self.model.train()
        return correct / len(ids)

    def _autocast(self):
        if self.config.precision == "bf16":
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # --- state ------------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Everything needed to continue this run exactly: weights, optimizer, RNG, selection, history."""
        return {"format": CHECKPOINT_FORMAT, "config": self.config.to_json(), "epoch": self.epoch,
                "model": self.model.trainable_state_dict(), "optimizer": copy.deepcopy(self.optimizer.state_dict()),
                "generator": self.generator.get_state(), "best_epoch": self.best_epoch,
                "best_dev_accuracy": self.best_dev_accuracy, "best_state": self.best_state,
                "history": [asdict(r) for r in self.history]}

    def load_state_dict(self, state: dict) -> None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"checkpoint format {state.get('format')!r} is not {CHECKPOINT_FORMAT}: it was "
                                  f"written by another version of mpt-study; start the run afresh")
        saved = MPTConfig.from_dict(__import__("json").loads(state["config"])).to_dict()
        current = self.config.to_dict()
        differing = sorted(k for k in current if k not in ("epochs", "device", "num_threads")
                           and saved.get(k) != current[k])
        if differing:
            raise CheckpointError(f"checkpoint was written with a different config ({differing}): resume with the "
                                  f"same settings, or start a new run")
        self.model.load_trainable_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.epoch = int(state["epoch"])
        self.best_epoch = int(state["best_epoch"])
        self.best_dev_accuracy = float(state["best_dev_accuracy"])
        self.best_state = state["best_state"]
        self.history = [EpochRecord(**r) for r in state["history"]]

    def save(self, path: str | Path) -> Path:
        """Write the full state to `path` atomically (a file; torch format, tensors and plain data only)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(self.state_dict(), tmp)
        tmp.replace(path)
        return path

    def load(self, path: str | Path) -> None:
        """Restore the state written by `save`; reads tensors and plain data only (no pickled objects)."""
        try:
            state = torch.load(Path(path), map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint {path} does not exist: check the path") from None
        except Exception as err:  # truncated or foreign files raise many kinds of errors
            raise CheckpointError(f"checkpoint {path} is corrupt or not an mpt-study checkpoint ({err}): "
                                  f"delete it to restart from the previous checkpoint or from scratch") from None
        if not isinstance(state, dict):
            raise CheckpointError(f"checkpoint {path} is not an mpt-study checkpoint: start the run afresh")
        self.load_state_dict(state)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device='{name}' but no CUDA device is available: use device='cpu' or 'auto'")
    return torch.device(name)


def fit(config: MPTConfig, callbacks: Sequence[EpochCallback] = (), resume_from: str | Path | None = None,
        backbone: Backbone | None = None, data: RunData | None = None) -> FitResult:
    """Train one MPT run from `config` (optionally resuming a saved state) and test it per language."""
    trainer = Trainer(config, backbone=backbone, data=data)
    if resume_from is not None:
        trainer.load(resume_from)
    return trainer.run(callbacks)
