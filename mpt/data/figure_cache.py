"""A JSON cache for figures that take long to compute from files that rarely change (the data set's quality
figures): an entry is keyed to the bytes of every input file and of the code that computes it, and to what else
it depends on (backbone, library versions, parameters), so unchanged inputs read it back and any change
recomputes it."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping


def figures_key(kind: str, files: Iterable[Path], depends_on: Mapping[str, Any]) -> str:
    """SHA-256 over `kind`, `depends_on` (JSON) and the name and bytes of every file, in the order given."""
    digest = hashlib.sha256(json.dumps([kind, depends_on], sort_keys=True).encode())
    for path in files:
        digest.update(f"\0{path.name}\0".encode())
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


def cached_figures(kind: str, compute: Callable[[], Any], files: Iterable[Path], depends_on: Mapping[str, Any],
                   folder: Path, recompute: bool = False) -> Any:
    """`compute()`'s figures (anything JSON holds), from `folder` when an entry has the same key, else computed
    and stored there (written to a temporary file and renamed: readers never see half an entry)."""
    key = figures_key(kind, files, depends_on)
    path = Path(folder) / f"{kind}-{key[:24]}.json"
    if not recompute and path.is_file():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            if stored["key"] == key:
                return stored["figures"]
        except (OSError, ValueError, KeyError, TypeError):
            pass  # a damaged entry is computed again and replaced
    figures = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        json.dump({"kind": kind, "key": key, "depends_on": depends_on, "figures": figures}, out)
    os.replace(tmp, path)
    return figures
