"""Benchmark 22: siamese encoding with each distinct sentence encoded once, against encoding both sentences of
every pair, in evaluation and in an alignment step.

Evaluation: the test sets of the default languages, scored as training and a saved prompt score them
(`mpt.scoring.answer_logits`: the split's distinct sentences once, length-sorted, then every pair), against every
sentence of every pair encoded (a premise once per hypothesis) in the same length-sorted batches of texts (the
ratio: what the dedup saves), and in batches of pairs as training collates them (for comparison). Alignment step: the KL task's forward and backward on one step's parallel pairs, as the run's plan
draws them (a run of consecutive pairs, its shared sentences encoded once), against the same number of pairs drawn
one by one (as the joint plan draws them) with every sentence encoded. One trainer, the sides alternating, the
ratio per round.
"""

from __future__ import annotations

import contextlib

import torch

from benchmarks.context import RunContext
from benchmarks.timing import Rounds, alternating, load_text, ratios, spread, timed
from mpt.backbones import load_backbone
from mpt.config import MPTConfig
from mpt.losses import alignment_loss
from mpt.precision import autocast
from mpt.scoring import answer_logits
from mpt.training import Trainer

NEVER = 10**9


@torch.inference_mode()
def every_sentence_logits(trainer: Trainer, items, lang: str, precision: str, by_pair: bool) -> torch.Tensor:
    """The baselines: every sentence of every pair encoded (a premise once per hypothesis), in length-sorted batches
    of `eval_batch_size` texts (`by_pair=False`: what the dedup alone saves) or of pairs, both sentences of each
    (`by_pair=True`: a pair batch as training collates it)."""
    config, model, templater = trainer.config, trainer.model, trainer.templater
    model.eval()
    texts = [text for pair in items for text in pair]
    size = config.eval_batch_size * (2 if by_pair else 1)
    if by_pair:
        order = [
            2 * i + side
            for i in sorted(range(len(items)), key=lambda i: len(items[i][0]) + len(items[i][1]))
            for side in (0, 1)
        ]
    else:
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    features = [None] * len(texts)
    for start in range(0, len(order), size):
        rows = order[start : start + size]
        batch = templater.collate_texts([texts[i] for i in rows], [lang] * len(rows)).to(trainer.device)
        with autocast(precision, trainer.device):
            for row, value in zip(rows, model.text_features(batch)):
                features[row] = value
    pooled = torch.stack(features)
    with autocast(precision, trainer.device):
        logits = model.linear_head.classify_pair(pooled[0::2], pooled[1::2]).float().cpu()
    model.train()
    return logits


SIDES = ("once", "every", "every_by_pair")


def evaluation_pass(trainer: Trainer, test: dict, side: str, precision: str | None = None) -> dict[str, torch.Tensor]:
    precision = precision or trainer.config.precision
    out = {}
    for lang, examples in test.items():
        items, _ = trainer.encoded(examples, "test", lang)
        out[lang] = (
            answer_logits(
                trainer.model, trainer.templater, items, lang, trainer.config.eval_batch_size, precision, trainer.device
            )
            if side == "once"
            else every_sentence_logits(trainer, items, lang, precision, by_pair=side == "every_by_pair")
        )
    return out


def alignment_step(trainer: Trainer, rows: list[int], dedup: bool) -> int:
    """Forward and backward of the alignment KL on parallel pairs `rows`; returns the texts it encoded."""
    config, templater, model = trainer.config, trainer.templater, trainer.model
    source = templater.collate([trainer.pair_source_ids[i] for i in rows], None, ["en"] * len(rows), dedup=dedup)
    target = templater.collate(
        [trainer.pair_target_ids[i] for i in rows], None, [trainer.pair_langs[i] for i in rows], dedup=dedup
    )
    model.train()
    with autocast(config.precision, trainer.device, training=True):
        with torch.no_grad() if config.teacher_stop_gradient else contextlib.nullcontext():
            teacher = model(source.to(trainer.device))
        loss = alignment_loss(teacher, model(target.to(trainer.device)), config.kl_temperature)
    loss.backward()
    trainer.optimizer.zero_grad(set_to_none=True)
    return len(source.texts.keys) + len(target.texts.keys)


def build(args, data) -> Trainer:
    """The study's 4-layer siamese model at the paper-like point (depth 1, w 0.5), untrained (speed is what
    is measured, and the prompt's values do not change it)."""
    backbone = load_backbone("e5-small", num_layers=args.dedup_layers, want_mlm=False)
    config = MPTConfig(
        num_layers=args.dedup_layers,
        pair_encoding="siamese",
        translator_depth=1,
        alignment_weight=0.5,
        epochs=NEVER,
        eval_every=NEVER,
        num_threads=args.threads,
    )
    return Trainer(config, backbone=backbone, data=data)


def run(ctx: RunContext) -> None:
    args = ctx.args
    print(f"[pair_dedup] e5-small, {args.dedup_layers} layers, siamese", flush=True)
    trainer = build(args, ctx.run_data())
    languages = [lang for lang in trainer.config.languages if lang in trainer.data.test][: args.eval_languages]
    test = {lang: trainer.data.test[lang] for lang in languages}
    # untimed, in fp32 (bf16 rounds rows differently in other batch shapes, flipping near-ties): the same answers
    reference = {side: evaluation_pass(trainer, test, side, "fp32") for side in SIDES}
    largest = max(
        float((reference["once"][lang] - reference[side][lang]).abs().max()) for lang in test for side in SIDES[1:]
    )
    same = all(
        torch.equal(reference["once"][lang].argmax(-1), reference[side][lang].argmax(-1))
        for lang in test
        for side in SIDES[1:]
    )
    evaluation: dict[str, list[float]] = {side: [] for side in SIDES}
    for index in Rounds(args.eval_rounds[0], args.eval_rounds[1], args.eval_budget):
        for side in alternating(list(SIDES), index):
            evaluation[side].append(timed(lambda: evaluation_pass(trainer, test, side)))
        print(
            f"[pair_dedup] evaluation round {index + 1}: "
            + ", ".join(f"{side} {evaluation[side][-1]:.2f} s" for side in SIDES)
            + f"; load {load_text()}",
            flush=True,
        )
    steps: dict[bool, list[float]] = {True: [], False: []}
    texts: dict[bool, list[int]] = {True: [], False: []}
    count, size = len(trainer.pair_langs), trainer.config.alignment_batch_size
    draws = torch.Generator().manual_seed(0)
    plans = trainer.batch_plan(torch.Generator().manual_seed(1))  # the run's first epoch, looked at
    for index in Rounds(args.step_rounds[0], args.step_rounds[1], args.step_budget):
        windowed = plans[index % len(plans)].pair_rows
        one_by_one = torch.randperm(count, generator=draws)[:size].tolist()
        for dedup in alternating([True, False], index):
            rows = windowed if dedup else one_by_one
            steps[dedup].append(timed(lambda: texts[dedup].append(alignment_step(trainer, rows, dedup))))
    record(ctx, trainer, test, evaluation, steps, texts, same, largest)


def record(ctx, trainer, test, evaluation, steps, texts, same: bool, largest: float) -> None:
    config = trainer.config
    pairs = sum(len(v) for v in test.values())
    distinct = sum(
        len({t for pair in trainer.encoded(examples, "test", lang)[0] for t in pair}) for lang, examples in test.items()
    )
    head = (
        f"e5-small cut to {config.num_layers} layers, siamese, {ctx.args.threads} thread(s), precision "
        f"{config.precision}, prompt {config.prompt_length}, eval batch {config.eval_batch_size}, alignment "
        f"batch {config.alignment_batch_size}"
    )
    once = evaluation["once"]
    ctx.outcomes["pair_dedup_eval"].record(
        ratios(evaluation["every"], once),
        [
            f"{head}; {pairs} test pairs in {len(test)} languages ({', '.join(test)})",
            f"- sentences encoded per pass: every pair's two {2 * pairs}, each distinct one once {distinct}",
            f"- seconds per pass: each distinct sentence once {spread(once)}; every sentence of every pair, the texts "
            f"length-sorted in batches of {config.eval_batch_size} {spread(evaluation['every'])}, or in batches of "
            f"{config.eval_batch_size} pairs {spread(evaluation['every_by_pair'])}",
            f"- speedup per round, every / once (the benchmark: what the dedup saves): "
            f"{spread(ratios(evaluation['every'], once))}; pair batches / once: "
            f"{spread(ratios(evaluation['every_by_pair'], once))}",
            f"- every prediction identical (in fp32, untimed): {'yes' if same else 'NO'}; largest logit difference "
            f"{largest:.2e}",
        ],
        extra_ok=same,
    )
    ctx.outcomes["pair_dedup_alignment"].record(
        ratios(steps[False], steps[True]),
        [
            f"{head}; translator depth {config.translator_depth}, teacher under no_grad: "
            f"{'yes' if config.teacher_stop_gradient else 'no'}; {len(steps[True])} rounds",
            f"- texts encoded per step (source and target side): a run of consecutive pairs, each distinct sentence "
            f"once {spread([float(t) for t in texts[True]])}; pairs drawn one by one, every sentence "
            f"{spread([float(t) for t in texts[False]])}",
            f"- seconds per alignment forward and backward: once {spread(steps[True])}, every {spread(steps[False])}",
            f"- speedup per round (every / once): {spread(ratios(steps[False], steps[True]))}",
        ],
    )
