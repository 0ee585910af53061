"""How far each language is from English, from the URIEL typological database (PyPI `lang2vec`, offline).

The distance is the cosine distance between the languages' `syntax_knn` vectors: URIEL's syntactic features
(word order, agreement, ...; 103 of them) with the gaps of the WALS-style sources filled by k-nearest-neighbour
prediction, so every XNLI language has a full vector. It is the "syntactic distance" of Littell et al. (2017,
the paper that introduced URIEL and lang2vec). Syntax, not phonology or inventory, because MPT's translator
acts on a prompt that conditions how the encoder reads the sentence pair: what differs across languages there
is structure, not sounds. Measured with lang2vec 1.1.2: de 0.10, bg 0.14, es 0.18, fr 0.19, ru 0.19, el 0.22,
zh 0.29, vi 0.34, ar 0.36, th 0.36, hi 0.38, ur 0.38, tr 0.49, sw 0.53.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import sys
import types
from typing import Sequence

FEATURE_SET = "syntax_knn"
# ISO 639-1 (what XNLI and the mini set use) -> the ISO 639-3 code URIEL knows the language by
ISO3 = {
    "en": "eng",
    "ar": "arb",
    "bg": "bul",
    "de": "deu",
    "el": "ell",
    "es": "spa",
    "fr": "fra",
    "hi": "hin",
    "ru": "rus",
    "sw": "swh",
    "th": "tha",
    "tr": "tur",
    "ur": "urd",
    "vi": "vie",
    "zh": "zho",
}


def _lang2vec():
    """lang2vec's module. Version 1.1.2 finds its data files with `pkg_resources`, which setuptools 81+ no
    longer ships: without it, a stand-in resolves the same files with importlib.resources. The stand-in is in
    `sys.modules` only while lang2vec imports (its module keeps its own reference): left there, it would tell
    other code that the real `pkg_resources` is loaded (pytest's `syspath_prepend` then imports
    `fixup_namespace_packages` from it and fails)."""
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        shim = types.ModuleType("pkg_resources")
        shim.resource_filename = lambda package, name: str(importlib.resources.files(package.split(".")[0]) / name)
        sys.modules["pkg_resources"] = shim
        try:
            import lang2vec.lang2vec as l2v
        finally:
            if sys.modules.get("pkg_resources") is shim:
                del sys.modules["pkg_resources"]
        return l2v
    import lang2vec.lang2vec as l2v

    return l2v


def _uriel_vectors(codes: Sequence[str]) -> dict[str, list[float] | None]:
    """Each ISO 639-3 code's URIEL vector (None: URIEL does not know it), read from a file in the cache folder
    ($MPT_STUDY_CACHE/uriel), keyed to lang2vec's version: importing lang2vec reads its 6 MB learned vectors with
    pickle, about 3 s of every study's report (measured here), for 15 vectors that never change."""
    from importlib.metadata import version

    from mpt.api import cache_root
    from study.paths import write_atomically

    path = cache_root() / "uriel" / f"{FEATURE_SET}-lang2vec-{version('lang2vec')}.json"
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # not written yet, or cut short: computed again
        cached = {}
    missing = set(codes) - set(cached)
    if missing:
        l2v = _lang2vec()
        for code in sorted(missing | (set(ISO3.values()) - set(cached))):  # every XNLI language at once
            try:
                cached[code] = [float(x) for x in l2v.get_features([code], FEATURE_SET)[code]]
            except Exception:  # lang2vec raises a bare Exception for a code it does not know
                cached[code] = None
        write_atomically(path, json.dumps(cached, sort_keys=True))  # a reader never sees half a file
    return {code: cached[code] for code in codes}


@functools.lru_cache(maxsize=None)
def _distances(languages: tuple[str, ...], source: str) -> dict[str, float]:
    import numpy as np
    from scipy.spatial.distance import cosine

    codes = {lang: ISO3.get(lang, lang) for lang in (source, *languages)}
    found = _uriel_vectors(sorted(set(codes.values())))
    if found[codes[source]] is None:
        return {}
    vectors = {lang: np.array(found[code], dtype=float) for lang, code in codes.items() if found[code] is not None}
    return {
        lang: float(cosine(vectors[source], vectors[lang]))
        for lang in languages
        if lang in vectors and np.all(vectors[lang] >= 0)
    }  # -1 marks a missing feature, and URIEL may not know a code: no distance then


def distance_from(source: str, languages: Sequence[str]) -> dict[str, float]:
    """Language -> URIEL syntactic distance from `source`, for the languages URIEL has (others left out)."""
    known = tuple(lang for lang in languages if lang in ISO3 or len(lang) == 3)
    return dict(_distances(known, source)) if source in ISO3 or len(source) == 3 else {}
