"""NLI and parallel data behind one API: the embedded mini set, XNLI from the hub, and local files.

Sources (`MPTConfig.data` / `MPTConfig.parallel`):
- `mini`: the small multilingual NLI set and parallel corpus shipped in `mpt/data/mini/` (our own data,
  not XNLI; see its README.md).
- `xnli`: `datasets.load_dataset(xnli_repo, lang)`, `xnli_repo` a hub id (`facebook/xnli`) or a local
  directory in the hub's layout. As a parallel corpus: the first rows of XNLI's train split, aligned
  across languages (never validation or test, which select and rank models).
- a directory of `{split}-{lang}.tsv|jsonl` NLI files (splits train, dev, test) and, for parallel data,
  `parallel-{lang}.tsv|jsonl` files; or one parallel TSV/JSONL file with `en`, `target`, `lang`.
NLI TSV is XTREME-style: `premise<TAB>hypothesis<TAB>label`, no header; JSONL has `premise`, `hypothesis`,
`label`. Labels are 0/1/2 or the words entailment/neutral/contradiction.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from mpt.config import LABELS, MPTConfig

MINI_DIR = Path(__file__).parent / "mini"
SPLITS = ("train", "dev", "test")
_XNLI_SPLIT = {"train": "train", "dev": "validation", "test": "test"}
_LABEL_WORDS = {"entailment": 0, "neutral": 1, "contradiction": 2, "contradictory": 2, "0": 0, "1": 1, "2": 2}


class DataError(ValueError):
    """Bad or missing data; the message names the file, the line and the fix."""


@dataclass(frozen=True)
class NLIExample:
    premise: str
    hypothesis: str
    label: int  # 0 entailment, 1 neutral, 2 contradiction


@dataclass(frozen=True)
class ParallelPair:
    """One alignment example: an English premise/hypothesis pair and its translation."""

    premise: str
    hypothesis: str
    target_premise: str
    target_hypothesis: str
    lang: str


def load_nli(
    source: str, split: str, lang: str, xnli_repo: str = "facebook/xnli", limit: int | None = None
) -> list[NLIExample]:
    """Load one split of one language from `mini`, `xnli` or a directory of local files."""
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}': use one of {SPLITS}")
    if source == "xnli":
        examples = _load_xnli(xnli_repo, split, lang)
    else:
        directory = _data_directory(source)
        examples = read_nli_file(_find_file(directory, [f"{split}-{lang}"], what=f"the {split} split of '{lang}'"))
    return examples[:limit] if limit else examples


def load_parallel(
    source: str, languages: Sequence[str], xnli_repo: str = "facebook/xnli", source_language: str = "en"
) -> list[ParallelPair]:
    """Alignment pairs for every target language, from `mini`, `xnli` (its train split), a file or a directory."""
    if source == "xnli":
        return _xnli_parallel_pairs(xnli_repo, languages, source_language)
    path = Path(source) if source != "mini" else MINI_DIR
    if path.is_file():
        sentences = read_parallel_file(path)
    else:
        directory = _data_directory(source)
        sentences = []
        for lang in languages:
            sentences += read_parallel_file(
                _find_file(directory, [f"parallel-{lang}"], what=f"the parallel corpus of '{lang}'"), lang
            )
    present = {lang for _, _, lang in sentences}
    missing = [lang for lang in languages if lang not in present]
    if missing:
        raise DataError(
            f"parallel corpus '{source}' has no sentences for language(s) {missing}: add them, "
            f"or drop those languages from target_languages"
        )
    return sentences_to_pairs([s for s in sentences if s[2] in languages])


# XNLI's train split is translated row by row in every language; its first rows make the alignment corpus.
# Not validation or test: those select and rank models, and the alignment corpus must never be that data.
XNLI_PARALLEL_SPLIT, XNLI_PARALLEL_ROWS = "train", 5000


def _xnli_parallel_pairs(repo: str, languages: Sequence[str], source_language: str) -> list[ParallelPair]:
    english = _load_xnli(repo, XNLI_PARALLEL_SPLIT, source_language, rows=XNLI_PARALLEL_ROWS)
    pairs = []
    for lang in languages:
        translated = _load_xnli(repo, XNLI_PARALLEL_SPLIT, lang, rows=XNLI_PARALLEL_ROWS)
        # rows pair up when they are as many and carry the same labels in the same order
        if len(translated) != len(english) or [t.label for t in translated] != [e.label for e in english]:
            raise DataError(
                f"XNLI {XNLI_PARALLEL_SPLIT} rows of '{lang}' do not pair up with '{source_language}' "
                f"({len(translated)} vs {len(english)} rows, or labels differ row by row): the alignment "
                f"corpus needs a row-by-row translation; use a parallel corpus file (--parallel PATH) "
                f"or a complete copy of XNLI"
            )
        pairs += [
            ParallelPair(e.premise, e.hypothesis, t.premise, t.hypothesis, lang) for e, t in zip(english, translated)
        ]
    return pairs


def sentences_to_pairs(sentences: Sequence[tuple[str, str, str]]) -> list[ParallelPair]:
    """Turn parallel sentences into NLI-shaped alignment pairs.

    Within each language, sentence i is the premise and sentence i+1 (cyclically) the hypothesis, in
    English and in translation alike, so both sides of a pair carry the same meaning.
    """
    by_lang: dict[str, list[tuple[str, str]]] = {}
    for english, target, lang in sentences:
        by_lang.setdefault(lang, []).append((english, target))
    pairs = []
    for lang, rows in by_lang.items():
        for i, (english, target) in enumerate(rows):
            next_english, next_target = rows[(i + 1) % len(rows)]
            pairs.append(ParallelPair(english, next_english, target, next_target, lang))
    return pairs


def few_shot(examples: Sequence[NLIExample], shots_per_class: int, seed: int) -> list[NLIExample]:
    """K examples per class, drawn without replacement, deterministic for a seed, in shuffled order.

    Nested across K: each class's pool is shuffled by the seed alone and the first K taken, so for one seed the
    examples of a smaller K are among those of a larger K (shot-count curves are then paired too)."""
    rng = random.Random(seed)
    chosen: list[NLIExample] = []
    for label, name in enumerate(LABELS):
        pool = [ex for ex in examples if ex.label == label]
        if len(pool) < shots_per_class:
            raise DataError(
                f"the training pool has {len(pool)} '{name}' examples but shots_per_class="
                f"{shots_per_class}: lower shots_per_class to at most {len(pool)}"
            )
        rng.shuffle(pool)  # draws depend on the pool, not on K
        chosen += pool[:shots_per_class]
    rng.shuffle(chosen)
    return chosen


@dataclass
class RunData:
    """Everything a run reads: the source training pool, dev and test per language, parallel pairs."""

    train_pool: list[NLIExample]
    dev: dict[str, list[NLIExample]]
    test: dict[str, list[NLIExample]]
    parallel: list[ParallelPair]


def load_run_data(config: MPTConfig, parallel: bool | None = None) -> RunData:
    """Load every split a run of `config` needs; the parallel corpus when `parallel` says so (by default when
    `config` aligns: a study loads it once for trials that may)."""
    limit = config.max_eval_examples
    dev_languages = config.languages if config.dev_all_languages else [config.source_language]
    return RunData(
        train_pool=load_nli(config.data, "train", config.source_language, config.xnli_repo),
        dev={lang: load_nli(config.data, "dev", lang, config.xnli_repo, limit) for lang in dev_languages},
        test={lang: load_nli(config.data, "test", lang, config.xnli_repo, limit) for lang in config.languages},
        parallel=(
            load_parallel(config.parallel, config.target_languages, config.xnli_repo, config.source_language)
            if (config.alignment_weight > 0 if parallel is None else parallel)
            else []
        ),
    )


# --- local files -------------------------------------------------------------------------------------


def read_nli_file(path: Path) -> list[NLIExample]:
    """Read an NLI TSV (premise, hypothesis, label; no header) or JSONL file."""
    rows = list(_read_rows(path, ("premise", "hypothesis", "label")))
    examples = [
        NLIExample(premise, hypothesis, _parse_label(label, path, line)) for line, (premise, hypothesis, label) in rows
    ]
    if not examples:
        raise DataError(f"{path} is empty: it needs one premise/hypothesis/label example per line")
    return examples


def read_parallel_file(path: Path, lang: str | None = None) -> list[tuple[str, str, str]]:
    """Read parallel sentences (english, target, lang) from TSV (`en<TAB>target[<TAB>lang]`) or JSONL."""
    if lang is None and path.suffix == ".tsv":
        lang = _lang_from_name(path)
    columns = ("en", "target", "lang") if lang is None else ("en", "target")
    sentences = []
    for line, row in _read_rows(path, columns, optional=("lang",)):
        row_lang = row[2] if len(row) > 2 and row[2] else lang
        if not row_lang:
            raise DataError(
                f"{path}, line {line}: no language given: add a 'lang' column, or name the file parallel-<lang>.tsv"
            )
        sentences.append((row[0], row[1], row_lang))
    if not sentences:
        raise DataError(f"{path} is empty: it needs one English sentence and its translation per line")
    return sentences


def _read_rows(path: Path, columns: Sequence[str], optional: Sequence[str] = ()) -> Iterable[tuple[int, tuple]]:
    required = [c for c in columns if c not in optional]
    if not path.is_file():
        raise DataError(f"data file {path} does not exist: check the path or the --data/--parallel option")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path} is not UTF-8 ({err}): re-save it as UTF-8") from None
    jsonl = path.suffix == ".jsonl"
    for line_no, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        if jsonl:
            try:
                record = json.loads(raw)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}, line {line_no}: not valid JSON ({err}): one JSON object per line") from None
            absent = [c for c in required if c not in record]
            if absent:
                raise DataError(f"{path}, line {line_no}: missing column(s) {absent}: every line needs {list(columns)}")
            row = tuple(str(record.get(c, "")).strip() for c in columns)
        else:
            fields = raw.split("\t")
            if not len(required) <= len(fields) <= len(columns):
                raise DataError(
                    f"{path}, line {line_no}: {len(fields)} tab-separated field(s), expected "
                    f"{len(columns) if len(required) == len(columns) else f'{len(required)}-{len(columns)}'}"
                    f" ({', '.join(columns)}): check for a missing column or a stray tab"
                )
            row = tuple(f.strip() for f in fields)
        empty = [c for c, value in zip(required, row) if not value]
        if empty:
            raise DataError(
                f"{path}, line {line_no}: empty {empty}: every line needs a non-empty {', '.join(required)}"
            )
        yield line_no, row


def _parse_label(value, path, line: int) -> int:
    key = str(value).strip().lower()
    if key not in _LABEL_WORDS:
        raise DataError(f"{path}, line {line}: unknown label {value!r}: use 0/1/2 or entailment/neutral/contradiction")
    return _LABEL_WORDS[key]


def _data_directory(source: str) -> Path:
    if source == "mini":
        return MINI_DIR
    directory = Path(source)
    if not directory.is_dir():
        raise DataError(
            f"data source '{source}' is neither 'mini', 'xnli' nor an existing directory: use "
            f"--data mini, --data xnli, or a directory of {{split}}-{{lang}}.tsv|jsonl files"
        )
    return directory


def _find_file(directory: Path, stems: Sequence[str], what: str) -> Path:
    for stem in stems:
        for suffix in (".tsv", ".jsonl"):
            if (directory / f"{stem}{suffix}").is_file():
                return directory / f"{stem}{suffix}"
    available = sorted(p.name for p in directory.glob("*") if p.suffix in (".tsv", ".jsonl"))
    raise DataError(
        f"{what} is not in {directory}: expected {stems[0]}.tsv or {stems[0]}.jsonl "
        f"(files there: {available or 'none'}); add the file or choose languages that exist"
    )


def _lang_from_name(path: Path) -> str | None:
    stem = path.stem
    return stem.split("-", 1)[1] if stem.startswith("parallel-") else None


def _load_xnli(repo: str, split: str, lang: str, rows: int | None = None) -> list[NLIExample]:
    import datasets  # imported here: loading the hub library is slow and only XNLI needs it

    try:
        rows = datasets.load_dataset(repo, lang, split=_XNLI_SPLIT[split] + (f"[:{rows}]" if rows else ""))
    except ValueError as err:
        raise DataError(f"XNLI at '{repo}' has no language '{lang}' ({err}): use XNLI language codes") from None
    except (OSError, ConnectionError) as err:
        raise DataError(
            f"cannot load XNLI from '{repo}' ({err}): on a machine without hub access point "
            f"xnli_repo at a local copy in the hub's layout"
        ) from None
    return [
        NLIExample(r["premise"], r["hypothesis"], _parse_label(r["label"], repo, i + 1)) for i, r in enumerate(rows)
    ]
