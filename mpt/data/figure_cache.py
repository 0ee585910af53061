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


def _read(path: Path, key: str) -> tuple[bool, Any]:
    """(found?, figures) of the entry at `path` if it holds `key`."""
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored["key"] == key:
            return True, stored["figures"]
    except (OSError, ValueError, KeyError, TypeError):
        pass  # missing or damaged: computed again (and a damaged cache entry replaced)
    return False, None


def cached_figures(
    kind: str,
    compute: Callable[[], Any],
    files: Iterable[Path],
    depends_on: Mapping[str, Any],
    folder: Path,
    recompute: bool = False,
    shipped: Path | None = None,
) -> Any:
    """`compute()`'s figures (anything JSON holds): from the read-only folder `shipped` (entries that come with
    the code) or from `folder` when an entry has the same key, else computed and stored in `folder` (written to
    a temporary file and renamed: readers never see half an entry)."""
    key = figures_key(kind, files, depends_on)
    name = f"{kind}-{key[:24]}.json"
    path = Path(folder) / name
    for candidate in [] if recompute else [*([Path(shipped) / name] if shipped else []), path]:
        found, figures = _read(candidate, key)
        if found:
            return figures
    figures = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        json.dump({"kind": kind, "key": key, "depends_on": depends_on, "figures": figures}, out)
    os.replace(tmp, path)
    return figures
