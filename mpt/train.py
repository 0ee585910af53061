"""Train and test one MPT run from the command line.

    python -m mpt.train --data mini --epochs 2 --output out.json
    python -m mpt.train --backbone xlm-roberta-base --data xnli --parallel xnli \
        --target-languages de,fr,zh --shots-per-class 16 --alignment-weight 0.5

Every field of `mpt.config.MPTConfig` is a flag (`prompt_length` -> `--prompt-length`; lists are
comma-separated; `--label-words` takes JSON). `--config FILE` reads YAML/JSON defaults first. The JSON
written by `--output` holds `accuracy` (language -> test accuracy), `average`, `average_target`,
`best_epoch` and `config`. `--save DIR` writes the trained prompt (the selected epoch) as a directory that
`mpt.evaluate`, `mpt.predict` and `mpt.pretrained.TrainedPrompt.from_pretrained` load.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from mpt.config import ConfigError, MPTConfig
from mpt.config_args import ConfigArgumentParser, config_from_args, read_config_file


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
    parser = ConfigArgumentParser(prog="python -m mpt.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="YAML/JSON file of config fields, applied before the flags")
    parser.add_argument("--output", help="write the results JSON here")
    parser.add_argument("--resume-from", help="a checkpoint written by --checkpoint to continue from")
    parser.add_argument(
        "--checkpoint",
        help="save the full training state here after every epoch (and beside it its manifest, the same name + .json)",
    )
    parser.add_argument(
        "--save",
        metavar="DIR",
        help="write the trained prompt here: config, backbone fingerprint and trainable weights (mpt.pretrained)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    from mpt.backbones import BackboneError
    from mpt.data import DataError
    from mpt.training import CheckpointError, NonFiniteLossError, Trainer

    try:
        config = config_from_args(args, read_config_file(args.config) if args.config else None)
        for path in (args.output, args.save):
            if path:
                check_writable(Path(path))
        trainer = Trainer(config)
        if args.resume_from:
            trainer.load(args.resume_from)
        result = trainer.run(_callbacks(args, config))
        if args.save:
            from mpt.pretrained import TrainedPrompt

            TrainedPrompt.from_trainer(trainer, result).save_pretrained(args.save)
    except (ConfigError, DataError, BackboneError, CheckpointError, NonFiniteLossError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_table(result.accuracy, config.source_language))
    print(f"best epoch {result.best_epoch} (English dev accuracy {100 * result.best_dev_accuracy:.1f}%)")
    if args.output:
        Path(args.output).write_text(json.dumps(result.to_dict(), indent=1, ensure_ascii=False))
        print(f"wrote {args.output}")
    if args.save:
        print(f"saved the trained prompt to {args.save}")
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


def check_writable(path: Path) -> None:
    """Refuse, before any work, an output whose folder does not exist."""
    parent = path.resolve().parent
    if not parent.is_dir():
        raise ConfigError(f"output folder {parent} does not exist: create it or choose another path for {path.name}")


if __name__ == "__main__":
    sys.exit(main())
