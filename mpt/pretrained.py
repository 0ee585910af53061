"""A trained prompt as a directory, in the convention of Hugging Face PEFT adapters.

    DIR/mpt_config.json         the run's MPTConfig (its pair encoding resolved), the backbone's name, weight
                                fingerprint and the input conventions the model applied, training summary
    DIR/mpt_model.safetensors   the trainable weights: soft prompt, translator, linear head (when used)

The frozen backbone is referenced by name and never copied; loading recomputes its fingerprint and refuses a
backbone whose weights differ from the one the prompt was trained on. Loading reads JSON and safetensors only
(no pickle). `TrainedPrompt` is the one piece of code that answers for a trained prompt: `mpt.evaluate`,
`mpt.predict` and the study's MLflow model all call its `predict_proba`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mpt.backbones import Backbone, InputConventions, load_backbone
from mpt.config import LABELS, ConfigError, MPTConfig, config_from_saved
from mpt.model import PromptedClassifier
from mpt.precision import resolve_precision
from mpt.scoring import answer_logits

FORMAT = 1
CONFIG_FILE = "mpt_config.json"
WEIGHTS_FILE = "mpt_model.safetensors"
# Elements hashed per frozen tensor (evenly spaced, first and last included); smaller tensors are hashed whole.
FINGERPRINT_SAMPLE = 4096


class PretrainedError(ValueError):
    """A trained-prompt directory cannot be used (or is asked for what it cannot do); the message says the fix."""


def backbone_fingerprint(model: PromptedClassifier) -> str:
    """SHA-256 over the frozen weights the model uses (encoder, and the MLM head when it answers through it).

    Every tensor contributes its name, dtype and shape, and its values: all of them for tensors up to
    FINGERPRINT_SAMPLE elements (norms, biases), an evenly spaced sample of FINGERPRINT_SAMPLE for larger ones.
    That is sound for what the check is for, telling backbones apart: another architecture or layer count
    changes names and shapes, and another checkpoint (pretrained, fine-tuned, re-initialised, re-quantised)
    differs in nearly every element, so thousands of sampled values per matrix catch it. It is no guard against
    someone editing single weights on purpose, and it costs milliseconds where hashing all of XLM-R large's
    2 GB would take seconds on every load. The tokenizer's size and special ids are included too.
    """
    digest = hashlib.sha256()
    parts = {"encoder": model.encoder, "mlm_head": model.mlm_head}
    for prefix, module in parts.items():
        if module is None:
            continue
        for name, tensor in module.state_dict().items():
            flat = tensor.detach().reshape(-1)
            if flat.numel() > FINGERPRINT_SAMPLE:
                # integer positions (a float linspace rounds past the end of large tensors)
                positions = torch.arange(FINGERPRINT_SAMPLE, device=flat.device) * (flat.numel() - 1)
                flat = flat[positions // (FINGERPRINT_SAMPLE - 1)]
            digest.update(f"{prefix}.{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
            digest.update(flat.contiguous().cpu().view(torch.uint8).numpy().tobytes())
    tokenizer = model.backbone.tokenizer
    digest.update(json.dumps([len(tokenizer), tokenizer.pad_token_id, tokenizer.mask_token_id]).encode())
    return digest.hexdigest()


class TrainedPrompt:
    """A trained soft prompt p_S, its translator and answer head on their frozen backbone, ready to answer."""

    def __init__(self, config: MPTConfig, model: PromptedClassifier, training: dict[str, Any] | None = None) -> None:
        self.config = config
        self.model = model.eval()
        self.templater = model.templater()
        self.training = dict(training or {})  # what the run reported: best epoch, dev and test accuracy, history
        self.device = model.trainable_parameters()[0].device

    # --- building -------------------------------------------------------------------------------------

    @classmethod
    def from_weights(
        cls,
        config: MPTConfig,
        weights: dict[str, torch.Tensor],
        backbone: Backbone | None = None,
        training: dict[str, Any] | None = None,
        device: str | None = None,
        fingerprint: str | None = None,
        conventions: InputConventions | None = None,
    ) -> "TrainedPrompt":
        """The prompt of `config` with trainable `weights` (keys as `PromptedClassifier.trainable_state_dict`) on
        `backbone` (default: the one the config names); `fingerprint`, when given, must be the backbone's;
        `conventions` (default: the backbone's) are the input conventions a siamese model applies."""
        if backbone is None:
            backbone = load_backbone(config.backbone, config.num_layers, want_mlm=config.head != "linear")
        with torch.random.fork_rng(devices=[]):  # building draws initial weights: leave the caller's RNG alone
            model = PromptedClassifier(config, backbone, torch.Generator().manual_seed(config.seed), conventions)
        config = config.replace(pair_encoding=model.pair_encoding)  # recorded resolved, as a run records it
        if fingerprint is not None and backbone_fingerprint(model) != fingerprint:
            raise PretrainedError(
                f"the prompt was trained on backbone '{config.backbone}' (num_layers {config.num_layers}, weight "
                f"fingerprint {fingerprint[:12]}), but the backbone given, '{backbone.name}', has fingerprint "
                f"{backbone_fingerprint(model)[:12]}: other weights (another checkpoint, layer count or conversion). "
                f"Load it onto the backbone it was trained on (backbone=None loads the one it names; if that one "
                f"differs here, install the package versions the run used), or train a prompt for this backbone"
            )
        expected = model.trainable_state_dict()
        missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
        wrong = sorted(k for k in set(expected) & set(weights) if tuple(weights[k].shape) != tuple(expected[k].shape))
        if missing or unexpected or wrong:
            raise PretrainedError(
                f"the weights do not fit the config's model (missing {missing}, unexpected "
                f"{unexpected}, other shapes {wrong}): the directory is damaged or its files come "
                f"from different runs; save it again from the run"
            )
        model.load_trainable_state_dict({k: v.float() for k, v in weights.items()})
        return cls(config, model.to(_device(device)), training)

    @classmethod
    def from_trainer(cls, trainer, result=None) -> "TrainedPrompt":
        """The selected (best dev) epoch of an `mpt.training.Trainer`, on its backbone; `result` (its FitResult)
        adds the test accuracies it reported."""
        training = {
            "best_epoch": trainer.best_epoch,
            "best_dev_accuracy": trainer.best_dev_accuracy,
            "history": [asdict(r) for r in trainer.history],
        }
        if result is not None:
            training.update(accuracy=result.accuracy, average=result.average, average_target=result.average_target)
        return cls.from_weights(trainer.config, trainer.best_state, trainer.backbone, training, str(trainer.device))

    @classmethod
    def from_checkpoint(
        cls,
        state: dict[str, Any],
        backbone: Backbone | None = None,
        training: dict[str, Any] | None = None,
        device: str | None = "cpu",
    ) -> "TrainedPrompt":
        """The selected epoch of a training checkpoint (`mpt.checkpoint.read_checkpoint`)."""
        config = config_from_saved(json.loads(state["config"]))
        summary = {
            "best_epoch": int(state["best_epoch"]),
            "best_dev_accuracy": float(state["best_dev_accuracy"]),
            "history": list(state["history"]),
            **(training or {}),
        }
        return cls.from_weights(config, state["best_state"], backbone, summary, device)

    # --- the directory --------------------------------------------------------------------------------

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the directory (created if needed; its two files replaced atomically)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        weights = {k: v.detach().cpu().contiguous() for k, v in self.model.trainable_state_dict().items()}
        tmp = directory / (WEIGHTS_FILE + ".tmp")
        save_file(weights, str(tmp), metadata={"format": "pt"})
        tmp.replace(directory / WEIGHTS_FILE)
        record = {
            "format": FORMAT,
            "config": self.config.to_dict(),
            "backbone": {
                "name": self.config.backbone,
                "num_layers": self.config.num_layers,
                "head": self.model.head_kind,
                "fingerprint": backbone_fingerprint(self.model),
                "input": asdict(self.model.conventions),
            },
            "training": self.training,
        }
        tmp = directory / (CONFIG_FILE + ".tmp")
        tmp.write_text(json.dumps(record, indent=1, ensure_ascii=False), encoding="utf-8")
        tmp.replace(directory / CONFIG_FILE)
        return directory

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, backbone: Backbone | None = None, device: str | None = None
    ) -> "TrainedPrompt":
        """Load a directory written by `save_pretrained`. The backbone is the one it names (loaded here) unless
        `backbone` is given; either way its fingerprint must match the one saved."""
        record = read_record(directory)
        try:
            config = config_from_saved(record["config"])
            conventions = InputConventions(**record["backbone"].get("input", {}))
        except (ConfigError, TypeError) as err:
            raise PretrainedError(
                f"{Path(directory) / CONFIG_FILE}: {err}: it was written by another version of "
                f"mpt-study; load it with that version"
            ) from None
        try:
            weights = load_file(str(Path(directory) / WEIGHTS_FILE))
        except FileNotFoundError:
            raise PretrainedError(
                f"{directory} has no {WEIGHTS_FILE}: it is not a complete trained-prompt "
                f"directory; save it again (mpt.train --save, or the study's best_model/)"
            ) from None
        except SafetensorError as err:
            raise PretrainedError(f"{Path(directory) / WEIGHTS_FILE} is damaged ({err}): save it again") from None
        try:
            return cls.from_weights(
                config,
                weights,
                backbone,
                record.get("training"),
                device,
                fingerprint=record["backbone"]["fingerprint"],
                conventions=conventions,
            )
        except PretrainedError as err:
            raise PretrainedError(f"{directory}: {err}") from None

    # --- answering ------------------------------------------------------------------------------------

    def check_languages(self, langs: Sequence[str]) -> None:
        """Refuse languages the prompt cannot answer in: a per-language translator knows its own only."""
        known = self.config.languages
        unknown = sorted({lang for lang in langs if lang not in known})
        if unknown and self.config.translator_mode == "per_language":
            raise PretrainedError(
                f"unknown language(s) {unknown}: this prompt has a per-language translator for "
                f"{self.config.target_languages} (source {self.config.source_language}); use one "
                f"of {known}"
            )
        for lang in unknown:  # the shared translator serves any language; its verbalizer words are config's default
            self.model.add_language(lang)

    @torch.inference_mode()
    def predict_proba(self, premises: Sequence[str], hypotheses: Sequence[str], langs: Sequence[str]) -> torch.Tensor:
        """[N, 3] answer probabilities (entailment, neutral, contradiction), in input order. Pairs are scored per
        language by `mpt.scoring.answer_logits`: exactly the batches the training run evaluated."""
        if not len(premises) == len(hypotheses) == len(langs):
            raise ValueError(
                f"{len(premises)} premises, {len(hypotheses)} hypotheses, {len(langs)} languages: "
                f"give one of each per pair"
            )
        self.check_languages(langs)
        probabilities = torch.zeros((len(premises), len(LABELS)), dtype=torch.float32)
        precision = resolve_precision(self.config.precision, self.device)  # a saved run names what `auto` was
        for lang in dict.fromkeys(langs):
            rows = [i for i, row_lang in enumerate(langs) if row_lang == lang]
            ids = self.templater.tokenize([premises[i] for i in rows], [hypotheses[i] for i in rows])
            logits = answer_logits(
                self.model, self.templater, ids, lang, self.config.eval_batch_size, precision, self.device
            )
            probabilities[rows] = torch.softmax(logits, dim=-1)
        return probabilities

    def predict(self, premises: Sequence[str], hypotheses: Sequence[str], langs: Sequence[str]) -> list[dict]:
        """One record per pair: its language, the predicted label and the three probabilities."""
        probabilities = self.predict_proba(premises, hypotheses, langs)
        return [
            {
                "lang": lang,
                "label": LABELS[int(p.argmax())],
                **{f"prob_{name}": float(value) for name, value in zip(LABELS, p.tolist())},
            }
            for lang, p in zip(langs, probabilities)
        ]

    def accuracy(self, examples: Sequence, lang: str) -> float:
        """Accuracy on NLI examples (`mpt.data.NLIExample`) in `lang`."""
        predicted = (
            self.predict_proba([e.premise for e in examples], [e.hypothesis for e in examples], [lang] * len(examples))
            .argmax(dim=-1)
            .tolist()
        )
        return sum(p == e.label for p, e in zip(predicted, examples)) / len(examples)


def read_record(directory: str | Path) -> dict[str, Any]:
    """The parsed `mpt_config.json` of a trained-prompt directory, checked."""
    path = Path(directory) / CONFIG_FILE
    if not Path(directory).is_dir():
        raise PretrainedError(
            f"{directory} is not a directory: give a trained-prompt directory (written by "
            f"mpt.train --save, or a study's results/<study>/best_model)"
        )
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PretrainedError(
            f"{directory} has no {CONFIG_FILE}: it is not a trained-prompt directory (written by "
            f"mpt.train --save, or a study's results/<study>/best_model)"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PretrainedError(f"{path} is not valid JSON ({err}): the directory is damaged; save it again") from None
    if (
        not isinstance(record, dict)
        or {"format", "config", "backbone"} - set(record)
        or not isinstance(record["backbone"], dict)
        or "fingerprint" not in record["backbone"]
    ):
        raise PretrainedError(f"{path} is not an mpt-study trained-prompt config: save the directory again")
    if record["format"] != FORMAT:
        raise PretrainedError(
            f"{path} has format {record['format']!r}, not {FORMAT}: it was written by another "
            f"version of mpt-study; load it with that version"
        )
    return record


def _device(device: str | None) -> torch.device:
    """`device`, by default 'auto' (CUDA when there is one): the run's own device setting is not part of what it
    trained (a prompt trained on 'cuda' loads on a CPU machine)."""
    from mpt.training import resolve_device  # the run's own rule for 'auto'

    return resolve_device(device or "auto")
