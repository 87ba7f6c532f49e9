"""Wire shapes of extractions (contract §6.1) and of the extraction requests."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from shared.extractions.models import ExtractionTask
from shared.schemas import Name, PatientId, ReadSchema, Schema, TimestampedRead

SplittingType = Literal["traintest", "fulldataset"]
SplitType = Literal["automatic", "manual"]
TASK_DATE_FORMAT = "%d.%m.%Y %H:%M"


class ExtractionCreate(Schema):
    """E8 body: the parsed YAML configuration and the ROI names to extract."""

    config: dict[str, Any]
    rois: list[Name] = Field(min_length=1)


class ExtractionUpdate(Schema):
    """E3 body: the split fields (anything else is ignored, never assigned)."""

    data_splitting_type: SplittingType | None = None
    train_test_split_type: SplitType | None = None
    training_patients: list[PatientId] | None = None
    test_patients: list[PatientId] | None = None


class ExtractionStatus(ReadSchema):
    """Progress counters of an extraction, computed from its task rows."""

    ready: bool
    successful: bool
    failed: bool
    total_tasks: int
    pending_tasks: int
    completed_tasks: int
    failed_tasks: int
    errors: dict[str, list[str]] | None


class RawTask(TimestampedRead):
    """A task row as stored (E1, E8)."""

    feature_extraction_id: int
    study_uid: str
    task_id: str | None


class FormattedTask(ReadSchema):
    """A task with its status for display (E2, E3, E4, extraction-status B)."""

    id: int
    updated_at: str
    status: str
    status_message: str
    study_uid: str

    @classmethod
    def from_row(cls, task: ExtractionTask) -> FormattedTask:
        """Format the status message as `current/total - message`."""
        if task.status == "FAILURE":
            message = task.error or task.status_message
        elif task.status == "PENDING" or task.total_steps == 0:
            message = "Waiting to start"
        else:
            message = f"{task.current_step}/{task.total_steps} - {task.status_message}"
        return cls(
            id=task.id,
            updated_at=task.updated_at.strftime(TASK_DATE_FORMAT),
            status=task.status,
            status_message=message,
            study_uid=task.study_uid,
        )


class ExtractionRead(TimestampedRead):
    """An extraction with its tasks (raw or formatted) and its status."""

    user_id: str
    album_id: str
    feature_definitions: list[str]
    data_splitting_type: str
    train_test_split_type: str
    training_patients: list[str] | None
    test_patients: list[str] | None
    modalities: list[str]
    rois: list[str]
    tasks: list[RawTask] | list[FormattedTask]
    result_id: str | None
    status: ExtractionStatus


class CancelResult(ReadSchema):
    """E4 response."""

    cancelled: bool
    message: str
    previous_extraction: ExtractionRead | None
