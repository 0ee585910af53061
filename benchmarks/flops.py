"""FLOP counting of the frozen backbone (benchmarks 2 and 3) and the matmul peak they are compared with."""

from __future__ import annotations

from typing import Sequence

import torch

from benchmarks.timing import timed

MATMUL_N = 2048  # the peak's matrix size; QUICK_MATMUL_N with --quick
QUICK_MATMUL_N = 1024


def encoder_flops(encoder_config, batch: int, seq: int) -> tuple[float, float]:
    """(matmul FLOPs of the linear layers, attention FLOPs) of one encoder forward over batch x seq tokens.

    Per layer and token: 2 * (4 H^2 + 2 H I) for the Q, K, V, output and the two FFN matmuls (bias adds,
    LayerNorm, GELU, softmax and the embedding lookup are not counted); per layer and sequence:
    4 * T^2 * H for QK^T and the attention-weighted sum of V.
    """
    hidden, inner = encoder_config.hidden_size, encoder_config.intermediate_size
    layers = encoder_config.num_hidden_layers
    linear = 2 * (4 * hidden * hidden + 2 * hidden * inner) * batch * seq * layers
    attention = 4 * seq * seq * hidden * batch * layers
    return float(linear), float(attention)


def forward_flops(encoder_config, batch: int, seq: int) -> float:
    linear, attention = encoder_flops(encoder_config, batch, seq)
    return linear + attention


def backward_flops(encoder_config, batch: int, seq: int) -> float:
    """Activation gradients only (the backbone is frozen: no weight gradients): dX = dY W^T costs what the
    forward matmul cost; attention needs the gradients of both operands of QK^T and of AV: 2x."""
    linear, attention = encoder_flops(encoder_config, batch, seq)
    return linear + 2 * attention


def plan_flops(trainer, plans: Sequence, with_alignment: bool) -> float:
    """Backbone FLOPs of these steps (`mpt.training.StepPlan`s): per step CE forward + backward and, with
    alignment, the teacher forward (no_grad) and the student forward + backward, each over its padded batch
    plus the prompt."""
    encoder_config, prompt = trainer.model.encoder.config, trainer.config.prompt_length
    total = 0.0
    for plan in plans:
        width = max(len(trainer.train_ids[i]) for i in plan.rows) + prompt
        rows = len(plan.rows)
        total += forward_flops(encoder_config, rows, width) + backward_flops(encoder_config, rows, width)
        if with_alignment and plan.pair_rows:
            pairs = len(plan.pair_rows)
            teacher = max(len(trainer.pair_source_ids[i]) for i in plan.pair_rows) + prompt
            student = max(len(trainer.pair_target_ids[i]) for i in plan.pair_rows) + prompt
            total += forward_flops(encoder_config, pairs, teacher)
            total += forward_flops(encoder_config, pairs, student) + backward_flops(encoder_config, pairs, student)
    return total


class MatmulPeak:
    """torch.matmul of two n x n fp32 matrices: the machine's practical peak at this thread count."""

    def __init__(self, n: int) -> None:
        generator = torch.Generator().manual_seed(0)
        self.n = n
        self.a = torch.randn(n, n, generator=generator)
        self.b = torch.randn(n, n, generator=generator)
        self.c = torch.empty(n, n)
        torch.matmul(self.a, self.b, out=self.c)

    def measure(self, repeats: int = 3) -> float:
        """FLOP/s of the fastest of `repeats` products (a peak is the best the hardware did)."""
        best = min(timed(lambda: torch.matmul(self.a, self.b, out=self.c)) for _ in range(repeats))
        return 2 * self.n**3 / best


def flop_notes(encoder_config=None) -> str:
    """RESULTS.md's explanation of the counting; with the counted encoder's config, its shape too."""
    text = """\
**FLOP counting** (benchmarks 2 and 3). Only the frozen backbone's matmuls are counted; embedding
lookups, bias adds, LayerNorm, GELU, softmax, the prompt, the translator, the linear head, the losses and
AdamW (together a small share of the arithmetic) are not. For an encoder with H hidden units, I FFN units
and N layers over a padded batch of B sequences of T positions (the prompt's L positions included):

- forward: N * (2 * (4 H^2 + 2 H I) * B * T + 4 * B * T^2 * H): Q, K, V, output and the two FFN
  projections, plus QK^T and the weighted sum of V;
- backward: only activation gradients (no weight gradients: the backbone is frozen, and the soft prompt
  sits at the input, so gradients flow through every layer): dX = dY W^T costs the forward matmul's
  FLOPs, and each attention product needs the gradients of both operands: N * (2 * (4 H^2 + 2 H I) * B * T
  + 8 * B * T^2 * H), about 1.0x the forward;
- a CE or PEFT step: forward + backward of its CE batch; a full MPT step adds the teacher forward (under
  no_grad) and the student forward + backward of the alignment batches: about 2.5x when all batches have
  the same size and length. The benchmark uses each step's actual padded shapes.

"""
    if encoder_config is not None:
        hidden, inner = encoder_config.hidden_size, encoder_config.intermediate_size
        text += (
            f"e5-small: H = {hidden}, I = {inner}, {encoder_config.num_hidden_layers} layers in this run "
            f"({(4 * hidden * hidden + 2 * hidden * inner) / 1e6:.2f} M matmul weights per layer). "
        )
    return text + (
        f"The matmul peak is the best of three n x n fp32 `torch.matmul` products (n = {MATMUL_N}; "
        f"{QUICK_MATMUL_N} with --quick), measured in every round next to the training steps, at the "
        "same thread count."
    )
