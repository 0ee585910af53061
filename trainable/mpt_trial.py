"""The Ray Tune function trainable: one MPT training run per trial, checkpointed every epoch.

Ray 2.60 API (`ray.tune.report`, `ray.tune.get_checkpoint`, `ray.tune.Checkpoint`). The trial's
config holds the searched `MPTConfig` overrides plus the study's bookkeeping keys (`META_KEYS`); the
base config, the objective and the loaded data arrive through `tune.with_parameters`.

Every epoch reports a `trainable.metrics.TrialReport` (the names are that module's); with `evaluate_test` the
last epoch's report adds the test accuracies with the best-dev state, and each row's correctness. The checkpoint
is the full `Trainer` state, so a trial interrupted or moved to another node continues from its last epoch.
"""

from __future__ import annotations

import functools
import logging
import tempfile
from pathlib import Path

import torch
from ray import tune

from mpt.backbones import Backbone, load_backbone
from mpt.config import MPTConfig
from mpt.training import EpochRecord, FitResult, RunData, Trainer
from trainable.metrics import Runtime, TestResult, TrialReport, get_objective
from trainable.placement import place_trial, ray_node_id
from trainable.spec import STATE_FILE, trial_config

logger = logging.getLogger(__name__)


def objective_value(trainer: Trainer, objective: str) -> float:
    """The study objective for the epoch selected so far (0 before the first evaluation)."""
    reads_target_dev = get_objective(objective).reads_target_dev
    selected = trainer.selected_record
    if selected is None:
        return 0.0
    return (selected.dev_average or 0.0) if reads_target_dev else trainer.best_dev_accuracy


def epoch_report(record: EpochRecord, trainer: Trainer, objective: str) -> TrialReport:
    selected = trainer.selected_record
    return TrialReport(
        epoch=record.epoch,
        planned_epochs=trainer.config.epochs,
        loss=record.loss,
        ce_loss=record.ce_loss,
        kl_loss=record.kl_loss,
        dev_accuracy=dict(record.dev_accuracy),
        dev_rows={lang: len(examples) for lang, examples in trainer.data.dev.items()},
        # an average of every dev language, or none
        dev_average=record.dev_average if record.dev_accuracy.keys() == trainer.data.dev.keys() else None,
        best_epoch=record.best_epoch,
        objective=objective_value(trainer, objective),
        # the dev accuracies the objective and the trial table use
        selected_dev_accuracy=dict(selected.dev_accuracy) if selected is not None else {},
        epoch_seconds=record.seconds,
        # a trial moved off a lost node reports its new one (the MLflow tag keeps the latest)
        runtime=Runtime(str(trainer.device), trainer.config.precision, torch.get_num_threads(), ray_node_id()),
    )


def evaluated_test(result: FitResult) -> TestResult:
    """Test accuracy per language and its averages, and each test row's correctness (a string of 0/1 per
    language, in file order) for the study's paired intervals."""
    return TestResult(
        dict(result.accuracy),
        result.average,
        result.average_target,
        {lang: "".join(map(str, rows)) for lang, rows in result.correct.items()},
    )


@functools.lru_cache(maxsize=1)
def _cached_backbone(name: str, num_layers: int | None, want_mlm: bool) -> Backbone:
    return load_backbone(name, num_layers, want_mlm=want_mlm)


def shared_backbone(config: MPTConfig) -> Backbone:
    """The frozen backbone, loaded once per trial process: Tune reuses a process for the next trial
    (`reuse_actors`), and no trial changes the backbone's weights, so trials can share it."""
    return _cached_backbone(config.backbone, config.num_layers, config.wants_mlm_head)


def train_mpt(
    params: dict, *, base_config: MPTConfig, objective: str, data: RunData | None = None, evaluate_test: bool = False
) -> None:
    """Tune function trainable: train one MPT run, reporting and checkpointing every epoch; with
    `evaluate_test`, the last epoch's report adds the test metrics (the confirmation runs: search trials
    are ranked on dev and never look at test)."""
    config = trial_config(base_config, params)
    config = place_trial(config, params.get("trial_number"))  # device, threads: what Ray assigned
    trainer = Trainer(config, backbone=shared_backbone(config), data=data)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state_file = Path(directory) / STATE_FILE
            if state_file.exists():
                trainer.load(state_file)
            else:  # deleted because it was damaged (what `study/run.py --resume` advises): start over
                logger.warning(
                    "checkpoint %s has no %s: training this trial from its first epoch", directory, STATE_FILE
                )
    if trainer.done:  # interrupted after its last epoch was checkpointed but before Tune saw it finish
        report = epoch_report(trainer.history[-1], trainer, objective)
        report.test = evaluated_test(trainer.test()) if evaluate_test else None
        _report(report, trainer)
        return
    while not trainer.done:
        report = epoch_report(trainer.train_epoch(), trainer, objective)
        if trainer.done and evaluate_test:  # in the last epoch's report, so schedulers stopping at max_t see it
            report.test = evaluated_test(trainer.test())
        _report(report, trainer)


def _report(report: TrialReport, trainer: Trainer) -> None:
    with tempfile.TemporaryDirectory(prefix="mpt-checkpoint-") as directory:
        trainer.save(Path(directory) / STATE_FILE)
        tune.report(report.to_report(), checkpoint=tune.Checkpoint.from_directory(directory))
