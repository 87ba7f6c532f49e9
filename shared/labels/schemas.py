"""Wire shapes of outcomes (label categories) and labels (contract §6.4)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from shared.schemas import Name, PatientId, Schema, TimestampedRead

LabelType = Literal["Classification", "Survival"]
# Values are kept as the client sent them (usually strings; "" = missing).
LabelValue = str | int | float | None

OUTCOME_COLUMNS: dict[str, tuple[str, ...]] = {
    "Classification": ("Outcome",),
    "Survival": ("Time", "Event"),
}


class LabelRead(TimestampedRead):
    """One patient's outcome value."""

    patient_id: str
    label_content: dict[str, Any]


class LabelCategoryRead(TimestampedRead):
    """An outcome with its labels."""

    album_id: str
    user_id: str
    label_type: str
    name: str
    labels: list[LabelRead]
    pos_label: str | None


class LabelCategoryCreate(Schema):
    """L2 body."""

    label_type: LabelType
    name: Name


class LabelCategoryRename(Schema):
    """L4 body."""

    name: Name


class LabelsSave(Schema):
    """L3 body: every label of the outcome, replacing the stored ones."""

    label_map: dict[PatientId, dict[Name, LabelValue]]
    pos_label: str | None = Field(None, max_length=255)
