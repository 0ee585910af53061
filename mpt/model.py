"""The prompted classifier: frozen backbone + soft prompt p_S + translator + answer head.

Joint template (token level): `<s> [P_1..P_L] premise </s> hypothesis ? <mask> . </s>` with the prompt after
`<s>` (`after_bos`) or before it (`prefix`, where HF PEFT's prompt tuning puts it). Siamese: `<s> [P_1..P_L]
sentence </s>` for premise and hypothesis alike, each pooled; the head reads [u, v, |u - v|, u * v].
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from mpt.backbones import Backbone, InputConventions
from mpt.config import MPTConfig
from mpt.templates import Batch, PairBatch, SiameseTemplater, Templater, TextBatch
from mpt.translator import PromptTranslator

FIRST_ORDINARY_TOKEN = 4  # XLM-R ids 0-3 are <s>, <pad>, </s>, <unk>
POOL_PROMPT_POSITIONS = False  # siamese mean pooling covers the text's tokens only (measured: docs/defaults.md)


class SoftPrompt(nn.Module):
    """L trainable vectors: embeddings of random vocabulary tokens (`vocab`) or Gaussian noise (`normal`)."""

    def __init__(
        self, length: int, embeddings: nn.Embedding, init: str, generator: torch.Generator, vocab_size: int
    ) -> None:
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
    """3-way linear classifier over a pooled representation (for encoders without an MLM head); with
    `pair_features`, over the siamese pair features [u, v, |u - v|, u * v] of two pooled sentences."""

    def __init__(self, hidden_size: int, pooling: str, pair_features: bool = False) -> None:
        super().__init__()
        self.pooling = pooling
        self.classifier = nn.Linear(hidden_size * (4 if pair_features else 1), 3)

    def pool(
        self,
        hidden: torch.Tensor,
        attention_mask: torch.Tensor,
        mask_positions: torch.Tensor,
        bos_positions: torch.Tensor,
    ) -> torch.Tensor:
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        if self.pooling == "mean":
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * weights).sum(1) / weights.sum(1)
        if self.pooling == "mask":
            return hidden[rows, mask_positions]
        return hidden[rows, bos_positions]  # cls: the <s> token

    def forward(
        self,
        hidden: torch.Tensor,
        attention_mask: torch.Tensor,
        mask_positions: torch.Tensor,
        bos_positions: torch.Tensor,
    ) -> torch.Tensor:
        return self.classifier(self.pool(hidden, attention_mask, mask_positions, bos_positions))

    def classify_pair(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.cat([u, v, (u - v).abs(), u * v], dim=-1))


class PromptedClassifier(nn.Module):
    """Answer logits over (entailment, neutral, contradiction) for templated pairs in any language.

    The source language uses p_S; every other language uses p_T = translator(p_S). Only the prompt, the
    translator and the linear head (when used) are trainable; the backbone is frozen. In the joint encoding a
    pair is one sequence; in the siamese one each sentence gets the pair's prompt and is pooled alone (with the
    backbone's input conventions, `conventions` when given, as a saved prompt records them).
    """

    def __init__(
        self,
        config: MPTConfig,
        backbone: Backbone,
        generator: torch.Generator,
        conventions: InputConventions | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.encoder = backbone.encoder
        self.head_kind = resolve_head(config.head, backbone)
        self.pair_encoding = resolve_pair_encoding(config.pair_encoding, backbone)
        check_combination(self.head_kind, self.pair_encoding, config, backbone)
        siamese = self.pair_encoding == "siamese"
        # what the siamese encoding applies to each text; the joint template is no text of the encoder's own
        self.conventions = (conventions or backbone.conventions) if siamese else InputConventions()
        self.pool_prompt_positions = POOL_PROMPT_POSITIONS
        hidden = backbone.hidden_size
        max_positions = getattr(self.encoder.config, "max_position_embeddings", 514) - 2
        if config.max_length + config.prompt_length > max_positions:
            raise ValueError(
                f"max_length + prompt_length = {config.max_length + config.prompt_length} exceeds the "
                f"{max_positions} positions of backbone '{backbone.name}': lower max_length"
            )
        self.prompt = SoftPrompt(
            config.prompt_length, backbone.word_embeddings, config.prompt_init, generator, len(backbone.tokenizer)
        )
        # Each part starts from its own seed, so that paired runs (one seed, different configurations) start
        # what they share alike: vanilla (no translator) and MPT get the same head, whatever the translator draws.
        self.translator = seeded(
            config.seed + 1,
            lambda: PromptTranslator(
                hidden,
                config.translator_hidden,
                config.translator_depth,
                config.translator_residual,
                config.translator_mode,
                config.target_languages,
            ),
        )
        self.linear_head = (
            seeded(config.seed + 2, lambda: LinearHead(hidden, config.pooling, pair_features=siamese))
            if self.head_kind == "linear"
            else None
        )
        self.mlm_head = backbone.mlm_head if self.head_kind == "mlm" else None
        self._label_word_ids = {
            lang: label_word_ids(backbone.tokenizer, config.words_for(lang)) for lang in config.languages
        }
        # Nothing before the head trains without a prompt: the pooled features of a text never change, so they
        # are computed once (keyed by its ids and train/eval mode, whose attention kernels differ in bf16).
        self.features_frozen = config.prompt_length == 0 and self.head_kind == "linear"
        self._feature_cache: dict[tuple[bool, tuple[int, ...]], torch.Tensor] = {}

    def templater(self) -> Templater | SiameseTemplater:
        """The templater of this model's pair encoding."""
        if self.pair_encoding == "siamese":
            return SiameseTemplater(self.backbone.tokenizer, self.config.max_length, self.conventions.text_prefix)
        return Templater(self.backbone.tokenizer, self.config.max_length)

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
        return {
            f"{name}.{key}": value.detach().clone()
            for name, module in self.trainable_modules().items()
            for key, value in module.state_dict().items()
        }

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, module in self.trainable_modules().items():
            prefix = f"{name}."
            module.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})

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

    def hidden_states(
        self, batch: Batch | TextBatch | PairBatch, prompts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
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

    def forward(self, batch: Batch | PairBatch, prompts: torch.Tensor | None = None) -> torch.Tensor:
        """Answer logits [B, 3]; prompts default to p_S / p_T by each example's language."""
        if isinstance(batch, PairBatch):
            features = self.text_features(batch.texts)
            return self.linear_head.classify_pair(features[batch.first], features[batch.second])
        if self.linear_head is not None:
            keys = (
                [tuple(row[mask].tolist()) for row, mask in zip(batch.input_ids, batch.attention_mask.bool())]
                if self.features_frozen and prompts is None
                else None
            )
            pooled = self._cached(keys, lambda rows: self._pooled_pairs(_rows_of(batch, rows), prompts))
            return self.linear_head.classifier(pooled)
        prompts = self.prompts_for(batch.langs) if prompts is None else prompts
        hidden, _ = self.hidden_states(batch, prompts)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        vocab_logits = self.mlm_head(hidden[rows, batch.mask_positions + prompts.shape[1]])
        word_ids = torch.stack([self._label_word_ids[lang] for lang in batch.langs]).to(hidden.device)
        return vocab_logits.gather(1, word_ids)

    def text_features(self, texts: TextBatch) -> torch.Tensor:
        """[T, H] pooled features of single texts, each with its language's prompt (siamese)."""
        return self._cached(
            texts.keys if self.features_frozen else None, lambda rows: self._pooled_texts(_rows_of(texts, rows))
        )

    def _pooled_texts(self, texts: TextBatch) -> torch.Tensor:
        length = self.config.prompt_length
        hidden, attention = self.hidden_states(texts, self.prompts_for(texts.langs))
        prefix = self.config.prompt_position == "prefix"
        if not self.pool_prompt_positions:  # the text's own tokens only
            attention = attention.clone()
            attention[:, slice(0, length) if prefix else slice(1, 1 + length)] = 0
        bos = torch.full((hidden.shape[0],), length if prefix else 0, dtype=torch.long, device=hidden.device)
        pooled = self.linear_head.pool(hidden, attention, bos, bos)
        if self.conventions.normalize:
            pooled = nn.functional.normalize(pooled.float(), dim=-1)
        return pooled

    def _pooled_pairs(self, batch: Batch, prompts: torch.Tensor | None) -> torch.Tensor:
        prompts = self.prompts_for(batch.langs) if prompts is None else prompts
        length = prompts.shape[1]
        hidden, attention = self.hidden_states(batch, prompts)
        mask_positions = batch.mask_positions + length
        bos = torch.full_like(mask_positions, length if self.config.prompt_position == "prefix" else 0)
        return self.linear_head.pool(hidden, attention, mask_positions, bos)

    def _cached(self, keys: list[tuple[int, ...]] | None, compute: Callable[[list[int] | None], torch.Tensor]):
        """compute(None) when `keys` is None; else the features of each key, computing (compute(rows)) only the
        rows whose key is not cached yet."""
        if keys is None:
            return compute(None)
        keys = [(self.training, key) for key in keys]
        missing = list({key: row for row, key in enumerate(keys) if key not in self._feature_cache}.values())
        if missing:
            for row, value in zip(missing, compute(missing)):
                self._feature_cache[keys[row]] = value.detach()
        return torch.stack([self._feature_cache[key] for key in keys])


def _rows_of(batch: Batch | TextBatch, rows: list[int] | None) -> Batch | TextBatch:
    """The batch, or the given rows of it, cut to their longest sequence."""
    if rows is None:
        return batch
    index = torch.tensor(rows, device=batch.input_ids.device)
    attention = batch.attention_mask[index]
    width = int(attention.sum(1).max())
    langs = [batch.langs[i] for i in rows]
    if isinstance(batch, TextBatch):
        return TextBatch(batch.input_ids[index, :width], attention[:, :width], langs, [batch.keys[i] for i in rows])
    return Batch(batch.input_ids[index, :width], attention[:, :width], batch.mask_positions[index], None, langs)


def seeded(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    """`build()` under torch's global RNG seeded with `seed`, leaving the caller's RNG state as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def resolve_pair_encoding(pair_encoding: str, backbone: Backbone) -> str:
    """`auto`: siamese for a backbone without an MLM head (a sentence encoder such as e5), joint otherwise."""
    if pair_encoding == "auto":
        return "joint" if backbone.has_mlm_head else "siamese"
    return pair_encoding


def check_combination(head_kind: str, pair_encoding: str, config: MPTConfig, backbone: Backbone) -> None:
    """Refuse what the resolved head and pair encoding cannot do together (the config refuses what it can see)."""
    if pair_encoding == "siamese" and head_kind == "mlm":
        raise ValueError(
            f"pair_encoding='{config.pair_encoding}' resolved to siamese, but head='{config.head}' "
            f"resolved to the MLM verbalizer of '{backbone.name}', which reads one cloze sequence: set "
            f"head=linear for siamese, or pair_encoding=joint"
        )
    if pair_encoding == "siamese" and config.pooling == "mask":
        raise ValueError(
            f"pooling='mask' reads the <mask> token of the joint template, but pair_encoding="
            f"'{config.pair_encoding}' resolved to siamese on '{backbone.name}': set pooling=mean or "
            f"cls, or pair_encoding=joint"
        )
    if config.prompt_length == 0 and head_kind == "mlm":
        raise ValueError(
            f"prompt_length=0 leaves the MLM verbalizer of '{backbone.name}' nothing to train (head="
            f"'{config.head}' resolved to mlm): set head=linear for the frozen probe, or prompt_length "
            f">= 1"
        )


def resolve_head(head: str, backbone: Backbone) -> str:
    if head == "auto":
        return "mlm" if backbone.mlm_head is not None else "linear"
    if head == "mlm" and backbone.mlm_head is None:
        raise ValueError(
            f"head='mlm' needs a backbone with an MLM head, and '{backbone.name}' has none: use head='linear' or 'auto'"
        )
    return head


def label_word_ids(tokenizer, words: Sequence[str]) -> torch.Tensor:
    """The first sub-token of each word as it appears after a space (the verbalizer's answer tokens)."""
    ids = [tokenizer(f" {w}", add_special_tokens=False)["input_ids"] for w in words]
    ids = [seq[1] if len(seq) > 1 and tokenizer.convert_ids_to_tokens(seq[0]) == "▁" else seq[0] for seq in ids]
    if len(set(ids)) != len(ids):
        raise ValueError(f"label words {list(words)} share a first sub-token: choose words that differ at the start")
    return torch.tensor(ids, dtype=torch.long)
