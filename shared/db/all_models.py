"""Import every domain's models so the metadata is complete (Alembic, mapper configuration)."""

from shared.albums.models import AlbumOutcome, AlbumRoiCache
from shared.clinical.models import (
    ClinicalFeatureDefinition,
    ClinicalFeatureFile,
    ClinicalFeatureValue,
)
from shared.collections.models import FeatureCollection
from shared.db.base import Base
from shared.extractions.models import (
    ExtractionTask,
    FeatureExtraction,
    FeatureNameSet,
    FeatureVector,
    WorkerCredential,
)
from shared.labels.models import Label, LabelCategory
from shared.modeling.models import ModelArtifactChunk, Prediction, TrainedModel, TrainingRun
from shared.navigation.models import NavigationEntry
from shared.presets.models import FeaturePreset

__all__ = [
    "AlbumOutcome",
    "AlbumRoiCache",
    "Base",
    "ClinicalFeatureDefinition",
    "ClinicalFeatureFile",
    "ClinicalFeatureValue",
    "ExtractionTask",
    "FeatureCollection",
    "FeatureExtraction",
    "FeatureNameSet",
    "FeaturePreset",
    "FeatureVector",
    "Label",
    "LabelCategory",
    "ModelArtifactChunk",
    "NavigationEntry",
    "Prediction",
    "TrainedModel",
    "TrainingRun",
    "WorkerCredential",
]
