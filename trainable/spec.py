"""What a study needs to know about the trainable without importing torch: the objectives, the
bookkeeping keys of a trial's config, the checkpoint file name and how a trial's config is built."""

from __future__ import annotations

from typing import Any, Mapping

from mpt.config import MPTConfig

OBJECTIVES = {
    "dev_avg": "average dev accuracy over all languages at the selected (best English dev) epoch",
    "dev_en": "English dev accuracy at the selected epoch (strict zero-shot protocol: no target-language dev)",
}
META_KEYS = ("trial_number", "reference")  # study bookkeeping in a trial's config, not MPTConfig fields
STATE_FILE = "state.pt"
AVERAGES = ("avg", "avg_target")  # `test_acc_avg`, `test_acc_avg_target`, `dev_acc_avg`: not languages
SELECTED_DEV_PREFIX = "selected_dev_acc_"  # `selected_dev_acc_<lang>`: dev accuracy at the selected epoch
RUNTIME_PREFIX = "runtime_"  # `runtime_device`, `runtime_precision`, `runtime_num_threads`: what the trial ran on
CORRECT_PREFIX = "test_correct_"  # `test_correct_<lang>`: "0110...", each test row's correctness in file order


def trained_all_epochs(metrics: Mapping[str, Any]) -> bool:
    """Whether a trial's last report is that of its last planned epoch (not stopped early, not interrupted)."""
    planned = metrics.get("planned_epochs")
    return planned is not None and int(metrics.get("epoch", 0) or 0) >= int(planned)


def per_language(metrics: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """A trial's `<prefix><lang>` metrics (prefix `test_acc_` or `dev_acc_`) by language, averages left out."""
    return {key[len(prefix):]: value for key, value in metrics.items()
            if key.startswith(prefix) and key[len(prefix):] not in AVERAGES}


def trial_config(base_config: Mapping[str, Any], params: Mapping[str, Any]) -> MPTConfig:
    """The run config of a trial: the base config with the trial's searched values on top."""
    overrides = {k: v for k, v in params.items() if k not in META_KEYS}
    return MPTConfig.from_dict({**base_config, **overrides})
