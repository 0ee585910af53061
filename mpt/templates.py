"""Premise/hypothesis pairs as token ids and padded batches, in the two pair encodings.

joint (`Templater`): one cloze sequence per pair, `<s> premise </s> hypothesis ? <mask> . </s>`; the model
inserts the prompt. siamese (`SiameseTemplater`): each sentence alone, `<s> {prefix}sentence </s>` (the prefix
is the encoder's own, e.g. e5's `query: `); a batch holds each distinct sentence of a language once and says
which rows are each pair's premise and hypothesis, so a premise shared by three hypotheses is encoded once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

TextIds = tuple[int, ...]  # one text's token ids
PairIds = tuple[TextIds, TextIds]  # a siamese pair: premise ids, hypothesis ids


@dataclass
class Batch:
    """Padded token ids of templated pairs, their `<mask>` positions, labels and languages."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    mask_positions: torch.Tensor
    labels: torch.Tensor | None
    langs: list[str]

    def to(self, device: torch.device) -> "Batch":
        return Batch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.mask_positions.to(device),
            None if self.labels is None else self.labels.to(device),
            self.langs,
        )


@dataclass
class TextBatch:
    """Padded token ids of single texts, each with the language whose prompt it gets, and its ids as a key."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    langs: list[str]
    keys: list[TextIds]

    def to(self, device: torch.device) -> "TextBatch":
        return TextBatch(self.input_ids.to(device), self.attention_mask.to(device), self.langs, self.keys)


@dataclass
class PairBatch:
    """Siamese pairs: their texts (each distinct (language, text) once), the text rows of each pair's premise
    (`first`) and hypothesis (`second`), labels and the pairs' languages."""

    texts: TextBatch
    first: torch.Tensor
    second: torch.Tensor
    labels: torch.Tensor | None
    langs: list[str]

    @property
    def input_ids(self) -> torch.Tensor:
        return self.texts.input_ids

    @property
    def attention_mask(self) -> torch.Tensor:
        return self.texts.attention_mask

    def to(self, device: torch.device) -> "PairBatch":
        return PairBatch(
            self.texts.to(device),
            self.first.to(device),
            self.second.to(device),
            None if self.labels is None else self.labels.to(device),
            self.langs,
        )


def _special_ids(tokenizer) -> tuple[int, int, int]:
    bos = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    eos = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    return bos, eos, tokenizer.pad_token_id


def _padded(sequences: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq)
        attention[row, : len(seq)] = 1
    return ids, attention


def _labels(labels: Sequence[int] | None) -> torch.Tensor | None:
    return None if labels is None else torch.tensor(list(labels), dtype=torch.long)


class Templater:
    """Tokenises premise/hypothesis pairs into the joint cloze template, once, as id lists."""

    pair_encoding = "joint"

    def __init__(self, tokenizer, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.bos, self.eos, self.pad = _special_ids(tokenizer)
        self.mask = tokenizer.mask_token_id
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
        ids, attention = _padded(sequences, self.pad)
        mask_positions = (ids == self.mask).long().argmax(dim=1)
        return Batch(ids, attention, mask_positions, _labels(labels), list(langs))


class SiameseTemplater:
    """Tokenises each sentence of a pair alone, `<s> {text_prefix}sentence </s>`, cut to max_length tokens."""

    pair_encoding = "siamese"

    def __init__(self, tokenizer, max_length: int, text_prefix: str = "") -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.text_prefix = text_prefix
        self.bos, self.eos, self.pad = _special_ids(tokenizer)

    def texts(self, texts: Sequence[str]) -> list[TextIds]:
        """Token ids of each text (each distinct string tokenised once)."""
        distinct = list(dict.fromkeys(texts))
        if not distinct:
            return []
        ids = self.tokenizer([self.text_prefix + text for text in distinct], add_special_tokens=False)["input_ids"]
        by_text = {text: (self.bos, *seq[: self.max_length - 2], self.eos) for text, seq in zip(distinct, ids)}
        return [by_text[text] for text in texts]

    def tokenize(self, premises: Sequence[str], hypotheses: Sequence[str]) -> list[PairIds]:
        """(premise ids, hypothesis ids) of each pair."""
        ids = self.texts([*premises, *hypotheses])
        return list(zip(ids[: len(premises)], ids[len(premises) :]))

    def collate_texts(self, texts: Sequence[TextIds], langs: Sequence[str]) -> TextBatch:
        ids, attention = _padded(texts, self.pad)
        return TextBatch(ids, attention, list(langs), [tuple(t) for t in texts])

    def collate(
        self, pairs: Sequence[PairIds], labels: Sequence[int] | None, langs: Sequence[str], dedup: bool = True
    ) -> PairBatch:
        """The pairs' texts, each distinct (language, text) once (`dedup=False`: every sentence of every pair,
        the baseline the dedup is measured against)."""
        rows: dict[object, int] = {}
        texts: list[TextIds] = []
        text_langs: list[str] = []
        first: list[int] = []
        second: list[int] = []
        for (premise, hypothesis), lang in zip(pairs, langs):
            for text, side in ((premise, first), (hypothesis, second)):
                key = (lang, text) if dedup else len(texts)
                if key not in rows:
                    rows[key] = len(texts)
                    texts.append(text)
                    text_langs.append(lang)
                side.append(rows[key])
        return PairBatch(
            self.collate_texts(texts, text_langs),
            torch.tensor(first, dtype=torch.long),
            torch.tensor(second, dtype=torch.long),
            _labels(labels),
            list(langs),
        )


def _truncate_longest_first(first: list[int], second: list[int], budget: int) -> tuple[list[int], list[int]]:
    first, second = list(first), list(second)
    while len(first) + len(second) > budget:
        if len(first) >= len(second):
            first.pop()
        else:
            second.pop()
    return first, second
