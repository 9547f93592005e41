"""Find image/mask pairs in a dataset folder, in three forms.

- ``solarplantsbrazil``: the TorchGeo SolarPlantsBrazil layout,
  ``{train,val,test}/input/img(N).tif`` with ``{train,val,test}/labels/target(N).tif``;
  its predefined splits are kept.
- ``folders``: two folders of images and masks paired by the number in the file name,
  e.g. ``s2_image/train_s2_image_N.tif`` with ``mask/train_mask_N.tif``.
- ``manifest``: a CSV file (or a folder holding ``manifest.csv``) with columns
  ``image``, ``mask`` and optional ``group`` and ``split``; relative paths are
  resolved against the CSV's folder. A run's ``split.csv`` is such a manifest.

Problems (unpaired files, duplicate numbers, empty folders) are collected and raised
as one :class:`DatasetError` that lists every offending file.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

RASTER_SUFFIXES = {".tif", ".tiff", ".vrt", ".img", ".jp2"}
MASK_DIR_WORDS = ("mask", "label", "target", "gt", "annotation")
SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                  "validation": "val", "test": "test", "testing": "test"}  # fmt: skip


class DatasetError(UserError, ValueError):
    """The dataset cannot be used as found; the message lists the offending files."""


@dataclass
class Pair:
    """One image tile and its mask."""

    id: str
    image: Path
    mask: Path
    group: str | None = None
    split: str | None = None


@dataclass
class DatasetIndex:
    """All pairs found under ``root`` and the form they were found in."""

    root: Path
    form: str
    pairs: list[Pair]

    @property
    def has_predefined_split(self) -> bool:
        return bool(self.pairs) and all(p.split for p in self.pairs)

    def split_counts(self) -> dict[str, int]:
        counts = {s: 0 for s in SPLITS}
        for p in self.pairs:
            if p.split:
                counts[p.split] = counts.get(p.split, 0) + 1
        return counts


def _number(name: str) -> int | None:
    """Last integer in a file stem: ``train_mask_12`` -> 12, ``img(7)`` -> 7."""
    found = re.findall(r"\d+", Path(name).stem)
    return int(found[-1]) if found else None


def _rasters(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES
    )


def _pair_by_number(images: list[Path], masks: list[Path], where: str) -> list[Pair]:
    """Pair two file lists by the number in their names; report every problem."""
    problems: list[str] = []
    if not images:
        problems.append(f"{where}: no image rasters found")
    if not masks:
        problems.append(f"{where}: no mask rasters found")
    by_num: dict[str, dict[int, Path]] = {"image": {}, "mask": {}}
    for kind, files in (("image", images), ("mask", masks)):
        for f in files:
            n = _number(f.name)
            if n is None:
                problems.append(f"{f}: {kind} file name has no number to pair it by")
            elif n in by_num[kind]:
                problems.append(f"{f}: duplicate {kind} number {n} (also {by_num[kind][n]})")
            else:
                by_num[kind][n] = f
    imgs, msks = by_num["image"], by_num["mask"]
    for n in sorted(set(imgs) - set(msks)):
        problems.append(f"{imgs[n]}: image has no mask with number {n}")
    for n in sorted(set(msks) - set(imgs)):
        problems.append(f"{msks[n]}: mask has no image with number {n}")
    if problems:
        raise DatasetError(_report(problems))
    return [Pair(id=str(n), image=imgs[n], mask=msks[n]) for n in sorted(imgs)]


def _report(problems: list[str], most: int = 25) -> str:
    head = f"{len(problems)} problem(s) in the dataset:\n  " + "\n  ".join(problems[:most])
    if len(problems) > most:
        head += f"\n  ... and {len(problems) - most} more"
    return head


def find_dataset(path: str | Path) -> DatasetIndex:
    """Detect the dataset form under ``path`` and list its pairs (sorted by number)."""
    root = Path(path)
    if not root.exists():
        raise DatasetError(f"{root}: dataset path not found")
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise DatasetError(f"{root}: a dataset is a folder or a CSV manifest")
        return read_manifest(root)
    if (root / "manifest.csv").exists():
        return read_manifest(root / "manifest.csv")
    if any((root / s / "input").is_dir() for s in SPLITS):
        return _find_solarplantsbrazil(root)
    return _find_folders(root)


def _find_solarplantsbrazil(root: Path) -> DatasetIndex:
    pairs: list[Pair] = []
    problems: list[str] = []
    for split in SPLITS:
        inp, lab = root / split / "input", root / split / "labels"
        if not inp.is_dir() and not lab.is_dir():
            continue
        if not lab.is_dir():
            problems.append(f"{lab}: labels folder missing for {inp}")
            continue
        try:
            found = _pair_by_number(_rasters(inp), _rasters(lab), str(root / split))
        except DatasetError as exc:
            problems.extend(str(exc).split("\n  ")[1:])
            continue
        for p in found:
            pairs.append(Pair(id=f"{split}/{p.id}", image=p.image, mask=p.mask, split=split))
    if problems:
        raise DatasetError(_report(problems))
    return DatasetIndex(root=root, form="solarplantsbrazil", pairs=pairs)


def _find_folders(root: Path) -> DatasetIndex:
    dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    mask_dirs = [d for d in dirs if any(w in d.name.lower() for w in MASK_DIR_WORDS)]
    image_dirs = [d for d in dirs if d not in mask_dirs and _rasters(d)]
    if len(mask_dirs) != 1 or len(image_dirs) != 1:
        raise DatasetError(
            f"{root}: expected {{train,val,test}}/input + labels folders, one image folder and "
            f"one mask folder (named with 'mask' or 'label'), or a manifest.csv; found "
            f"folders {[d.name for d in dirs] or 'none'}"
        )
    pairs = _pair_by_number(_rasters(image_dirs[0]), _rasters(mask_dirs[0]), str(root))
    return DatasetIndex(root=root, form="folders", pairs=pairs)


def read_manifest(csv_path: Path) -> DatasetIndex:
    """Read a CSV manifest (image, mask[, group][, split][, id])."""
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise DatasetError(f"{csv_path}: manifest has no rows")
    cols = set(rows[0])
    if not {"image", "mask"} <= cols:
        raise DatasetError(
            f"{csv_path}: manifest needs columns image and mask, found {sorted(cols)}"
        )
    base = csv_path.parent
    problems: list[str] = []
    pairs: list[Pair] = []
    seen: dict[Path, int] = {}
    for i, row in enumerate(rows, start=2):  # line 1 is the header
        image = (base / row["image"]).resolve() if row["image"] else None
        mask = (base / row["mask"]).resolve() if row["mask"] else None
        if image is None or mask is None:
            problems.append(f"{csv_path}:{i}: empty image or mask")
            continue
        for f in (image, mask):
            if not f.exists():
                problems.append(f"{csv_path}:{i}: {f} does not exist")
        if image in seen:
            problems.append(f"{csv_path}:{i}: duplicate image {image} (also line {seen[image]})")
        seen[image] = i
        split = (row.get("split") or "").strip().lower() or None
        if split is not None and split not in _SPLIT_ALIASES:
            problems.append(f"{csv_path}:{i}: split {split!r} is not train, val or test")
        pairs.append(
            Pair(
                id=(row.get("id") or "").strip() or image.stem,
                image=image,
                mask=mask,
                group=(row.get("group") or "").strip() or None,
                split=_SPLIT_ALIASES.get(split) if split else None,
            )
        )
    if problems:
        raise DatasetError(_report(problems))
    ids = [p.id for p in pairs]
    if len(set(ids)) != len(ids):
        for p in pairs:
            p.id = str(p.image)
    return DatasetIndex(root=csv_path, form="manifest", pairs=pairs)


def write_manifest(pairs: list[Pair], csv_path: Path) -> None:
    """Write pairs (with their split and group) as a manifest, atomically.

    Paths are written absolute so the manifest reproduces the split from anywhere.
    """
    import io

    from ..io import atomic_write_text

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "image", "mask", "group", "split"])
    for p in pairs:
        w.writerow(
            [p.id, str(p.image.resolve()), str(p.mask.resolve()), p.group or "", p.split or ""]
        )
    atomic_write_text(csv_path, buf.getvalue())
