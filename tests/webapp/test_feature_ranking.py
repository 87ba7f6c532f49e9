"""Issue #15 §2: the feature ranking of E5 (`feature-details`, the chart's `Ranking` column) is
computed on the training patients of the extraction's stored split only, never on its test
patients; without a stored split, on every labelled patient. The response says which.
"""

from __future__ import annotations

import csv
import io

import pytest

from tests.support.factories import make_extraction, make_outcome

ALBUM = "album-rank"
N_FEATURES = 12
PATIENTS = [f"R{i:02d}" for i in range(40)]
TRAINING, TEST = PATIENTS[:24], PATIENTS[24:]
NAMES = [f"original_firstorder_F{j:02d}" for j in range(N_FEATURES)]
RANKING_HEADER = "X-Feature-Ranking"


@pytest.fixture
def ranked(db):
    """Bob's 40-patient extraction (12 noise features, CT/GTV), his outcome, selected."""
    extraction = make_extraction(
        db, "user-bob", ALBUM, PATIENTS, names=NAMES, album_name="Rank", seed=15
    )
    labels = {p: str(i % 2) for i, p in enumerate(PATIENTS)}
    category = make_outcome(db, "user-bob", ALBUM, labels)
    db.commit()
    return extraction, category


def select(client, auth, category) -> None:
    """Make the outcome the album's current one (A3)."""
    response = client.patch(
        f"/albums/{ALBUM}/current-outcome/{category.id}", headers=auth.headers()
    )
    assert response.status_code == 200, response.json


def relabel(client, auth, category, changes: dict[str, str]) -> None:
    """Save the outcome's labels again with some patients' labels changed (L3)."""
    labels = {label.patient_id: dict(label.label_content) for label in category.labels}
    for patient, value in changes.items():
        labels[patient] = {"Outcome": value}
    response = client.post(
        f"/labels/{category.id}", json={"label_map": labels}, headers=auth.headers()
    )
    assert response.status_code == 200, response.json


def ranking(client, auth, extraction) -> tuple[dict[str, int], str]:
    """Read E5's chart part: feature ID -> rank, and the header saying which patients ranked."""
    response = client.get(f"/extractions/{extraction.id}/feature-details", headers=auth.headers())
    assert response.status_code == 200
    chart = response.get_data().split(b'name="features_chart"\r\n\r\n', 1)[1]
    chart = chart.rsplit(b"\r\n--", 1)[0].decode()
    rows = list(csv.DictReader(io.StringIO(chart)))
    assert rows and "Ranking" in rows[0]
    return {row["FeatureID"]: int(row["Ranking"]) for row in rows}, response.headers.get(
        RANKING_HEADER, ""
    )


def flipped(patients: list[str]) -> dict[str, str]:
    """Labels 0 <-> 1 for some patients (their index in PATIENTS gives the stored label)."""
    return {p: str(1 - PATIENTS.index(p) % 2) for p in patients}


def test_ranking_ignores_the_test_patients_labels(client, auth, ranked):
    extraction, category = ranked
    select(client, auth, category)
    split = {"data_splitting_type": "traintest", "training_patients": TRAINING}
    split["test_patients"] = TEST
    assert (
        client.patch(
            f"/extractions/{extraction.id}", json=split, headers=auth.headers()
        ).status_code
        == 200
    )
    before, said = ranking(client, auth, extraction)
    relabel(client, auth, category, flipped(TEST[::2]))  # half the test patients flipped
    after_test_flip, _ = ranking(client, auth, extraction)
    relabel(client, auth, category, flipped(TRAINING[:3]))  # three training patients flipped
    after_training_flip, _ = ranking(client, auth, extraction)
    order = lambda ranks: sorted(ranks, key=ranks.get)  # noqa: E731
    print(f"\nranking {order(before)[:5]} -> test labels flipped {order(after_test_flip)[:5]}")
    print(f"-> training labels flipped {order(after_training_flip)[:5]}; header {said!r}")
    assert after_test_flip == before
    assert after_training_flip != before
    assert said == f"computed on {len(TRAINING)} training patients (train/test split)"


def test_without_a_split_every_labelled_patient_ranks_and_the_header_says_so(client, auth, ranked):
    extraction, category = ranked
    select(client, auth, category)
    before, said = ranking(client, auth, extraction)
    assert said == f"computed on all {len(PATIENTS)} labelled patients (no train/test split)"
    relabel(client, auth, category, flipped(TEST[::2]))
    assert ranking(client, auth, extraction)[0] != before  # every labelled patient counts
    full = {"data_splitting_type": "fulldataset", "training_patients": TRAINING}
    assert (
        client.patch(f"/extractions/{extraction.id}", json=full, headers=auth.headers()).status_code
        == 200
    )
    _, said = ranking(client, auth, extraction)
    assert said == f"computed on all {len(PATIENTS)} labelled patients (no train/test split)"


def test_the_header_is_readable_by_the_browser(client, auth, ranked):
    extraction, category = ranked
    select(client, auth, category)
    response = client.get(
        f"/extractions/{extraction.id}/feature-details",
        headers={**auth.headers(), "Origin": "http://localhost:3000"},
    )
    exposed = response.headers.get("Access-Control-Expose-Headers", "")
    assert RANKING_HEADER.lower() in exposed.lower()
