"""Benchmark 4: evaluation with length-sorted dynamic padding (`Trainer.accuracy`) against the baseline of
padding every batch to max_length (`max_length_accuracy`, here)."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch

from benchmarks.context import RunContext
from benchmarks.timing import Rounds, alternating, load_text, ratios, spread, timed
from mpt.backbones import load_backbone
from mpt.config import LABELS, MPTConfig
from mpt.data import NLIExample
from mpt.precision import autocast
from mpt.training import Trainer

NEVER = 10**9  # epochs / eval_every that keep train_epoch from evaluating or finishing


def max_length_batch(templater, sequences: Sequence[list[int]], labels: Sequence[int], lang: str, max_length: int):
    """A batch padded to `max_length`, its attention mask covering only the real tokens."""
    batch = templater.collate(
        [list(s) + [templater.pad] * (max_length - len(s)) for s in sequences], labels, [lang] * len(sequences)
    )
    mask = torch.tensor(
        [[1] * len(s) + [0] * (max_length - len(s)) for s in sequences], dtype=batch.attention_mask.dtype
    )
    return dataclasses.replace(batch, attention_mask=mask)


@torch.inference_mode()
def max_length_accuracy(trainer: Trainer, examples: Sequence[NLIExample], lang: str, split: str = "eval") -> float:
    """`Trainer.accuracy` with every batch padded to max_length: the slow baseline of benchmark 4 (same
    length-sorted batches, same model, only the padding differs)."""
    ids, labels = trainer.encoded(examples, split, lang)
    config = trainer.config
    trainer.model.eval()
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    correct = 0
    for start in range(0, len(order), config.eval_batch_size):
        rows = order[start : start + config.eval_batch_size]
        batch = max_length_batch(
            trainer.templater, [ids[i] for i in rows], [labels[i] for i in rows], lang, config.max_length
        ).to(trainer.device)
        with autocast(config.precision, trainer.device):
            predictions = trainer.model(batch).argmax(dim=-1)
        correct += int((predictions == batch.labels).sum())
    trainer.model.train()
    return correct / len(ids)


def accuracies(trainer: Trainer, test: dict[str, list[NLIExample]], pad: bool) -> dict[str, float]:
    """Test accuracy per language, padded to max_length (`pad`) or dynamically."""
    if pad:
        return {lang: max_length_accuracy(trainer, examples, lang, split="test") for lang, examples in test.items()}
    return {lang: trainer.accuracy(examples, lang, split="test") for lang, examples in test.items()}


def timed_pass(trainer: Trainer, test, pad: bool) -> tuple[float, dict[str, float]]:
    """Wall seconds of one pass over every language, and its accuracies."""
    result: dict[str, float] = {}
    return timed(lambda: result.update(accuracies(trainer, test, pad))), result


def logged_pass(trainer: Trainer, test, pad: bool) -> tuple[dict[str, float], list[torch.Tensor]]:
    """An untimed pass (it also tokenises and caches the sets) that records every batch's logits."""
    logits: list[torch.Tensor] = []
    hook = trainer.model.register_forward_hook(lambda module, inputs, output: logits.append(output.float()))
    try:
        return accuracies(trainer, test, pad), logits
    finally:
        hook.remove()


def compare_predictions(trainer: Trainer, test) -> dict:
    """An untimed pass each way: the two paddings must give the same predictions, not only the same accuracy.
    The dynamic pass's accuracies are the reference of the timed passes."""
    reference, dynamic = logged_pass(trainer, test, pad=False)
    _, padded = logged_pass(trainer, test, pad=True)
    pairs = list(zip(dynamic, padded, strict=False))  # same_predictions checks the counts
    return {
        "reference": reference,
        "same_predictions": len(dynamic) == len(padded)
        and all(torch.equal(a.argmax(-1), b.argmax(-1)) for a, b in pairs),
        "largest_difference": max(float((a - b).abs().max()) for a, b in pairs),
        "predicted": torch.cat([a.argmax(-1) for a in dynamic]).bincount(minlength=len(LABELS)).tolist(),
    }


def computed_positions(trainer: Trainer, test) -> tuple[int, int]:
    """Positions the encoder computes over the test sets: (dynamic padding, max-length padding)."""
    config = trainer.config
    dynamic = padded = 0
    for lang, examples in test.items():
        lengths = sorted(len(s) for s in trainer.encoded(examples, "test", lang)[0])
        for start in range(0, len(lengths), config.eval_batch_size):
            chunk = lengths[start : start + config.eval_batch_size]
            dynamic += len(chunk) * (chunk[-1] + config.prompt_length)
            padded += len(chunk) * (config.max_length + config.prompt_length)
    return dynamic, padded


def trained_trainer(args, data) -> Trainer:
    """The default config on a cut e5-small, trained a little so predictions are not all one class."""
    backbone = load_backbone("e5-small", num_layers=args.eval_layers, want_mlm=False)
    # the joint template: one sequence per pair, the padding this benchmark is about (siamese: `pair_dedup`);
    # fp32, because bf16 matmuls round differently at different padded shapes and near-ties flip, which would hide
    # whether the two paddings compute the same thing
    config = MPTConfig(
        num_layers=args.eval_layers,
        epochs=NEVER,
        eval_every=NEVER,
        num_threads=args.threads,
        pair_encoding="joint",
        precision="fp32",
    )
    trainer = Trainer(config, backbone=backbone, data=data)
    for _ in range(args.eval_train_epochs):
        trainer.train_epoch()
    return trainer


def run(ctx: RunContext) -> None:
    args = ctx.args
    print(f"[eval] e5-small, {args.eval_layers} layers", flush=True)
    data = ctx.run_data()
    trainer = trained_trainer(args, data)
    languages = [lang for lang in trainer.config.languages if lang in data.test][: args.eval_languages]
    test = {lang: data.test[lang][: args.eval_rows] for lang in languages}
    check = compare_predictions(trainer, test)
    times: dict[bool, list[float]] = {False: [], True: []}
    passes: list[dict[str, float]] = []
    for index in Rounds(args.eval_rounds[0], args.eval_rounds[1], args.eval_budget):
        for pad in alternating([False, True], index):
            seconds, result = timed_pass(trainer, test, pad)
            times[pad].append(seconds)
            passes.append(result)
        print(
            f"[eval] round {index + 1}: dynamic {times[False][-1]:.2f} s, max-length {times[True][-1]:.2f} s; "
            f"load {load_text()}",
            flush=True,
        )
    check["identical"] = check["same_predictions"] and all(acc == check["reference"] for acc in passes)
    record(ctx, trainer, test, times, check)


def record(ctx: RunContext, trainer: Trainer, test, times: dict[bool, list[float]], check: dict) -> None:
    args, config = ctx.args, trainer.config
    speedup = ratios(times[True], times[False])
    dynamic_tokens, padded_tokens = computed_positions(trainer, test)
    ctx.outcomes["eval_dynamic_padding"].record(
        speedup,
        [
            f"e5-small cut to {args.eval_layers} layer(s) (padding costs every layer alike; the embedding and head "
            f"costs that padding does not change weigh most with one layer), {args.threads} thread(s), eval batch "
            f"{config.eval_batch_size}, max_length {config.max_length}, prompt {config.prompt_length}; "
            f"{sum(len(v) for v in test.values())} test examples in {len(test)} languages ({', '.join(test)}) after "
            f"{args.eval_train_epochs} training epochs (default config, fp32)",
            f"- seconds per pass over all languages: dynamic {spread(times[False])}, max-length {spread(times[True])}",
            f"- speedup max-length / dynamic per round: {spread(speedup)}",
            f"- positions computed: dynamic {dynamic_tokens}, max-length {padded_tokens} "
            f"({padded_tokens / dynamic_tokens:.2f}x)",
            f"- accuracy identical in every pass and language: {'yes' if check['identical'] else 'NO'} "
            f"({', '.join(f'{k} {v:.3f}' for k, v in check['reference'].items())})",
            f"- every prediction identical: {'yes' if check['same_predictions'] else 'NO'} (predicted classes "
            f"{'/'.join(LABELS)}: {check['predicted']}); largest logit difference "
            f"{check['largest_difference']:.2e}",
        ],
        extra_ok=check["identical"],
    )
