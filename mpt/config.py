"""One dataclass holding every knob of an MPT run, validated on construction."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

LABELS = ("entailment", "neutral", "contradiction")
MINI_LANGUAGES = ("de", "fr", "es", "ru", "zh", "ar", "hi", "sw")
XNLI_LANGUAGES = ("ar", "bg", "de", "el", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh")

HEAD_KINDS = ("auto", "mlm", "linear")
POOLINGS = ("mean", "mask", "cls")
PROMPT_INITS = ("vocab", "normal")
PROMPT_POSITIONS = ("after_bos", "prefix")
TRANSLATOR_MODES = ("shared", "per_language")
PRECISIONS = ("fp32", "bf16")


class ConfigError(ValueError):
    """A configuration value is out of range; the message names field, value and allowed range."""


def _check(ok: bool, name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"config field '{name}' = {value!r} is invalid: allowed {allowed}")


@dataclass
class MPTConfig:
    """Every knob of one MPT training run (defaults: the embedded e5-small on the mini set)."""

    # backbone and head
    backbone: str = "e5-small"
    head: str = "auto"  # auto: MLM verbalizer when the backbone has an MLM head, else linear
    pooling: str = "mean"  # linear head only
    num_layers: int | None = None  # keep the first N encoder layers (None: all)
    label_words: dict[str, list[str]] = field(default_factory=lambda: {"en": ["yes", "maybe", "no"]})
    # soft prompt
    prompt_length: int = 16
    prompt_init: str = "vocab"
    prompt_position: str = "after_bos"
    # translator
    translator_depth: int = 1
    translator_hidden: int = 256
    translator_residual: bool = False
    translator_mode: str = "shared"
    # alignment task
    alignment_weight: float = 0.5
    kl_temperature: float = 1.0
    teacher_stop_gradient: bool = True
    alignment_batch_size: int = 8
    # optimisation
    learning_rate: float = 1e-2
    weight_decay: float = 0.01
    epochs: int = 10
    batch_size: int = 8
    eval_batch_size: int = 64
    max_length: int = 128
    shots_per_class: int = 16
    seed: int = 0
    # data
    source_language: str = "en"
    target_languages: list[str] = field(default_factory=lambda: list(MINI_LANGUAGES))
    data: str = "mini"  # mini | xnli | a directory of {split}-{lang}.tsv|jsonl files
    parallel: str = "mini"  # mini | xnli | a TSV/JSONL file or directory of parallel-{lang}.* files
    xnli_repo: str = "facebook/xnli"  # hub id, or a local directory in the hub's layout
    max_eval_examples: int | None = None  # cap per split and language (None: all)
    eval_every: int = 1
    dev_all_languages: bool = False  # also evaluate target-language dev each evaluation
    # runtime
    device: str = "auto"
    precision: str = "fp32"
    num_threads: int | None = None

    def __post_init__(self) -> None:
        self.target_languages = _as_list(self.target_languages)
        self.label_words = {k: _as_list(v) for k, v in dict(self.label_words).items()}
        _check(isinstance(self.backbone, str) and bool(self.backbone), "backbone", self.backbone,
               "'e5-small', 'tiny-xlmr', a Hugging Face model id or a local directory")
        _check(self.head in HEAD_KINDS, "head", self.head, f"one of {HEAD_KINDS}")
        _check(self.pooling in POOLINGS, "pooling", self.pooling, f"one of {POOLINGS}")
        _check(self.num_layers is None or _is_int(self.num_layers) and self.num_layers >= 1,
               "num_layers", self.num_layers, "None or an integer >= 1")
        for lang, words in self.label_words.items():
            _check(len(words) == 3 and all(isinstance(w, str) and w.strip() for w in words),
                   f"label_words[{lang}]", words, "three non-empty words (entailment, neutral, contradiction)")
        _check(_is_int(self.prompt_length) and 1 <= self.prompt_length <= 512,
               "prompt_length", self.prompt_length, "an integer in [1, 512]")
        _check(self.prompt_init in PROMPT_INITS, "prompt_init", self.prompt_init, f"one of {PROMPT_INITS}")
        _check(self.prompt_position in PROMPT_POSITIONS, "prompt_position", self.prompt_position,
               f"one of {PROMPT_POSITIONS}")
        _check(_is_int(self.translator_depth) and 0 <= self.translator_depth <= 16,
               "translator_depth", self.translator_depth, "an integer in [0, 16] (0 = identity)")
        _check(_is_int(self.translator_hidden) and self.translator_hidden >= 1,
               "translator_hidden", self.translator_hidden, "an integer >= 1")
        _check(self.translator_mode in TRANSLATOR_MODES, "translator_mode", self.translator_mode,
               f"one of {TRANSLATOR_MODES}")
        _check(_is_real(self.alignment_weight) and 0.0 <= self.alignment_weight <= 1.0,
               "alignment_weight", self.alignment_weight, "a number in [0, 1]")
        _check(_is_real(self.kl_temperature) and self.kl_temperature > 0,
               "kl_temperature", self.kl_temperature, "a number > 0")
        for name in ("alignment_batch_size", "epochs", "batch_size", "eval_batch_size", "shots_per_class",
                     "eval_every"):
            value = getattr(self, name)
            _check(_is_int(value) and value >= 1, name, value, "an integer >= 1")
        _check(_is_int(self.max_length) and self.max_length > self.prompt_length + 8,
               "max_length", self.max_length, f"an integer > prompt_length + 8 = {self.prompt_length + 8}")
        _check(_is_real(self.learning_rate) and self.learning_rate > 0, "learning_rate", self.learning_rate,
               "a number > 0")
        _check(_is_real(self.weight_decay) and self.weight_decay >= 0, "weight_decay", self.weight_decay,
               "a number >= 0")
        _check(_is_int(self.seed) and self.seed >= 0, "seed", self.seed, "an integer >= 0")
        _check(isinstance(self.source_language, str) and bool(self.source_language), "source_language",
               self.source_language, "a language code such as 'en'")
        _check(len(self.target_languages) >= 1 and self.source_language not in self.target_languages
               and len(set(self.target_languages)) == len(self.target_languages),
               "target_languages", self.target_languages,
               "one or more distinct language codes, not including the source language")
        _check(self.max_eval_examples is None or _is_int(self.max_eval_examples) and self.max_eval_examples >= 3,
               "max_eval_examples", self.max_eval_examples, "None or an integer >= 3")
        _check(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
               "device", self.device, "'auto', 'cpu', 'cuda' or 'cuda:N'")
        _check(self.precision in PRECISIONS, "precision", self.precision, f"one of {PRECISIONS}")
        _check(self.num_threads is None or _is_int(self.num_threads) and self.num_threads >= 1,
               "num_threads", self.num_threads, "None or an integer >= 1")

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


def field_types() -> dict[str, str]:
    """Field name -> annotation string, for CLIs that parse values from text."""
    return {f.name: str(f.type) for f in dataclasses.fields(MPTConfig)}


def parse_value(name: str, text: str) -> Any:
    """Parse a command-line string into the type of config field `name`."""
    types = field_types()
    if name not in types:
        raise ConfigError(f"unknown config field '{name}': allowed fields are {sorted(types)}")
    kind = types[name]
    if name == "label_words":
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"label_words must be JSON such as '{{\"en\": [\"yes\", \"maybe\", \"no\"]}}': {err}")
        return value
    if text.lower() in ("none", "null") and "None" in kind:
        return None
    if kind.startswith("list"):
        return [part.strip() for part in text.split(",") if part.strip()]
    if kind.startswith("bool"):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"config field '{name}' = {text!r} is invalid: allowed true or false")
    try:
        if kind.startswith("int"):
            return int(text)
        if kind.startswith("float"):
            return float(text)
    except ValueError:
        raise ConfigError(f"config field '{name}' = {text!r} is invalid: expected {kind}") from None
    return text


def _as_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return list(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
