"""The SolarSeg Processing provider (id ``solarseg``)."""

from __future__ import annotations

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from ..common import icon, tr
from .algorithms import (
    EvaluateModelAlgorithm,
    SegmentManyRastersAlgorithm,
    SegmentRasterAlgorithm,
    TrainModelAlgorithm,
)
from .chips_algorithm import CreateTrainingDataAlgorithm


class SolarSegProvider(QgsProcessingProvider):
    def loadAlgorithms(self) -> None:  # noqa: N802 (QGIS API)
        for alg in (SegmentRasterAlgorithm(), SegmentManyRastersAlgorithm(), EvaluateModelAlgorithm(),
                    TrainModelAlgorithm()):  # fmt: skip
            self.addAlgorithm(alg)
        self.addAlgorithm(CreateTrainingDataAlgorithm())

    def id(self) -> str:
        return "solarseg"

    def name(self) -> str:
        return tr("SolarSeg")

    def longName(self) -> str:  # noqa: N802
        return tr("SolarSeg: solar PV plant segmentation")

    def icon(self) -> QIcon:
        return icon("icon.svg")
