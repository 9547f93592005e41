"""An ONNX file's SolarSeg metadata: writing it, and reading what a file says about itself.

Every ONNX file the engine writes carries a ``solarseg`` JSON entry in its
``metadata_props`` (:data:`~.meta.ONNX_META_KEY`: the model's metadata, the output kind
and ``graph_precision``, what the graph computes in: ``fp32`` or ``int8``; not
ModelMeta's ``precision``, which says what training ran in). Reading it needs ``onnx``
only, never a session or torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .meta import ONNX_META_KEY

INT8 = "int8"
# Key of the ``solarseg`` metadata JSON saying what the graph computes in (fp32, int8).
GRAPH_PRECISION_KEY = "graph_precision"


def write_metadata(
    path: Path, props: dict[str, str], doc: str, output_shape: tuple | None = None
) -> None:
    """Replace ``path``'s metadata_props with ``props`` and its doc string with ``doc``
    (and name the output's dimensions, ``output_shape``: ints or names)."""
    import onnx

    graph = onnx.load(str(path))
    if output_shape is not None:
        dims = graph.graph.output[0].type.tensor_type.shape.dim
        for dim, value in zip(dims, output_shape, strict=True):
            if isinstance(value, str):
                dim.dim_param = value
            else:
                dim.dim_value = value
    del graph.metadata_props[:]
    for key, value in props.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    graph.doc_string = doc
    onnx.save(graph, str(path))


def solarseg_props(props: dict[str, str]) -> dict[str, Any]:
    """The parsed ``solarseg`` JSON of an ONNX file's metadata_props ({} if absent or bad)."""
    try:
        return json.loads(props.get(ONNX_META_KEY, "{}"))
    except json.JSONDecodeError:
        return {}


def onnx_precision(props: dict[str, str]) -> str:
    """``int8`` for a file :mod:`.quantize` made, ``fp32`` for any other."""
    return str(solarseg_props(props).get(GRAPH_PRECISION_KEY, "fp32"))


def file_props(path: str | Path) -> dict[str, str]:
    """An ONNX file's metadata_props, read without loading its weights into a session."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def is_int8_file(path: str | Path) -> bool:
    """Whether ``path`` is an ONNX file that says its graph is int8."""
    path = Path(path)
    if path.suffix.lower() != ".onnx" or not path.is_file():
        return False
    try:
        return onnx_precision(file_props(path)) == INT8
    except Exception:  # noqa: BLE001 - not an ONNX file: the backend reports it
        return False
