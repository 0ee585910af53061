"""Benchmark 9: bf16 mixed precision against fp32 on this CPU, in a default trial's epoch.

The study's default trial (its base config at the paper-like default point, data and backbone loaded first),
one trainer per precision on the same few-shot set; each round runs one epoch of training steps (the same batch
plan for both) and one English dev evaluation in each precision, alternating which goes first. The ratio is
bf16's wall time over fp32's in the same round. On a CPU without native bf16 `auto` keeps fp32 and the ratio
would say why (emulated bf16 is slower).
"""

from __future__ import annotations

from benchmarks.context import RunContext
from benchmarks.study_config import loaded_default_trial, point_text
from benchmarks.timing import Rounds, alternating, load_text, ratios, spread, timed
from mpt.precision import native_bf16
from mpt.training import Trainer

PRECISIONS = ("fp32", "bf16")


def one_epoch(trainer: Trainer, plans) -> None:
    trainer.model.train()
    for plan in plans:
        trainer.step(plan)


def run(ctx: RunContext) -> None:
    loaded = loaded_default_trial(ctx.args.quick, ctx.args.threads)
    trial, point, config, data = loaded.trial, loaded.point, loaded.config, loaded.data
    trainers = {p: Trainer(config.replace(precision=p), backbone=loaded.backbone, data=data) for p in PRECISIONS}
    dev = data.dev[config.source_language]
    train: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    evaluation: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    accuracy: dict[str, float] = {}
    most = 1 if ctx.args.quick else 4
    for index in Rounds(least=1 if ctx.args.quick else 3, most=most, budget_s=240):
        plans = trainers["fp32"].batch_plan()  # one plan for both precisions
        for precision in alternating(list(PRECISIONS), index):
            trainer = trainers[precision]
            train[precision].append(timed(lambda: one_epoch(trainer, plans)))
            evaluation[precision].append(
                timed(lambda: accuracy.update({precision: trainer.accuracy(dev, "en", "dev")}))
            )
        print(
            f"[precision] round {index + 1}: fp32 {train['fp32'][-1]:.1f} + {evaluation['fp32'][-1]:.1f} s, "
            f"bf16 {train['bf16'][-1]:.1f} + {evaluation['bf16'][-1]:.1f} s; load {load_text()}",
            flush=True,
        )
    walls = {p: [a + b for a, b in zip(train[p], evaluation[p])] for p in PRECISIONS}
    ctx.outcomes["bf16_vs_fp32"].record(
        ratios(walls["bf16"], walls["fp32"]),
        [
            f"the default trial ({trial.source}: {trial.shown()}; {point_text(point, ' ')}), one epoch of "
            f"{len(plans)} training steps and English dev ({len(dev)} rows) per precision and round, "
            f"{len(walls['fp32'])} round(s); this CPU computes bf16 natively: "
            f"{'yes' if native_bf16(trainers['fp32'].device) else 'no'}",
            f"- training epoch, s: fp32 {spread(train['fp32'])}, bf16 {spread(train['bf16'])}; bf16 / fp32 "
            f"{spread(ratios(train['bf16'], train['fp32']))}",
            f"- English dev, s: fp32 {spread(evaluation['fp32'])}, bf16 {spread(evaluation['bf16'])}; bf16 / fp32 "
            f"{spread(ratios(evaluation['bf16'], evaluation['fp32']))}",
            f"- English dev accuracy after the last round (the two runs train alike, in their own precision): "
            f"fp32 {accuracy['fp32']:.3f}, bf16 {accuracy['bf16']:.3f}",
        ],
    )
