"""Loaders for local XNLI-format files, the hub layout (offline), parallel corpora, and the sampler."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mpt.data import DataError, few_shot, load_nli, load_parallel, read_nli_file
from tests.conftest import ROWS, write_nli


def test_tsv_and_jsonl_with_words_or_numbers(tmp_path):
    tsv = write_nli(tmp_path / "test-en.tsv")
    numbers = {"entailment": 0, "neutral": 1, "contradiction": 2}
    (tmp_path / "test-fr.jsonl").write_text(
        "".join(json.dumps({"premise": p, "hypothesis": h, "label": numbers[label]}) + "\n" for p, h, label in ROWS)
    )
    from_tsv = read_nli_file(tsv)
    from_jsonl = load_nli(str(tmp_path), "test", "fr")
    assert [e.label for e in from_tsv] == [0, 1, 2] * 3
    assert [(e.premise, e.hypothesis, e.label) for e in from_jsonl] == [
        (e.premise, e.hypothesis, e.label) for e in from_tsv
    ]
    assert len(load_nli(str(tmp_path), "test", "en", limit=4)) == 4


def test_xtreme_contradictory_label_is_accepted(tmp_path):
    path = tmp_path / "dev-en.tsv"
    path.write_text("A b c.\tD e.\tcontradictory\n")
    assert read_nli_file(path)[0].label == 2


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("only a premise\tand hypothesis\n", "line 1: 2 tab-separated field(s), expected 3"),
        ("p\th\tentailment\np\th\tmaybe\n", "line 2: unknown label 'maybe'"),
        ("", "is empty"),
        ("p\t\tentailment\n", "line 1: empty ['hypothesis']"),
    ],
)
def test_bad_tsv_names_file_line_and_fix(tmp_path, content, fragment):
    path = tmp_path / "train-en.tsv"
    path.write_text(content)
    with pytest.raises(DataError) as err:
        read_nli_file(path)
    assert str(path) in str(err.value) and fragment in str(err.value)


def test_jsonl_missing_column(tmp_path):
    path = tmp_path / "dev-en.jsonl"
    path.write_text(json.dumps({"premise": "p", "label": 0}) + "\n")
    with pytest.raises(DataError, match=r"line 1: missing column\(s\) \['hypothesis'\]"):
        read_nli_file(path)


def test_missing_file_and_language(tmp_path, nli_dir):
    with pytest.raises(DataError, match="does not exist"):
        read_nli_file(tmp_path / "nope.tsv")
    with pytest.raises(DataError, match="the test split of 'zh' is not in .*test-zh.tsv or test-zh.jsonl"):
        load_nli(str(nli_dir), "test", "zh")
    with pytest.raises(DataError, match="neither 'mini', 'xnli' nor an existing directory"):
        load_nli(str(tmp_path / "missing-dir"), "test", "en")


def test_parallel_pairs_keep_meaning_on_both_sides(nli_dir):
    pairs = load_parallel(str(nli_dir), ["de"])
    assert len(pairs) == 3 and {p.lang for p in pairs} == {"de"}
    for pair in pairs:
        assert pair.target_premise == f"[de] {pair.premise}" and pair.target_hypothesis == f"[de] {pair.hypothesis}"
    with pytest.raises(DataError, match="parallel corpus of 'fr' is not in"):
        load_parallel(str(nli_dir), ["de", "fr"])


def test_a_run_loads_the_parallel_corpus_when_it_aligns_or_when_asked(nli_dir):
    """A study's trials share one load: it asks for the corpus explicitly, whatever its base config's weight."""
    from mpt.config import MPTConfig
    from mpt.data import load_run_data

    config = MPTConfig(data=str(nli_dir), parallel=str(nli_dir), target_languages=["de"], alignment_weight=0.0)
    assert load_run_data(config).parallel == []
    assert len(load_run_data(config, parallel=True).parallel) == 3
    assert len(load_run_data(config.replace(alignment_weight=0.5)).parallel) == 3
    assert load_run_data(config.replace(alignment_weight=0.5), parallel=False).parallel == []


def test_parallel_file_with_lang_column_and_unpaired_line(tmp_path):
    good = tmp_path / "corpus.tsv"
    good.write_text("Hello.\tHallo.\tde\nGood night.\tBonne nuit.\tfr\nThanks.\tDanke.\tde\n")
    assert sorted(p.lang for p in load_parallel(str(good), ["de", "fr"])) == ["de", "de", "fr"]
    with pytest.raises(DataError, match="no sentences for language"):
        load_parallel(str(good), ["zh"])
    bad = tmp_path / "parallel-de.tsv"
    bad.write_text("Hello.\tHallo.\nGood night.\n")
    with pytest.raises(DataError, match=r"parallel-de.tsv, line 2: 1 tab-separated field\(s\), expected 2"):
        load_parallel(str(bad), ["de"])
    jsonl = tmp_path / "parallel.jsonl"
    jsonl.write_text(json.dumps({"en": "Hello.", "lang": "de"}) + "\n")
    with pytest.raises(DataError, match=r"missing column\(s\) \['target'\]"):
        load_parallel(str(jsonl), ["de"])


def test_few_shot_is_balanced_and_deterministic(nli_dir):
    pool = load_nli(str(nli_dir), "train", "en")
    first, again, other = few_shot(pool, 2, seed=3), few_shot(pool, 2, seed=3), few_shot(pool, 2, seed=4)
    assert sorted(e.label for e in first) == [0, 0, 1, 1, 2, 2]
    assert first == again and first != other
    with pytest.raises(DataError, match="lower shots_per_class to at most 9"):
        few_shot(pool, 10, seed=0)


def test_few_shot_samples_are_nested_across_shot_counts_for_a_seed():
    from mpt.data import load_nli

    pool = load_nli("mini", "train", "en")
    for seed in (0, 1, 7):
        samples = [set(few_shot(pool, k, seed)) for k in (4, 16, 64)]
        assert samples[0] < samples[1] < samples[2]
    assert set(few_shot(pool, 16, 0)) != set(few_shot(pool, 16, 1))


def _write_hub_layout(root: Path) -> None:
    """A local copy of facebook/xnli in the hub's layout: one parquet folder per language config."""
    import pandas as pd

    configs = []
    for lang in ("en", "de"):
        for split in ("train", "validation", "test"):
            # each split's rows say which split they are, so a test sees which split was read
            rows = [
                (
                    f"{p} ({split})" if lang == "en" else f"[de] {p} ({split})",
                    h,
                    ["entailment", "neutral", "contradiction"].index(label),
                )
                for p, h, label in ROWS
            ]
            (root / lang).mkdir(parents=True, exist_ok=True)
            pd.DataFrame(rows, columns=["premise", "hypothesis", "label"]).to_parquet(
                root / lang / f"{split}-00000-of-00001.parquet"
            )
        configs.append(
            f"- config_name: {lang}\n  data_files:\n"
            + "".join(f"  - split: {s}\n    path: {lang}/{s}-*\n" for s in ("train", "validation", "test"))
        )
    (root / "README.md").write_text("---\nconfigs:\n" + "".join(configs) + "---\n")


def test_xnli_hub_code_on_a_local_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    repo = tmp_path / "xnli"
    _write_hub_layout(repo)
    dev = load_nli("xnli", "dev", "de", xnli_repo=str(repo))
    assert len(dev) == 9 and dev[0].premise.startswith("[de]") and [e.label for e in dev[:3]] == [0, 1, 2]
    pairs = load_parallel("xnli", ["de"], xnli_repo=str(repo))
    assert len(pairs) == 9 and pairs[0].target_premise == f"[de] {pairs[0].premise}"
    # the alignment corpus never reads the splits that select (validation) and rank (test) models
    assert all(p.premise.endswith("(train)") and p.target_premise.endswith("(train)") for p in pairs)
    with pytest.raises(DataError, match="no language 'zh'"):
        load_nli("xnli", "test", "zh", xnli_repo=str(repo))


def test_xnli_parallel_rows_that_do_not_pair_up_are_refused(tmp_path, monkeypatch):
    import datasets
    import pandas as pd

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    # datasets reads its cache folder at import: a fresh one, so no earlier test's copy answers for this one
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    repo = tmp_path / "xnli"
    _write_hub_layout(repo)
    train = repo / "de" / "train-00000-of-00001.parquet"
    pd.read_parquet(train).iloc[1:].to_parquet(train)  # one translated row lost: rows no longer pair up
    with pytest.raises(DataError, match="do not pair up with 'en'"):
        load_parallel("xnli", ["de"], xnli_repo=str(repo))
