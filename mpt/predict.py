"""Predict NLI labels for premise/hypothesis pairs with a trained-prompt directory.

    python -m mpt.predict results/alignment/best_model --input pairs.tsv --lang de --output preds.jsonl

The input is TSV with a header line naming its columns, or JSONL (one object per line): `premise` and
`hypothesis`, and optionally `lang` (the row's language: the source language uses p_S, any other p_T); rows
without one take `--lang` (default: the run's source language). Other columns (a `label`, an id) are ignored.
Each output line holds the row's `lang`, the predicted `label` and `prob_entailment`, `prob_neutral`,
`prob_contradiction`, in input order.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

COLUMNS = ("premise", "hypothesis")
OPTIONAL = ("lang",)
FORMATS = (".tsv", ".jsonl")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mpt.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "directory",
        metavar="DIR",
        help="a trained-prompt directory (mpt.train --save, a study's results/<study>/best_model)",
    )
    parser.add_argument("--input", required=True, metavar="FILE", help="pairs.tsv (with a header) or pairs.jsonl")
    parser.add_argument(
        "--lang", help="language of the rows without a `lang` column (default: the run's source language)"
    )
    parser.add_argument("--output", required=True, metavar="FILE", help="predictions, one JSON object per line")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or auto (default: auto, CUDA when there is one)")
    return parser


def read_pairs(path: Path) -> list[dict[str, str]]:
    """The rows of a TSV (header line first) or JSONL file: premise, hypothesis and lang ('' when absent)."""
    from mpt.data import DataError

    if path.suffix not in FORMATS:
        raise DataError(f"{path}: unknown format '{path.suffix}': give a .tsv (with a header line) or .jsonl file")
    if not path.is_file():
        raise DataError(f"input file {path} does not exist: check the --input path")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise DataError(f"{path} is not UTF-8 ({err}): re-save it as UTF-8") from None
    numbered = [(number, line) for number, line in enumerate(lines, start=1) if line.strip()]
    header = None
    if path.suffix == ".tsv" and numbered:
        header = [name.strip() for name in numbered.pop(0)[1].split("\t")]
        absent = [c for c in COLUMNS if c not in header]
        if absent:
            raise DataError(
                f"{path}, line 1: the header has no column(s) {absent}: the first line must name the "
                f"columns, tab-separated, e.g. 'premise<TAB>hypothesis<TAB>lang'"
            )
    rows = [_row(path, number, line, header) for number, line in numbered]
    if not rows:
        raise DataError(
            f"{path} has no pairs: it needs one premise/hypothesis pair per line"
            + (" after the header" if header else "")
        )
    return rows


def _row(path: Path, number: int, line: str, header: list[str] | None) -> dict[str, str]:
    from mpt.data import DataError

    if header is None:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}, line {number}: not valid JSON ({err}): one JSON object per line") from None
        if not isinstance(record, dict):
            raise DataError(f'{path}, line {number}: not a JSON object: write {{"premise": ..., "hypothesis": ...}}')
    else:
        fields = line.split("\t")
        if len(fields) != len(header):
            raise DataError(
                f"{path}, line {number}: {len(fields)} tab-separated field(s) but the header names "
                f"{len(header)} ({', '.join(header)}): check for a missing column or a stray tab"
            )
        record = dict(zip(header, fields))
    absent = [c for c in COLUMNS if c not in record]
    if absent:
        raise DataError(
            f"{path}, line {number}: missing column(s) {absent}: every line needs premise and "
            f"hypothesis (and may have lang)"
        )
    row = {c: "" if record.get(c) is None else str(record.get(c, "")).strip() for c in (*COLUMNS, *OPTIONAL)}
    empty = [c for c in COLUMNS if not row[c]]
    if empty:
        raise DataError(f"{path}, line {number}: empty {empty}: every line needs a non-empty premise and hypothesis")
    return row


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    from mpt.backbones import BackboneError
    from mpt.config import ConfigError
    from mpt.data import DataError
    from mpt.pretrained import PretrainedError, TrainedPrompt
    from mpt.train import check_writable

    try:
        check_writable(Path(args.output))
        rows = read_pairs(Path(args.input))
        prompt = TrainedPrompt.from_pretrained(args.directory, device=args.device)
        default = args.lang or prompt.config.source_language
        langs = [row["lang"] or default for row in rows]
        predictions = prompt.predict([r["premise"] for r in rows], [r["hypothesis"] for r in rows], langs)
    except (ConfigError, DataError, BackboneError, PretrainedError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    Path(args.output).write_text(
        "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in predictions), encoding="utf-8"
    )
    print(f"wrote {len(predictions)} predictions to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
