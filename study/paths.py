"""Where a study's files live (`results/<study>/`: its settings, trial tables and report; Ray Tune's experiment
folders) and how they are written: atomically, so an interrupted write never leaves half a file."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

RESULTS_ROOT = Path("results")  # relative to the working directory: run studies from the repository root
SETTINGS_FILE = "study.json"
TRIALS_FILE = "trials.json"
CONFIRM_FILE = "confirm.json"
REPORT_FILE = "report.md"


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


def write_atomically(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so an interrupted write never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
