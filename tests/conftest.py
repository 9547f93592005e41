"""Shared test fixtures: repository paths and the real data in ../shared/data."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = (REPO / ".." / "shared" / "data").resolve()
SOLAFUNE = DATA / "solafune-s2-pv"
SCENES = DATA / "scenes"
AUSTRIA = DATA / "austria-pv"

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@pytest.fixture(scope="session")
def solafune() -> Path:
    """The real Sentinel-2 tiles; a missing folder is a failure, not a skip."""
    assert SOLAFUNE.is_dir(), f"real data missing: {SOLAFUNE} (../shared beside the repo)"
    return SOLAFUNE


@pytest.fixture(scope="session")
def scenes() -> Path:
    assert SCENES.is_dir(), f"real data missing: {SCENES} (../shared beside the repo)"
    return SCENES


@pytest.fixture(scope="session")
def austria() -> Path:
    """25 real Sentinel-2 chips (images/) and the OSM polygons (photovoltaic_osm.gpkg)."""
    assert AUSTRIA.is_dir(), f"real data missing: {AUSTRIA} (../shared beside the repo)"
    return AUSTRIA
