"""Training inputs from stored rows (labels, wide radiomics, clinical columns) and the pipeline
stored in database chunks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shared.clinical import service as clinical_service
from shared.clinical.schemas import DefinitionSpec
from shared.errors import InvalidInput
from shared.labels.models import LabelCategory
from shared.modeling import artifacts, dataset
from shared.modeling.models import ModelArtifactChunk, TrainedModel
from tests.support.factories import NAMES, make_extraction, make_outcome
from tests.webapp.test_models_api import FEATURE, SEP

PATIENTS = ["P1", "P2", "P3", "P4"]


def category(db, label_type: str, labels: dict[str, dict]) -> LabelCategory:
    """An outcome of bob's with the given label contents."""
    return make_outcome(db, "user-bob", "album-d", labels, label_type, label_type=label_type)


def test_stored_labels_leave_out_undefined_empty_and_unreadable(db):
    outcome = category(
        db,
        "Classification",
        {
            "A": {"Outcome": "yes"},
            "B": {"Outcome": "1.0"},
            "C": {"Outcome": "Undefined"},
            "D": {"Outcome": ""},
            "E": {},
            "F": {"Outcome": None},
        },
    )
    labels = dataset.stored_labels(db, outcome)
    assert labels.classes == {"A": "yes", "B": "1"}
    assert labels.missing == {"C", "D", "E", "F"}
    assert list(labels.frame(["B", "A"])["label"]) == ["1", "yes"]

    survival = category(
        db,
        "Survival",
        {
            "A": {"Time": "12.5", "Event": "1"},
            "B": {"Time": 30, "Event": "no"},
            "C": {"Time": "Undefined", "Event": "Undefined"},
            "D": {"Time": "-3", "Event": "1"},
            "E": {"Time": "7", "Event": "maybe"},
        },
    )
    labels = dataset.stored_labels(db, survival)
    assert labels.survival == {"A": (12.5, True), "B": (30.0, False)}
    assert labels.outcome_of(["B"]) == [(30.0, False)]
    frame = labels.frame(["A", "B"])
    assert list(frame.columns) == ["time", "event"] and frame["event"].tolist() == [True, False]


@pytest.fixture
def album(db):
    """An extraction of album-d and two clinical columns (one value missing)."""
    extraction = make_extraction(db, "user-bob", "album-d", PATIENTS)
    file = clinical_service.resolve_file(db, user_id="user-bob", album_id="album-d", file_id=None)
    clinical_service.save_definitions(
        db,
        file=file,
        specs={
            "Age": DefinitionSpec(feat_type="Number", encoding="None", missing_values="Median"),
            "Sex": DefinitionSpec(
                feat_type="Categorical", encoding="One-Hot Encoding", missing_values="Drop"
            ),
        },
    )
    table = {p: {"Age": str(40 + i), "Sex": "MF"[i % 2]} for i, p in enumerate(PATIENTS)}
    table["P2"]["Age"] = "N/A"
    clinical_service.save_values(db, file=file, table=table)
    db.flush()
    return extraction


def test_feature_table_is_wide_radiomics_plus_clinical_with_policies(db, album):
    patients = ["P3", "P1", "P2", "NOBODY"]
    features, specs = dataset.feature_table(
        db, user_id="user-bob", album_id="album-d", extraction_id=album.id, patients=patients
    )
    radiomics = [f"CT{SEP}GTV{SEP}{name}" for name in sorted(NAMES)]
    assert list(features.columns) == [*radiomics, "Age", "Sex"]
    assert list(features.index) == patients
    assert features.loc["P1", "Age"] == 40.0 and features.loc["P2", "Age"] is None
    assert features.loc["P3", "Sex"] == "M"
    assert features.loc["NOBODY"].isna().all()
    assert [(s.name, s.encoding, s.missing_values) for s in specs] == [
        ("Age", "None", "Median"),
        ("Sex", "One-Hot Encoding", "Drop"),
    ]
    # A collection's feature IDs select radiomics and clinical columns alike.
    chosen, specs = dataset.feature_table(
        db,
        user_id="user-bob",
        album_id="album-d",
        extraction_id=album.id,
        patients=["P1"],
        feature_ids=[FEATURE, "Sex"],
    )
    assert list(chosen.columns) == [FEATURE, "Sex"] and [s.name for s in specs] == ["Sex"]
    assert not math.isnan(chosen.loc["P1", FEATURE])
    available = dataset.available_columns(
        db, user_id="user-bob", album_id="album-d", extraction_id=album.id
    )
    assert available == {*radiomics, "Age", "Sex"}
    other_user = dataset.clinical_definitions(db, user_id="user-carol", album_id="album-d")
    assert other_user == []


def test_pipeline_bytes_are_stored_in_chunks_with_a_checksum(db, album, monkeypatch):
    monkeypatch.setattr(artifacts, "CHUNK_BYTES", 1000)
    outcome = category(db, "Classification", {"P1": {"Outcome": "1"}})
    model = TrainedModel(
        user_id="user-bob",
        album_id="album-d",
        name="m",
        kind="classification",
        best_algorithm="SVC",
        data_splitting_type="fulldataset",
        train_test_split_type="automatic",
        training_validation="cv",
        feature_names=[],
        training_patient_ids=[],
        training_metrics={},
        feature_extraction_id=album.id,
        label_category_id=outcome.id,
    )
    db.add(model)
    db.flush()
    data = np.random.default_rng(0).bytes(2500)
    artifacts.attach(db, model, data)
    db.flush()
    assert [c.seq for c in model.chunks] == [0, 1, 2]
    assert [len(c.data) for c in model.chunks] == [1000, 1000, 500]
    assert artifacts.read(db, model) == data
    assert model.artifact_path == f"db://model/{model.id}"
    model.chunks[1].data = b"x" * 1000
    db.flush()
    with pytest.raises(InvalidInput, match="checksum"):
        artifacts.read(db, model)
    db.delete(model)
    db.flush()
    assert db.query(ModelArtifactChunk).count() == 0
