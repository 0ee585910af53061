"""A study's settings: what the CLI resolves, what `results/<study>/study.json` keeps for resume and report."""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from mpt.config import MPTConfig

RESULTS_ROOT = Path("results")  # relative to the working directory: run studies from the repository root
DEFAULT_STORAGE_PATH = "results/ray"
SETTINGS_FILE = "study.json"
TRIALS_FILE = "trials.json"
CONFIRM_FILE = "confirm.json"
REPORT_FILE = "report.md"

# Base-config defaults of a study (on top of MPTConfig's), chosen on the second edition's train/dev (never its
# test) for 2 CPU cores; README "How the defaults were chosen" has the measurements. Vanilla prompt tuning,
# English dev at the selected epoch, seeds 1-3: the old base (4 layers, K=32, lr 3e-2, batch 8, 6 epochs)
# 35.1% (chance 33.3%); 4 layers, K=64, lr 1e-2, batch 16: 37.3% over 5 or 6 epochs (the sixth selected
# nothing), 37.6% over 10; 8 layers, K=64, 10 epochs: 40.2% at about 4x the compute; cheaper variants (3
# layers; K=48; lr 2e-2 over 4 epochs) 35.1-36.0%. Four target languages spread over URIEL's syntactic
# distance from English (de 0.10, zh 0.29, ar 0.36, sw 0.53), so the report's gain-against-distance rank
# correlation has points to rank, and four search trials (the two reference points and two of TPE's): with the
# confirmation's up to nine runs, in bf16 (precision auto), that fits 10 minutes on 2 cores with room to spare
# (measured in README).
# Override with --set/--config, e.g. --set num_layers=12 --set target_languages=ar,bg,... on a GPU.
STUDY_BASE_DEFAULTS: dict[str, Any] = {"num_layers": 4, "epochs": 5, "shots_per_class": 64, "batch_size": 16,
                                       "learning_rate": 1e-2, "target_languages": ["de", "zh", "ar", "sw"]}
# --smoke: the smallest study that still exercises everything (2 minutes on 2 cores).
SMOKE_BASE: dict[str, Any] = {"num_layers": 1, "epochs": 2, "shots_per_class": 4, "max_eval_examples": 12,
                              "target_languages": ["de", "fr"]}
DEFAULT_NUM_SAMPLES = 4
DEFAULT_CONFIRM_TOP, DEFAULT_CONFIRM_SEEDS = 1, 3
SMOKE_NUM_SAMPLES = 4

SCHEDULERS = ("none", "asha")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class StudyError(RuntimeError):
    """A study cannot start or continue; the message names the problem and the fix."""


@dataclass
class StudySettings:
    """Everything that defines a study (stored in study.json; a resume reuses it)."""

    name: str
    space: str
    objective: str = "dev_avg"
    num_samples: int = DEFAULT_NUM_SAMPLES
    scheduler: str = "none"
    seed: int = 0
    smoke: bool = False
    storage_path: str = DEFAULT_STORAGE_PATH
    mlflow_tracking_uri: str = ""
    optuna_storage: str = ""  # a database URL or a journal file ("": the study's results/<study>/optuna.log)
    base_config: dict[str, Any] = field(default_factory=dict)  # a full MPTConfig as a dict
    confirm_top: int = DEFAULT_CONFIRM_TOP  # the confirmation retrains the K best (0: no confirmation) ...
    confirm_seeds: int = DEFAULT_CONFIRM_SEEDS  # ... with vanilla and the paper default, with S paired seeds
    test_in_search: bool = False  # search trials evaluate test too (by default only the confirmation does)
    confirm_shots: list[int] = field(default_factory=list)  # a shot-count sweep's K per class ([]: the base's K)

    # the flags that define the study: a resume must not change them
    DEFINING = ("space", "objective", "num_samples", "scheduler", "seed", "smoke", "storage_path",
                "mlflow_tracking_uri", "optuna_storage", "base_config", "confirm_top", "confirm_seeds",
                "test_in_search", "confirm_shots")

    @property
    def config(self) -> MPTConfig:
        return MPTConfig.from_dict(self.base_config)

    def trial_base_config(self, num_threads: int | None = None, ranked: bool = True) -> dict[str, Any]:
        """What every trial starts from: the base config, evaluating the dev languages the objective ranks
        by (dev_avg: all of them; dev_en: English only) in `ranked` runs (the search), English dev alone in the
        others (the confirmation: its runs are compared on test, and English dev picks their epoch), with the
        trial's torch threads when given."""
        base = {**self.base_config, "dev_all_languages": ranked and self.objective == "dev_avg"}
        return base if num_threads is None else {**base, "num_threads": num_threads}

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> "StudySettings":
        values = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass(frozen=True)
class StudyPaths:
    """Where a study's files live, all absolute so Ray's working-directory changes cannot move them."""

    name: str
    results_root: Path
    storage_path: str  # a local folder or a URI (s3://, gs://, ...)

    @property
    def study_dir(self) -> Path:
        return self.results_root / self.name

    @property
    def settings_file(self) -> Path:
        return self.study_dir / SETTINGS_FILE

    @property
    def trials_file(self) -> Path:
        return self.study_dir / TRIALS_FILE

    @property
    def confirm_file(self) -> Path:
        return self.study_dir / CONFIRM_FILE

    @property
    def report_file(self) -> Path:
        return self.study_dir / REPORT_FILE

    @property
    def report_html_file(self) -> Path:
        return self.report_file.with_suffix(".html")

    def experiment_path(self, suffix: str = "") -> str:
        """The Ray Tune experiment folder (or URI) of the search, or of a later phase with `suffix`."""
        return f"{self.storage_path.rstrip('/')}/{self.name}{suffix}"


def load_study_settings(paths: StudyPaths) -> StudySettings:
    """A stored study's settings; a missing study is named along with the studies that are there."""
    if not paths.settings_file.is_file():
        studies = sorted(p.parent.name for p in paths.results_root.glob(f"*/{SETTINGS_FILE}"))
        found = f"studies there: {', '.join(studies)}" if studies else "there are no studies there yet"
        raise StudyError(f"no study {paths.name!r} under {paths.results_root} ({paths.settings_file} is missing; "
                         f"{found}): run `python study/run.py --space SPACE --name {paths.name}` first, or pass "
                         f"--results-dir")
    return StudySettings.from_json(paths.settings_file.read_text(encoding="utf-8"))


def is_uri(path: str) -> bool:
    return "://" in path


def absolute_storage(path: str) -> str:
    """Ray needs an absolute local path; URIs pass through."""
    return path if is_uri(path) else str(Path(path).expanduser().resolve())


def local_storage_folder(storage_path: str) -> Path | None:
    """The folder of Ray Tune storage on this machine (a path or file:// URI), None for remote storage."""
    if storage_path.startswith("file://"):
        return Path(storage_path[len("file://"):])
    return None if is_uri(storage_path) else Path(storage_path)


SQLITE_PREFIX = "sqlite:///"


def sqlite_database(tracking_uri: str) -> Path | None:
    """The database file of a local SQLite MLflow store, None for any other store (a server, ...)."""
    return Path(tracking_uri[len(SQLITE_PREFIX):]) if tracking_uri.startswith(SQLITE_PREFIX) else None


def default_tracking_uri(results_root: Path) -> str:
    """SQLite under results/: MLflow 3.13+ refuses the old ./mlruns file store."""
    return f"{SQLITE_PREFIX}{(results_root / 'mlflow.db').resolve()}"


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise StudyError(f"study name {name!r} is invalid: use letters, digits, '-', '_' and '.', starting with a "
                         f"letter or digit (it names folders and the MLflow experiment)")
    return name


def write_atomically(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so an interrupted write never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def git_state(repo_root: Path) -> tuple[str, bool] | None:
    """(commit, whether tracked files differ from it) of the checkout at repo_root; None without git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo_root, capture_output=True, text=True,
                                timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo_root,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit.stdout.strip(), bool(dirty.stdout.strip())) if commit.returncode == 0 else None


def redact(text: str) -> str:
    """`text` without credentials: URI user info (`https://user:token@host`) and secret-looking query values."""
    text = re.sub(r"(?<=://)[^/@\s]+@", "***@", text)
    return re.sub(r"(?i)([?&][a-z_-]*(?:token|secret|password|passwd|key|signature|credential)[a-z_-]*=)[^&\s]+",
                  r"\1***", text)


def redacted(values: dict[str, Any]) -> dict[str, Any]:
    return {key: redact(value) if isinstance(value, str) else value for key, value in values.items()}
