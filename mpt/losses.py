"""The joint objective: cross-entropy on few-shot source data plus KL alignment on parallel data."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), labels)


def alignment_loss(source_logits: torch.Tensor, target_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(P_src || P_tgt) over the answer distributions at `temperature`, averaged over the batch.

    Scaled by temperature**2 so that its gradient keeps the same magnitude whatever the temperature.
    """
    log_source = F.log_softmax(source_logits.float() / temperature, dim=-1)
    log_target = F.log_softmax(target_logits.float() / temperature, dim=-1)
    return F.kl_div(log_target, log_source, log_target=True, reduction="batchmean") * temperature**2


def joint_loss(ce: torch.Tensor, kl: torch.Tensor, alignment_weight: float) -> torch.Tensor:
    """(1 - w) * CE + w * KL."""
    return (1.0 - alignment_weight) * ce + alignment_weight * kl
