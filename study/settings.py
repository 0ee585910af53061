"""A study's settings: what the CLI resolves, what `results/<study>/study.json` keeps for resume and report,
their defaults and presets, and the study's name. (Where the files are: `study.paths`; storage and tracking
URIs: `study.uris`.)"""

from __future__ import annotations

import json
import re
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from mpt.config import MPTConfig
from study.environment import command
from study.errors import StudyError
from study.paths import SETTINGS_FILE, StudyPaths
from trainable.metrics import get_objective

# Base-config defaults of a study (on top of MPTConfig's), chosen on the mini set's train/dev (never its test) so
# that the default study learns and fits 10 minutes on 2 CPU cores: docs/defaults.md has every measurement.
# Override with --set/--config, e.g. --set num_layers=12 --set target_languages=ar,bg,... on a GPU.
STUDY_BASE_DEFAULTS: dict[str, Any] = {
    "num_layers": 8,
    "epochs": 6,
    "shots_per_class": 64,
    "batch_size": 16,
    "learning_rate": 1e-2,
    "prompt_length": 4,
    "target_languages": ["de", "zh", "ar", "sw"],
}
# --smoke: the smallest study that still exercises everything (2 minutes on 2 cores): the three reference points
# and two of TPE's trials.
SMOKE_BASE: dict[str, Any] = {
    "num_layers": 1,
    "epochs": 2,
    "shots_per_class": 4,
    "max_eval_examples": 12,
    "target_languages": ["de", "fr"],
}
SMOKE_NUM_SAMPLES = 5

SCHEDULERS = ("none", "asha")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


@dataclass
class StudySettings:
    """Everything that defines a study (stored in study.json; a resume reuses it). The defaults here are the
    study's defaults: the command line's help reads them from this class."""

    name: str
    space: str
    objective: str = "dev_avg"  # a key of trainable.metrics.OBJECTIVES
    num_samples: int = 4
    scheduler: str = "none"
    seed: int = 0
    smoke: bool = False
    storage_path: str = "results/ray"
    mlflow_tracking_uri: str = ""
    optuna_storage: str = ""  # a database URL or a journal file ("": the study's results/<study>/optuna.log)
    # every trial's config before its searched values (study.json keeps it as a dict)
    base_config: MPTConfig = field(default_factory=lambda: MPTConfig.from_dict(STUDY_BASE_DEFAULTS))
    confirm_top: int = 1  # the confirmation retrains the K best (0: no confirmation) ...
    confirm_seeds: int = 3  # ... with the references (vanilla, the paper default, the probe), with S paired seeds
    test_in_search: bool = False  # search trials evaluate test too (by default only the confirmation does)
    confirm_shots: list[int] = field(default_factory=list)  # a shot-count sweep's K per class ([]: the base's K)

    # the flags that define the study: a resume must not change them
    DEFINING = (
        "space",
        "objective",
        "num_samples",
        "scheduler",
        "seed",
        "smoke",
        "storage_path",
        "mlflow_tracking_uri",
        "optuna_storage",
        "base_config",
        "confirm_top",
        "confirm_seeds",
        "test_in_search",
        "confirm_shots",
    )

    def trial_base_config(self, num_threads: int | None = None, ranked: bool = True) -> MPTConfig:
        """What every trial starts from: the base config, evaluating the dev languages the objective ranks
        by (dev_avg: all of them; dev_en: English only) in `ranked` runs (the search), English dev alone in the
        others (the confirmation: its runs are compared on test, and English dev picks their epoch), with the
        trial's torch threads when given."""
        base = self.base_config.replace(dev_all_languages=ranked and get_objective(self.objective).reads_target_dev)
        return base if num_threads is None else base.replace(num_threads=num_threads)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> "StudySettings":
        """The settings `to_json` wrote (ValueError, ConfigError among them, when the text is damaged)."""
        values = json.loads(text)
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in values.items() if k in known}
        if "base_config" in values:
            values["base_config"] = MPTConfig.from_dict(values["base_config"])
        return cls(**values)


def default(name: str) -> Any:
    """The default of setting `name`, read from `StudySettings` (what the command line's help shows)."""
    setting = next(f for f in fields(StudySettings) if f.name == name)
    return setting.default_factory() if setting.default_factory is not MISSING else setting.default


def load_study_settings(paths: StudyPaths) -> StudySettings:
    """A stored study's settings; a missing study is named along with the studies that are there."""
    if not paths.settings_file.is_file():
        studies = sorted(p.parent.name for p in paths.results_root.glob(f"*/{SETTINGS_FILE}"))
        found = f"studies there: {', '.join(studies)}" if studies else "there are no studies there yet"
        raise StudyError(
            f"no study {paths.name!r} under {paths.results_root} ({paths.settings_file} is missing; "
            f"{found}): run `{command('study')} --space SPACE --name {paths.name}` first, or pass "
            f"--results-dir"
        )
    return StudySettings.from_json(paths.settings_file.read_text(encoding="utf-8"))


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise StudyError(
            f"study name {name!r} is invalid: use letters, digits, '-', '_' and '.', starting with a "
            f"letter or digit (it names folders and the MLflow experiment)"
        )
    return name
