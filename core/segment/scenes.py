"""The scenes of a ``segment-many`` run: which rasters its inputs name, and the name of
each scene's output folder.

Pure Python (no rasterio, torch or Dask), so the QGIS plugin can count the rasters of a
folder exactly as the engine will find them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, MissingInputError

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".img", ".jp2", ".nc", ".hdf", ".h5")
LIST_SUFFIXES = (".txt", ".lst", ".list")


@dataclass
class Scene:
    name: str  # output folder name
    raster: Path


def folder_rasters(folder: str | Path) -> list[Path]:
    """The rasters of a folder (by suffix, sorted, not recursive); [] when it holds none
    or is not a readable folder."""
    try:
        return sorted(p for p in Path(folder).iterdir()
                      if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES)  # fmt: skip
    except OSError:
        return []


def collect_scenes(inputs: Iterable[str | Path]) -> list[Scene]:
    """Rasters, folders (their rasters, sorted, not recursive) and text files listing
    paths (one per line, ``#`` comments, relative to the list's folder), in input
    order, each raster once. A named raster that does not exist stays in the list (its
    scene fails with the reason); a folder or list that does not exist is refused."""
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = folder_rasters(path)
            if not found:
                raise MissingInputError(f"{path}: no rasters ({', '.join(RASTER_SUFFIXES)})",
                                        "inputs")  # fmt: skip
            paths += found
        elif path.suffix.lower() in LIST_SUFFIXES:
            if not path.is_file():
                raise MissingInputError(f"{path}: list of rasters not found", "inputs")
            for line in path.read_text().splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    p = Path(line).expanduser()
                    paths.append(p if p.is_absolute() else path.parent / p)
        else:
            paths.append(path)
    seen: set[Path] = set()
    names: dict[str, int] = {}
    scenes = []
    for p in paths:
        key = p.resolve()
        if key in seen:
            continue
        seen.add(key)
        stem = p.stem or "scene"
        names[stem] = names.get(stem, 0) + 1
        name = stem if names[stem] == 1 else f"{stem}-{names[stem]}"
        while name in names and name != stem:  # "a-2" given explicitly too
            names[stem] += 1
            name = f"{stem}-{names[stem]}"
        names.setdefault(name, 1)
        scenes.append(Scene(name, p))
    if not scenes:
        raise InputError("no rasters to segment", "inputs")
    return scenes
