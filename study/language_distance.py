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


@functools.lru_cache(maxsize=None)
def _distances(languages: tuple[str, ...], source: str) -> dict[str, float]:
    import numpy as np
    from scipy.spatial.distance import cosine

    codes = {lang: ISO3.get(lang, lang) for lang in (source, *languages)}
    try:
        features = _lang2vec().get_features(sorted(set(codes.values())), FEATURE_SET)
    except Exception:  # lang2vec raises a bare Exception for a code it does not know
        return {}
    vectors = {lang: np.array(features[code], dtype=float) for lang, code in codes.items()}
    return {
        lang: float(cosine(vectors[source], vectors[lang])) for lang in languages if np.all(vectors[lang] >= 0)
    }  # -1 marks a missing feature: no distance then


def distance_from(source: str, languages: Sequence[str]) -> dict[str, float]:
    """Language -> URIEL syntactic distance from `source`, for the languages URIEL has (others left out)."""
    known = tuple(lang for lang in languages if lang in ISO3 or len(lang) == 3)
    return dict(_distances(known, source)) if source in ISO3 or len(source) == 3 else {}
