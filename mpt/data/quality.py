"""Quality figures for a parallel NLI set: translation retrieval with e5 and a hypothesis-only baseline.

    python -m mpt.data.quality            # prints the figures reported in mpt/data/mini/README.md
"""

from __future__ import annotations

from pathlib import Path

import torch

from mpt.data import MINI_DIR, read_nli_file, read_parallel_file


def sentence_embeddings(backbone, sentences: list[str], batch_size: int = 64) -> torch.Tensor:
    """Mean-pooled, L2-normalised embeddings (e5's `passage: ` convention)."""
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(sentences), batch_size):
            batch = backbone.tokenizer([f"passage: {s}" for s in sentences[start:start + batch_size]],
                                       padding=True, truncation=True, max_length=256, return_tensors="pt")
            hidden = backbone.encoder(**batch).last_hidden_state
            weights = batch["attention_mask"].unsqueeze(-1).float()
            chunks.append(torch.nn.functional.normalize((hidden * weights).sum(1) / weights.sum(1), dim=-1))
    return torch.cat(chunks)


def retrieval_accuracy(backbone, english: list[str], translated: list[str]) -> float:
    """Share of translated sentences whose nearest English sentence (cosine) is their own source."""
    unique = list(dict.fromkeys(zip(english, translated)))
    english_unique = list(dict.fromkeys(e for e, _ in unique))
    index = {e: i for i, e in enumerate(english_unique)}
    similarity = sentence_embeddings(backbone, [t for _, t in unique]) @ sentence_embeddings(backbone, english_unique).T
    hits = [similarity[row].argmax().item() == index[e] for row, (e, _) in enumerate(unique)]
    return sum(hits) / len(hits)


def translation_figures(backbone, directory: Path = MINI_DIR) -> dict[str, dict[str, float]]:
    """lang -> {dev, test, parallel} retrieval accuracy over premises and hypotheses of each file."""
    figures: dict[str, dict[str, float]] = {}
    for path in sorted(directory.glob("parallel-*.tsv")):
        lang = path.stem.split("-", 1)[1]
        rows = read_parallel_file(path)
        figures[lang] = {"parallel": retrieval_accuracy(backbone, [r[0] for r in rows], [r[1] for r in rows])}
        for split in ("dev", "test"):
            english, target = read_nli_file(directory / f"{split}-en.tsv"), read_nli_file(directory / f"{split}-{lang}.tsv")
            source = [e.premise for e in english] + [e.hypothesis for e in english]
            translated = [t.premise for t in target] + [t.hypothesis for t in target]
            figures[lang][split] = retrieval_accuracy(backbone, source, translated)
    return figures


def hypothesis_only_accuracy(directory: Path = MINI_DIR) -> float:
    """Bag-of-words logistic regression on hypotheses alone, trained on English train, tested on English test."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    train, test = read_nli_file(directory / "train-en.tsv"), read_nli_file(directory / "test-en.tsv")
    vectorizer = CountVectorizer(lowercase=True, ngram_range=(1, 1))
    features = vectorizer.fit_transform([e.hypothesis for e in train])
    classifier = LogisticRegression(max_iter=2000).fit(features, [e.label for e in train])
    predictions = classifier.predict(vectorizer.transform([e.hypothesis for e in test]))
    return sum(int(p == e.label) for p, e in zip(predictions, test)) / len(test)


if __name__ == "__main__":
    from mpt.backbones import load_backbone

    backbone = load_backbone("e5-small", want_mlm=False)
    for lang, values in translation_figures(backbone).items():
        print(lang, {k: round(100 * v, 1) for k, v in values.items()})
    print("hypothesis-only BoW logistic regression, English test:", round(100 * hypothesis_only_accuracy(), 1))
