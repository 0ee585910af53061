"""The checkpoint file's manifest: `verify_checkpoint_file` tells an intact checkpoint from a damaged one without
reading it (size and SHA-256), and falls back to reading it in full where there is no manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mpt.checkpoint import (
    CHECKPOINT_FORMAT,
    REQUIRED_KEYS,
    CheckpointError,
    manifest_path,
    read_checkpoint,
    verify_checkpoint_file,
    write_checkpoint,
)


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """A small, valid checkpoint file with its manifest."""
    state = {key: torch.arange(256.0) for key in REQUIRED_KEYS}
    state.update(format=CHECKPOINT_FORMAT, config="{}", epoch=1, history=[])
    return write_checkpoint(tmp_path / "state.pt", state)


def test_an_intact_checkpoint_passes_and_its_manifest_describes_it(checkpoint: Path) -> None:
    verify_checkpoint_file(checkpoint)
    manifest = json.loads(manifest_path(checkpoint).read_text())
    assert manifest["format"] == CHECKPOINT_FORMAT and manifest["bytes"] == checkpoint.stat().st_size
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["state.pt", "state.pt.json"]  # no temporaries
    assert read_checkpoint(checkpoint)["epoch"] == 1


def test_a_truncated_checkpoint_is_refused_naming_the_file_and_the_fix(checkpoint: Path) -> None:
    checkpoint.write_bytes(checkpoint.read_bytes()[:-100])
    with pytest.raises(
        CheckpointError,
        match=rf"checkpoint {checkpoint} is corrupt .*its manifest says .*: delete "
        rf"it to restart",
    ):
        verify_checkpoint_file(checkpoint)


def test_one_flipped_bit_is_refused(checkpoint: Path) -> None:
    blob = bytearray(checkpoint.read_bytes())
    blob[len(blob) // 2] ^= 0x10  # inside a tensor's bytes: torch.load would read it without complaint
    checkpoint.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="its SHA-256 differs from its manifest's"):
        verify_checkpoint_file(checkpoint)


def test_another_format_is_refused(checkpoint: Path) -> None:
    manifest = json.loads(manifest_path(checkpoint).read_text())
    manifest_path(checkpoint).write_text(json.dumps({**manifest, "format": CHECKPOINT_FORMAT + 1}))
    with pytest.raises(CheckpointError, match=rf"checkpoint {checkpoint}: format 2 is not 1: .*another version"):
        verify_checkpoint_file(checkpoint)


@pytest.mark.parametrize("manifest", ["missing", "damaged"])
def test_without_a_readable_manifest_the_file_is_read_in_full(checkpoint: Path, manifest: str) -> None:
    """A checkpoint from before manifests (or with a damaged one) is checked by reading it: an intact one passes,
    one cut short is refused as corrupt, one that is not an mpt-study checkpoint is refused as such."""
    if manifest == "missing":
        manifest_path(checkpoint).unlink()
    else:
        manifest_path(checkpoint).write_text('{"format": 1, "byt')
    intact = checkpoint.read_bytes()
    verify_checkpoint_file(checkpoint)
    checkpoint.write_bytes(intact[: len(intact) // 2])
    with pytest.raises(CheckpointError, match=rf"checkpoint {checkpoint} is corrupt"):
        verify_checkpoint_file(checkpoint)
    torch.save({"weights": torch.zeros(3)}, checkpoint)
    with pytest.raises(CheckpointError, match="is not an mpt-study checkpoint: start the run afresh"):
        verify_checkpoint_file(checkpoint)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist: check the path"):
        verify_checkpoint_file(tmp_path / "state.pt")
