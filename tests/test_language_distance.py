"""Language distances from URIEL: computed once per lang2vec version, and computing them leaves the interpreter as
it was."""

from __future__ import annotations

import sys

import pytest

from study import language_distance
from study.language_distance import distance_from


@pytest.fixture
def empty_cache(monkeypatch, tmp_path):
    """A cache folder without URIEL's vectors, and no distances kept in the process: lang2vec is read again."""
    monkeypatch.setenv("MPT_STUDY_CACHE", str(tmp_path / "cache"))
    language_distance._distances.cache_clear()
    yield tmp_path / "cache"
    language_distance._distances.cache_clear()


def test_distances_leave_pytests_syspath_prepend_working(empty_cache, monkeypatch, tmp_path):
    """lang2vec 1.1.2 imports `pkg_resources`; a stand-in for it left in `sys.modules` made pytest's
    `syspath_prepend` (which calls `pkg_resources.fixup_namespace_packages` when that module is loaded) fail in
    every later test of the session."""
    distances = distance_from("en", ["de", "sw"])
    assert 0 < distances["de"] < distances["sw"] < 1  # lang2vec's data files were found
    monkeypatch.syspath_prepend(str(tmp_path))
    assert sys.path[0] == str(tmp_path)


def test_distances_are_read_back_from_the_cache_without_lang2vec(empty_cache, monkeypatch):
    computed = distance_from("en", ["de", "fr", "sw", "zh"])
    assert list(empty_cache.glob("uriel/syntax_knn-lang2vec-*.json"))
    language_distance._distances.cache_clear()

    def no_lang2vec():
        raise AssertionError("lang2vec imported although the cache has every vector")

    monkeypatch.setattr(language_distance, "_lang2vec", no_lang2vec)
    assert distance_from("en", ["de", "fr", "sw", "zh"]) == computed


def test_a_code_uriel_does_not_know_is_left_out_and_the_others_kept(empty_cache):
    distances = distance_from("en", ["de", "qqq"])
    assert set(distances) == {"de"}
    (cached,) = empty_cache.glob("uriel/*.json")
    (empty_cache / "uriel" / cached.name).write_text('{"eng": [0.0', encoding="utf-8")  # cut short: read again
    language_distance._distances.cache_clear()
    assert distance_from("en", ["de", "qqq"]) == distances
