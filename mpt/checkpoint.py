"""The training checkpoint: one file holding a `Trainer`'s whole state, written atomically, read safely, and
beside it a small manifest (`<file>.json`: format, size, SHA-256) that tells an intact file from a damaged one
without torch.

Its format and keys are known here only: `mpt.training.Trainer` builds and restores the state, the study's
export of trained prompts reads it through `read_checkpoint` and `checkpoint_config`, and the study's resume
check through `verify_checkpoint_file`. torch is imported only where a state is written or read, so that the
check runs in a process without it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from mpt.config import MPTConfig

CHECKPOINT_FORMAT = 1
REQUIRED_KEYS = frozenset(
    {
        "format",
        "config",
        "epoch",
        "model",
        "optimizer",
        "generator",
        "best_epoch",
        "best_dev_accuracy",
        "best_state",
        "history",
    }
)


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message says why and what to do."""


def manifest_path(path: str | Path) -> Path:
    """The manifest beside the checkpoint file `path`."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def write_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write `state` to `path` atomically (a temporary file renamed over it; tensors and plain data only). Its
    manifest is renamed into place first, so that a state file is never there without one (a crash between the
    two renames leaves a manifest that the file beside it does not match: reported as damaged, never trusted)."""
    import torch  # here, not at the top: verifying a checkpoint file must not need it

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    manifest = {"format": CHECKPOINT_FORMAT, "bytes": tmp.stat().st_size, "sha256": _sha256(tmp)}
    manifest_tmp = path.with_name(path.name + ".json.tmp")
    manifest_tmp.write_text(json.dumps(manifest), encoding="utf-8")
    manifest_tmp.replace(manifest_path(path))
    tmp.replace(path)
    return path


def verify_checkpoint_file(path: str | Path) -> None:
    """The file `path` is the intact checkpoint its manifest describes (same format, size and SHA-256), else a
    CheckpointError naming the file and the fix; without torch. A checkpoint without a readable manifest
    (written before manifests existed) is read in full instead (`read_checkpoint`, which takes torch)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist: check the path")
    try:
        manifest = json.loads(manifest_path(path).read_text(encoding="utf-8"))
        expected = (manifest["format"], int(manifest["bytes"]), str(manifest["sha256"]))
    except (OSError, ValueError, KeyError, TypeError):  # no manifest, or a damaged one: the file itself decides
        read_checkpoint(path)
        return
    file_format, size, digest = expected
    if file_format != CHECKPOINT_FORMAT:
        raise CheckpointError(_format_problem(path, file_format))
    actual = path.stat().st_size
    if actual != size:
        raise CheckpointError(_corrupt(path, f"{actual} bytes, its manifest says {size}"))
    if _sha256(path) != digest:
        raise CheckpointError(_corrupt(path, "its SHA-256 differs from its manifest's"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _corrupt(path: str | Path, why: str) -> str:
    return (
        f"checkpoint {path} is corrupt or not an mpt-study checkpoint ({why}): delete it to restart from the "
        f"previous checkpoint or from scratch"
    )


def _format_problem(path: str | Path, found: Any) -> str:
    return (
        f"checkpoint {path}: format {found!r} is not {CHECKPOINT_FORMAT}: it was written by another version "
        f"of mpt-study; start the run afresh"
    )


def validate_checkpoint(state: Any, path: str | Path) -> dict[str, Any]:
    """`state` if it is an mpt-study checkpoint of this format, else a CheckpointError naming the fix."""
    if not isinstance(state, dict) or not REQUIRED_KEYS <= set(state):
        raise CheckpointError(f"checkpoint {path} is not an mpt-study checkpoint: start the run afresh")
    if state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(_format_problem(path, state.get("format")))
    return state


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The validated state written by `write_checkpoint`; reads tensors and plain data only (never runs code)."""
    import torch  # here, not at the top: verifying a checkpoint file must not need it

    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist: check the path") from None
    except Exception as err:  # truncated or foreign files raise many kinds of errors
        raise CheckpointError(_corrupt(path, (str(err).strip().splitlines() or [type(err).__name__])[0])) from None
    return validate_checkpoint(state, path)


def checkpoint_config(state: dict[str, Any]) -> MPTConfig:
    """The config of the run a checkpoint's state (`read_checkpoint`) belongs to."""
    return MPTConfig.from_dict(json.loads(state["config"]))
