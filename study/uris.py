"""Storage locations and tracking URIs as the study's flags give them: local folders or URIs, the local folder
or SQLite file behind one, and the same text with credentials masked (for MLflow params, tags and messages)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any


def is_uri(path: str) -> bool:
    return "://" in path


def absolute_storage(path: str) -> str:
    """Ray needs an absolute local path; URIs pass through."""
    return path if is_uri(path) else str(Path(path).expanduser().resolve())


def local_storage_folder(storage_path: str) -> Path | None:
    """The folder of Ray Tune storage on this machine (a path or file:// URI), None for remote storage."""
    if storage_path.startswith("file://"):
        return Path(storage_path[len("file://") :])
    return None if is_uri(storage_path) else Path(storage_path)


SQLITE_PREFIX = "sqlite:///"


def sqlite_database(tracking_uri: str) -> Path | None:
    """The database file of a local SQLite MLflow store, None for any other store (a server, ...)."""
    return Path(tracking_uri[len(SQLITE_PREFIX) :]) if tracking_uri.startswith(SQLITE_PREFIX) else None


def default_tracking_uri(results_root: Path) -> str:
    """SQLite under results/: MLflow 3.13+ refuses the old ./mlruns file store."""
    return f"{SQLITE_PREFIX}{(results_root / 'mlflow.db').resolve()}"


def redact(text: str) -> str:
    """`text` without credentials: URI user info (`https://user:token@host`) and secret-looking query values."""
    text = re.sub(r"(?<=://)[^/@\s]+@", "***@", text)
    return re.sub(
        r"(?i)([?&][a-z_-]*(?:token|secret|password|passwd|key|signature|credential)[a-z_-]*=)[^&\s]+", r"\1***", text
    )


def redacted(values: dict[str, Any]) -> dict[str, Any]:
    return {key: redact(value) if isinstance(value, str) else value for key, value in values.items()}
