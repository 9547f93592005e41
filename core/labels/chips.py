"""Training chips from rasters and a polygon layer: ``python -m core chips``.

For each raster, the reference polygons are reprojected onto its grid and rasterised
there (pixel centre by default, all touched as an option: :mod:`.vectors`), the raster
is cut into tiles, and each kept tile is written as an image GeoTIFF (the source bands,
data type, nodata and band names, with the window's own georeferencing) and a mask
GeoTIFF (uint8, 1 = plant, 0 = background, same grid) beside a ``manifest.csv`` in the
engine's manifest form (:mod:`core.data.discovery`), so ``train`` reads the folder
as a dataset.

**Windows.** Offsets run 0, stride, 2 x stride, ...; when the last window would not
reach the raster's edge, one more window is placed flush with the edge, so every pixel
is in some tile and all tiles have the tile size. A raster side shorter than the tile
becomes one window of that whole side: a raster smaller than a tile is one tile, whole.

**Which tiles are kept.** A tile needs at least ``min_valid`` of its pixels valid
(no band nodata / -9999 / NaN). Tiles with plant pixels are all kept; of the
all-background tiles, ``keep_background`` (seeded choice) are kept, or all when None.

**Groups.** ``group`` in the manifest is the plant a tile shows, so the group-aware
split keeps each plant in one split. Plants come from :func:`.vectors.group_plants`
(a field's value, or touching polygons merged); a tile showing pixels of several
plants joins them, and the group of a tile is the connected set of plants so joined
(named after its first plant, with ``+N`` for N more). All-background tiles have no
group (each is its own unit in the split). ``plants`` lists the plants in each tile.

**Memory.** Each raster's plant labels are burnt whole (4 bytes a pixel, e.g. 400 MB
for a 10,000 x 10,000 scene); image windows are read one at a time, twice (once to
score validity, once to write the kept tiles).

**Output folder.** Everything is written under a hidden staging folder inside the
output folder and moved into place at the end (manifest last), so an error or a cancel
leaves the folder as it was. A folder already holding a dataset (``manifest.csv``,
``images/`` or ``masks/``) is refused unless ``overwrite``; then exactly those three
are replaced and nothing else in the folder is touched.
"""

from __future__ import annotations

import csv
import io
import os
import random
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.discovery import RASTER_SUFFIXES
from ..data.rasters import RasterError, open_raster, reading, valid_mask
from ..errors import InputError, MissingInputError, Problem, UserError, raise_problems
from ..progress import CancelFn, Progress, ProgressFn, check_cancel, never_cancel, no_progress
from .vectors import (
    LabelLayer,
    Plants,
    Polygon,
    RasterGrid,
    burn_plants,
    crs_name,
    fmt_extent,
    group_plants,
)

MANIFEST_FIELDS = ["id", "image", "mask", "group", "source", "window_col", "window_row",
                   "window_width", "window_height", "positive_pixels", "valid_pixels",
                   "plants"]  # fmt: skip
DATASET_ENTRIES = ("manifest.csv", "images", "masks")


class OutputExistsError(UserError, FileExistsError):
    """The output folder already holds a dataset."""


@dataclass
class ChipSettings:
    """How rasters and polygons become tiles (see the module docstring)."""

    tile: int = 64
    stride: int | None = None  # None: the tile size (no overlap)
    layer: str | None = None
    where: str | None = None  # OGR SQL attribute filter, e.g. "type = 'solar'"
    group_field: str | None = None  # None: touching polygons form one plant
    all_touched: bool = False
    min_valid: float = 0.5
    keep_background: int | None = None  # None: keep every all-background tile
    seed: int = 42
    overwrite: bool = False

    def problems(self) -> list[Problem]:
        """Every refused value, keyed by its option (``tile``, ``stride``...)."""
        out = []
        if self.tile < 1:
            out.append(Problem("tile", f"tile size must be >= 1 pixel, got {self.tile}"))
        if self.stride is not None and self.stride < 1:
            out.append(Problem("stride", f"stride must be >= 1 pixel, got {self.stride}"))
        if not 0.0 <= self.min_valid <= 1.0:
            out.append(Problem(
                "min_valid", f"minimum valid share must be in [0, 1], got {self.min_valid}"
            ))  # fmt: skip
        if self.keep_background is not None and self.keep_background < 0:
            out.append(Problem(
                "keep_background",
                f"background tiles to keep must be >= 0, got {self.keep_background}",
            ))  # fmt: skip
        return out

    def check(self) -> None:
        problems = self.problems()
        if problems:
            raise InputError(problems[0].message, field=problems[0].field)


@dataclass
class ChipsResult:
    """What was written and why tiles were left out."""

    out_dir: Path
    manifest: Path
    rasters: int
    polygons: int  # polygons (after the filter) near some raster
    tiles: int
    positive_tiles: int
    background_tiles: int  # all-background tiles kept
    background_dropped: int  # all-background tiles left out by keep_background
    invalid_dropped: int  # tiles under the minimum valid share
    plants: int  # plants with at least one pixel in a written tile
    groups: int  # split groups (connected plants) among written tiles
    positive_pixels: int
    rasters_without_plants: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.tiles} tiles from {self.rasters} raster(s): {self.positive_tiles} with plant "
            f"pixels, {self.background_tiles} all-background kept ({self.background_dropped} "
            f"left out), {self.invalid_dropped} under the valid share; {self.plants} plants in "
            f"{self.groups} groups, {self.positive_pixels} plant pixels"
        )


@dataclass
class _Window:
    raster: int
    col: int
    row: int
    width: int
    height: int
    positives: int = 0
    valid: int = 0
    plants: tuple[int, ...] = ()


def list_rasters(inputs: list[str | Path]) -> list[Path]:
    """Raster files from files and folders (a folder's rasters, sorted; not recursive)."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(
                f for f in p.iterdir() if f.is_file() and f.suffix.lower() in RASTER_SUFFIXES
            )
            if not found:
                raise MissingInputError(f"{p}: folder holds no raster files", field="rasters")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise MissingInputError(f"{p}: raster not found", field="rasters")
    if not out:
        raise MissingInputError("no rasters given", field="rasters")
    return out


def window_offsets(size: int, tile: int, stride: int) -> list[tuple[int, int]]:
    """(offset, length) along one axis (see the module docstring)."""
    if size <= tile:
        return [(0, size)]
    offsets = list(range(0, size - tile + 1, stride))
    if offsets[-1] + tile < size:
        offsets.append(size - tile)
    return [(o, tile) for o in offsets]


def _grid_of(path: Path) -> tuple[RasterGrid, int]:
    with open_raster(path) as src:
        if src.crs is None:
            raise RasterError(
                f"{path}: raster has no CRS, so the polygons cannot be placed on it",
            )
        grid = RasterGrid(
            src.crs.to_wkt(), tuple(src.transform.to_gdal()), src.width, src.height, str(path)
        )
        return grid, src.count


def _dataset_entries(out_dir: Path) -> list[Path]:
    entries = []
    for name in DATASET_ENTRIES:
        p = out_dir / name
        if p.is_file() or (p.is_dir() and any(p.iterdir())):
            entries.append(p)
    return entries


def _unique_stems(paths: list[Path]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for p in paths:
        n = seen.get(p.stem, 0)
        seen[p.stem] = n + 1
        out.append(p.stem if n == 0 else f"{p.stem}-{n + 1}")
    return out


def check_chips(
    rasters: list[str | Path],
    labels: str | Path,
    out_dir: str | Path,
    settings: ChipSettings | None = None,
) -> list[Problem]:
    """The one check of ``chips``' inputs (CLI ``--check``, the Create Training Data
    dialog and Processing): every problem keyed by its option (``rasters``, ``labels``,
    ``layer``, ``where``, ``group_field``, ``out``, ``tile``, ``stride``, ``min_valid``,
    ``keep_background``), without writing anything. The polygons' overlap with the
    rasters is checked on envelopes here; a polygon that covers no pixel centre is
    found (and refused) while the tiles are cut."""
    s = settings or ChipSettings()
    problems = s.problems()
    out_dir = Path(out_dir) if out_dir else None
    if out_dir is None:
        problems.append(Problem("out", "choose an output folder"))
    elif out_dir.exists() and not out_dir.is_dir():
        problems.append(Problem("out", f"{out_dir}: output exists and is not a folder"))
    else:
        existing = _dataset_entries(out_dir) if out_dir.is_dir() else []
        if existing and not s.overwrite:
            err = OutputExistsError(
                f"{out_dir}: already holds a dataset ({', '.join(p.name for p in existing)}); "
                "choose another folder or overwrite",
                field="out",
            )
            problems.append(Problem.of("out", err))
    paths: list[Path] = []
    grids: list[RasterGrid] = []
    try:
        paths = list_rasters(rasters)
        counts = []
        for p in paths:
            g, c = _grid_of(p)
            grids.append(g)
            counts.append(c)
        if len(set(counts)) > 1:
            pairs = list(zip(paths, counts, strict=True))[:8]
            listed = ", ".join(f"{p.name} {c}" for p, c in pairs)
            raise RasterError(
                f"rasters have different band counts ({listed}); one dataset needs one band "
                "count"
            )
    except UserError as exc:
        problems.append(Problem("rasters", str(exc), exc))
        grids = []
    if out_dir is not None:
        for p in paths:
            for sub in ("images", "masks"):
                if p.resolve().is_relative_to((out_dir / sub).resolve()):
                    problems.append(Problem(
                        "out",
                        f"{p}: input raster lies in the output's {sub}/ folder, which is "
                        "replaced",
                    ))  # fmt: skip
    layer = None
    try:
        layer = LabelLayer(labels, s.layer, s.where, s.group_field)
        if grids and not any(layer.polygons_near(g) for g in grids):
            problems.append(Problem.of("labels", _no_overlap(layer, grids, paths)))
    except UserError as exc:
        problems.append(Problem.of("labels", exc))
    finally:
        if layer is not None:
            layer.close()
    return problems


def make_chips(
    rasters: list[str | Path],
    labels: str | Path,
    out_dir: str | Path,
    settings: ChipSettings | None = None,
    progress: ProgressFn = no_progress,
    cancel: CancelFn = never_cancel,
) -> ChipsResult:
    """Cut ``rasters`` into image/mask tiles labelled by the polygons of ``labels``.

    Refuses (one line, naming the inputs): rasters with different band counts or no
    CRS, a polygon layer without a CRS, a filter or field the layer does not have, no
    polygon overlapping any raster (both extents given), and an output folder that
    already holds a dataset unless ``settings.overwrite``.
    """
    s = settings or ChipSettings()
    raise_problems(check_chips(rasters, labels, out_dir, s))
    stride = s.stride or s.tile
    out_dir = Path(out_dir)
    paths = list_rasters(rasters)
    grids = [_grid_of(p)[0] for p in paths]
    layer = LabelLayer(labels, s.layer, s.where, s.group_field)
    progress(Progress("chips", 0.0, f"reading polygons of {layer.path.name}"))

    # Polygons near each raster (envelope test in the layer's CRS).
    near: list[list[Polygon]] = []
    by_fid: dict[int, Polygon] = {}
    for g in grids:
        polys = layer.polygons_near(g)
        near.append(polys)
        for poly in polys:
            by_fid.setdefault(poly.fid, poly)
    if not by_fid:
        _refuse_no_overlap(layer, grids, paths)
    plants = group_plants(list(by_fid.values()), by_field=s.group_field is not None)

    # Pass 1: rasterise, list windows, score validity and plant pixels.
    candidates: list[_Window] = []
    invalid_dropped = 0
    for i, (p, g) in enumerate(zip(paths, grids, strict=True)):
        check_cancel(cancel)
        burnt = burn_plants(near[i], plants, layer.srs, g, s.all_touched)
        with open_raster(p) as src:
            for row, h in window_offsets(g.height, s.tile, stride):
                for col, w in window_offsets(g.width, s.tile, stride):
                    check_cancel(cancel)
                    with reading(p):
                        data = src.read(window=((row, row + h), (col, col + w)))
                    valid = valid_mask(data, src.nodata)
                    n_valid = int(valid.sum())
                    if n_valid < s.min_valid * w * h:
                        invalid_dropped += 1
                        continue
                    cut = burnt[row : row + h, col : col + w]
                    ids = np.unique(cut[cut > 0]) - 1
                    candidates.append(
                        _Window(i, col, row, w, h, int((cut > 0).sum()), n_valid,
                                tuple(int(k) for k in ids))
                    )  # fmt: skip
        progress(Progress("chips", 0.5 * (i + 1) / len(paths), f"rasterised {p.name}"))

    positive = [c for c in candidates if c.positives]
    if not positive:
        _refuse_no_overlap(layer, grids, paths, polygons=len(by_fid))
    background = [c for c in candidates if not c.positives]
    kept_bg = background
    if s.keep_background is not None and s.keep_background < len(background):
        picked = sorted(random.Random(s.seed).sample(range(len(background)), s.keep_background))
        kept_bg = [background[k] for k in picked]
    chosen = sorted(positive + kept_bg, key=lambda c: (c.raster, c.row, c.col))
    group_of = _split_groups(positive, plants.names)

    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / f".chips-{os.getpid()}-{uuid.uuid4().hex[:8]}.part"
    try:
        rows = _write_tiles(chosen, paths, grids, near, plants, layer.srs, s, staging,
                            group_of, progress, cancel)  # fmt: skip
        _publish(staging, out_dir, rows, s.overwrite)
        shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise

    with_plants = {k for c in positive for k in c.plants}
    raster_has = {c.raster for c in positive}
    result = ChipsResult(
        out_dir=out_dir,
        manifest=out_dir / "manifest.csv",
        rasters=len(paths),
        polygons=len(by_fid),
        tiles=len(chosen),
        positive_tiles=len(positive),
        background_tiles=len(kept_bg),
        background_dropped=len(background) - len(kept_bg),
        invalid_dropped=invalid_dropped,
        plants=len(with_plants),
        groups=len(set(group_of.values())),
        positive_pixels=sum(c.positives for c in positive),
        rasters_without_plants=[str(p) for i, p in enumerate(paths) if i not in raster_has],
    )
    progress(Progress("chips", 1.0, result.summary()))
    return result


def _refuse_no_overlap(
    layer: LabelLayer, grids: list[RasterGrid], paths: list[Path], polygons: int = 0
) -> None:
    raise _no_overlap(layer, grids, paths, polygons)


def _no_overlap(
    layer: LabelLayer, grids: list[RasterGrid], paths: list[Path], polygons: int = 0
) -> InputError:
    """The refusal when no polygon covers a pixel: both extents, in the layer's CRS."""
    name = crs_name(layer.srs)
    extents = "; ".join(
        f"{p.name} {fmt_extent(layer.grid_bounds(g))}"
        for p, g in list(zip(paths, grids, strict=True))[:5]
    )
    more = f" and {len(paths) - 5} more" if len(paths) > 5 else ""
    what = "no polygon" if not polygons else f"none of the {polygons} nearby polygons"
    filt = f" (filter {layer.where!r})" if layer.where else ""
    return InputError(
        f"{what} of {layer.path} layer {layer.layer_name!r}{filt} covers a pixel of any "
        f"raster: polygons extent {fmt_extent(layer.extent())} in {name}, raster extents in "
        f"{name}: {extents}{more}",
        field="labels",
    )


def _split_groups(positive: list[_Window], names: list[str]) -> dict[int, str]:
    """plant index -> split group name (plants sharing a tile are joined)."""
    parent: dict[int, int] = {}

    def find(a: int) -> int:
        parent.setdefault(a, a)
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for c in positive:
        first = find(c.plants[0])
        for k in c.plants[1:]:
            rk = find(k)
            if rk != first:
                parent[max(rk, first)] = min(rk, first)
                first = min(rk, first)
    members: dict[int, list[int]] = {}
    for k in list(parent):
        members.setdefault(find(k), []).append(k)
    out = {}
    for ks in members.values():
        ks.sort()  # plant indices follow the natural order of their names
        label = names[ks[0]] + (f"+{len(ks) - 1}" if len(ks) > 1 else "")
        for k in ks:
            out[k] = label
    return out


def _write_tiles(
    chosen: list[_Window],
    paths: list[Path],
    grids: list[RasterGrid],
    near: list[list[Polygon]],
    plants: Plants,
    srs: object,
    s: ChipSettings,
    staging: Path,
    group_of: dict[int, str],
    progress: ProgressFn,
    cancel: CancelFn,
) -> list[dict]:
    """Write the chosen tiles into ``staging``; return their manifest rows."""
    import rasterio
    from rasterio.windows import Window
    from rasterio.windows import transform as window_transform

    (staging / "images").mkdir(parents=True)
    (staging / "masks").mkdir()
    stems = _unique_stems(paths)
    rows = []
    by_raster: dict[int, list[_Window]] = {}
    for c in chosen:
        by_raster.setdefault(c.raster, []).append(c)
    done = 0
    for i, windows in by_raster.items():
        p = paths[i]
        burnt = burn_plants(near[i], plants, srs, grids[i], s.all_touched)
        with open_raster(p) as src:
            descriptions = src.descriptions
            for c in windows:
                check_cancel(cancel)
                win = Window(c.col, c.row, c.width, c.height)
                with reading(p):
                    data = src.read(window=win)
                transform = window_transform(win, src.transform)
                name = f"{stems[i]}_r{c.row}_c{c.col}.tif"
                common = dict(driver="GTiff", width=c.width, height=c.height, crs=src.crs,
                              transform=transform, compress="deflate")  # fmt: skip
                with rasterio.open(staging / "images" / name, "w", count=src.count,
                                   dtype=src.dtypes[0], nodata=src.nodata, **common) as dst:  # fmt: skip
                    dst.write(data)
                    for b, d in enumerate(descriptions, start=1):
                        if d:
                            dst.set_band_description(b, d)
                mask = (burnt[c.row : c.row + c.height, c.col : c.col + c.width] > 0).astype(
                    np.uint8
                )
                with rasterio.open(staging / "masks" / name, "w", count=1, dtype="uint8",
                                   **common) as dst:  # fmt: skip
                    dst.write(mask, 1)
                    dst.set_band_description(1, "plant")
                group = group_of[c.plants[0]] if c.plants else ""
                rows.append({
                    "id": Path(name).stem, "image": f"images/{name}", "mask": f"masks/{name}",
                    "group": group, "source": str(p.resolve()), "window_col": c.col,
                    "window_row": c.row, "window_width": c.width, "window_height": c.height,
                    "positive_pixels": c.positives, "valid_pixels": c.valid,
                    "plants": ";".join(plants.names[k] for k in c.plants),
                })  # fmt: skip
                done += 1
                progress(Progress("chips", 0.5 + 0.5 * done / len(chosen), f"wrote {name}"))
    return rows


def _publish(staging: Path, out_dir: Path, rows: list[dict], overwrite: bool) -> None:
    """Move the staged tiles into ``out_dir``; the manifest comes last."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=MANIFEST_FIELDS)
    w.writeheader()
    w.writerows(rows)
    (staging / "manifest.csv").write_text(buf.getvalue())
    old = out_dir / f".chips-old-{uuid.uuid4().hex[:8]}"
    if overwrite:
        for name in DATASET_ENTRIES:
            if (out_dir / name).exists():
                old.mkdir(exist_ok=True)
                os.replace(out_dir / name, old / name)
    for name in ("images", "masks", "manifest.csv"):
        os.replace(staging / name, out_dir / name)
    shutil.rmtree(old, ignore_errors=True)
