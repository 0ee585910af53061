"""Where a trial trains: the device and torch threads follow what Ray assigned the trial.

Ray gives a trial `--gpus-per-trial` GPUs (a fraction shares one GPU with other trials) and sets the trial
process's CUDA_VISIBLE_DEVICES to their ids, so the first CUDA device the trial sees, `cuda:0`, is the first
GPU Ray assigned it. Hence:

- a trial with GPUs trains on `cuda:0` (device `auto` or `cuda[:N]`; an explicit `cpu` is kept);
- a trial with GPUs where torch has no CUDA (a CPU build of torch, no driver, or GPUs a test declared to a
  local Ray) trains on CPU, in fp32, and says so in one warning instead of failing;
- a trial without GPUs and device `auto` trains on CPU, even on a GPU machine: a GPU there belongs to the
  trials Ray gave it to;
- torch threads: the trial's CPUs (at least one).

Outside a Ray Tune trial (a test calling the trainable directly) the config is used as it is.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass

from mpt.config import MPTConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Assignment:
    """What Ray assigned one trial."""

    gpu_ids: tuple[str, ...]  # ray.get_gpu_ids(): the node's GPU ids, shared ones included
    cpus: float | None  # the trial's CPU resources (None: unknown)
    visible_devices: str | None  # CUDA_VISIBLE_DEVICES as Ray set it


def ray_assignment() -> Assignment | None:
    """This trial's assignment, None outside a Ray Tune trial."""
    import ray
    from ray import tune

    if not ray.is_initialized():
        return None
    with warnings.catch_warnings():  # outside a trial Ray warns and returns None
        warnings.simplefilter("ignore")
        resources = tune.get_context().get_trial_resources()
    if resources is None:
        return None
    return Assignment(
        gpu_ids=tuple(str(i) for i in ray.get_gpu_ids()),
        cpus=resources.required_resources.get("CPU"),
        visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
    )


def ray_node_id() -> str:
    """The id of the Ray node this process runs on ("" outside Ray)."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


def placed(
    config: MPTConfig, assignment: Assignment, cuda_available: bool, cpu_bf16: bool = False
) -> tuple[MPTConfig, str | None]:
    """The config with the device, precision and threads that follow `assignment`, and a warning when a trial
    given GPUs falls back to CPU (None otherwise); `cpu_bf16`: whether this CPU computes bf16 natively."""
    threads = max(1, int(assignment.cpus)) if assignment.cpus else config.num_threads
    config = config.replace(num_threads=threads)
    if not assignment.gpu_ids:
        return (config.replace(device="cpu") if config.device == "auto" else config), None
    if config.device == "cpu":
        return config, None
    if cuda_available:
        return config.replace(device="cuda:0"), None
    message = (
        f"Ray assigned this trial GPU {', '.join(assignment.gpu_ids)} (CUDA_VISIBLE_DEVICES="
        f"{assignment.visible_devices}), but torch has no CUDA device ({_no_cuda_reason()}): training on CPU"
        f" with {f'{threads} thread(s)' if threads else 'torch default threads'}"
    )
    precision = config.precision
    if precision == "bf16" and not cpu_bf16:  # emulated bf16 would be slower than fp32 there
        precision = "fp32"
        message += ", in fp32 (this CPU has no native bf16)"
    return config.replace(device="cpu", precision=precision), message


def place_trial(config: MPTConfig, trial_number: object = None) -> MPTConfig:
    """`placed` for the running trial (its config as it is outside a Ray Tune trial), logging the fallback."""
    assignment = ray_assignment()
    if assignment is None:
        return config
    import torch

    from mpt.precision import native_bf16

    config, warning = placed(config, assignment, torch.cuda.is_available(), native_bf16(torch.device("cpu")))
    if warning:
        logger.warning("trial %s: %s", trial_number, warning)
    else:
        logger.info(
            "trial %s: device %s, %s thread(s), GPU ids %s",
            trial_number,
            config.device,
            config.num_threads,
            list(assignment.gpu_ids),
        )
    return config


def _no_cuda_reason() -> str:
    import torch

    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    return "no CUDA driver or device is visible"
