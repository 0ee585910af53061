"""Fault injection in the trials: a trial process killed mid-training continues from its checkpoint bit for bit, and
a trial whose damaged checkpoint was deleted trains from its first epoch. The faults come from the test hooks in
`tests/hooks/` (see tests/test_faults.py); `MPT_EPOCH_LOG` makes every trial record each epoch it actually trains.
(A lost node, its trial continuing on another node from its checkpoint: tests/test_cluster_jobs.py, on a cluster of
`ray start` nodes.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fault_records import epochs_of, epochs_trained, metric_history, run_study, study_runs, trial_rows
from tests.smoke_studies import HOOKS as FAULT_HOOKS
from tests.smoke_studies import study_env

# --- 2. a trial process is killed mid-training ----------------------------------------------------------


class RecordingTune:
    """Stands in for `ray.tune` inside the trainable: restores from `checkpoint`, keeps every report."""

    def __init__(self, checkpoint=None) -> None:
        from ray import tune

        self.Checkpoint, self.checkpoint, self.reports = tune.Checkpoint, checkpoint, []

    def get_checkpoint(self):
        return self.checkpoint

    def report(self, metrics: dict, *, checkpoint=None) -> None:
        self.reports.append(dict(metrics))


def test_trial_whose_damaged_checkpoint_was_deleted_trains_from_its_first_epoch(tmp_path: Path, monkeypatch) -> None:
    """What `--resume` advises for a damaged checkpoint: delete its state.pt; the trial then starts over."""
    from mpt.config import MPTConfig
    from mpt.training import load_run_data
    from study.settings import SMOKE_BASE, STUDY_BASE_DEFAULTS
    from trainable import mpt_trial

    base = MPTConfig.from_dict({**STUDY_BASE_DEFAULTS, **SMOKE_BASE, "dev_all_languages": True, "num_threads": 1})
    data = load_run_data(base)
    params = {"alignment_weight": 0.5, "trial_number": 3, "reference": None}
    log = tmp_path / "epochs.jsonl"
    monkeypatch.setenv("MPT_EPOCH_LOG", str(log))
    monkeypatch.syspath_prepend(str(FAULT_HOOKS))
    import mpt_faults

    from mpt.training import Trainer

    monkeypatch.setattr(Trainer, "train_epoch", mpt_faults.wrap_train_epoch(Trainer.train_epoch))
    emptied = tmp_path / "checkpoint_000000"
    emptied.mkdir()
    restarted = RecordingTune(RecordingTune().Checkpoint.from_directory(str(emptied)))
    monkeypatch.setattr(mpt_trial, "tune", restarted)
    mpt_trial.train_mpt(params, base_config=base, objective="dev_avg", data=data)
    fresh = RecordingTune()
    monkeypatch.setattr(mpt_trial, "tune", fresh)
    mpt_trial.train_mpt(params, base_config=base, objective="dev_avg", data=data)
    assert [r["epoch"] for r in restarted.reports] == [1, 2]
    assert [r["epoch"] for r in epochs_trained(log)] == [1, 2, 1, 2]
    drop = ("epoch_seconds",)  # wall-clock time, the one value that differs between two runs
    assert [{k: v for k, v in r.items() if k not in drop} for r in restarted.reports] == [
        {k: v for k, v in r.items() if k not in drop} for r in fresh.reports
    ]


CRASH = "crash"
CRASH_EPOCHS = 3
KILL_AT_EPOCH = 2


@pytest.mark.slow
def test_killed_trial_continues_from_its_checkpoint_bit_identically(tmp_path: Path) -> None:
    import torch

    from mpt.backbones import load_backbone
    from mpt.training import Trainer
    from study.settings import StudySettings
    from study.tuner import load_study_data
    from trainable.spec import trial_config

    log, marker = tmp_path / "epochs.jsonl", tmp_path / "fault-fired"
    done = run_study(
        [
            "--space",
            "alignment",
            "--smoke",
            "--name",
            CRASH,
            "--num-samples",
            "2",
            "--no-confirm",
            "--max-concurrent",  # one trial process: what this study checks needs no trials at once
            "1",
            "--test-in-search",
            "--set",
            f"epochs={CRASH_EPOCHS}",
        ],
        tmp_path,
        study_env(MPT_EPOCH_LOG=str(log), MPT_FAULT_KILL_AT_EPOCH=str(KILL_AT_EPOCH), MPT_FAULT_MARKER=str(marker)),
    )
    assert done.returncode == 0, done.stderr[-4000:]
    killed = json.loads(marker.read_text())
    records = epochs_trained(log)
    # epoch 2 was trained, lost with the process, and trained again from the epoch-1 checkpoint
    assert epochs_of(records, killed["trial_id"]) == [1, 2, 2, 3]
    pids = [r["pid"] for r in records if r["trial_id"] == killed["trial_id"]]
    assert pids[:2] == [killed["pid"]] * 2 and killed["pid"] not in pids[2:]
    rows = trial_rows(tmp_path, CRASH)
    assert [r["status"] for r in rows] == ["COMPLETE", "COMPLETE"]

    # the same trials without a fault, in this process: identical losses, accuracies and weights
    settings = StudySettings.from_json((tmp_path / "results" / CRASH / "study.json").read_text())
    base = settings.trial_base_config(num_threads=1)  # what make_trainable passes with --cpus-per-trial 1
    data = load_study_data(settings)
    _, children = study_runs(tmp_path, CRASH)
    runs = {c.data.tags["ray.trial_id"]: c for c in children}
    threads = torch.get_num_threads()
    try:
        for row in rows:
            config = trial_config(base, row["params"])
            trainer = Trainer(
                config,
                backbone=load_backbone(config.backbone, config.num_layers, want_mlm=config.wants_mlm_head),
                data=data,
            )
            result = trainer.run()
            assert row["test_accuracy"] == result.accuracy
            run_id = runs[row["trial_id"]].info.run_id
            assert metric_history(tmp_path, run_id, "loss") == [(r.epoch, r.loss) for r in result.history]
            [state_file] = (tmp_path / "results" / "ray" / CRASH / f"train_mpt_{row['trial_id']}").glob(
                "checkpoint_*/state.pt"
            )
            saved = torch.load(state_file, weights_only=True)
            assert saved["epoch"] == CRASH_EPOCHS
            for part in ("model", "best_state"):
                expected = trainer.state_dict()[part]
                assert saved[part].keys() == expected.keys()
                assert all(torch.equal(saved[part][k], expected[k]) for k in expected), (row["trial_id"], part)
    finally:
        torch.set_num_threads(threads)
