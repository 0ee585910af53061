"""What a study needs to know about a trial's inputs without importing torch: the bookkeeping keys of a trial's
config, how its run config is built, and the file its checkpoint keeps the training state in. (What a trial
reports is `trainable.metrics`.)"""

from __future__ import annotations

from typing import Any, Mapping

from mpt.config import MPTConfig

META_KEYS = ("trial_number", "reference")  # study bookkeeping in a trial's config, not MPTConfig fields
STATE_FILE = (
    "state.pt"  # in each Ray checkpoint folder: `mpt.checkpoint`'s file of the `Trainer` state (and its manifest)
)


def trial_config(base_config: MPTConfig, params: Mapping[str, Any]) -> MPTConfig:
    """The run config of a trial: the base config with the trial's searched values on top (ConfigError when
    they are not valid `MPTConfig` values)."""
    return base_config.replace(**{k: v for k, v in params.items() if k not in META_KEYS})
