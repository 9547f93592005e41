"""The files ``predict-split`` writes: one split's probabilities, read back with numpy.

A folder holds ``index.json`` and ``tiles/NNNNN.npz`` (one per tile, in split order)::

    index.json   format, version, model, model_stamp (size, mtime_ns), dataset, split,
                 tta, threshold (the model's), skip_blank, rgb_bands, metrics (the
                 engine's, at that threshold), plants (plant totals at that
                 threshold), plants_csv ("plants.csv": one row per plant, missed
                 first), tiles: [{id, file, height, width, crs_wkt (or null: no
                 CRS), geotransform (GDAL order)}]
    NNNNN.npz    prob float32 (H, W): the probabilities exactly as the engine scored
                 them (float32, so counts at any threshold equal the engine's);
                 mask uint8 (H, W) 0/1; valid bool (H, W);
                 rgb float32 (3, H, W): the display bands, NaN where not valid

Numpy and the standard library only: the QGIS plugin reads these files in QGIS's own
process (no torch, no rasterio there). The engine side that writes them is
:mod:`.split_export`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MissingInputError
from ..io import atomic_path, atomic_write_text

FORMAT = "solarseg-split-predictions"
VERSION = 1
INDEX = "index.json"
TILES = "tiles"


@dataclass
class SplitTile:
    """One tile of a predicted split (what the error analysis needs)."""

    tile_id: str
    prob: np.ndarray  # float32 (H, W)
    mask: np.ndarray  # uint8 (H, W), 0/1
    valid: np.ndarray  # bool (H, W)
    file: Path  # its .npz (the RGB bands are read from it when shown)
    crs_wkt: str | None
    geotransform: tuple[float, ...]

    @property
    def shape(self) -> tuple[int, int]:
        return self.mask.shape  # type: ignore[return-value]

    def rgb(self) -> np.ndarray:
        """Display bands, float32 (3, H, W), NaN where not valid."""
        with np.load(self.file, allow_pickle=False) as z:
            return z["rgb"]


def tile_file(index: int) -> str:
    return f"{TILES}/{index:05d}.npz"


def save_tile(
    path: Path, prob: np.ndarray, mask: np.ndarray, valid: np.ndarray, rgb: np.ndarray
) -> None:
    """One tile's arrays, compressed, written under a temporary name and renamed."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(
            f,
            prob=np.asarray(prob, np.float32),
            mask=np.asarray(mask, np.uint8),
            valid=np.asarray(valid, bool),
            rgb=np.asarray(rgb, np.float32),
        )


def write_index(folder: Path, index: dict[str, Any]) -> None:
    atomic_write_text(Path(folder) / INDEX, json.dumps(index, indent=1))


def read_index(folder: str | Path) -> dict[str, Any]:
    """``index.json`` of a predict-split folder (checked to be ours)."""
    path = Path(folder) / INDEX
    try:
        index = json.loads(path.read_text())
    except FileNotFoundError:
        raise MissingInputError(f"{path}: not found (not a predict-split folder)") from None
    except (OSError, ValueError) as exc:
        raise MissingInputError(f"{path}: unreadable ({exc})") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise MissingInputError(f"{path}: not a SolarSeg predict-split index")
    if int(index.get("version", 0)) > VERSION:
        raise MissingInputError(f"{path}: version {index['version']} is newer than this SolarSeg")
    return index


def load_tiles(folder: str | Path, index: dict[str, Any] | None = None) -> list[SplitTile]:
    """Every tile's probabilities, mask and validity, in split order (RGB read later)."""
    folder = Path(folder)
    index = read_index(folder) if index is None else index
    tiles = []
    for entry in index["tiles"]:
        path = folder / entry["file"]
        try:
            with np.load(path, allow_pickle=False) as z:
                prob, mask, valid = z["prob"], z["mask"], z["valid"]
        except (OSError, ValueError, KeyError) as exc:
            raise MissingInputError(f"{path}: unreadable tile file ({exc})") from None
        shape = (int(entry["height"]), int(entry["width"]))
        if not prob.shape == mask.shape == valid.shape == shape:
            raise MissingInputError(f"{path}: arrays are not {shape[0]}x{shape[1]}")
        tiles.append(
            SplitTile(
                str(entry["id"]),
                prob,
                mask,
                valid,
                path,
                entry.get("crs_wkt") or None,
                tuple(float(v) for v in entry["geotransform"]),
            )  # fmt: skip
        )
    return tiles


# Columns of plants.csv read as numbers (the rest stay text).
PLANT_INTS = ("found", "reference_pixels", "predicted_pixels", "covered_pixels")
PLANT_FLOATS = ("coverage", "iou", "reference_ha", "predicted_ha")


def read_plants(folder: str | Path, index: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of the folder's ``plants.csv`` (in file order: missed first), typed;
    [] for a folder written before plants were counted."""
    import csv

    name = index.get("plants_csv")
    path = Path(folder) / name if name else None
    if path is None or not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key in PLANT_INTS:
            row[key] = int(row[key])
        for key in PLANT_FLOATS:
            row[key] = float(row[key])
        row["found"] = bool(row["found"])
    return rows
