"""The Ray Tune function trainable: one MPT training run per trial, checkpointed every epoch.

Ray 2.60 API (`ray.tune.report`, `ray.tune.get_checkpoint`, `ray.tune.Checkpoint`). The trial's
config holds the searched `MPTConfig` overrides plus the study's bookkeeping keys (`META_KEYS`); the
base config, the objective and the loaded data arrive through `tune.with_parameters`.

Every epoch reports `loss`, `ce_loss`, `kl_loss`, `dev_acc_<lang>` (evaluation epochs), `dev_acc_avg`,
`objective`, `best_epoch`; the last epoch adds `test_acc_<lang>`, `test_acc_avg`, `test_acc_avg_target`
(test accuracy with the best-dev state). The checkpoint is the full `Trainer` state, so a trial
interrupted or moved to another node continues from its last epoch.
"""

from __future__ import annotations

import functools
import logging
import tempfile
from pathlib import Path

from ray import tune

from mpt.backbones import Backbone, load_backbone
from mpt.config import MPTConfig
from mpt.training import EpochRecord, FitResult, RunData, Trainer
from trainable.spec import OBJECTIVES, STATE_FILE, trial_config

logger = logging.getLogger(__name__)


def objective_value(trainer: Trainer, objective: str) -> float:
    """The study objective for the epoch selected so far (0 before the first evaluation)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}: choose one of {', '.join(OBJECTIVES)}")
    if trainer.best_epoch == 0:
        return 0.0
    if objective == "dev_en":
        return trainer.best_dev_accuracy
    selected = next(r for r in trainer.history if r.epoch == trainer.best_epoch)
    return selected.dev_average or 0.0


def epoch_metrics(record: EpochRecord, trainer: Trainer, objective: str) -> dict[str, float]:
    metrics: dict[str, float] = {"epoch": record.epoch, "loss": record.loss, "ce_loss": record.ce_loss,
                                 "kl_loss": record.kl_loss, "best_epoch": record.best_epoch,
                                 "epoch_seconds": record.seconds}
    metrics.update({f"dev_acc_{lang}": acc for lang, acc in record.dev_accuracy.items()})
    if record.dev_accuracy:
        metrics["dev_acc_avg"] = record.dev_average
    metrics["objective"] = objective_value(trainer, objective)
    return metrics


def test_metrics(result: FitResult) -> dict[str, float]:
    metrics = {f"test_acc_{lang}": acc for lang, acc in result.accuracy.items()}
    metrics["test_acc_avg"] = result.average
    metrics["test_acc_avg_target"] = result.average_target
    return metrics


@functools.lru_cache(maxsize=1)
def _cached_backbone(name: str, num_layers: int | None, want_mlm: bool) -> Backbone:
    return load_backbone(name, num_layers, want_mlm=want_mlm)


def shared_backbone(config: MPTConfig) -> Backbone:
    """The frozen backbone, loaded once per trial process: Tune reuses a process for the next trial
    (`reuse_actors`), and no trial changes the backbone's weights, so trials can share it."""
    return _cached_backbone(config.backbone, config.num_layers, config.head != "linear")


def train_mpt(params: dict, *, base_config: dict, objective: str, data: RunData | None = None) -> None:
    """Tune function trainable: train one MPT run, reporting and checkpointing every epoch."""
    config = trial_config(base_config, params)
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
        _report({**_last_epoch_metrics(trainer, objective), **test_metrics(trainer.test())}, trainer)
        return
    while not trainer.done:
        record = trainer.train_epoch()
        metrics = epoch_metrics(record, trainer, objective)
        if trainer.done:  # in the last epoch's report, so schedulers stopping at max_t still see it
            metrics.update(test_metrics(trainer.test()))
        _report(metrics, trainer)


def _last_epoch_metrics(trainer: Trainer, objective: str) -> dict[str, float]:
    return epoch_metrics(trainer.history[-1], trainer, objective) if trainer.history else {}


def _report(metrics: dict[str, float], trainer: Trainer) -> None:
    with tempfile.TemporaryDirectory(prefix="mpt-checkpoint-") as directory:
        trainer.save(Path(directory) / STATE_FILE)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
