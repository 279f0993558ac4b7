"""Doctests run in a temporary folder, so examples that save files leave nothing in the repository."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _doctests_in_tmp_path(request, tmp_path, monkeypatch):
    if isinstance(request.node, pytest.DoctestItem):
        monkeypatch.chdir(tmp_path)
