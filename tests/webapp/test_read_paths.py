"""The cheap read paths of the common GETs (issue #8 §1): the lean E1 and outcome reads give
exactly what the schema path gives, the cached preset parse and the verified-token cache are
invalidated, and the orjson encoder sends what Flask's encoder sent."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
import sqlalchemy as sa

from shared.db.base import utcnow
from shared.errors import Unauthorized
from shared.extractions import service as extraction_service
from shared.labels import service as label_service
from shared.labels.models import Label, LabelCategory
from shared.labels.schemas import LabelCategoryRead
from shared.presets import config_schema
from tests.webapp.test_feature_downloads import extraction  # noqa: F401 (fixture)
from tests.webapp.test_presets import seeded, upload  # noqa: F401 (fixture)
from webapp.serialize import dump, dump_all
from webapp.tokens import TokenVerifier


def test_lean_e1_equals_the_schema_path(client, auth, db, extraction):  # noqa: F811
    extraction.tasks[3].error = "no ROI named GTV"
    extraction.result_id = "r-1"
    # MariaDB formats the timestamps: with and without microseconds, as isoformat() does.
    extraction.tasks[0].created_at = dt.datetime(2026, 1, 2, 3, 4, 5)
    extraction.tasks[1].created_at = dt.datetime(2026, 1, 2, 3, 4, 5, 60)
    db.commit()
    db.expire_all()  # both paths read the rows as stored (as a request's fresh session does)
    expected = dump(extraction_service.to_read(db, extraction, formatted_tasks=False))
    assert extraction_service.to_raw_json(db, extraction) == expected
    assert expected["status"]["errors"] == {"1.2.4": ["no ROI named GTV"]}
    created = sorted(t["created_at"] for t in expected["tasks"])[:2]
    assert created == ["2026-01-02T03:04:05", "2026-01-02T03:04:05.000060"]
    response = client.get("/extractions/album/album-x", headers=auth.headers("bob"))
    assert response.status_code == 200
    assert response.json == expected


def test_e1_caches_only_a_finished_extraction(db, extraction):  # noqa: F811
    def statuses() -> list[str]:
        db.expire_all()  # each read sees the rows as stored, like a request's fresh session
        body = extraction_service.to_raw_json(db, extraction)
        return [str(body["status"]["completed_tasks"]), *body["modalities"]]

    assert statuses() == ["3", "CT", "PT"]
    extraction.tasks[3].status = "SUCCESS"  # not finished: every read queries the rows
    db.commit()
    assert statuses() == ["4", "CT", "PT"]
    extraction.finished_at = utcnow()
    db.commit()
    assert statuses() == ["4", "CT", "PT"]
    # Only a finished extraction is cached: a row changed behind its back is not read again...
    extraction.tasks[0].status = "FAILURE"
    db.commit()
    assert statuses() == ["4", "CT", "PT"]
    # ...until its `finished_at` changes, which makes a new key.
    extraction.finished_at = utcnow() + dt.timedelta(seconds=1)
    db.commit()
    assert statuses() == ["3", "CT", "PT"]
    expected = dump(extraction_service.to_read(db, extraction, formatted_tasks=False))
    assert extraction_service.to_raw_json(db, extraction) == expected


def test_lean_outcomes_equal_the_schema_path(client, auth, db):
    for name, pos_label in (("Response", "1"), ("Survival", None)):
        category = LabelCategory(
            user_id="user-bob", album_id="album-x", label_type="Classification", name=name
        )
        category.pos_label = pos_label
        category.labels = [
            Label(patient_id=f"P{i}", label_content={"Outcome": str(i % 2)}) for i in range(3)
        ]
        category.labels[0].updated_at = dt.datetime(2025, 12, 31, 23, 59, 59)
        category.labels[1].updated_at = dt.datetime(2025, 12, 31, 23, 59, 59, 999999)
        db.add(category)
    db.add(LabelCategory(user_id="user-alice", album_id="album-x", label_type="Survival", name="A"))
    db.commit()
    db.expire_all()
    categories = label_service.list_for_album(db, user_id="user-bob", album_id="album-x")
    expected = dump_all(LabelCategoryRead.model_validate(c) for c in categories)
    assert [c["name"] for c in expected] == ["Response", "Survival"]
    assert label_service.read_for_album(db, user_id="user-bob", album_id="album-x") == expected
    response = client.get("/label-categories/album-x", headers=auth.headers("bob"))
    assert response.json == expected
    assert label_service.read_for_album(db, user_id="user-bob", album_id="none") == []


def test_cached_labels_follow_every_edit(db):
    def read_matches_schema_path() -> list[dict]:
        db.expire_all()  # each read sees the rows as stored, like a request's fresh session
        got = label_service.read_for_album(db, user_id="user-bob", album_id="album-y")
        categories = label_service.list_for_album(db, user_id="user-bob", album_id="album-y")
        assert got == dump_all(LabelCategoryRead.model_validate(c) for c in categories)
        return got[0]["labels"]

    category = LabelCategory(
        user_id="user-bob", album_id="album-y", label_type="Classification", name="R"
    )
    category.labels = [Label(patient_id=f"P{i}", label_content={"Outcome": "0"}) for i in range(3)]
    db.add(category)
    db.commit()
    assert len(read_matches_schema_path()) == 3
    assert len(read_matches_schema_path()) == 3  # served from the cache
    # An edit that leaves every timestamp as it was (a Core update naming updated_at).
    first = category.labels[0]
    db.execute(
        sa.update(Label)
        .where(Label.id == first.id)
        .values(label_content={"Outcome": "1"}, updated_at=first.updated_at)
    )
    db.commit()
    assert read_matches_schema_path()[0]["label_content"] == {"Outcome": "1"}
    category.labels[1].label_content = {"Outcome": "1"}  # an ORM edit
    db.commit()
    assert [lb["label_content"]["Outcome"] for lb in read_matches_schema_path()] == ["1", "1", "0"]
    db.delete(category.labels[2])
    db.commit()
    assert [lb["patient_id"] for lb in read_matches_schema_path()] == ["P0", "P1"]
    category.labels.append(Label(patient_id="P9", label_content={"Outcome": "0"}))
    db.commit()
    assert [lb["patient_id"] for lb in read_matches_schema_path()] == ["P0", "P1", "P9"]
    for label in list(category.labels):
        db.delete(label)
    db.commit()
    assert read_matches_schema_path() == []


def test_a_patched_preset_is_served_fresh(client, auth, preset_yaml, seeded):  # noqa: F811
    def bin_width() -> float:
        listed = client.get("/feature-presets", headers=auth.headers()).json
        petct = next(p for p in listed if p["name"] == "PET/CT")
        settings = petct["config"]["feature_extraction"]["CT"]["pyradiomics"]["original"]
        return petct["id"], settings["setting"]["binWidth"]

    preset_id, before = bin_width()
    assert before == 20
    assert bin_width() == (preset_id, 20)  # served from the parse cache
    new = preset_yaml(replace=("binWidth: 20", "binWidth: 10"))
    url = f"/feature-presets/{preset_id}"
    response = upload(client, auth, preset_yaml, method="patch", url=url, name="PET/CT", file=new)
    assert response.status_code == 200
    assert bin_width() == (preset_id, 10)


def test_the_cached_preset_parse_cannot_be_changed_by_a_caller(preset_yaml):
    text = preset_yaml().read().decode()
    first = config_schema.parse_stored_yaml(text)
    first["general"] = "changed"
    assert config_schema.parse_stored_yaml(text) == config_schema.parse_yaml(text)


@pytest.fixture
def strict_verifier(settings):
    """A verifier without leeway, so a token is refused as soon as its exp has passed."""
    return TokenVerifier(settings.model_copy(update={"keycloak_leeway_seconds": 0}))


def test_an_expired_token_is_refused_even_when_cached(strict_verifier, issuer):
    token = issuer.mint("bob", ttl=2)
    assert strict_verifier.verify(token).user_id == "user-bob"
    assert strict_verifier.verify(token).user_id == "user-bob"
    assert len(strict_verifier._verified) == 1
    exp = json.loads(_payload(token))["exp"]
    time.sleep(max(0.0, exp - time.time()) + 0.3)
    with pytest.raises(Unauthorized, match="expired"):
        strict_verifier.verify(token)
    assert len(strict_verifier._verified) == 0


def test_a_token_accepted_within_the_leeway_is_not_cached(settings, issuer):
    verifier = TokenVerifier(settings)
    late = issuer.mint("bob", ttl=-2)  # expired 2 s ago, inside the 10 s leeway
    assert verifier.verify(late).user_id == "user-bob"
    assert len(verifier._verified) == 0


def test_the_token_cache_is_bounded_and_keyed_by_the_whole_token(strict_verifier, issuer):
    strict_verifier._verified.maxsize = 2
    tokens = [issuer.mint(name) for name in ("bob", "alice", "carol")]
    users = [strict_verifier.verify(t).user_id for t in tokens]
    assert users == ["user-bob", "user-alice", "user-carol"]
    assert len(strict_verifier._verified) == 2
    tampered = tokens[0][:-4] + ("AAAA" if not tokens[0].endswith("AAAA") else "BBBB")
    with pytest.raises(Unauthorized):
        strict_verifier.verify(tampered)


def _payload(token: str) -> str:
    """The JSON payload of a JWT (unverified)."""
    import base64

    part = token.split(".")[1]
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)).decode()


def test_orjson_responses_match_flasks_encoder(app):
    value = {
        "b": [1, 2.5, None, True, "é\u2011"],
        "a": {"z": 1, "y": {"n": "x"}},
        2: "int key",
        "when": dt.datetime(2026, 11, 29, 12, 0, 0),
    }
    with app.test_request_context():
        fast = app.json.response(value).get_data()
        flask = type(app.json).__mro__[1].response(app.json, value).get_data()
        huge = app.json.response({"n": 2**70}).get_data()
    assert json.loads(fast) == json.loads(flask)
    assert list(json.loads(fast)) == list(json.loads(flask))  # the same key order (sorted)
    assert json.loads(fast)["when"] == "Sun, 29 Nov 2026 12:00:00 GMT"  # Flask's HTTP date
    assert fast.endswith(b"\n")
    assert json.loads(huge) == {"n": 2**70}  # past 64 bits: Flask's encoder takes over


def test_responses_without_validation_are_the_same(app, client, auth, seeded):  # noqa: F811
    settings = app.config["SETTINGS"]
    paths = ["/feature-presets", "/label-categories/album-x", "/models/album-x", "/health/ready"]
    paths += ["/feature-presets/999999"]
    checked = [client.get(p, headers=auth.headers()) for p in paths]
    settings.validate_responses = False
    try:
        unchecked = [client.get(p, headers=auth.headers()) for p in paths]
    finally:
        settings.validate_responses = True
    for before, after in zip(checked, unchecked, strict=True):
        assert (after.status_code, after.json) == (before.status_code, before.json)
        assert after.mimetype == "application/json"
    assert checked[-1].status_code == 404


def test_lean_reads_work_on_the_embedded_sqlite(tmp_path):
    # `./qi2 run` serves E1 and L1 from SQLite: the lean reads must not use MariaDB-only SQL.
    import shared.db.all_models  # noqa: F401  (every table on the metadata)
    from shared.db import session as db_session
    from shared.db.base import Base
    from shared.imaging.source import StudyInfo

    sqlite = db_session.make_engine(f"sqlite:///{tmp_path / 'qi2.db'}")
    Base.metadata.create_all(sqlite)
    with sa.orm.Session(sqlite) as session:
        extraction = extraction_service.create(
            session,
            user_id="user-bob",
            album_id="album-x",
            album_name="My Album",
            config_yaml="{}\n",
            rois=["GTV"],
            studies=[StudyInfo("1.2.1", "P1"), StudyInfo("1.2.2", "P2")],
        )
        extraction.tasks[0].created_at = dt.datetime(2026, 1, 2, 3, 4, 5)
        extraction.tasks[1].created_at = dt.datetime(2026, 1, 2, 3, 4, 5, 60)
        category = LabelCategory(
            user_id="user-bob", album_id="album-x", label_type="Classification", name="R"
        )
        category.labels = [Label(patient_id="P1", label_content={"Outcome": "1"})]
        category.labels[0].updated_at = dt.datetime(2025, 12, 31, 23, 59, 59, 999999)
        session.add(category)
        session.commit()
        session.expire_all()
        expected = dump(extraction_service.to_read(session, extraction, formatted_tasks=False))
        assert extraction_service.to_raw_json(session, extraction) == expected
        created = sorted(t["created_at"] for t in expected["tasks"])
        assert created == ["2026-01-02T03:04:05", "2026-01-02T03:04:05.000060"]
        categories = label_service.list_for_album(session, user_id="user-bob", album_id="album-x")
        labels = dump_all(LabelCategoryRead.model_validate(c) for c in categories)
        assert (
            label_service.read_for_album(session, user_id="user-bob", album_id="album-x") == labels
        )
        assert labels[0]["labels"][0]["updated_at"] == "2025-12-31T23:59:59.999999"
    sqlite.dispose()
