"""Run trials of a base config in this (fresh) interpreter, timed: as plain `fit` calls after one backbone
load, or through Ray Tune with the project's trainable, one at a time. The data is loaded before the clock
starts, as the study hands loaded data to its trials.

    python -m benchmarks.trials_probe plain|ray BASE_JSON POINTS_JSON OBJECTIVE   # prints RESULT {"wall": ..., ...}
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time

from benchmarks.probes import emit
from mpt.backbones import load_backbone
from mpt.config import MPTConfig
from mpt.training import fit, load_run_data
from search_spaces import PAPER_DEFAULT, REFERENCE_POINTS


def plain_trials(base: dict, points: list[dict], data, result: dict) -> None:
    """One timed backbone load, then each point as a `fit` call; seconds per trial."""
    config = MPTConfig.from_dict(base)
    started = time.perf_counter()
    backbone = load_backbone(config.backbone, config.num_layers, want_mlm=config.wants_mlm_head)
    result["load"] = time.perf_counter() - started
    result["trials"] = []
    for point in points:
        begun = time.perf_counter()
        fit(MPTConfig.from_dict({**base, **point}), backbone=backbone, data=data)
        result["trials"].append(time.perf_counter() - begun)


def tune_trials(
    base: dict, points: list[dict], objective: str, data, storage: str, started: float, result: dict
) -> None:
    """`Tuner.fit` of `trainable.mpt_trial.train_mpt` over the points, one at a time, actors reused."""
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from trainable.mpt_trial import train_mpt

    trainable = tune.with_resources(
        tune.with_parameters(train_mpt, base_config=MPTConfig.from_dict(base), objective=objective, data=data),
        {"cpu": os.cpu_count()},
    )
    # BasicVariantGenerator needs every preset key in the param space
    space = {key: tune.choice(sorted({p[key] for p in points})) for key in points[0]}
    grid = tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            search_alg=BasicVariantGenerator(points_to_evaluate=points),
            num_samples=len(points),
            max_concurrent_trials=1,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name="bench", storage_path=storage, verbose=0, checkpoint_config=tune.CheckpointConfig(num_to_keep=1)
        ),
    ).fit()
    result["fit"] = time.perf_counter() - started - result["init"]
    if grid.num_errors or len(grid) != len(points):
        raise SystemExit(f"Ray trials failed: {[str(r.error)[:300] for r in grid if r.error]}")


def ray_trials(base: dict, points: list[dict], objective: str, data, started: float, result: dict) -> None:
    """`ray.init`, the trials through Tune, `ray.shutdown`, each timed ('init' includes `import ray`)."""
    import ray

    storage = tempfile.mkdtemp(prefix="mpt-bench-ray-")
    try:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        result["init"] = time.perf_counter() - started
        tune_trials(base, points, objective, data, storage, started, result)
    finally:
        stopping = time.perf_counter()
        ray.shutdown()
        result["shutdown"] = time.perf_counter() - stopping
        shutil.rmtree(storage, ignore_errors=True)


def main(argv: list[str]) -> dict:
    side, base, points, objective = argv[0], json.loads(argv[1]), json.loads(argv[2]), argv[3]
    # as the study does: the data loaded once (parallel pairs included), before the clock starts
    config = MPTConfig.from_dict(base)
    data = load_run_data(config.replace(alignment_weight=REFERENCE_POINTS[PAPER_DEFAULT]["alignment_weight"]))
    result: dict = {}
    started = time.perf_counter()
    if side == "plain":
        plain_trials(base, points, data, result)
    else:
        ray_trials(base, points, objective, data, started, result)
    result["wall"] = time.perf_counter() - started
    return result


if __name__ == "__main__":
    emit(main(sys.argv[1:]))
