"""Named Sentinel-2-pretrained encoder weights that install offline.

``model.encoder_weights: ukis-csmask-4b-l2a`` (or ``-4b-l1c``, ``-6b-l2a``, ``-6b-l1c``)
starts the encoder from the cloud and cloud-shadow U-Nets of the PyPI package
`ukis-csmask <https://github.com/dlr-eoc/ukis-csmask>`_ (German Aerospace Center, DLR;
Apache License 2.0; pinned in requirements.txt). Each ships as an ONNX file: an smp
``Unet`` with the ``efficientnet-b4`` encoder (lukemelas' EfficientNet-PyTorch layout),
exported from PyTorch and stored in float16. Its initializers carry smp's own names
(``model.encoder._blocks.0._depthwise_conv.weight``...), so every encoder tensor maps by
name and shape onto the engine's ``efficientnet-b4`` encoder, upcast to float32 (only
the unused ``_conv_head``/``_bn1`` of the classifier head are absent). The decoder and
3-class head are not used: SolarSeg's head has one class.

The ONNX file is read from the installed package (no download, no import of the
package), checked against the SHA-256 its wheel's RECORD lists, converted once and
cached as a plain state dict under ``<cache>/encoders/`` (``SOLARSEG_CACHE_DIR``, else
``$XDG_CACHE_HOME/solarseg``, else ``~/.cache/solarseg``), keyed by the ONNX file's
SHA-256. The model file records the source (package, version, file, SHA-256, bands,
normalisation) in ``ModelMeta.encoder_source``.

The networks expect Sentinel-2 bands in a fixed order (B2, B3, B4, B8 [, B11, B12]) as
reflectance in [0, 1], normalised with their training statistics (stored in
the package's JSON beside each ONNX file). SolarSeg reads reflectance x 10,000 (as
Sentinel-2 L1C/L2A products and the Solafune and Austria tiles store it), so the
encoder's normalisation is the JSON's mean and std times :data:`REFLECTANCE_SCALE`.

Nothing here imports torch or onnx at module level: the config check names the bands
without them.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError, MissingInputError
from ..io import cache_dir, file_sha256

PACKAGE = "ukis-csmask"
MODULE = "ukis_csmask"
ENCODER = "efficientnet-b4"
# The raster values per unit of reflectance (Sentinel-2 L1C/L2A digital numbers).
REFLECTANCE_SCALE = 10000.0
# The ONNX initializers that are the encoder's, and the prefix they lose in smp.
ONNX_PREFIX = "model.encoder."
URL = "https://github.com/dlr-eoc/ukis-csmask"
COPYRIGHT = (
    "Copyright 2020 German Aerospace Center (DLR) * German Remote Sensing Data Center * "
    "Department: Geo-Risks and Civil Security"
)
# Version of the cached file's layout (bump to re-convert).
CACHE_LAYOUT = 1

# Sentinel-2 band names (core.models.indices' canonical form) of the package's words
# (its JSON "band_names").
COMMON_NAMES = {"blue": "B2", "green": "B3", "red": "B4", "nir": "B8",
                "swir16": "B11", "swir22": "B12"}  # fmt: skip


@dataclass(frozen=True)
class Pretrained:
    """One named set of encoder weights."""

    name: str
    file: str  # in the package folder
    bands: tuple[str, ...]  # Sentinel-2 band names, in model-input order
    level: str  # l1c | l2a: the product level the network was trained on

    @property
    def band_text(self) -> str:
        common = {v: k for k, v in COMMON_NAMES.items()}
        return ", ".join(f"{b} ({common[b]})" for b in self.bands)


_4B = ("B2", "B3", "B4", "B8")
_6B = _4B + ("B11", "B12")
SOURCES: dict[str, Pretrained] = {
    p.name: p
    for p in (
        Pretrained("ukis-csmask-4b-l2a", "model_4b_l2a.onnx", _4B, "l2a"),
        Pretrained("ukis-csmask-4b-l1c", "model_4b_l1c.onnx", _4B, "l1c"),
        Pretrained("ukis-csmask-6b-l2a", "model_6b_l2a.onnx", _6B, "l2a"),
        Pretrained("ukis-csmask-6b-l1c", "model_6b_l1c.onnx", _6B, "l1c"),
    )
}


def lookup(weights: str | None) -> Pretrained | None:
    """The named source of ``model.encoder_weights``, or None for anything else
    (None, a weights file, smp's own names such as ``imagenet``)."""
    return SOURCES.get(str(weights).strip().lower()) if weights else None


def looks_named(weights: str | None) -> bool:
    """Meant as one of ours (``ukis...``) whether or not the name is right."""
    return bool(weights) and str(weights).strip().lower().startswith("ukis")


# --- configuration checks (no torch, no files) -------------------------------------


def config_problems(encoder_weights: str | None, encoder: str, bands: list[int] | None):
    """(field, message) pairs for settings that cannot work with the named weights."""
    out: list[tuple[str, str]] = []
    if looks_named(encoder_weights) and lookup(encoder_weights) is None:
        out.append(("model.encoder_weights",
                     f"model.encoder_weights {encoder_weights!r} is not a known pretrained "
                     f"encoder; choose one of {', '.join(SOURCES)}, a weights file, or empty"))  # fmt: skip
        return out
    src = lookup(encoder_weights)
    if src is None:
        return out
    if encoder != ENCODER:
        out.append(("model.encoder",
                    f"model.encoder_weights {src.name} are for encoder {ENCODER}, "
                    f"not {encoder}: set model.encoder to {ENCODER}"))  # fmt: skip
    if bands is not None and len(bands) < len(src.bands):
        out.append(("data.bands", wrong_bands_message(src, bands, None)))
    return out


def wrong_bands_message(src: Pretrained, bands: list[int], names: list[str] | None) -> str:
    """One line: the bands chosen and the ones the encoder expects, in order."""
    chosen = f"data.bands {list(bands)}"
    if names is not None:
        picked = [names[b - 1] if 0 < b <= len(names) else "?" for b in bands]
        chosen += f" ({', '.join(picked)})"
    hint = ""
    if names is not None and all(b in names for b in src.bands):
        hint = f": data.bands {[names.index(b) + 1 for b in src.bands]} here"
    else:
        hint = f", e.g. data.bands {solafune_bands(src)} on 12-band L2A"
    return (
        f"{chosen} do not fit model.encoder_weights {src.name}, which expects "
        f"{len(src.bands)} Sentinel-2 bands in this order, first: {src.band_text}{hint}"
    )


# --- band identities of a raster ------------------------------------------------------


def solafune_bands(src: Pretrained) -> list[int]:
    """The raster bands of ``src`` in the 12-band L2A order of the Solafune tiles."""
    from .indices import L2A_12

    return [L2A_12.index(b) + 1 for b in src.bands]


def raster_band_names(count: int, descriptions, band_names: list[str] | None = None):
    """The Sentinel-2 name of each raster band (1-based order) as spectral indices find
    them (:func:`core.models.indices.raster_band_names`: ``data.band_names``, else the
    band descriptions, else the 12-band L2A order) and how they were known, or (None,
    why not)."""
    from .indices import raster_band_names as names_of

    try:
        names = names_of(count, descriptions, band_names)
    except InputError as exc:
        return None, str(exc).split("; set data.band_names")[0]
    if band_names is not None:
        return names, "data.band_names"
    if any(descriptions or ()):
        return names, "band descriptions"
    return names, f"no band descriptions: taken as the {count}-band L2A order"


def pick_bands(
    src: Pretrained, bands: list[int] | None, names: list[str] | None, how: str
) -> list[int]:
    """The 1-based raster bands to feed ``src``: ``bands`` checked against the raster's
    band names, or, when ``bands`` is None, found from them. ``bands`` may go on after
    the encoder's own (e.g. all 12 Solafune bands, the encoder's six first): the stem
    weights of the extra bands start at zero (:func:`load_encoder`). Raises InputError
    keyed ``data.bands`` (one line naming the expected bands) when they do not fit."""
    if bands is not None:
        n = len(src.bands)
        if len(bands) < n or len(set(bands)) != len(bands):
            raise InputError(wrong_bands_message(src, bands, names), "data.bands")
        if names is not None:
            picked = [names[b - 1] if 0 < b <= len(names) else None for b in bands[:n]]
            if picked != list(src.bands):
                raise InputError(wrong_bands_message(src, bands, names), "data.bands")
        return list(bands)
    if names is None:
        raise InputError(
            f"data.bands must be set for model.encoder_weights {src.name} ({how}): the "
            f"raster band numbers of {src.band_text}, in this order (or data.band_names)",
            "data.bands",
        )
    missing = [b for b in src.bands if b not in names]
    if missing:
        raise InputError(
            f"the dataset has no {', '.join(missing)} ({how}): model.encoder_weights "
            f"{src.name} expects {src.band_text}",
            "data.bands",
        )
    return [names.index(b) + 1 for b in src.bands]


# --- the installed package -------------------------------------------------------------


@dataclass(frozen=True)
class Located:
    src: Pretrained
    onnx: Path
    version: str
    record_sha256: str | None  # from the wheel's RECORD (hex), if listed

    def stats(self) -> dict[str, Any]:
        """The package's JSON beside the ONNX file (band names, mean, std)."""
        path = self.onnx.with_suffix(".json")
        try:
            data = json.loads(path.read_text())
            mean, std = data["data"]["dataset_statistics"]["img"]
            names = data["data"]["dataset_statistics"]["band_names"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise MissingInputError(
                f"{path}: unreadable {PACKAGE} model description ({exc})",
                "model.encoder_weights",
            ) from None
        if [COMMON_NAMES.get(n) for n in names] != list(self.src.bands):
            raise MissingInputError(
                f"{path}: bands {names} are not {self.src.band_text}", "model.encoder_weights"
            )
        return {"band_names": list(names), "mean": list(mean), "std": list(std),
                "version": data.get("model", {}).get("version")}  # fmt: skip


def locate(src: Pretrained) -> Located:
    """The installed ONNX file of ``src`` (without importing the package)."""
    import importlib.metadata as md

    try:
        dist = md.distribution(PACKAGE)
    except md.PackageNotFoundError:
        raise MissingInputError(
            f"model.encoder_weights {src.name} needs the {PACKAGE} package: "
            f"pip install {PACKAGE}==1.0.0 (see requirements.txt)",
            "model.encoder_weights",
        ) from None
    rel = f"{MODULE}/{src.file}"
    path = Path(str(dist.locate_file(rel)))
    if not path.is_file():
        raise MissingInputError(
            f"{PACKAGE} {dist.version} has no {rel} (expected at {path})", "model.encoder_weights"
        )
    digest = None
    for f in dist.files or ():
        if str(f).replace("\\", "/") == rel and f.hash is not None and f.hash.mode == "sha256":
            raw = base64.urlsafe_b64decode(f.hash.value + "=" * (-len(f.hash.value) % 4))
            digest = raw.hex()
    return Located(src, path, dist.version, digest)


def source_record(loc: Located, sha256: str) -> dict[str, Any]:
    """What the model file keeps about the encoder's origin."""
    stats = loc.stats()
    return {
        "name": loc.src.name,
        "package": PACKAGE,
        "version": loc.version,
        "file": loc.src.file,
        "sha256": sha256,
        "encoder": ENCODER,
        "bands": list(loc.src.bands),
        "band_names": stats["band_names"],
        "level": loc.src.level,
        "model_version": stats["version"],
        "reflectance_scale": REFLECTANCE_SCALE,
        "mean": [m * REFLECTANCE_SCALE for m in stats["mean"]],
        "std": [s * REFLECTANCE_SCALE for s in stats["std"]],
        # Apache-2.0, section 4: a model trained from these weights is a derivative
        # work; it carries the licence name, the copyright notice and what was changed.
        "licence": "Apache-2.0",
        "copyright": COPYRIGHT,
        "url": URL,
        "changes": "encoder tensors of the ONNX file converted from float16 to float32 "
        "(smp efficientnet-b4 names), then fine-tuned by SolarSeg",
    }


def normalisation(src: Pretrained) -> tuple[list[float], list[float]]:
    """Mean and std, in raster units (reflectance x 10,000), the network was trained with."""
    stats = locate(src).stats()
    return (
        [m * REFLECTANCE_SCALE for m in stats["mean"]],
        [s * REFLECTANCE_SCALE for s in stats["std"]],
    )


def onnx_encoder_tensors(path: Path) -> dict[str, Any]:
    """The ONNX file's encoder initializers as numpy arrays (their stored dtype, float16
    in ukis-csmask 1.0.0), by smp name."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    return {
        t.name[len(ONNX_PREFIX) :]: numpy_helper.to_array(t)
        for t in model.graph.initializer
        if t.name.startswith(ONNX_PREFIX)
    }


def encoder_state(src: Pretrained, cache: Path | None = None):
    """(state dict of the encoder's tensors, source record): from the cache, else
    converted from the installed ONNX file and cached (atomically). The tensors keep the
    file's dtype (float16: exact, half the size); :func:`load_encoder` upcasts them."""
    import torch

    from ..io import atomic_write_bytes

    loc = locate(src)
    sha = file_sha256(loc.onnx)
    if loc.record_sha256 is not None and loc.record_sha256 != sha:
        raise MissingInputError(
            f"{loc.onnx}: SHA-256 {sha[:12]}... differs from the {PACKAGE} {loc.version} "
            f"RECORD ({loc.record_sha256[:12]}...): the installed file was changed; "
            f"reinstall {PACKAGE}",
            "model.encoder_weights",
        )
    record = source_record(loc, sha)
    path = (cache or cache_dir()) / "encoders" / f"{src.name}-{sha[:16]}-v{CACHE_LAYOUT}.pt"
    if path.is_file():
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            if payload.get("sha256") == sha:
                return payload["state_dict"], record
        except Exception:  # a damaged cache file is converted again
            pass
    state = {k: torch.from_numpy(v.copy()) for k, v in onnx_encoder_tensors(loc.onnx).items()}
    if not state:
        raise MissingInputError(
            f"{loc.onnx}: no {ONNX_PREFIX}* tensors: not the expected U-Net",
            "model.encoder_weights",
        )
    buf = io.BytesIO()
    torch.save({"sha256": sha, "source": record["name"], "state_dict": state}, buf)
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError:
        pass  # an unwritable cache only costs the conversion next time
    return state, record


def load_encoder(model, src: Pretrained, cache: Path | None = None) -> dict[str, Any]:
    """Load ``src`` into ``model.encoder`` (every tensor must fit: same names and
    shapes; only the encoder's unused classifier head may be left; input channels after
    ``src``'s bands, further bands or indices, get zero stem weights); its record."""
    state, record = encoder_state(src, cache)
    own = model.encoder.state_dict()
    stem = "_conv_stem.weight"
    if stem in own and stem in state and own[stem].shape[1] > state[stem].shape[1]:
        # Channels after the encoder's bands (further bands, data.indices' spectral
        # indices) start with zero weights: at the start the network computes what the
        # pretrained one does.
        wide = state[stem].new_zeros(own[stem].shape)
        wide[:, : state[stem].shape[1]] = state[stem]
        state = {**state, stem: wide}
    bad = sorted(k for k, v in state.items() if k not in own or own[k].shape != v.shape)
    if bad:
        first = bad[0]
        have = tuple(state[first].shape)
        want = tuple(own[first].shape) if first in own else "absent"
        raise InputError(
            f"model.encoder_weights {src.name}: {len(bad)} tensor(s) do not fit the "
            f"{type(model.encoder).__name__} (first {first}: {have} vs {want}); it needs "
            f"encoder {ENCODER} with {len(src.bands)} input bands",
            "model.encoder_weights",
        )
    unused = ("_conv_head.", "_bn1.")
    left = [k for k in own if k not in state and not k.startswith(unused)
            and not k.endswith("num_batches_tracked")]  # fmt: skip
    if left:
        raise InputError(
            f"model.encoder_weights {src.name}: no weights for {len(left)} encoder "
            f"tensor(s) (first {left[0]})",
            "model.encoder_weights",
        )
    own.update({k: v.to(own[k].dtype) for k, v in state.items()})
    model.encoder.load_state_dict(own)
    return record
