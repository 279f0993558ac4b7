"""Test helpers shared by several test modules."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The real data sets beside the repository (read-only, never committed); tests using them skip when absent.
SHARED_DATA = Path(os.environ.get("STPREDICT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def shared(*parts: str) -> Path:
    """Path inside the shared real data, skipping the test when it is not there."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available at {path}")
    return path
