"""Answer logits for many pairs of one language, in evaluation batches: what training's dev and test scores and
a saved prompt's predictions both go through, so they batch alike and agree exactly.

joint: the pairs, length-sorted, `batch_size` at a time (dynamic padding). siamese: each distinct sentence of the
pairs encoded once (a premise with three hypotheses once, not three times), length-sorted, `batch_size` texts at
a time; then the head scores every pair from the pooled sentences.
"""

from __future__ import annotations

from typing import Sequence

import torch

from mpt.model import PromptedClassifier
from mpt.precision import autocast


@torch.inference_mode()
def answer_logits(
    model: PromptedClassifier,
    templater,
    items: Sequence,
    lang: str,
    batch_size: int,
    precision: str,
    device: torch.device,
) -> torch.Tensor:
    """[N, 3] float32 logits of the tokenised pairs `items` (`templater.tokenize`) in `lang`, in input order."""
    if not items:
        return torch.zeros((0, 3), dtype=torch.float32)
    was_training = model.training
    model.eval()
    try:
        if model.pair_encoding == "siamese":
            return _siamese(model, templater, items, lang, batch_size, precision, device)
        return _joint(model, templater, items, lang, batch_size, precision, device)
    finally:
        model.train(was_training)


def _joint(model, templater, items, lang, batch_size, precision, device) -> torch.Tensor:
    logits = torch.zeros((len(items), 3), dtype=torch.float32)
    order = sorted(range(len(items)), key=lambda i: len(items[i]))
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = templater.collate([items[i] for i in rows], None, [lang] * len(rows)).to(device)
        with autocast(precision, device):
            logits[rows] = model(batch).float().cpu()
    return logits


def _siamese(model, templater, items, lang, batch_size, precision, device) -> torch.Tensor:
    texts = list(dict.fromkeys(text for pair in items for text in pair))
    row_of = {text: row for row, text in enumerate(texts)}
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    features: list[torch.Tensor | None] = [None] * len(texts)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = templater.collate_texts([texts[i] for i in rows], [lang] * len(rows)).to(device)
        with autocast(precision, device):
            for row, value in zip(rows, model.text_features(batch)):
                features[row] = value
    pooled = torch.stack(features)
    first = torch.tensor([row_of[premise] for premise, _ in items], device=pooled.device)
    second = torch.tensor([row_of[hypothesis] for _, hypothesis in items], device=pooled.device)
    with autocast(precision, device):
        return model.linear_head.classify_pair(pooled[first], pooled[second]).float().cpu()
