"""``predict-split``: predict one split of a saved model and write it as files that numpy
reads without the engine (:mod:`.split_files`), for the QGIS plugin's error analysis.

The folder is written whole under a temporary name and swapped in at the end, so a
cancelled or failed run leaves the previous folder (or none) as it was. A folder that
exists but is not a predict-split folder is refused, never replaced. With ``reuse``,
a folder already holding this model file (same size and modification time), split,
dataset, TTA setting and display bands is kept as it is, without inference.

Beside the tiles the folder holds ``plants.csv``: the split's plants at the model's
threshold (:func:`.plants.write_plants_csv`, missed first), named by ``plants_csv`` in
the index, with the plant totals as ``plants``.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from ..data.rasters import RasterError, open_raster, read_image
from ..errors import InputError
from ..models.meta import display_bands, resolve_model_path
from ..progress import CancelFn, Progress, ProgressFn, check_cancel, never_cancel, no_progress
from . import split_files
from .evaluate import config_of_model, predict_split
from .plants import plants_of_predictions, write_plants_csv
from .scoring import evaluate_predictions

PLANTS_CSV = "plants.csv"

# Share of the progress bar for inference; the rest is writing the tile files.
PREDICT_SHARE = 0.9


def model_stamp(model_path: Path) -> list[int]:
    st = model_path.stat()
    return [st.st_size, st.st_mtime_ns]


def request_of(model_path: Path, dataset, split: str, tta: bool | None, rgb) -> dict[str, Any]:
    """What a folder must have been made from to be reused."""
    return {
        "model": str(model_path),
        "model_stamp": model_stamp(model_path),
        "dataset": str(Path(dataset).resolve()) if dataset else None,
        "split": split,
        "tta_option": tta,
        "rgb_option": list(rgb) if rgb else None,
    }


def reusable(out_dir: Path, request: dict[str, Any]) -> dict[str, Any] | None:
    try:
        index = split_files.read_index(out_dir)
    except split_files.MissingInputError:
        return None
    if any(index.get(k) != v for k, v in request.items()):
        return None
    if not all((out_dir / t["file"]).is_file() for t in index["tiles"]):
        return None
    if not (out_dir / index.get("plants_csv", PLANTS_CSV)).is_file():  # an older folder
        return None
    return index


def check_out_dir(out_dir: Path) -> None:
    """An existing folder is replaced only if it is a predict-split folder (or empty)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: exists and is not a folder", field="out")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        try:
            split_files.read_index(out_dir)
        except split_files.MissingInputError:
            raise InputError(
                f"{out_dir}: folder exists and is not a predict-split folder; choose another",
                field="out",
            ) from None


def georef(image: Path) -> tuple[str | None, list[float], int, int]:
    """CRS as WKT (None: no CRS), GDAL geotransform, width, height of a tile image."""
    with open_raster(image) as src:
        wkt = src.crs.to_wkt() if src.crs else None
        return wkt, list(src.transform.to_gdal()), src.width, src.height


def write_split(
    model_path: str | Path,
    dataset_path: str | Path | None,
    split: str,
    out_dir: str | Path,
    tta: bool | None = None,
    device: str = "auto",
    rgb_bands: list[int] | None = None,
    reuse: bool = False,
    progress: ProgressFn = no_progress,
    cancel: CancelFn = never_cancel,
) -> dict[str, Any]:
    """Predict ``split`` and write its folder; returns the index (plus ``reused``)."""
    model_path = resolve_model_path(model_path).resolve()
    out_dir = Path(out_dir).resolve()
    request = request_of(model_path, dataset_path, split, tta, rgb_bands)
    if reuse and (index := reusable(out_dir, request)) is not None:
        progress(Progress("write", 1.0, f"{len(index['tiles'])} tiles already predicted"))
        return {**index, "reused": True}
    check_out_dir(out_dir)

    def predicting(p: Progress) -> None:
        progress(Progress(p.stage, PREDICT_SHARE * p.fraction, p.message, p.info))

    meta, preds = predict_split(model_path, dataset_path, split, predicting, cancel, tta, device)
    cfg = config_of_model(meta)
    rgb = list(rgb_bands) if rgb_bands else display_bands(meta.bands, meta.in_channels)
    if len(rgb) != 3:
        raise InputError(f"give exactly three display bands, got {rgb}", field="rgb")
    skip_blank = bool(cfg.data.skip_blank_in_metrics)
    result = evaluate_predictions(preds, meta.threshold, skip_blank)
    plants = plants_of_predictions(preds, meta.threshold)
    tmp = out_dir.parent / f".{out_dir.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.part"
    tiles = []
    try:
        (tmp / split_files.TILES).mkdir(parents=True)
        for i, p in enumerate(preds):
            check_cancel(cancel)
            image, image_valid = read_image(p.pair.image, rgb)
            if image.shape[1:] != p.mask.shape:
                raise RasterError(
                    f"{p.pair.image}: image is {image.shape[1:]} but its mask is {p.mask.shape}"
                )
            shown = image_valid & p.valid
            image = np.where(shown[None], image, np.float32(np.nan))
            wkt, transform, width, height = georef(p.pair.image)
            name = split_files.tile_file(i)
            split_files.save_tile(tmp / name, p.prob, p.mask, p.valid, image)
            tiles.append({"id": p.tile_id, "file": name, "height": height, "width": width,
                          "crs_wkt": wkt, "geotransform": transform})  # fmt: skip
            frac = PREDICT_SHARE + (1 - PREDICT_SHARE) * (i + 1) / len(preds)
            progress(Progress("write", frac, f"{i + 1}/{len(preds)} tiles written"))
        write_plants_csv(plants, tmp / PLANTS_CSV)
        index = {
            "format": split_files.FORMAT,
            "version": split_files.VERSION,
            **request,
            "tta": bool(cfg.train.tta if tta is None else tta),
            "threshold": float(meta.threshold),
            "skip_blank": skip_blank,
            "rgb_bands": rgb,
            "model_bands": list(meta.bands or []),
            "arch": meta.arch,
            "encoder": meta.encoder,
            "metrics": result.metrics,
            "plants": plants.summary(),
            "plants_csv": PLANTS_CSV,
            "tiles": tiles,
        }
        split_files.write_index(tmp, index)
        check_cancel(cancel)
        swap_in(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {**index, "reused": False}


def swap_in(new: Path, out_dir: Path) -> None:
    """Put the finished folder ``new`` at ``out_dir``, replacing an older one."""
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.{uuid.uuid4().hex[:8]}.old"
        os.replace(out_dir, old)
    os.replace(new, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
