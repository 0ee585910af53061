"""One dataclass holding every knob of an MPT run, validated on construction."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

LABELS = ("entailment", "neutral", "contradiction")
# the target languages of the embedded mini set: those with a parallel-{lang}.tsv file in mpt/data/mini/
MINI_LANGUAGES = tuple(
    sorted(p.stem.split("-", 1)[1] for p in (Path(__file__).parent / "data" / "mini").glob("parallel-*.tsv"))
)
XNLI_LANGUAGES = ("ar", "bg", "de", "el", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh")

HEAD_KINDS = ("auto", "mlm", "linear")
# defined here, not in mpt.precision (which imports torch), so that the config and the study's CLI load without torch
PRECISIONS = ("fp32", "bf16", "auto")
PAIR_ENCODINGS = ("auto", "joint", "siamese")
POOLINGS = ("mean", "mask", "cls")
PROMPT_INITS = ("vocab", "normal")
PROMPT_POSITIONS = ("after_bos", "prefix")
TRANSLATOR_MODES = ("shared", "per_language")


class ConfigError(ValueError):
    """A configuration value is out of range; the message names field, value and allowed range."""


def _check(ok: bool, name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"config field '{name}' = {value!r} is invalid: allowed {allowed}")


def _knob(default: Any, help: str) -> Any:
    """A config field with its help text (field metadata, which the command line shows); a callable default
    is a factory (for lists and dicts)."""
    if callable(default):
        return field(default_factory=default, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class MPTConfig:
    """Every knob of one MPT training run (defaults: the embedded e5-small on the mini set)."""

    # backbone and head
    backbone: str = _knob(
        "e5-small", "'e5-small' (embedded), 'tiny-xlmr', a Hugging Face model id or a local directory"
    )
    head: str = _knob(
        "auto", "answer head: auto (MLM verbalizer when the backbone has an MLM head, else linear), mlm, linear"
    )
    pooling: str = _knob("mean", "the linear head's pooling: mean, mask (the <mask> token; joint only), cls (<s>)")
    pair_encoding: str = _knob(
        "auto",
        "joint (premise and hypothesis in one cloze sequence; what an MLM verbalizer "
        "needs), siamese (each sentence encoded alone with the language's prompt, "
        "pooled, a linear head on [u, v, |u-v|, u*v]), auto (siamese for a backbone "
        "without an MLM head, such as e5-small; joint otherwise)",
    )
    num_layers: int | None = _knob(None, "keep the first N encoder layers (none: all)")
    label_words: dict[str, list[str]] = _knob(
        lambda: {"en": ["yes", "maybe", "no"]}, 'verbalizer words per language, JSON: {"en": ["yes", "maybe", "no"]}'
    )
    # soft prompt
    prompt_length: int = _knob(
        16, "soft prompt length L (vectors; 0 with a linear head: the frozen probe, only the head trains)"
    )
    prompt_init: str = _knob("vocab", "prompt initialisation: vocab (random token embeddings) or normal")
    prompt_position: str = _knob("after_bos", "after_bos (after <s>, as the paper) or prefix (before it, as HF PEFT)")
    # translator
    translator_depth: int = _knob(1, "perceptron blocks W_down ReLU(W_up p + b_up) + b_down (0: p_T = p_S, vanilla)")
    translator_hidden: int = _knob(256, "inner size of each translator block")
    translator_residual: bool = _knob(False, "add each block's input to its output")
    translator_mode: str = _knob("shared", "shared (one translator for all targets) or per_language")
    # alignment task
    alignment_weight: float = _knob(0.5, "w in (1 - w) CE + w KL (0: no alignment task)")
    kl_temperature: float = _knob(1.0, "temperature T of the alignment KL (scaled by T^2)")
    teacher_stop_gradient: bool = _knob(True, "no gradient through the English (teacher) side of the KL")
    alignment_batch_size: int = _knob(8, "parallel pairs per training step")
    ce_only_epochs: int = _knob(
        0,
        "epochs of CE alone before the alignment task starts (0: joint training "
        "from the start; > 0: the two-stage reading of the paper)",
    )
    # optimisation
    learning_rate: float = _knob(1e-2, "AdamW learning rate")
    weight_decay: float = _knob(0.01, "AdamW weight decay")
    epochs: int = _knob(10, "passes over the few-shot set")
    batch_size: int = _knob(16, "few-shot examples per training step")
    eval_batch_size: int = _knob(64, "examples per evaluation batch")
    max_length: int = _knob(128, "token budget of a templated pair, without the prompt")
    shots_per_class: int = _knob(64, "K: English training examples per label")
    seed: int = _knob(0, "few-shot sample, initialisation and batch order")
    # data
    source_language: str = _knob("en", "the language of the few-shot training set (uses p_S)")
    target_languages: list[str] = _knob(lambda: list(MINI_LANGUAGES), "comma-separated target languages (use p_T)")
    data: str = _knob("mini", "mini (embedded set) | xnli (hub) | a directory of {split}-{lang}.tsv|jsonl files")
    parallel: str = _knob(
        "mini", "alignment corpus: mini | xnli | a TSV/JSONL file or directory of parallel-{lang}.* files"
    )
    xnli_repo: str = _knob("facebook/xnli", "XNLI hub id, or a local directory in the hub's layout")
    max_eval_examples: int | None = _knob(None, "cap on dev and test rows per language (none: all)")
    eval_every: int = _knob(1, "evaluate dev every N epochs (and after the last)")
    dev_all_languages: bool = _knob(False, "also evaluate target-language dev (the dev_avg objective needs it)")
    target_dev_every_epoch: bool = _knob(
        False,
        "evaluate target-language dev at every evaluation epoch, for its "
        "curves (default: only at epochs English dev selects, the ones "
        "anything uses)",
    )
    # runtime
    device: str = _knob("auto", "auto, cpu, cuda or cuda:N")
    precision: str = _knob(
        "auto",
        "fp32; bf16 (autocast: bf16 matmuls, fp32 weights and losses); auto (bf16 where "
        "the device computes it natively, else fp32)",
    )
    num_threads: int | None = _knob(None, "torch CPU threads (none: torch's default)")

    def __post_init__(self) -> None:
        self.target_languages = _as_list(self.target_languages)
        self.label_words = {k: _as_list(v) for k, v in dict(self.label_words).items()}
        _check(
            isinstance(self.backbone, str) and bool(self.backbone),
            "backbone",
            self.backbone,
            "'e5-small', 'tiny-xlmr', a Hugging Face model id or a local directory",
        )
        _check(self.head in HEAD_KINDS, "head", self.head, f"one of {HEAD_KINDS}")
        _check(self.pooling in POOLINGS, "pooling", self.pooling, f"one of {POOLINGS}")
        _check(self.pair_encoding in PAIR_ENCODINGS, "pair_encoding", self.pair_encoding, f"one of {PAIR_ENCODINGS}")
        _check(
            not (self.pair_encoding == "siamese" and self.head == "mlm"),
            "pair_encoding",
            self.pair_encoding,
            "'joint' or 'auto' with head='mlm' (the MLM verbalizer reads one cloze sequence): set "
            "pair_encoding=joint, or head=linear for siamese",
        )
        _check(
            not (self.pair_encoding == "siamese" and self.pooling == "mask"),
            "pair_encoding",
            self.pair_encoding,
            "'joint' or 'auto' with pooling='mask' (only the joint template has a <mask> token): set "
            "pooling=mean or cls for siamese, or pair_encoding=joint",
        )
        _check(
            self.num_layers is None or _is_int(self.num_layers) and self.num_layers >= 1,
            "num_layers",
            self.num_layers,
            "None or an integer >= 1",
        )
        for lang, words in self.label_words.items():
            _check(
                len(words) == 3 and all(isinstance(w, str) and w.strip() for w in words),
                f"label_words[{lang}]",
                words,
                "three non-empty words (entailment, neutral, contradiction)",
            )
        _check(
            _is_int(self.prompt_length) and 0 <= self.prompt_length <= 512,
            "prompt_length",
            self.prompt_length,
            "an integer in [0, 512]",
        )
        _check(
            not (self.prompt_length == 0 and self.head == "mlm"),
            "prompt_length",
            self.prompt_length,
            "an integer in [1, 512] with head='mlm' (a prompt is all the MLM verbalizer trains): give a length "
            ">= 1, or head=linear for the frozen probe",
        )
        _check(self.prompt_init in PROMPT_INITS, "prompt_init", self.prompt_init, f"one of {PROMPT_INITS}")
        _check(
            self.prompt_position in PROMPT_POSITIONS,
            "prompt_position",
            self.prompt_position,
            f"one of {PROMPT_POSITIONS}",
        )
        _check(
            _is_int(self.translator_depth) and 0 <= self.translator_depth <= 16,
            "translator_depth",
            self.translator_depth,
            "an integer in [0, 16] (0 = identity)",
        )
        _check(
            _is_int(self.translator_hidden) and self.translator_hidden >= 1,
            "translator_hidden",
            self.translator_hidden,
            "an integer >= 1",
        )
        _check(
            self.translator_mode in TRANSLATOR_MODES,
            "translator_mode",
            self.translator_mode,
            f"one of {TRANSLATOR_MODES}",
        )
        _check(
            _is_real(self.alignment_weight) and 0.0 <= self.alignment_weight <= 1.0,
            "alignment_weight",
            self.alignment_weight,
            "a number in [0, 1]",
        )
        _check(
            _is_real(self.kl_temperature) and self.kl_temperature > 0,
            "kl_temperature",
            self.kl_temperature,
            "a number > 0",
        )
        for name in (
            "alignment_batch_size",
            "epochs",
            "batch_size",
            "eval_batch_size",
            "shots_per_class",
            "eval_every",
        ):
            value = getattr(self, name)
            _check(_is_int(value) and value >= 1, name, value, "an integer >= 1")
        _check(
            _is_int(self.ce_only_epochs) and self.ce_only_epochs >= 0,
            "ce_only_epochs",
            self.ce_only_epochs,
            "an integer >= 0",
        )
        # the alignment task starts after the CE-only epochs: at or past the last epoch it would silently never run
        _check(
            self.alignment_weight == 0 or self.ce_only_epochs < self.epochs,
            "ce_only_epochs",
            self.ce_only_epochs,
            f"an integer < epochs = {self.epochs} while alignment_weight > 0 (the alignment "
            f"task would never run): lower ce_only_epochs, raise epochs, or set "
            f"alignment_weight=0",
        )
        _check(
            _is_int(self.max_length) and self.max_length > self.prompt_length + 8,
            "max_length",
            self.max_length,
            f"an integer > prompt_length + 8 = {self.prompt_length + 8}",
        )
        _check(
            _is_real(self.learning_rate) and self.learning_rate > 0, "learning_rate", self.learning_rate, "a number > 0"
        )
        _check(
            _is_real(self.weight_decay) and self.weight_decay >= 0, "weight_decay", self.weight_decay, "a number >= 0"
        )
        _check(_is_int(self.seed) and self.seed >= 0, "seed", self.seed, "an integer >= 0")
        _check(
            isinstance(self.source_language, str) and bool(self.source_language),
            "source_language",
            self.source_language,
            "a language code such as 'en'",
        )
        _check(
            len(self.target_languages) >= 1
            and self.source_language not in self.target_languages
            and len(set(self.target_languages)) == len(self.target_languages),
            "target_languages",
            self.target_languages,
            "one or more distinct language codes, not including the source language",
        )
        _check(
            self.max_eval_examples is None or _is_int(self.max_eval_examples) and self.max_eval_examples >= 3,
            "max_eval_examples",
            self.max_eval_examples,
            "None or an integer >= 3",
        )
        _check(
            self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
            "device",
            self.device,
            "'auto', 'cpu', 'cuda' or 'cuda:N'",
        )
        _check(self.precision in PRECISIONS, "precision", self.precision, f"one of {PRECISIONS}")
        _check(
            self.num_threads is None or _is_int(self.num_threads) and self.num_threads >= 1,
            "num_threads",
            self.num_threads,
            "None or an integer >= 1",
        )

    @property
    def wants_mlm_head(self) -> bool:
        """Whether the backbone is loaded with its MLM head: `head` mlm, or auto (which answers through the MLM
        verbalizer where the backbone has such a head); only `linear` never uses it."""
        return self.head != "linear"

    @property
    def languages(self) -> list[str]:
        """The source language followed by the target languages."""
        return [self.source_language, *self.target_languages]

    def words_for(self, lang: str) -> list[str]:
        """Verbalizer label words for a language (the source language's words when none are given)."""
        return self.label_words.get(lang) or self.label_words.get(self.source_language) or ["yes", "maybe", "no"]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def replace(self, **overrides: Any) -> "MPTConfig":
        return MPTConfig.from_dict({**self.to_dict(), **overrides})

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "MPTConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown config field(s) {unknown}: allowed fields are {sorted(known)}")
        return cls(**dict(values))


def config_from_saved(values: Mapping[str, Any]) -> MPTConfig:
    """The config a run recorded (a checkpoint, a trained prompt): one written before `pair_encoding` existed
    ran the joint template, whatever `auto` resolves to now."""
    return MPTConfig.from_dict({"pair_encoding": "joint", **values})


def _as_list(value: Any) -> list[str]:
    """A list from 'de,fr', ['de', 'fr'] or ['de,fr'] (what a comma-separated flag gives)."""
    items = [value] if isinstance(value, str) else list(value)
    return [part.strip() for item in items for part in str(item).split(",") if part.strip()]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
