"""The surface of `mpt` that the study (`study/`) uses: data loading, backbones and their checks, training
checkpoints and their export as trained prompts, and the cache folder ($MPT_STUDY_CACHE).

Besides this module the study imports only `mpt.config` and `mpt.config_args` (the run's config, its flags and
files) and `mpt.data`'s `DataError`, so the method can change behind these names. Importing this module takes
neither torch nor transformers: the checks a study runs before it starts (the backbone's config, the checkpoint
files, the data) use none, so every refusal comes in a second. The names that need them (`Backbone`,
`TrainedPrompt`, loading a backbone, exporting a checkpoint) import them on first use (PEP 562's module
`__getattr__` for the classes). (The trainable, `trainable/`, drives `mpt.training.Trainer` itself: it is the
method's other client.)
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from mpt.backbone_config import BackboneError, answers_through_mlm, backbone_layers, cache_root
from mpt.checkpoint import CheckpointError, checkpoint_config, read_checkpoint, verify_checkpoint_file
from mpt.config import MPTConfig
from mpt.data import RunData, few_shot, load_run_data

if TYPE_CHECKING:
    from mpt.backbones import Backbone
    from mpt.pretrained import TrainedPrompt

__all__ = [
    "Backbone",
    "BackboneError",
    "CheckpointError",
    "RunData",
    "TrainedPrompt",
    "answers_through_mlm",
    "backbone_layers",
    "cache_root",
    "export_trained_prompt",
    "few_shot",
    "load_backbone_for",
    "load_run_data",
    "read_checkpoint",
    "verify_checkpoint_file",
]

# the names that import torch and transformers, and the module each comes from: loaded when first asked for
_ON_FIRST_USE = {"Backbone": "mpt.backbones", "TrainedPrompt": "mpt.pretrained"}


def __getattr__(name: str) -> Any:
    if name in _ON_FIRST_USE:
        value = getattr(import_module(_ON_FIRST_USE[name]), name)
        globals()[name] = value  # once: later lookups do not come here
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_backbone_for(config: MPTConfig) -> Backbone:
    """The frozen backbone a run of `config` trains on (its layers cut, its MLM head when the config may use it)."""
    from mpt.backbones import load_backbone

    return load_backbone(config.backbone, config.num_layers, want_mlm=config.wants_mlm_head)


def export_trained_prompt(
    state_file: str | Path,
    directory: str | Path,
    training: dict[str, Any],
    backbone_for: Callable[[MPTConfig], Backbone],
) -> Path:
    """Write the selected epoch of the training checkpoint `state_file` as a trained-prompt directory: the run's
    config, its trainable weights and its backbone's fingerprint, with `training` (what the run reported);
    `backbone_for(config)` gives the backbone (a caller exporting many runs loads it once). CheckpointError when
    the checkpoint cannot be read."""
    from mpt.pretrained import TrainedPrompt

    state = read_checkpoint(state_file)
    prompt = TrainedPrompt.from_checkpoint(state, backbone_for(checkpoint_config(state)), training, device="cpu")
    return prompt.save_pretrained(directory)
