"""What the benchmarks take from the study: its default trial, derived from `study.settings` and the
reference points of `search_spaces` (never copied), and whether `study/run.py` can run here."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from benchmarks.context import STUDY_SPACE
from benchmarks.probes import ROOT
from mpt.config import MPTConfig
from search_spaces import PAPER_DEFAULT, REFERENCE_POINTS
from study.settings import SMOKE_BASE, SMOKE_NUM_SAMPLES, STUDY_BASE_DEFAULTS, StudySettings, default

SHOWN_FIELDS = (
    "num_layers",
    "epochs",
    "shots_per_class",
    "max_eval_examples",
    "target_languages",
    "num_threads",
    "dev_all_languages",
)


@dataclass(frozen=True)
class DefaultTrial:
    """A trial of the default (or smoke) study: the config every trial starts from, and the study's size."""

    base: dict[str, Any]  # StudySettings.trial_base_config(): a full MPTConfig dict
    source: str  # where it comes from, for RESULTS.md
    objective: str
    num_samples: int

    def shown(self) -> str:
        """The base config's fields that size a trial, as 'k=v, ...'."""
        return ", ".join(f"{k}={self.base[k]}" for k in SHOWN_FIELDS if k in self.base)


def default_trial(smoke: bool, threads: int) -> DefaultTrial:
    """The study's defaults (`STUDY_BASE_DEFAULTS`, with `SMOKE_BASE` for --smoke) as its settings resolve
    them, with `threads` torch threads per trial (the study gives each trial its --cpus-per-trial)."""
    settings = StudySettings(
        name="benchmark",
        space=STUDY_SPACE,
        smoke=smoke,
        num_samples=SMOKE_NUM_SAMPLES if smoke else default("num_samples"),
    )
    values = {**STUDY_BASE_DEFAULTS, "seed": settings.seed, **(SMOKE_BASE if smoke else {})}
    settings = dataclasses.replace(settings, base_config=MPTConfig.from_dict(values))
    source = "study/run.py's default settings" + (" + --smoke" if smoke else "")
    return DefaultTrial(
        settings.trial_base_config(num_threads=threads).to_dict(), source, settings.objective, settings.num_samples
    )


def trial_points(count: int) -> list[dict[str, Any]]:
    """The study's reference points, the paper-like default (the default trial) first."""
    points = [REFERENCE_POINTS[PAPER_DEFAULT], *(p for name, p in REFERENCE_POINTS.items() if name != PAPER_DEFAULT)]
    if count > len(points):
        raise ValueError(f"{count} trials asked for, but the study has only {len(points)} reference points")
    return [dict(p) for p in points[:count]]


def point_text(point: dict[str, Any], sep: str = "=") -> str:
    """'translator_depth=1, alignment_weight=0.5' (or with sep=' ' and spaces: 'translator depth 1, ...')."""
    if sep == "=":
        return ", ".join(f"{k}={v}" for k, v in point.items())
    return ", ".join(f"{k.replace('_', ' ')}{sep}{v}" for k, v in point.items())


def study_available() -> str:
    """'' when `python study/run.py --help` works, else why not."""
    try:
        done = subprocess.run(
            [sys.executable, str(ROOT / "study" / "run.py"), "--help"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    except (OSError, subprocess.SubprocessError) as err:
        return str(err)
    return "" if done.returncode == 0 else (done.stderr.strip().splitlines() or ["exit status nonzero"])[-1]


@dataclass(frozen=True)
class LoadedTrial:
    """The default trial at the paper-like default point, its backbone and data loaded (what benchmarks time)."""

    trial: DefaultTrial
    point: dict[str, Any]
    config: MPTConfig
    backbone: Any
    data: Any


def loaded_default_trial(quick: bool, threads: int) -> LoadedTrial:
    from mpt.backbones import load_backbone
    from mpt.training import load_run_data

    trial = default_trial(smoke=quick, threads=threads)
    point = trial_points(1)[0]
    config = MPTConfig.from_dict({**trial.base, **point})
    backbone = load_backbone(config.backbone, config.num_layers, want_mlm=config.wants_mlm_head)
    return LoadedTrial(trial, point, config, backbone, load_run_data(config))
