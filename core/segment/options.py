"""How to segment: the options of ``segment``, shared by every front end.

Pure Python (no rasterio, torch or GDAL), so the QGIS plugin can build options in its
own process and hand them to the engine process.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import Problem, raise_problems

# probability.tif: float32 0..1 (nodata NaN), or uint8 0..254 (scale 1/254, nodata 255).
PROBABILITY_DTYPES = ("float32", "uint8")
# The network's arithmetic (--precision): fp32; bf16 autocast (torch backend); int8
# (ONNX Runtime static quantisation, core.segment.int8); fp16 autocast (torch on CUDA
# only, checked with the device); auto (torch: bf16 on a CPU with native bf16, else fp32;
# ONNX Runtime: fp32).
PRECISIONS = ("fp32", "bf16", "fp16", "int8", "auto")
DEFAULT_CALIBRATION_TILES = 64  # int8 calibration tiles (core.segment.int8)


@dataclass
class ReferenceOptions:
    """Reference polygons for plant-level results (``segment --reference``): the file,
    its layer, an attribute filter, the field naming the plant (None: touching polygons
    form one plant) and the pixel rule (pixel centre, or all touched)."""

    path: str
    layer: str | None = None
    where: str | None = None
    group_field: str | None = None
    all_touched: bool = False


@dataclass
class SegmentOptions:
    """How to segment. ``None`` means "the model's value" (tile size, overlap and
    threshold are stored in the model file / ONNX metadata; 256, 64 and 0.5 unless
    training chose otherwise)."""

    tile_size: int | None = None  # source pixels per window side
    overlap: int | None = None  # source pixels shared by neighbouring windows
    batch_size: int = 8
    threshold: float | None = None
    # 1-based raster band numbers mapped onto the model's inputs in order; overrides the
    # model's own band selection (e.g. [3, 2, 1, 1] for a 3-band raster).
    bands: list[int] | None = None
    backend: str = "torch"  # "torch" or "onnx"
    device: str = "auto"  # "auto" (CUDA when present), "cpu" or "cuda"
    probability_dtype: str = "float32"  # "float32" (0..1) or "uint8" (0..254, 255 nodata)
    polygons: bool = False
    min_area_m2: float = 0.0
    tta: bool = False  # flip test-time augmentation (4 passes, averaged)
    overwrite: bool = False
    # Reference polygons: plant-level results in plants.csv / plants.gpkg.
    reference: ReferenceOptions | None = None
    # The network's arithmetic (PRECISIONS). fp32 by default: bf16, fp16 and int8 leave
    # the 1e-3 agreement between backends. bf16 and fp16 (CUDA only) are the torch
    # backend's autocast; int8 runs an int8 ONNX graph on ONNX Runtime whatever
    # ``backend`` says (a .pt or fp32 .onnx model is quantised first, into a cache). An
    # int8 .onnx file runs as int8.
    precision: str = "fp32"
    # int8 calibration: a dataset folder (None: the model's training dataset, as
    # recorded in the model file) and how many of its tiles.
    calibration: str | None = None
    calibration_tiles: int = DEFAULT_CALIBRATION_TILES

    @property
    def run_backend(self) -> str:
        """The backend that runs: ``onnx`` for int8, else ``backend``."""
        return "onnx" if self.precision == "int8" else self.backend

    def problems(self) -> list[Problem]:
        """Option values that cannot work, keyed by option name."""
        out: list[Problem] = []
        if self.tile_size is not None and self.tile_size < 1:
            out.append(Problem("tile_size", f"tile size must be positive, got {self.tile_size}"))
        if self.overlap is not None and self.overlap < 0:
            out.append(Problem("overlap", f"overlap must be >= 0, got {self.overlap}"))
        if self.batch_size < 1:
            out.append(Problem("batch_size", f"batch size must be >= 1, got {self.batch_size}"))
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            out.append(Problem("threshold", f"threshold must be in [0, 1], got {self.threshold}"))
        if self.backend not in ("torch", "onnx"):
            out.append(
                Problem("backend", f"backend must be 'torch' or 'onnx', got {self.backend!r}")
            )
        if self.probability_dtype not in PROBABILITY_DTYPES:
            out.append(
                Problem(
                    "probability_dtype",
                    f"probability dtype must be one of {PROBABILITY_DTYPES}, "
                    f"got {self.probability_dtype!r}",
                )
            )
        if self.min_area_m2 < 0:
            out.append(Problem("min_area", f"minimum area must be >= 0 m², got {self.min_area_m2}"))
        if self.precision not in PRECISIONS:
            out.append(
                Problem(
                    "precision",
                    f"precision must be fp32, bf16, fp16, int8 or auto, got {self.precision!r}",
                )
            )
        if self.calibration_tiles < 1:
            out.append(
                Problem(
                    "calibration_tiles",
                    f"calibration tiles must be >= 1, got {self.calibration_tiles}",
                )
            )
        if self.bands is not None and not self.bands:
            out.append(Problem("bands", "band mapping is empty"))
        return out

    def validate(self) -> None:
        raise_problems(self.problems())
