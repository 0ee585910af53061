"""Benchmark 6, first part (`startup_load_share`), and benchmark 5 (`ray_overhead`).

A fresh interpreter runs N default trials as plain `fit` calls (one backbone load, timed, then the trials);
the first trial with that load is the cold default trial of item 6. Then (item 5) the same N trials go
through Ray Tune in another fresh interpreter: `import ray`, `ray.init`, `Tuner.fit` of the project's
trainable one trial at a time with actors reused (as the study runs them: a checkpoint and a report every
epoch), `ray.shutdown`. Both run in `benchmarks.trials_probe`, their data loaded before the clock starts, as
the study hands loaded data to its trials.
"""

from __future__ import annotations

import json
import os

from benchmarks.context import STUDY_UNAVAILABLE, RunContext
from benchmarks.probes import run_probe
from benchmarks.study_config import DefaultTrial, default_trial, point_text, trial_points
from benchmarks.timing import alternating, load_text, med, ratios, spread


def run(ctx: RunContext) -> None:
    args = ctx.args
    trial = default_trial(smoke=args.quick, threads=args.threads)  # --quick: the smoke study's trial size
    points = trial_points(args.trials)
    runs: dict[str, list[dict]] = {"plain": [], "ray": []}
    sides = ["plain"] if ctx.study_reason else ["plain", "ray"]
    for index in range(args.trial_rounds):
        for side in alternating(sides, index):
            runs[side].append(
                run_probe(
                    "trials_probe", [side, json.dumps(trial.base), json.dumps(points), trial.objective], timeout=3600
                )
            )
            print(
                f"[trials] {side}: {runs[side][-1]['wall']:.1f} s for {len(points)} trial(s); load {load_text()}",
                flush=True,
            )
    record_load_share(ctx, trial, points[0], runs["plain"])
    if ctx.study_reason:
        ctx.outcomes["ray_overhead"].skipped = STUDY_UNAVAILABLE
        return
    record_ray_overhead(ctx, trial, points, runs)


def record_load_share(ctx: RunContext, trial: DefaultTrial, point: dict, plain: list[dict]) -> None:
    shares = [r["load"] / (r["load"] + r["trials"][0]) for r in plain]
    processes = min(trial.num_samples, max(1, (os.cpu_count() or 1) // ctx.args.threads))
    ctx.outcomes["startup_load_share"].record(
        shares,
        [
            f"the default trial ({trial.source}: {trial.shown()}; {point_text(point, ' ')}) run by `fit` in a fresh "
            f"interpreter after a timed `load_backbone` of the cached e5-small (what a trial process does first), its "
            f"data preloaded as the study hands data to trials",
            f"- backbone load {spread([r['load'] for r in plain])} s, trial {spread([r['trials'][0] for r in plain])}"
            f" s, share of load + trial {spread(shares)}",
            f"- the trainable keeps the backbone per trial process (`reuse_actors`), so over a study's "
            f"{trial.num_samples} trials run by {processes} trial process{'es' if processes > 1 else ''} the load is "
            f"about {processes * med(shares) / trial.num_samples:.1%} of trial time; the target above is the cold "
            f"first trial",
        ],
    )


def record_ray_overhead(ctx: RunContext, trial: DefaultTrial, points: list[dict], runs: dict[str, list[dict]]) -> None:
    ray, plain = runs["ray"], runs["plain"]
    overhead = ratios([r["wall"] for r in ray], [p["wall"] for p in plain])

    def part(key: str) -> str:
        return spread([r[key] for r in ray])

    single = (
        " -- N = 1 is the worst case: Ray's fixed costs (start, trial process, shutdown) fall on a single "
        "trial; `--study` runs more trials"
    )
    ctx.outcomes["ray_overhead"].record(
        overhead,
        [
            f"N = {len(points)} trial(s) ({trial.source}: {trial.shown()}), one at a time: "
            + "; ".join(point_text(p) for p in points)
            + ("" if len(points) > 1 else single),
            "- each side in a fresh interpreter, its data loaded before the clock starts; Ray side: `import ray`, "
            "`ray.init`, `Tuner.fit` of `trainable.mpt_trial.train_mpt` (reused actor, a checkpoint and a report "
            "every epoch), `ray.shutdown`; plain side: one backbone load and `fit` per trial",
            f"- wall seconds: plain {spread([p['wall'] for p in plain])}, Ray Tune {spread([r['wall'] for r in ray])} "
            f"(of which import + `ray.init` {part('init')}, `Tuner.fit` {part('fit')}, `ray.shutdown` "
            f"{part('shutdown')})",
            f"- Ray / plain per round: {spread(overhead)}",
        ],
    )
