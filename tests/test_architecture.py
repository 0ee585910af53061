"""The layering README and docs/architecture.md describe, checked on the source: each contract in one module,
imports pointing one way. Reads files only (well under a second)."""

from __future__ import annotations

import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("mpt", "trainable", "search_spaces", "study")


def sources(*folders: str) -> dict[str, str]:
    return {str(path.relative_to(REPO_ROOT)): path.read_text(encoding="utf-8")
            for folder in folders for path in sorted((REPO_ROOT / folder).rglob("*.py"))}


def test_trial_metric_names_are_written_only_by_the_metrics_contract() -> None:
    """A quoted `test_acc_`, `dev_acc_`, ... outside trainable/metrics.py is a second copy of its names."""
    pattern = re.compile(r"""(?<![A-Za-z_])["'](test_acc_|dev_acc_|selected_dev_acc_|test_correct_|dev_rows_|runtime_)""")
    found = sorted(f"{name}: {match.group(0)}" for name, text in sources("trainable", "study", "benchmarks").items()
                   if name != "trainable/metrics.py" for match in pattern.finditer(text))
    assert found == []
