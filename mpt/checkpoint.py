"""The training checkpoint: one file holding a `Trainer`'s whole state, written atomically, read safely.

Its format and keys are known here only: `mpt.training.Trainer` builds and restores the state, the study's
resume check and its export of trained prompts read it through `read_checkpoint` and `checkpoint_config`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from mpt.config import MPTConfig

CHECKPOINT_FORMAT = 1
REQUIRED_KEYS = frozenset({"format", "config", "epoch", "model", "optimizer", "generator", "best_epoch",
                           "best_dev_accuracy", "best_state", "history"})


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message says why and what to do."""


def write_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write `state` to `path` atomically (a temporary file renamed over it; tensors and plain data only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    return path


def validate_checkpoint(state: Any, path: str | Path) -> dict[str, Any]:
    """`state` if it is an mpt-study checkpoint of this format, else a CheckpointError naming the fix."""
    if not isinstance(state, dict) or not REQUIRED_KEYS <= set(state):
        raise CheckpointError(f"checkpoint {path} is not an mpt-study checkpoint: start the run afresh")
    if state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint format {state.get('format')!r} is not {CHECKPOINT_FORMAT}: it was "
                              f"written by another version of mpt-study; start the run afresh")
    return state


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The validated state written by `write_checkpoint`; reads tensors and plain data only (never runs code)."""
    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist: check the path") from None
    except Exception as err:  # truncated or foreign files raise many kinds of errors
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"checkpoint {path} is corrupt or not an mpt-study checkpoint ({first_line}): "
                              f"delete it to restart from the previous checkpoint or from scratch") from None
    return validate_checkpoint(state, path)


def checkpoint_config(state: dict[str, Any]) -> MPTConfig:
    """The config of the run a checkpoint's state (`read_checkpoint`) belongs to."""
    return MPTConfig.from_dict(json.loads(state["config"]))
