"""Wire shapes of feature collections (contract §6.5) and of their requests."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from shared.extractions.schemas import SplittingType, SplitType
from shared.schemas import Name, PatientId, ReadSchema, Schema, TimestampedRead

FeatureIds = Annotated[list[Annotated[str, StringConstraints(min_length=1)]], Field(min_length=1)]


class CollectionRead(TimestampedRead):
    """A collection as the frontend reads it."""

    name: str
    feature_extraction_id: int
    data_splitting_type: str
    train_test_split_type: str
    feature_ids: list[str]
    training_patients: list[str] | None
    test_patients: list[str] | None


class CollectionItem(ReadSchema):
    """F2 item."""

    collection: CollectionRead


class CollectionWithValues(ReadSchema):
    """A collection with the modalities, ROIs and feature names its IDs cover."""

    collection: CollectionRead
    modalities: list[str]
    rois: list[str]
    features: list[str]


class CollectionCreate(Schema):
    """F1 body (camelCase, as the frontend sends it)."""

    feature_extraction_id: int = Field(alias="featureExtractionID")
    name: Name
    feature_ids: FeatureIds = Field(alias="featureIDs")
    data_splitting_type: SplittingType = Field("traintest", alias="dataSplittingType")
    train_test_split_type: SplitType = Field("automatic", alias="trainTestSplitType")
    training_patients: list[PatientId] | None = Field(None, alias="trainingPatients")
    test_patients: list[PatientId] | None = Field(None, alias="testPatients")


class CollectionUpdate(Schema):
    """F4 body: any of these (snake_case); null clears the patient lists."""

    name: Name | None = None
    feature_ids: FeatureIds | None = None
    data_splitting_type: SplittingType | None = None
    train_test_split_type: SplitType | None = None
    training_patients: list[PatientId] | None = None
    test_patients: list[PatientId] | None = None
