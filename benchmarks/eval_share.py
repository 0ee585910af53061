"""Benchmark 8: the share of a default search trial spent in evaluation, before and after issue 12.

Before: every evaluation epoch scored every dev language, and the trial ended by testing every language (what
each search trial did). After: English dev every epoch, the target languages' dev only at the epochs English dev
selects, and no test (the search ranks on dev; test belongs to the confirmation runs). The same trial (the study's
default base config at the paper-like default point, its data loaded first), in this process, alternating the
two; evaluation time is the time inside `Trainer.correctness`, which every dev and test score goes through.
"""

from __future__ import annotations

import time

from benchmarks.context import RunContext
from benchmarks.study_config import loaded_default_trial, point_text
from benchmarks.timing import alternating, load_text, spread
from mpt.config import MPTConfig
from mpt.training import Trainer


def timed_trial(config: MPTConfig, backbone, data, test: bool) -> tuple[float, float]:
    """(seconds evaluating, seconds in all) of one trial run to its end, testing at the end when `test`."""
    trainer = Trainer(config, backbone=backbone, data=data)
    inner, spent = trainer.correctness, [0.0]

    def correctness(*args, **kwargs):  # the trainer's own method, timed
        started = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - started

    trainer.correctness = correctness
    started = time.perf_counter()
    while not trainer.done:
        trainer.train_epoch()
    if test:
        trainer.test()
    return spent[0], time.perf_counter() - started


def run(ctx: RunContext) -> None:
    loaded = loaded_default_trial(ctx.args.quick, ctx.args.threads)
    trial, point, config, backbone, data = loaded.trial, loaded.point, loaded.config, loaded.backbone, loaded.data
    sides = {
        "before": dict(config=config.replace(target_dev_every_epoch=True), test=True),
        "after": dict(config=config, test=False),
    }
    shares: dict[str, list[float]] = {side: [] for side in sides}
    walls: dict[str, list[float]] = {side: [] for side in sides}
    for index in range(max(1, ctx.args.trial_rounds)):
        for side in alternating(list(sides), index):
            evaluating, total = timed_trial(backbone=backbone, data=data, **sides[side])
            shares[side].append(evaluating / total)
            walls[side].append(total)
            print(f"[eval_share] {side}: evaluation {evaluating:.1f} of {total:.1f} s; load {load_text()}", flush=True)
    ctx.outcomes["eval_share"].record(
        shares["after"],
        [
            f"the default search trial ({trial.source}: {trial.shown()}; {point_text(point, ' ')}), its data and "
            f"backbone loaded first, {len(shares['after'])} round(s) alternating the two protocols",
            f"- before (every dev language every epoch, then test): evaluation share {spread(shares['before'])}, trial "
            f"{spread(walls['before'])} s",
            f"- after (target dev only at the epochs English dev selects, no test): evaluation share "
            f"{spread(shares['after'])}, trial {spread(walls['after'])} s",
        ],
    )
