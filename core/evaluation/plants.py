"""Plant-level results: which plants a model finds, which it misses, what it invents.

**Plants.** In a tile dataset a plant is an 8-connected component of the reference
mask's valid positive pixels (a tile's plants are numbered in row-major order of their
first pixel: ``<tile id>#1``, ``#2``...). For a whole scene with reference polygons
(``segment --reference``) a plant is a group of polygons (:mod:`core.labels.vectors`:
a field's value, or touching polygons) rasterised on the scene's grid.

**Predicted objects** are the 8-connected components of the predicted pixels
(``probability >= threshold``, valid pixels only).

**Matching rule.** A plant is *found* when predicted pixels cover at least half of
its pixels (``coverage >= 0.5``; the parts may belong to several objects); otherwise
it is *missed*. A predicted object that overlaps no plant pixel is a *false
detection*. Plant recall = found / plants; plant precision = (objects - false
detections) / objects; F1 is their harmonic mean. With nothing to find and nothing
predicted, precision and recall are 1.0; otherwise a zero denominator gives 0.0 (the
pixel metrics' convention).

**Per plant**: reference area, predicted area (the objects overlapping the plant; an
object touching two plants counts for both), IoU of the plant with those objects,
coverage, found. Totals: reference area (all plant pixels) against predicted area
(all predicted pixels), the number an energy analyst quotes.

**Areas** are in hectares and CRS-correct: each row of pixels gets the ground area of
one of its pixels (:func:`core.segment.polygons.area_function`: planar area in
metres for projected CRSs, equal-area reprojection for geographic and Mercator
ones). A tile without a CRS is taken as 10 m pixels (Sentinel-2), and the result says
so in ``area_note``.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_write_text

FOUND_SHARE = 0.5
NO_CRS_PIXEL_M = 10.0
NO_CRS_NOTE = "tiles without a CRS: areas assume 10 m pixels"

PLANT_FIELDS = ["id", "tile", "found", "coverage", "iou", "reference_ha", "predicted_ha",
                "reference_pixels", "predicted_pixels", "covered_pixels"]  # fmt: skip


@dataclass
class PlantRow:
    """One reference plant and what the prediction made of it."""

    id: str
    tile: str
    reference_pixels: int
    covered_pixels: int  # plant pixels predicted positive
    predicted_pixels: int  # pixels of the predicted objects overlapping the plant
    reference_ha: float
    predicted_ha: float
    coverage: float
    iou: float
    found: bool


@dataclass
class PlantMetrics:
    """Plant-level counts, totals and per-plant rows (summable over tiles with ``+``)."""

    plants: int = 0
    found: int = 0
    predicted_objects: int = 0
    false_detections: int = 0
    reference_ha: float = 0.0
    predicted_ha: float = 0.0
    area_notes: set[str] = field(default_factory=set)
    rows: list[PlantRow] = field(default_factory=list)

    def __add__(self, other: PlantMetrics) -> PlantMetrics:
        return PlantMetrics(
            self.plants + other.plants,
            self.found + other.found,
            self.predicted_objects + other.predicted_objects,
            self.false_detections + other.false_detections,
            self.reference_ha + other.reference_ha,
            self.predicted_ha + other.predicted_ha,
            self.area_notes | other.area_notes,
            self.rows + other.rows,
        )

    @property
    def missed(self) -> int:
        return self.plants - self.found

    @property
    def precision(self) -> float:
        if not self.predicted_objects:
            return 1.0 if not self.plants else 0.0
        return (self.predicted_objects - self.false_detections) / self.predicted_objects

    @property
    def recall(self) -> float:
        if not self.plants:
            return 1.0 if not self.predicted_objects else 0.0
        return self.found / self.plants

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def summary(self) -> dict[str, Any]:
        """The counts and totals (JSON-ready, without the per-plant rows)."""
        return {
            "plants": self.plants,
            "found": self.found,
            "missed": self.missed,
            "predicted_objects": self.predicted_objects,
            "false_detections": self.false_detections,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "reference_ha": self.reference_ha,
            "predicted_ha": self.predicted_ha,
            "rule": f"found when predicted pixels cover >= {FOUND_SHARE:.0%} of the plant; "
            "an object overlapping no plant is a false detection",
            "area_note": "; ".join(sorted(self.area_notes)),
        }

    def text(self) -> str:
        """Two lines for the command line."""
        note = f" ({'; '.join(sorted(self.area_notes))})" if self.area_notes else ""
        return (
            f"plants {self.plants}: found {self.found}, missed {self.missed}; predicted objects "
            f"{self.predicted_objects}, false detections {self.false_detections}; plant "
            f"precision {self.precision:.3f} recall {self.recall:.3f} F1 {self.f1:.3f}\n"
            f"area: reference {self.reference_ha:.2f} ha, predicted {self.predicted_ha:.2f} ha"
            f"{note}"
        )


def connected_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of a boolean (H, W) array: int32 labels 1..n (0 = off),
    numbered in row-major order of each component's first pixel, and n.

    Works on horizontal runs (union-find over runs of neighbouring rows), so the cost
    grows with the number of runs, not of pixels; no scipy needed.
    """
    mask = np.asarray(mask, bool)
    h, w = mask.shape
    labels = np.zeros((h, w), np.int32)
    if not mask.any():
        return labels, 0
    padded = np.zeros((h, w + 2), np.int8)
    padded[:, 1:-1] = mask
    d = np.diff(padded, axis=1)
    rows, starts = np.nonzero(d == 1)
    _, ends = np.nonzero(d == -1)  # same row-major order: run i is [starts, ends)
    n = len(rows)
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    row_first = np.searchsorted(rows, np.arange(h + 1))
    for r in range(h - 1):
        a0, a1, b0, b1 = row_first[r], row_first[r + 1], row_first[r + 1], row_first[r + 2]
        i, j = a0, b0
        while i < a1 and j < b1:
            # 8-connectivity: runs touch when they overlap or meet at a corner.
            if starts[i] <= ends[j] and starts[j] <= ends[i]:
                ri, rj = find(i), find(j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
            if ends[i] < ends[j]:
                i += 1
            else:
                j += 1
    roots = np.array([find(i) for i in range(n)])
    _, comp = np.unique(roots, return_inverse=True)  # roots are first runs: row-major order
    for k in range(n):
        labels[rows[k], starts[k] : ends[k]] = comp[k] + 1
    return labels, int(comp.max()) + 1


def pixel_areas_m2(
    crs_wkt: str | None, geotransform: tuple[float, ...] | None, height: int, width: int
) -> tuple[np.ndarray, str | None]:
    """Ground area (m²) of one pixel in each row (H,), and a note when it is assumed.

    Without a CRS the pixels are taken as 10 m x 10 m (Sentinel-2 tiles), noted.
    """
    if not crs_wkt or geotransform is None:
        return np.full(height, NO_CRS_PIXEL_M**2), NO_CRS_NOTE
    from osgeo import ogr

    from ..segment.polygons import area_function

    gt = geotransform

    def xy(col: float, row: float) -> tuple[float, float]:
        return gt[0] + col * gt[1] + row * gt[2], gt[3] + col * gt[4] + row * gt[5]

    area_of = area_function(crs_wkt, xy(width / 2, height / 2))
    out = np.empty(height)
    col = width // 2
    for r in range(height):
        ring = ogr.Geometry(ogr.wkbLinearRing)
        for c, rr in ((col, r), (col + 1, r), (col + 1, r + 1), (col, r + 1), (col, r)):
            ring.AddPoint_2D(*xy(c, rr))
        poly = ogr.Geometry(ogr.wkbPolygon)
        poly.AddGeometry(ring)
        out[r] = area_of(poly)
    return out, None


def match_plants(
    plants: np.ndarray,
    predicted: np.ndarray,
    valid: np.ndarray | None = None,
    row_area_m2: np.ndarray | float = NO_CRS_PIXEL_M**2,
    names: list[str] | None = None,
    tile: str = "",
    area_note: str | None = None,
) -> PlantMetrics:
    """Match plants (int array, 0 = none, k = plant k) with predicted pixels (bool).

    ``names[k - 1]`` names plant k (default ``<tile>#k``). Plants with no valid pixel
    are left out (they cannot be seen). Areas use ``row_area_m2`` (one value per row,
    or one for all pixels). See the module docstring for the rule.
    """
    plants = np.asarray(plants)
    h, w = plants.shape
    valid = np.ones((h, w), bool) if valid is None else np.asarray(valid, bool)
    pred = np.asarray(predicted, bool) & valid
    ref = np.where(valid, plants, 0).astype(np.int64)
    objects, n_obj = connected_components(pred)
    pix_area = np.broadcast_to(np.asarray(row_area_m2, float).reshape(-1, 1), (h, w))
    n_plants = int(plants.max()) if plants.size else 0
    ref_pix = np.bincount(ref.ravel(), minlength=n_plants + 1)
    ref_area = np.bincount(ref.ravel(), weights=pix_area.ravel(), minlength=n_plants + 1)
    obj_pix = np.bincount(objects.ravel(), minlength=n_obj + 1)
    obj_area = np.bincount(objects.ravel(), weights=pix_area.ravel(), minlength=n_obj + 1)
    both = (ref > 0) & (objects > 0)
    pairs = np.unique(ref[both] * (n_obj + 1) + objects[both])
    touching: dict[int, list[int]] = {}
    for code in pairs.tolist():
        touching.setdefault(code // (n_obj + 1), []).append(code % (n_obj + 1))
    covered = np.bincount(ref[pred].ravel(), minlength=n_plants + 1)
    hit_objects = {o for objs in touching.values() for o in objs}
    result = PlantMetrics(
        predicted_objects=n_obj,
        false_detections=n_obj - len(hit_objects),
        reference_ha=float(ref_area[1:].sum()) / 10_000,
        predicted_ha=float(obj_area[1:].sum()) / 10_000,
        area_notes={area_note} if area_note else set(),
    )
    for k in range(1, n_plants + 1):
        if not ref_pix[k]:
            continue
        objs = touching.get(k, [])
        o_pix = int(obj_pix[objs].sum()) if objs else 0
        cov = int(covered[k])
        union = int(ref_pix[k]) + o_pix - cov
        coverage = cov / int(ref_pix[k])
        row = PlantRow(
            id=names[k - 1] if names else f"{tile}#{k}",
            tile=tile,
            reference_pixels=int(ref_pix[k]),
            covered_pixels=cov,
            predicted_pixels=o_pix,
            reference_ha=float(ref_area[k]) / 10_000,
            predicted_ha=float(obj_area[objs].sum()) / 10_000 if objs else 0.0,
            coverage=coverage,
            iou=cov / union if union else 0.0,
            found=coverage >= FOUND_SHARE,
        )
        result.rows.append(row)
        result.plants += 1
        result.found += int(row.found)
    return result


def tile_plants(
    reference: np.ndarray,
    predicted: np.ndarray,
    valid: np.ndarray | None,
    row_area_m2: np.ndarray | float,
    tile: str,
    area_note: str | None = None,
) -> PlantMetrics:
    """Plants of one tile: the 8-connected components of its valid reference pixels."""
    ref = np.asarray(reference) > 0
    if valid is not None:
        ref &= np.asarray(valid, bool)
    plants, _ = connected_components(ref)
    return match_plants(plants, predicted, valid, row_area_m2, None, tile, area_note)


def plants_at_threshold(
    tile: str,
    prob: np.ndarray,
    mask: np.ndarray,
    valid: np.ndarray | None,
    threshold: float,
    crs_wkt: str | None,
    geotransform: tuple[float, ...] | None,
) -> PlantMetrics:
    """Plants of one tile at ``threshold``: a pixel is predicted when ``prob >=
    threshold`` in float32, as in the pixel metrics; pixel areas from the tile's CRS
    and GDAL geotransform (10 m pixels without a CRS)."""
    areas, note = pixel_areas_m2(crs_wkt, geotransform, *np.shape(mask))
    pred = np.asarray(prob, np.float32) >= np.float32(threshold)  # NaN is never positive
    return tile_plants(mask, pred, valid, areas, tile, note)


def plants_of_predictions(preds: list, threshold: float) -> PlantMetrics:
    """Plant metrics summed over tile predictions (``TilePrediction``: pair, tile, prob),
    pixel areas from each image's CRS and transform."""
    from ..data.rasters import raster_info

    total = PlantMetrics()
    for p in preds:
        info = raster_info(p.pair.image)
        wkt, gt = (_wkt(info.crs), _gdal_transform(info.transform)) if info.crs else (None, None)
        total += plants_at_threshold(p.pair.id, p.prob, p.tile.mask, p.tile.valid, threshold, wkt, gt)  # fmt: skip
    return total


def plants_of_split(tiles: list, threshold: float) -> PlantMetrics:
    """Plant metrics of a predicted split's tiles (:class:`~.split_files.SplitTile`: the
    error analysis in QGIS) at any threshold: numpy and GDAL only, no rasterio. At the
    model's threshold they are ``predict-split``'s ``plants.csv``."""
    total = PlantMetrics()
    for t in tiles:  # without a CRS, pixel_areas_m2 ignores the (synthetic) geotransform
        total += plants_at_threshold(t.tile_id, t.prob, t.mask, t.valid, threshold, t.crs_wkt, t.geotransform)  # fmt: skip
    return total


def plant_records(metrics: PlantMetrics) -> list[dict[str, Any]]:
    """One dict per plant (the fields of ``plants.csv``), missed plants first (worst
    coverage first)."""
    return [
        {
            "id": r.id,
            "tile": r.tile,
            "found": r.found,
            "coverage": r.coverage,
            "iou": r.iou,
            "reference_ha": r.reference_ha,
            "predicted_ha": r.predicted_ha,
            "reference_pixels": r.reference_pixels,
            "predicted_pixels": r.predicted_pixels,
            "covered_pixels": r.covered_pixels,
        }  # fmt: skip
        for r in sorted(metrics.rows, key=lambda r: (r.found, r.coverage, r.id))
    ]


def _gdal_transform(affine: tuple[float, ...]) -> tuple[float, ...]:
    """rasterio's (a, b, c, d, e, f) -> GDAL's (c, a, b, f, d, e)."""
    a, b, c, d, e, f = affine[:6]
    return (c, a, b, f, d, e)


def _wkt(crs_text: str) -> str:
    from osgeo import osr

    srs = osr.SpatialReference()
    srs.SetFromUserInput(crs_text)
    return srs.ExportToWkt()


def write_plants_csv(metrics: PlantMetrics, path: str | Path) -> None:
    """One row per plant, missed plants first (worst coverage first), atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=PLANT_FIELDS)
    w.writeheader()
    for row in plant_records(metrics):
        w.writerow({k: round(v, 6) if isinstance(v, float) else int(v) if isinstance(v, bool) else v
                    for k, v in row.items()})  # fmt: skip
    atomic_write_text(path, buf.getvalue())
