"""Language distances from URIEL, and that computing them leaves the interpreter as it was."""

from __future__ import annotations

import sys

from study.language_distance import distance_from


def test_distances_leave_pytests_syspath_prepend_working(monkeypatch, tmp_path):
    """lang2vec 1.1.2 imports `pkg_resources`; a stand-in for it left in `sys.modules` made pytest's
    `syspath_prepend` (which calls `pkg_resources.fixup_namespace_packages` when that module is loaded) fail in
    every later test of the session."""
    distances = distance_from("en", ["de", "sw"])
    assert 0 < distances["de"] < distances["sw"] < 1  # lang2vec's data files were found
    monkeypatch.syspath_prepend(str(tmp_path))
    assert sys.path[0] == str(tmp_path)
