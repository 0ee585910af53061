"""The prompted classifier: frozen backbone + soft prompt p_S + translator + answer head.

Template (token level): `<s> [P_1..P_L] premise </s> hypothesis ? <mask> . </s>` with the prompt after
`<s>` (`after_bos`) or before it (`prefix`, where HF PEFT's prompt tuning puts it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from mpt.backbones import Backbone
from mpt.config import MPTConfig
from mpt.translator import PromptTranslator

FIRST_ORDINARY_TOKEN = 4  # XLM-R ids 0-3 are <s>, <pad>, </s>, <unk>


class SoftPrompt(nn.Module):
    """L trainable vectors: embeddings of random vocabulary tokens (`vocab`) or Gaussian noise (`normal`)."""

    def __init__(self, length: int, embeddings: nn.Embedding, init: str, generator: torch.Generator,
                 vocab_size: int) -> None:
        super().__init__()
        table = embeddings.weight.detach()
        if init == "vocab":
            ids = torch.randint(FIRST_ORDINARY_TOKEN, vocab_size, (length,), generator=generator)
            start = table[ids].clone()
        else:  # normal, at the scale of the embedding table
            start = torch.randn(length, table.shape[1], generator=generator) * table.std()
        self.weight = nn.Parameter(start.float())

    def forward(self) -> torch.Tensor:
        return self.weight


class LinearHead(nn.Module):
    """3-way linear classifier over a pooled representation (for encoders without an MLM head)."""

    def __init__(self, hidden_size: int, pooling: str) -> None:
        super().__init__()
        self.pooling = pooling
        self.classifier = nn.Linear(hidden_size, 3)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor, mask_positions: torch.Tensor,
                bos_positions: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        if self.pooling == "mean":
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1)
        elif self.pooling == "mask":
            pooled = hidden[rows, mask_positions]
        else:  # cls: the <s> token
            pooled = hidden[rows, bos_positions]
        return self.classifier(pooled)


@dataclass
class Batch:
    """Padded token ids of templated pairs, their `<mask>` positions, labels and languages."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    mask_positions: torch.Tensor
    labels: torch.Tensor | None
    langs: list[str]

    def to(self, device: torch.device) -> "Batch":
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.mask_positions.to(device),
                     None if self.labels is None else self.labels.to(device), self.langs)


class Templater:
    """Tokenises premise/hypothesis pairs into the cloze template, once, as id lists."""

    def __init__(self, tokenizer, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.bos = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
        self.eos = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
        self.mask = tokenizer.mask_token_id
        self.pad = tokenizer.pad_token_id
        self.tail = tokenizer(".", add_special_tokens=False)["input_ids"]

    def tokenize(self, premises: Sequence[str], hypotheses: Sequence[str]) -> list[list[int]]:
        """Token ids of each pair in the template (without the prompt, which the model inserts)."""
        if not premises:
            return []
        premise_ids = self.tokenizer(list(premises), add_special_tokens=False)["input_ids"]
        hypothesis_ids = self.tokenizer([f"{h} ?" for h in hypotheses], add_special_tokens=False)["input_ids"]
        budget = self.max_length - 4 - len(self.tail)  # <s>, </s>, <mask>, </s>
        encoded = []
        for premise, hypothesis in zip(premise_ids, hypothesis_ids):
            premise, hypothesis = _truncate_longest_first(premise, hypothesis, budget)
            encoded.append([self.bos, *premise, self.eos, *hypothesis, self.mask, *self.tail, self.eos])
        return encoded

    def collate(self, sequences: Sequence[list[int]], labels: Sequence[int] | None, langs: Sequence[str]) -> Batch:
        width = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), width), self.pad, dtype=torch.long)
        attention = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, seq in enumerate(sequences):
            ids[row, :len(seq)] = torch.tensor(seq)
            attention[row, :len(seq)] = 1
        mask_positions = (ids == self.mask).long().argmax(dim=1)
        label_tensor = None if labels is None else torch.tensor(list(labels), dtype=torch.long)
        return Batch(ids, attention, mask_positions, label_tensor, list(langs))


def _truncate_longest_first(first: list[int], second: list[int], budget: int) -> tuple[list[int], list[int]]:
    first, second = list(first), list(second)
    while len(first) + len(second) > budget:
        if len(first) >= len(second):
            first.pop()
        else:
            second.pop()
    return first, second


class PromptedClassifier(nn.Module):
    """Answer logits over (entailment, neutral, contradiction) for templated pairs in any language.

    The source language uses p_S; every other language uses p_T = translator(p_S). Only the prompt, the
    translator and the linear head (when used) are trainable; the backbone is frozen.
    """

    def __init__(self, config: MPTConfig, backbone: Backbone, generator: torch.Generator) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.encoder = backbone.encoder
        self.head_kind = resolve_head(config.head, backbone)
        hidden = backbone.hidden_size
        max_positions = getattr(self.encoder.config, "max_position_embeddings", 514) - 2
        if config.max_length + config.prompt_length > max_positions:
            raise ValueError(f"max_length + prompt_length = {config.max_length + config.prompt_length} exceeds the "
                             f"{max_positions} positions of backbone '{backbone.name}': lower max_length")
        self.prompt = SoftPrompt(config.prompt_length, backbone.word_embeddings, config.prompt_init, generator,
                                 len(backbone.tokenizer))
        # Each part starts from its own seed, so that paired runs (one seed, different configurations) start
        # what they share alike: vanilla (no translator) and MPT get the same head, whatever the translator draws.
        self.translator = seeded(config.seed + 1, lambda: PromptTranslator(
            hidden, config.translator_hidden, config.translator_depth, config.translator_residual,
            config.translator_mode, config.target_languages))
        self.linear_head = (seeded(config.seed + 2, lambda: LinearHead(hidden, config.pooling))
                            if self.head_kind == "linear" else None)
        self.mlm_head = backbone.mlm_head if self.head_kind == "mlm" else None
        self._label_word_ids = {lang: label_word_ids(backbone.tokenizer, config.words_for(lang))
                                for lang in config.languages}

    def add_language(self, lang: str) -> None:
        """Answer in `lang` too, a language the run did not name (the shared translator serves any): its
        verbalizer words are `config.words_for(lang)`."""
        if lang not in self._label_word_ids:
            self._label_word_ids[lang] = label_word_ids(self.backbone.tokenizer, self.config.words_for(lang))

    def trainable_modules(self) -> dict[str, nn.Module]:
        modules = {"prompt": self.prompt, "translator": self.translator}
        if self.linear_head is not None:
            modules["head"] = self.linear_head
        return modules

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for module in self.trainable_modules().values() for p in module.parameters()]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {f"{name}.{key}": value.detach().clone()
                for name, module in self.trainable_modules().items()
                for key, value in module.state_dict().items()}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, module in self.trainable_modules().items():
            prefix = f"{name}."
            module.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})

    def train(self, mode: bool = True) -> "PromptedClassifier":
        super().train(mode)
        self.encoder.eval()  # frozen backbone: no dropout, ever
        if self.mlm_head is not None:
            self.mlm_head.eval()
        return self

    def prompt_for(self, lang: str) -> torch.Tensor:
        source = self.prompt()
        return source if lang == self.config.source_language else self.translator(source, lang)

    def prompts_for(self, langs: Sequence[str]) -> torch.Tensor:
        """[B, L, H] prompts, translating once per distinct language in the batch."""
        cache = {lang: self.prompt_for(lang) for lang in dict.fromkeys(langs)}
        return torch.stack([cache[lang] for lang in langs])

    def hidden_states(self, batch: Batch, prompts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Last hidden states of the frozen encoder with `prompts` [B, L, H] inserted, and their mask."""
        embeds = self.encoder.get_input_embeddings()(batch.input_ids)
        prompts = prompts.to(embeds.dtype)
        ones = torch.ones(prompts.shape[:2], dtype=batch.attention_mask.dtype, device=embeds.device)
        if self.config.prompt_position == "prefix":
            embeds = torch.cat([prompts, embeds], dim=1)
            attention = torch.cat([ones, batch.attention_mask], dim=1)
        else:
            embeds = torch.cat([embeds[:, :1], prompts, embeds[:, 1:]], dim=1)
            attention = torch.cat([batch.attention_mask[:, :1], ones, batch.attention_mask[:, 1:]], dim=1)
        return self.encoder(inputs_embeds=embeds, attention_mask=attention).last_hidden_state, attention

    def forward(self, batch: Batch, prompts: torch.Tensor | None = None) -> torch.Tensor:
        """Answer logits [B, 3]; prompts default to p_S / p_T by each example's language."""
        if prompts is None:
            prompts = self.prompts_for(batch.langs)
        hidden, attention = self.hidden_states(batch, prompts)
        length = prompts.shape[1]
        mask_positions = batch.mask_positions + length
        bos_positions = torch.full_like(mask_positions, length if self.config.prompt_position == "prefix" else 0)
        if self.linear_head is not None:
            return self.linear_head(hidden, attention, mask_positions, bos_positions)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        vocab_logits = self.mlm_head(hidden[rows, mask_positions])
        word_ids = torch.stack([self._label_word_ids[lang] for lang in batch.langs]).to(hidden.device)
        return vocab_logits.gather(1, word_ids)


def seeded(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    """`build()` under torch's global RNG seeded with `seed`, leaving the caller's RNG state as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def resolve_head(head: str, backbone: Backbone) -> str:
    if head == "auto":
        return "mlm" if backbone.mlm_head is not None else "linear"
    if head == "mlm" and backbone.mlm_head is None:
        raise ValueError(f"head='mlm' needs a backbone with an MLM head, and '{backbone.name}' has none: "
                         f"use head='linear' or 'auto'")
    return head


def label_word_ids(tokenizer, words: Sequence[str]) -> torch.Tensor:
    """The first sub-token of each word as it appears after a space (the verbalizer's answer tokens)."""
    ids = [tokenizer(f" {w}", add_special_tokens=False)["input_ids"] for w in words]
    ids = [seq[1] if len(seq) > 1 and tokenizer.convert_ids_to_tokens(seq[0]) == "▁" else seq[0] for seq in ids]
    if len(set(ids)) != len(ids):
        raise ValueError(f"label words {list(words)} share a first sub-token: choose words that differ at the start")
    return torch.tensor(ids, dtype=torch.long)
