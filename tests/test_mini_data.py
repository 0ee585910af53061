"""The embedded mini multilingual NLI set (second edition): size, balance, alignment and quality.

The quality bar is the one its data card reports (`mpt/data/mini/README.md`, `python -m mpt.data.quality`):
no easier by hypothesis alone or by word overlap than XNLI, translations that find their own source.
"""

from __future__ import annotations

from collections import Counter

import pytest

from mpt.config import MINI_LANGUAGES, XNLI_LANGUAGES
from mpt.data import MINI_DIR, load_parallel, read_nli_file, read_parallel_file
from mpt.data.quality import (
    baseline_figures,
    cached,
    cached_probe_accuracy,
    cached_translation_figures,
    script_and_length_figures,
    words,
)

LANGUAGES = ["en", *MINI_LANGUAGES]
LOW_RESOURCE = ("sw", "hi", "ur", "th")  # retrieval floor 80% instead of 90%
# translated/English length in characters: the middle 90% of lines of each language lies in its band
# (Chinese writes a word in one or two characters; the others run close to English)
LENGTH_BANDS = {"zh": (0.15, 0.6)}
DEFAULT_LENGTH_BAND = (0.6, 2.0)


def _split(split, lang):
    return read_nli_file(MINI_DIR / f"{split}-{lang}.tsv")


def test_the_set_has_the_xnli_target_languages_and_mini_languages_follow_the_files():
    assert set(MINI_LANGUAGES) <= set(XNLI_LANGUAGES)
    assert set(MINI_LANGUAGES) == {p.stem.split("-", 1)[1] for p in MINI_DIR.glob("test-*.tsv")} - {"en"}
    assert len(MINI_LANGUAGES) >= 8


@pytest.mark.parametrize(
    "split, lang, minimum",
    [("train", "en", 600), *[("dev", lang, 150) for lang in LANGUAGES], *[("test", lang, 450) for lang in LANGUAGES]],
)
def test_sizes_balance_and_no_duplicates(split, lang, minimum):
    rows = _split(split, lang)
    counts = Counter(e.label for e in rows)
    assert len(rows) >= minimum
    assert counts[0] == counts[1] == counts[2] >= minimum // 3
    assert len({(e.premise, e.hypothesis) for e in rows}) == len(rows)
    assert all(e.premise.strip() and e.hypothesis.strip() for e in rows)


@pytest.mark.parametrize("split", ["train", "dev", "test"])
def test_each_premise_has_one_hypothesis_per_label_and_8_to_45_words(split):
    rows = _split(split, "en")
    groups = [rows[i : i + 3] for i in range(0, len(rows), 3)]
    assert all(len({e.premise for e in g}) == 1 and sorted(e.label for e in g) == [0, 1, 2] for g in groups)
    assert len({g[0].premise for g in groups}) == len(groups)  # no premise twice
    assert all(8 <= len(words(g[0].premise)) <= 45 for g in groups)
    # entailments are not copied out of their premise
    assert not [e for e in rows if e.label == 0 and e.hypothesis.lower().rstrip(".") in e.premise.lower()]


@pytest.mark.parametrize("split", ["dev", "test"])
def test_parallel_splits_line_up(split):
    english = _split(split, "en")
    for lang in MINI_LANGUAGES:
        translated = _split(split, lang)
        assert len(translated) == len(english), lang
        assert [e.label for e in translated] == [e.label for e in english], lang
        # a premise shared by consecutive English rows is shared by the translated rows too
        assert [a.premise == b.premise for a, b in zip(english, english[1:])] == [
            a.premise == b.premise for a, b in zip(translated, translated[1:])
        ], lang


def test_no_evaluation_sentence_leaks_into_training_or_the_parallel_corpus():
    train = {e.premise for e in _split("train", "en")} | {e.hypothesis for e in _split("train", "en")}
    parallel = {
        english for lang in MINI_LANGUAGES for english, _, _ in read_parallel_file(MINI_DIR / f"parallel-{lang}.tsv")
    }
    for split in ("dev", "test"):
        evaluation = {e.premise for e in _split(split, "en")} | {e.hypothesis for e in _split(split, "en")}
        assert not evaluation & train, split
        assert not evaluation & parallel, split
    assert not {e.premise for e in _split("dev", "en")} & {e.premise for e in _split("test", "en")}
    assert not {e.premise for e in _split("train", "en")} & parallel


def test_parallel_corpus_covers_every_language_with_the_same_english():
    english = None
    for lang in MINI_LANGUAGES:
        rows = read_parallel_file(MINI_DIR / f"parallel-{lang}.tsv")
        assert len(rows) >= 400 and all(target.strip() and target != source for source, target, _ in rows)
        english = english or [r[0] for r in rows]
        assert [r[0] for r in rows] == english, lang
    assert len(set(english)) == len(english)
    assert len(load_parallel("mini", list(MINI_LANGUAGES))) == len(english) * len(MINI_LANGUAGES)


def test_no_easier_by_hypothesis_alone_or_by_word_overlap_than_xnli():
    """XNLI English (600 train, 450 test rows): hypothesis-only 47% train -> test and 41% within test, overlap
    baseline 52%. The set must be no easier."""
    figures = baseline_figures()
    assert figures["hypothesis_only_train_to_test"] <= 0.45, figures
    assert figures["hypothesis_only_within_test_5fold"] <= 0.43, figures
    assert figures["overlap_train_to_test"] <= 0.50, figures


def test_every_translation_is_in_its_script_and_of_plausible_length():
    for lang, values in script_and_length_figures().items():
        assert values["lines_in_script"] == 1.0, (lang, values)  # no Latin-only line where another script belongs
        low, high = LENGTH_BANDS.get(lang, DEFAULT_LENGTH_BAND)
        assert low <= values["length_ratio_p5"] and values["length_ratio_p95"] <= high, (lang, values)


@pytest.mark.slow
def test_translations_retrieve_their_own_source_with_e5():
    figures = cached_translation_figures()  # embeds ~18.5k sentences, unless the cache has these files' figures
    assert set(figures) == set(MINI_LANGUAGES)
    for lang, values in figures.items():
        floor = 0.80 if lang in LOW_RESOURCE else 0.90
        assert min(values.values()) >= floor, (lang, values)


@pytest.mark.slow
def test_a_frozen_e5_probe_learns_the_task_clearly_above_chance():
    """The task is learnable but not trivial: a linear probe on frozen, mean-pooled e5-small pair embeddings,
    64 examples per class: 37.6% measured (data card), above chance (33.3%) by two standard errors of 450 rows
    and far below what overlap or word cues would give on an easy set."""
    accuracy = cached_probe_accuracy()  # the cache's, for the same files and code
    assert 0.36 <= accuracy < 0.60, accuracy


def test_backbone_figures_are_read_back_for_the_same_files_and_recomputed_when_any_changes(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "test-en.tsv").write_text("A man sleeps.\tHe rests.\t0\n", encoding="utf-8")
    (data / "parallel-de.tsv").write_text("A man sleeps.\tEin Mann schläft.\n", encoding="utf-8")
    calls = []

    def compute():
        calls.append(1)
        return {"de": {"dev": len(calls) / 3}}

    def figures(**params):  # a backbone named by a path: its name alone identifies it
        return cached("retrieval", data, compute, backbone="local/model", folder=tmp_path / "cache", **params)

    assert figures() == figures() == {"de": {"dev": 1 / 3}} and len(calls) == 1  # read back, exactly
    (data / "README.md").write_text("notes", encoding="utf-8")
    assert figures() == {"de": {"dev": 1 / 3}} and len(calls) == 1  # the data card is not data
    (data / "parallel-de.tsv").write_text("A man sleeps.\tEin Mann ruht.\n", encoding="utf-8")
    assert figures() == {"de": {"dev": 2 / 3}} and len(calls) == 2  # a data file changed: computed again
    (data / "dev-en.tsv").write_text("A man sleeps.\tHe rests.\t0\n", encoding="utf-8")
    assert figures() == {"de": {"dev": 3 / 3}} and len(calls) == 3  # a file added
    assert figures(seed=1) == {"de": {"dev": 4 / 3}} and figures(seed=1) == {"de": {"dev": 4 / 3}}
    assert figures() == {"de": {"dev": 3 / 3}} and len(calls) == 4  # each key keeps its own entry


def test_shipped_figures_are_read_first_and_only_for_their_own_key(tmp_path):
    """The figures the package ships (mpt/data/figures/) spare a fresh machine the encoding; an entry of other
    files (or versions) is never read back for these."""
    from mpt.data.figure_cache import cached_figures

    data = tmp_path / "train-en.tsv"
    data.write_text("A man sleeps.\tHe rests.\t0\n", encoding="utf-8")
    shipped, cache = tmp_path / "shipped", tmp_path / "cache"

    def figures(value, where=cache):
        return cached_figures("probe", lambda: value, [data], {"seed": 0}, where)

    assert figures(0.5, shipped) == 0.5  # an entry as `python -m mpt.data.quality --ship` writes it
    assert cached_figures("probe", lambda: 0.9, [data], {"seed": 0}, cache, shipped=shipped) == 0.5
    assert not cache.exists()  # read from the shipped folder: nothing computed or cached
    data.write_text("A man sleeps.\tHe sleeps.\t0\n", encoding="utf-8")
    assert cached_figures("probe", lambda: 0.9, [data], {"seed": 0}, cache, shipped=shipped) == 0.9
    assert cached_figures("probe", lambda: 0.7, [data], {"seed": 0}, cache, shipped=shipped) == 0.9  # now cached
