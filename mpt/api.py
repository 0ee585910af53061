"""The surface of `mpt` that the study (`study/`) uses: data loading, backbones and their checks, training
checkpoints and their export as trained prompts.

Besides this module the study imports only `mpt.config` and `mpt.config_args` (the run's config, its flags and
files: no torch) and `mpt.data`'s `DataError`, so the method can change behind these names. This module imports
torch and transformers: the study imports it once its command line and stores are checked. (The trainable,
`trainable/`, drives `mpt.training.Trainer` itself: it is the method's other client.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from mpt.backbones import Backbone, BackboneError, answers_through_mlm, backbone_path, load_backbone
from mpt.checkpoint import CheckpointError, checkpoint_config, read_checkpoint
from mpt.config import MPTConfig
from mpt.data import few_shot
from mpt.pretrained import TrainedPrompt
from mpt.training import RunData, load_run_data

__all__ = ["Backbone", "BackboneError", "CheckpointError", "RunData", "TrainedPrompt", "answers_through_mlm",
           "backbone_layers",
           "export_trained_prompt", "few_shot", "load_backbone_for", "load_run_data", "read_checkpoint"]


def load_backbone_for(config: MPTConfig) -> Backbone:
    """The frozen backbone a run of `config` trains on (its layers cut, its MLM head when the config may use it)."""
    return load_backbone(config.backbone, config.num_layers, want_mlm=config.wants_mlm_head)


def backbone_layers(name: str) -> int | None:
    """The encoder layers of backbone `name`, read from its config without loading its weights (None when the
    config does not say); BackboneError, naming the cause, when it cannot be loaded."""
    from transformers import AutoConfig

    try:
        model_config = AutoConfig.from_pretrained(str(backbone_path(name)))
    except (OSError, ValueError) as err:
        raise BackboneError((str(err).strip().splitlines() or [type(err).__name__])[0]) from None
    return getattr(model_config, "num_hidden_layers", None)


def export_trained_prompt(state_file: str | Path, directory: str | Path, training: dict[str, Any],
                          backbone_for: Callable[[MPTConfig], Backbone]) -> Path:
    """Write the selected epoch of the training checkpoint `state_file` as a trained-prompt directory: the run's
    config, its trainable weights and its backbone's fingerprint, with `training` (what the run reported);
    `backbone_for(config)` gives the backbone (a caller exporting many runs loads it once). CheckpointError when
    the checkpoint cannot be read."""
    state = read_checkpoint(state_file)
    prompt = TrainedPrompt.from_checkpoint(state, backbone_for(checkpoint_config(state)), training, device="cpu")
    return prompt.save_pretrained(directory)
