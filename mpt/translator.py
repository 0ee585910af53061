"""The multilingual prompt translator: maps the source prompt p_S to a target prompt p_T."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class PerceptronBlock(nn.Module):
    """The paper's form: W_down ReLU(W_up p + b_up) + b_down, optionally residual."""

    def __init__(self, hidden_size: int, inner_size: int, residual: bool) -> None:
        super().__init__()
        self.up = nn.Linear(hidden_size, inner_size)
        self.down = nn.Linear(inner_size, hidden_size)
        self.residual = residual

    def forward(self, prompt: torch.Tensor) -> torch.Tensor:
        out = self.down(torch.relu(self.up(prompt)))
        return prompt + out if self.residual else out


class PerceptronStack(nn.Module):
    """`depth` blocks in sequence; depth 0 returns p_S unchanged (vanilla prompt transfer)."""

    def __init__(self, hidden_size: int, inner_size: int, depth: int, residual: bool = False) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*[PerceptronBlock(hidden_size, inner_size, residual) for _ in range(depth)])

    def forward(self, prompt: torch.Tensor) -> torch.Tensor:
        return self.blocks(prompt)


class PromptTranslator(nn.Module):
    """The model's translator: one `PerceptronStack` shared by all target languages, or one per language."""

    def __init__(
        self, hidden_size: int, inner_size: int, depth: int, residual: bool, mode: str, languages: Sequence[str]
    ) -> None:
        super().__init__()
        self.mode = mode
        keys = ["shared"] if mode == "shared" else list(languages)
        self.translators = nn.ModuleDict({k: PerceptronStack(hidden_size, inner_size, depth, residual) for k in keys})

    def forward(self, prompt: torch.Tensor, lang: str) -> torch.Tensor:
        key = "shared" if self.mode == "shared" else lang
        if key not in self.translators:
            raise KeyError(
                f"no translator for language '{lang}': per-language translators exist for {sorted(self.translators)}"
            )
        return self.translators[key](prompt)
