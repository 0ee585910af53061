"""Train and test one MPT run from the command line.

    python -m mpt.train --data mini --epochs 2 --output out.json
    python -m mpt.train --backbone xlm-roberta-base --data xnli --parallel xnli \
        --target-languages de,fr,zh --shots-per-class 16 --alignment-weight 0.5

Every field of `mpt.config.MPTConfig` is a flag (`prompt_length` -> `--prompt-length`; lists are
comma-separated; `--label-words` takes JSON). `--config FILE` reads YAML/JSON defaults first. The JSON
written by `--output` holds `accuracy` (language -> test accuracy), `average`, `average_target`,
`best_epoch` and `config`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from mpt.config import ConfigError, MPTConfig, field_types, parse_value


class _ConfigValue:
    """argparse `type` that parses a string into the type of one config field."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.__name__ = name  # argparse names the type in its errors

    def __call__(self, text: str) -> Any:
        try:
            return parse_value(self.name, text)
        except ConfigError as err:
            raise argparse.ArgumentTypeError(str(err)) from None


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per config field, defaulting to 'not given' so files and defaults can fill in."""
    defaults = MPTConfig()
    group = parser.add_argument_group("run configuration (MPTConfig fields)")
    for name, kind in field_types().items():
        default = getattr(defaults, name)
        shown = ",".join(default) if isinstance(default, list) else json.dumps(default) if isinstance(default, dict) \
            else default
        group.add_argument(f"--{name.replace('_', '-')}", dest=name, type=_ConfigValue(name), default=None,
                           metavar="JSON" if kind.startswith("dict") else kind.split("[")[0].split(" ")[0].upper(),
                           help=f"(default: {shown})")


def config_from_args(args: argparse.Namespace, base: dict | None = None) -> MPTConfig:
    values = dict(base or {})
    for f in dataclasses.fields(MPTConfig):
        value = getattr(args, f.name, None)
        if value is not None:
            values[f.name] = value
    return MPTConfig.from_dict(values)


def read_config_file(path: str) -> dict:
    """Config overrides from a YAML or JSON file (a mapping of MPTConfig fields)."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config file {path} does not exist: check the path")
    text = file.read_text(encoding="utf-8")
    if file.suffix in (".yaml", ".yml"):
        import yaml

        values = yaml.safe_load(text)
    else:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"config file {path} is not valid JSON ({err}); use .yaml for YAML") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a mapping of config fields, not {type(values).__name__}")
    return values


def format_table(accuracy: dict[str, float], source_language: str) -> str:
    """A per-language accuracy table with the average and the target-language average."""
    targets = [lang for lang in accuracy if lang != source_language]
    lines = [f"{'language':<10}{'accuracy':>10}", "-" * 20]
    lines += [f"{lang:<10}{100 * acc:>9.1f}%" for lang, acc in accuracy.items()]
    lines.append("-" * 20)
    lines.append(f"{'average':<10}{100 * sum(accuracy.values()) / len(accuracy):>9.1f}%")
    if targets:
        lines.append(f"{'targets':<10}{100 * sum(accuracy[t] for t in targets) / len(targets):>9.1f}%")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mpt.train", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", help="YAML/JSON file of config fields, applied before the flags")
    parser.add_argument("--output", help="write the results JSON here")
    parser.add_argument("--resume-from", help="a checkpoint written by --checkpoint to continue from")
    parser.add_argument("--checkpoint", help="save the full training state here after every epoch")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    from mpt.backbones import BackboneError
    from mpt.data import DataError
    from mpt.training import CheckpointError, NonFiniteLossError, Trainer

    try:
        config = config_from_args(args, read_config_file(args.config) if args.config else None)
        if args.output:
            _check_writable(Path(args.output))
        trainer = Trainer(config)
        if args.resume_from:
            trainer.load(args.resume_from)
        result = trainer.run(_callbacks(args, config))
    except (ConfigError, DataError, BackboneError, CheckpointError, NonFiniteLossError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_table(result.accuracy, config.source_language))
    print(f"best epoch {result.best_epoch} (English dev accuracy {100 * result.best_dev_accuracy:.1f}%)")
    if args.output:
        Path(args.output).write_text(json.dumps(result.to_dict(), indent=1, ensure_ascii=False))
        print(f"wrote {args.output}")
    return 0


def _callbacks(args: argparse.Namespace, config: MPTConfig) -> list:
    callbacks = []
    if not args.quiet:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.epochs, desc="epochs", unit="epoch")

        def progress(record, trainer) -> None:
            bar.n = record.epoch
            postfix = {"loss": f"{record.loss:.3f}"}
            if record.dev_accuracy:
                postfix["dev_" + config.source_language] = f"{record.dev_accuracy[config.source_language]:.3f}"
            bar.set_postfix(postfix)
            if trainer.done:
                bar.close()

        callbacks.append(progress)
    if args.checkpoint:
        callbacks.append(lambda record, trainer: trainer.save(args.checkpoint))
    return callbacks


def _check_writable(path: Path) -> None:
    parent = path.resolve().parent
    if not parent.is_dir():
        raise ConfigError(f"output folder {parent} does not exist: create it or choose another --output")


if __name__ == "__main__":
    sys.exit(main())
