"""Train/val/test splits: predefined ones honoured, otherwise seeded and group-aware.

A group is a plant or site: tiles of one group never land in two splits (the leakage
check enforces it). Groups come from the manifest's ``group`` column or a regex over
file names; with no group, each tile is its own group.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
from collections import defaultdict
from pathlib import Path

from ..config import SplitConfig
from .discovery import DatasetError, DatasetIndex, Pair


class LeakageError(DatasetError):
    """A group appears in more than one split."""


def assign_groups(pairs: list[Pair], group_regex: str | None) -> None:
    """Fill ``pair.group`` from the regex (first group, or whole match) over the image name."""
    if not group_regex:
        return
    pattern = re.compile(group_regex)
    missing = []
    for p in pairs:
        m = pattern.search(p.image.name)
        if not m:
            missing.append(str(p.image))
            continue
        p.group = m.group(1) if m.groups() else m.group(0)
    if missing:
        raise DatasetError(
            f"group regex {group_regex!r} matches no group in {len(missing)} file(s), e.g. "
            + ", ".join(missing[:5])
        )


def split_pairs(index: DatasetIndex, cfg: SplitConfig) -> list[Pair]:
    """Return the pairs with ``split`` set. Predefined splits are kept as they are."""
    pairs = index.pairs
    if index.has_predefined_split:
        check_leakage(pairs)
        return pairs
    if any(p.split for p in pairs):
        partial = [str(p.image) for p in pairs if not p.split][:5]
        raise DatasetError(f"{index.root}: some pairs have a split and some not, e.g. {partial}")
    assign_groups(pairs, cfg.group_regex)
    groups: dict[str, list[Pair]] = defaultdict(list)
    for p in pairs:
        groups[p.group if p.group is not None else f"tile:{p.id}"].append(p)
    keys = sorted(groups)
    random.Random(cfg.seed).shuffle(keys)
    # Fill test, then val, group by group in seeded order; the rest is train.
    n = len(pairs)
    quota = {"test": round(cfg.test * n), "val": round(cfg.val * n)}
    filled = {"test": 0, "val": 0}
    split_of: dict[str, str] = {}
    for key in keys:
        name = next((s for s in ("test", "val") if filled[s] < quota[s]), "train")
        split_of[key] = name
        if name != "train":
            filled[name] += len(groups[key])
    for key, members in groups.items():
        for p in members:
            p.split = split_of[key]
    check_leakage(pairs)
    return pairs


def check_leakage(pairs: list[Pair]) -> None:
    """Fail when a group appears in two splits (no plant in two sets)."""
    seen: dict[str, set[str]] = defaultdict(set)
    for p in pairs:
        if p.group is not None and p.split:
            seen[p.group].add(p.split)
    leaked = {g: sorted(s) for g, s in seen.items() if len(s) > 1}
    if leaked:
        shown = ", ".join(f"{g} in {'+'.join(s)}" for g, s in sorted(leaked.items())[:10])
        raise LeakageError(f"{len(leaked)} group(s) appear in more than one split: {shown}")


def dataset_folder(path: str | Path) -> Path:
    """The folder a dataset's image paths are taken relative to (a CSV's own folder)."""
    path = Path(os.path.abspath(path))
    return path.parent if path.is_file() else path


def _relative_name(image: Path, folders: list[Path]) -> str:
    """The image path relative to the dataset folder (symlinks followed or not);
    absolute when it lies outside."""
    image = Path(os.path.abspath(image))
    for folder in folders:
        for candidate in (image, image.resolve()):
            if candidate.is_relative_to(folder):
                return candidate.relative_to(folder).as_posix()
    return image.as_posix()


def split_signature(pairs: list[Pair], dataset_path: str | Path) -> dict:
    """What identifies a split: the dataset, the tile count and a SHA-256 of the sorted
    ``image<TAB>split`` lines (images relative to the dataset folder, POSIX-style)."""
    folders = [dataset_folder(dataset_path), dataset_folder(dataset_path).resolve()]
    lines = [f"{_relative_name(p.image, folders)}\t{p.split or ''}" for p in pairs]
    digest = hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()
    return {"dataset": str(Path(dataset_path).resolve()), "tiles": len(pairs), "sha256": digest}
