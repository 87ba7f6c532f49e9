"""Wire shapes of clinical features (contract §1.3, §6.7) and of their requests."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from shared.schemas import Name, PatientId, ReadSchema, Schema, TimestampedRead

FeatType = Literal["Number", "Categorical"]
Encoding = Literal["None", "One-Hot Encoding", "Normalization", "Ordered Categories"]
Missing = Literal["Drop", "Mode", "Median", "Mean", "None"]
ClinicalMap = dict[PatientId, dict[str, Any]]


class DefinitionSpec(Schema):
    """A column's type, encoding and missing-value policy."""

    feat_type: FeatType
    encoding: Encoding
    missing_values: Missing


class DefinitionRead(TimestampedRead):
    """A stored definition (C5, C6)."""

    album_id: str
    user_id: str
    name: str
    feat_type: str
    encoding: str
    missing_values: str
    clinical_feature_file_id: int


class DefinitionsCreate(Schema):
    """C6 body; without a file id the user's default file of the album is used."""

    clinical_feature_definitions: dict[Name, DefinitionSpec]
    clinical_feature_file_id: int | None = None


class DefinitionEdit(DefinitionSpec):
    """One C7 item: an id, or the name of the caller's definition in the album."""

    id: int | None = None
    name: Name


class DefinitionsUpdate(Schema):
    """C7 body."""

    clinical_feature_definitions: list[DefinitionEdit]


class ClinicalFeaturesPost(Schema):
    """C1 (save: `clinical_feature_map`) or C2 (read: `patient_ids`) body."""

    clinical_feature_map: ClinicalMap | None = None
    patient_ids: list[PatientId] | None = None
    clinical_feature_file_id: int | None = None

    @model_validator(mode="after")
    def _one_variant(self) -> ClinicalFeaturesPost:
        if (self.clinical_feature_map is None) == (self.patient_ids is None):
            raise ValueError("send either clinical_feature_map (save) or patient_ids (read)")
        return self


class SavedValue(ReadSchema):
    """One saved cell (C1)."""

    value: str | None
    clinical_feature_definition_id: int
    patient_id: str


class TableBody(Schema):
    """C3 and C9 body."""

    clinical_feature_map: ClinicalMap


class UniqueValuesBody(Schema):
    """C4 body: the table and the definitions keyed by column name."""

    clinical_feature_map: ClinicalMap
    clinical_features_definitions: dict[str, dict[str, Any]] = Field(default_factory=dict)


class ColumnFlags(ReadSchema):
    """C3 response."""

    only_one_value: list[str]
    only_nulls: list[str]
    too_little_data: list[str]
    date_columns: list[str]
