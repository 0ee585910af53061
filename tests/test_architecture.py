"""The layering README and docs/architecture.md describe, checked on the source: each contract in one module,
imports pointing one way. Reads files only (well under a second)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("mpt", "trainable", "search_spaces", "study")


def sources(*folders: str) -> dict[str, str]:
    return {
        str(path.relative_to(REPO_ROOT)): path.read_text(encoding="utf-8")
        for folder in folders
        for path in sorted((REPO_ROOT / folder).rglob("*.py"))
    }


def test_trial_metric_names_are_written_only_by_the_metrics_contract() -> None:
    """A quoted `test_acc_`, `dev_acc_`, ... outside trainable/metrics.py is a second copy of its names."""
    names = "test_acc_|dev_acc_|selected_dev_acc_|test_correct_|dev_rows_|runtime_"
    pattern = re.compile(rf"""(?<![A-Za-z_])["']({names})""")
    found = sorted(
        f"{name}: {match.group(0)}"
        for name, text in sources("trainable", "study", "benchmarks").items()
        if name != "trainable/metrics.py"
        for match in pattern.finditer(text)
    )
    assert found == []


def imports(text: str) -> set[str]:
    """The modules a source imports (absolute imports, at any depth: lazy ones inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def test_imports_point_one_way() -> None:
    """study -> trainable -> mpt and study -> search_spaces; mpt imports no Ray."""
    forbidden = {
        "mpt": ("study", "trainable", "search_spaces", "ray"),
        "trainable": ("study", "search_spaces"),
        "search_spaces": ("study", "trainable", "mpt"),
    }
    found = sorted(
        f"{name} imports {module}"
        for package, banned in forbidden.items()
        for name, text in sources(package).items()
        for module in imports(text)
        if module.split(".")[0] in banned
    )
    assert found == []


def test_the_study_reaches_the_method_through_its_surface() -> None:
    """study/ imports the config (mpt.config, mpt.config_args), DataError (mpt.data) and mpt.api: nothing else of
    mpt, so the checkpoint format, the backbones and the training loop can change behind mpt.api."""
    surface = {"mpt", "mpt.api", "mpt.config", "mpt.config_args", "mpt.data"}
    found = sorted(
        f"{name} imports {module}"
        for name, text in sources("study").items()
        for module in imports(text)
        if module.split(".")[0] == "mpt" and module not in surface
    )
    assert found == []
