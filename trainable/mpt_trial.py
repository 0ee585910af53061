"""The Ray Tune function trainable: one MPT training run per trial, checkpointed every epoch.

Ray 2.60 API (`ray.tune.report`, `ray.tune.get_checkpoint`, `ray.tune.Checkpoint`). The trial's
config holds the searched `MPTConfig` overrides plus the study's bookkeeping keys (`META_KEYS`); the
base config, the objective and the loaded data arrive through `tune.with_parameters`.

Every epoch reports `epoch`, `planned_epochs`, `loss`, `ce_loss`, `kl_loss`, `dev_acc_<lang>` and
`dev_rows_<lang>` (the languages evaluated: English at every evaluation epoch, the targets at the epochs
English dev selects), `dev_acc_avg` (when every dev language was evaluated), `objective`, `best_epoch`,
`selected_dev_acc_<lang>` (dev accuracy at the epoch selected so far), `runtime_device`, `runtime_precision`,
`runtime_num_threads` and `runtime_node_id` (what the trial ran on, after placement and `auto`, and on which Ray
node); with `evaluate_test` the last epoch adds `test_acc_<lang>`, `test_acc_avg`, `test_acc_avg_target` and
`test_correct_<lang>` (test accuracy with the best-dev state, and per row). The checkpoint is the full `Trainer` state, so a trial
interrupted or moved to another node continues from its last epoch.
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
from trainable.placement import place_trial, ray_node_id
from trainable.spec import CORRECT_PREFIX, OBJECTIVES, RUNTIME_PREFIX, SELECTED_DEV_PREFIX, STATE_FILE, trial_config

logger = logging.getLogger(__name__)


def objective_value(trainer: Trainer, objective: str) -> float:
    """The study objective for the epoch selected so far (0 before the first evaluation)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}: choose one of {', '.join(OBJECTIVES)}")
    selected = trainer.selected_record
    if selected is None:
        return 0.0
    if objective == "dev_en":
        return trainer.best_dev_accuracy
    return selected.dev_average or 0.0


def epoch_metrics(record: EpochRecord, trainer: Trainer, objective: str) -> dict[str, float]:
    metrics: dict[str, float] = {"epoch": record.epoch, "planned_epochs": trainer.config.epochs,
                                 "loss": record.loss, "ce_loss": record.ce_loss, "kl_loss": record.kl_loss,
                                 "best_epoch": record.best_epoch, "epoch_seconds": record.seconds,
                                 f"{RUNTIME_PREFIX}device": str(trainer.device),
                                 f"{RUNTIME_PREFIX}precision": trainer.config.precision,
                                 f"{RUNTIME_PREFIX}num_threads": torch.get_num_threads(),
                                 # a trial moved off a lost node reports its new one (the MLflow tag keeps the latest)
                                 f"{RUNTIME_PREFIX}node_id": ray_node_id()}
    metrics.update({f"dev_acc_{lang}": acc for lang, acc in record.dev_accuracy.items()})
    metrics.update({f"dev_rows_{lang}": len(examples) for lang, examples in trainer.data.dev.items()})
    if record.dev_accuracy.keys() == trainer.data.dev.keys():  # an average of every dev language, or none
        metrics["dev_acc_avg"] = record.dev_average
    metrics["objective"] = objective_value(trainer, objective)
    selected = trainer.selected_record
    if selected is not None:  # the dev accuracies the objective and the trial table use
        metrics.update({f"{SELECTED_DEV_PREFIX}{lang}": acc for lang, acc in selected.dev_accuracy.items()})
    return metrics


def test_metrics(result: FitResult) -> dict[str, float | str]:
    """Test accuracy per language and its averages, and each test row's correctness (a string of 0/1 per
    language, in file order) for the study's paired intervals."""
    metrics: dict[str, float | str] = {f"test_acc_{lang}": acc for lang, acc in result.accuracy.items()}
    metrics["test_acc_avg"] = result.average
    metrics["test_acc_avg_target"] = result.average_target
    metrics.update({f"{CORRECT_PREFIX}{lang}": "".join(map(str, rows)) for lang, rows in result.correct.items()})
    return metrics


@functools.lru_cache(maxsize=1)
def _cached_backbone(name: str, num_layers: int | None, want_mlm: bool) -> Backbone:
    return load_backbone(name, num_layers, want_mlm=want_mlm)


def shared_backbone(config: MPTConfig) -> Backbone:
    """The frozen backbone, loaded once per trial process: Tune reuses a process for the next trial
    (`reuse_actors`), and no trial changes the backbone's weights, so trials can share it."""
    return _cached_backbone(config.backbone, config.num_layers, config.head != "linear")


def train_mpt(params: dict, *, base_config: dict, objective: str, data: RunData | None = None,
              evaluate_test: bool = False) -> None:
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
                logger.warning("checkpoint %s has no %s: training this trial from its first epoch", directory,
                               STATE_FILE)
    if trainer.done:  # interrupted after its last epoch was checkpointed but before Tune saw it finish
        _report({**_last_epoch_metrics(trainer, objective), **(test_metrics(trainer.test()) if evaluate_test else {})},
                trainer)
        return
    while not trainer.done:
        record = trainer.train_epoch()
        metrics = epoch_metrics(record, trainer, objective)
        if trainer.done and evaluate_test:  # in the last epoch's report, so schedulers stopping at max_t see it
            metrics.update(test_metrics(trainer.test()))
        _report(metrics, trainer)


def _last_epoch_metrics(trainer: Trainer, objective: str) -> dict[str, float]:
    return epoch_metrics(trainer.history[-1], trainer, objective) if trainer.history else {}


def _report(metrics: dict[str, float], trainer: Trainer) -> None:
    with tempfile.TemporaryDirectory(prefix="mpt-checkpoint-") as directory:
        trainer.save(Path(directory) / STATE_FILE)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
