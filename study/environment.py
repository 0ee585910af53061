"""What a study runs on, so that its records say how to reproduce it: the source checkout its code comes from
(None for an installed package), that checkout's git commit, and the versions of the packages it uses."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("mpt-study", "torch", "transformers", "ray", "optuna", "mlflow")  # their versions tag the study's run
# the study's commands: (the console script an installed package has, the script a checkout runs)
COMMANDS = {
    "study": ("mpt-study", "python study/run.py"),
    "report": ("mpt-report", "python study/report.py"),
    "ui": ("mpt-ui", "python study/ui.py"),
}


def checkout_root() -> Path | None:
    """The source checkout the study's code is imported from (the folder with pyproject.toml, `study/` and
    `trainable/`); None when it runs from an installed package (site-packages, a `pip install --target` folder)."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() and (root / "trainable").is_dir() else None


def command(name: str) -> str:
    """How to run the study's command `name` (study, report, ui) where this code is: the checkout's script
    (`python study/run.py`, from the repository root) in a checkout, the console script (`mpt-study`) when
    installed. For usage lines and the commands messages suggest."""
    console_script, script = COMMANDS[name]
    return script if checkout_root() is not None else console_script


def git_state(repo_root: Path) -> tuple[str, bool] | None:
    """(commit, whether tracked files differ from it) of the checkout at repo_root; None without git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo_root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo_root,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit.stdout.strip(), bool(dirty.stdout.strip())) if commit.returncode == 0 else None


def environment_tags() -> dict[str, str]:
    """The checkout's git commit (when the code runs from one) and the package versions."""
    tags = {}
    root = checkout_root()
    state = git_state(root) if root is not None else None
    if state is not None:  # not a checkout, or no git: the versions still help
        tags["git_commit"], tags["git_dirty"] = state[0], str(state[1]).lower()
    for package in PACKAGES:
        try:
            tags[f"version.{package}"] = metadata.version(package)
        except metadata.PackageNotFoundError:
            tags[f"version.{package}"] = "not installed"
    return tags
