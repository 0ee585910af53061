"""Evaluate a trained-prompt directory on NLI data, per language.

    python -m mpt.evaluate results/alignment/best_model                       # the data and languages it trained for
    python -m mpt.evaluate DIR --data xnli --languages de,fr,zh --split test --output out.json

Prints the per-language table; `--output` writes JSON in the shape of `mpt.train --output` (`accuracy`,
`average`, `average_target`, `best_epoch`, `best_dev_accuracy`, `history` and `config` of the run that trained
the prompt) with an `evaluation` entry saying what was evaluated. On the data, split and row cap the run used
it reproduces the test accuracies the run reported (exactly, on CPU).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from mpt.config import ConfigError
from mpt.config_args import parse_value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mpt.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "directory",
        metavar="DIR",
        help="a trained-prompt directory (mpt.train --save, a study's results/<study>/best_model)",
    )
    parser.add_argument(
        "--data",
        help="mini | xnli | a directory of {split}-{lang}.tsv|jsonl files (default: the "
        "data the prompt was trained on)",
    )
    parser.add_argument(
        "--languages", help="comma-separated languages (default: the run's source and target languages)"
    )
    parser.add_argument("--split", default="test", choices=("train", "dev", "test"), help="(default: test)")
    parser.add_argument(
        "--max-examples",
        help="cap on rows per language, or 'none' (default: the run's "
        "max_eval_examples, so its test figures are reproduced)",
    )
    parser.add_argument("--xnli-repo", help="XNLI hub id or local copy (default: the run's)")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or auto (default: auto, CUDA when there is one)")
    parser.add_argument("--output", help="write the results JSON here")
    return parser


def evaluate(prompt, data: str, languages: Sequence[str], split: str, limit: int | None, xnli_repo: str) -> dict:
    """The results of `prompt` (a TrainedPrompt) on one split, per language, shaped as `mpt.train --output`."""
    from mpt.data import load_nli

    prompt.check_languages(languages)
    accuracy = {lang: prompt.accuracy(load_nli(data, split, lang, xnli_repo, limit), lang) for lang in languages}
    source = prompt.config.source_language
    targets = [accuracy[lang] for lang in languages if lang != source]
    training = prompt.training
    return {
        "accuracy": accuracy,
        "average": sum(accuracy.values()) / len(accuracy),
        "average_target": sum(targets) / len(targets) if targets else None,
        "best_epoch": training.get("best_epoch"),
        "best_dev_accuracy": training.get("best_dev_accuracy"),
        "history": training.get("history", []),
        "config": prompt.config.to_dict(),
        "evaluation": {"data": data, "split": split, "languages": list(languages), "max_examples": limit},
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    from mpt.backbones import BackboneError
    from mpt.data import DataError
    from mpt.pretrained import PretrainedError, TrainedPrompt
    from mpt.train import check_writable, format_table

    try:
        if args.output:
            check_writable(Path(args.output))
        prompt = TrainedPrompt.from_pretrained(args.directory, device=args.device)
        config = prompt.config
        languages = (
            [lang.strip() for lang in args.languages.split(",") if lang.strip()] if args.languages else config.languages
        )
        if not languages:
            raise ConfigError("--languages is empty: give comma-separated language codes such as de,zh")
        limit = (
            parse_value("max_eval_examples", args.max_examples)
            if args.max_examples is not None
            else config.max_eval_examples
        )
        results = evaluate(
            prompt, args.data or config.data, languages, args.split, limit, args.xnli_repo or config.xnli_repo
        )
    except (ConfigError, DataError, BackboneError, PretrainedError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_table(results["accuracy"], config.source_language))
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=1, ensure_ascii=False), encoding="utf-8")
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
