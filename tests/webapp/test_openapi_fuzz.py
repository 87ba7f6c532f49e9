"""Schemathesis over /openapi.json on both served shapes: no 5xx, every error body JSON (issue #13).

The runner of `./qi2 fuzz` (deploy/fuzz.py) drives Schemathesis' engine through every phase, as
`st run` does: examples, coverage, fuzzing, then the stateful phase, whose links (inferred from
the document) carry the ids a list returns into the by-id routes. Two served shapes:

- direct: the WSGI app inside the test's rolled-back transaction (every operation, DELETE too);
- front: gunicorn behind the Socket.IO front on loopback ports, as `./qi2 run` and the local and
  VM overlays serve it (committed rows; DELETE left out so that the seeded rows stay).

Seeds: Hypothesis' derandomised mode (what the suite ran before issue #13) and the issue's 777.

The by-id routes need real rows. The factories seed, for the token's user, a local synthetic
album with a finished extraction, a labelled outcome, a feature collection and a trained model
(the rows the workers write: real extraction and training need the workers and a minute of CPU,
and tests/e2e/test_training.py runs them). Half of the generated album ids are that album, and
half of the extraction and train request bodies are valid for it (`realistic_bodies`), so the
run creates extractions, outcomes and training requests itself and follows the document's links
to them. Each by-id route must answer a 2xx at least once, where random ids only found a 404.
No worker runs: the queued tasks are dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
import redis
import schemathesis

from deploy import fuzz
from shared.collections.models import FeatureCollection
from shared.db.session import session_scope
from shared.presets import service as preset_service
from tests.support.factories import make_extraction, make_outcome
from tests.webapp.test_extractions_api import ALBUM, album  # noqa: F401 (fixture)
from tests.webapp.test_models_api import FEATURE, PATIENTS, classification_model

USER = "alice"  # the admin role: the preset writes are fuzzed past the role check
EXAMPLES = 12
# Seed None: Hypothesis' derandomised mode, every phase. The coverage phase's cases come from
# the document's boundaries, not from the seed (two seeds differ only in multipart boundary
# strings), so the other seed runs the seeded phases only.
RUNS = [(None, fuzz.PHASES), (777, ("fuzzing", "stateful"))]
# Created by the stateful phase itself (the extraction with a `realistic_bodies` body).
CREATED = {"POST /extract/album/{album_id}", "POST /label-categories/{album_id}"}
EXTRA_WALKS = 6  # stateful-only walks with the next seeds, when one walk fell short
# Operations that answer 404 to every random id; through the seeded album, the ids its answers
# name and the links, each must answer a 2xx at least once in a run of every phase.
REACHED_BY_ID = {
    "GET /extractions/{extraction_id}",
    "GET /extractions/{extraction_id}/status",
    "GET /extractions/{extraction_id}/download",
    "GET /feature-collections/extraction/{extraction_id}",
    "GET /labels/patients_from_label_category/{category_id}",
    "GET /models/{model_id}/export",
    "GET /models/{model_id}/feature-importances",
}


def seed_album(session) -> fuzz.Primed:
    """The default presets, and the user's album with the rows the workers would have written."""
    preset_service.seed_default_presets(session)
    extraction = make_extraction(session, f"user-{USER}", ALBUM, PATIENTS)
    labels = {p: ("yes" if i % 2 else "no") for i, p in enumerate(PATIENTS)}
    outcome = make_outcome(session, f"user-{USER}", ALBUM, labels)
    session.add(
        FeatureCollection(
            user_id=f"user-{USER}",
            feature_extraction_id=extraction.id,
            name="Mean only",
            feature_ids=[FEATURE],
        )
    )
    classification_model(session, extraction, outcome, test_patients=PATIENTS[:10])
    session.commit()
    return fuzz.Primed(ALBUM, extraction.id, outcome.id, ["GTV"])


@pytest.fixture
def empty_queues(settings) -> Iterator[None]:
    """Valid train requests queue real Celery tasks: no worker of this run may get them."""
    broker = redis.Redis.from_url(settings.celery_broker_url)

    def empty() -> None:
        for pattern in ("extraction*", "training*"):
            for key in broker.scan_iter(match=pattern):
                broker.delete(key)

    empty()
    yield
    empty()
    broker.close()


@pytest.fixture(scope="module")
def seeded_front(served_front, album):  # noqa: F811 (fixture)
    """The served shape with the album's rows committed (emptied with the module's tables)."""
    with session_scope() as session:
        primed = seed_album(session)
    return served_front, primed


def by_id(operations: set[str]) -> set[str]:
    """The operations whose path takes a row id (an album id is not a row of ours)."""
    return {label for label in operations if re.search(r"\{(?!album_id\})\w+\}", label)}


def check(report: fuzz.Report, shape: str, phases: tuple[str, ...], capsys) -> None:
    """Print the run's figures; fail on any 5xx or non-JSON error, and on a whole run that did
    not get past the 404s of random ids."""
    stateful = report.succeeded["stateful"]
    with capsys.disabled():
        print(
            f"\nopenapi_fuzz[{shape}]: {report.summary()} 2xx_operations="
            f"{len(report.answered(2))} stateful_2xx_by_id={sorted(by_id(stateful))} "
            f"problems={len(report.problems)} seconds={report.seconds:.1f} "
            f"phases={report.phase_seconds}"
        )
    assert not report.failures, "\n".join(f"{k}: {v}" for k, v in report.failures.items())
    assert not report.problems, "\n".join(f"{k}: {v}" for k, v in report.problems.items())
    assert not report.errors, "\n".join(report.errors[:20])
    if "coverage" in phases:
        unreached = REACHED_BY_ID - report.answered(2)
        assert not unreached, f"never answered 2xx: {sorted(unreached)}"


def stateful_reach(run: Callable[[int | None, tuple[str, ...]], fuzz.Report], seed, first) -> None:
    """The stateful phase creates an extraction and an outcome and follows a link by id.

    One walk is a handful of scenarios, and Hypothesis mixes string literals of every loaded
    module into what it generates, so whether one walk reaches them changes with unrelated code.
    Walks with the next seeds are added (each held to the same no-5xx checks) until the union
    reaches them: a document whose links lead nowhere still fails after every extra walk.
    """
    reached = set(first.succeeded["stateful"])
    for extra in range(1, EXTRA_WALKS + 1):
        if reached >= CREATED and by_id(reached):
            break
        report = run((seed or 0) + extra, ("stateful",))
        assert not report.failures and not report.problems and not report.errors, report.summary()
        reached |= report.succeeded["stateful"]
    assert reached >= CREATED, sorted(reached)
    assert by_id(reached), sorted(reached)


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("seed", "phases"), RUNS, ids=["derandomized", "seed-777"])
def test_direct(app, db, auth, album, empty_queues, capsys, seed, phases):  # noqa: F811
    primed = seed_album(db)
    headers = auth.headers(USER, ttl=3600)

    def run(seed: int | None, phases: tuple[str, ...]) -> fuzz.Report:
        config = fuzz.fuzz_config(
            seed=seed, examples=EXAMPLES, headers=headers, albums=[ALBUM], phases=phases
        )
        schema = schemathesis.openapi.from_wsgi("/openapi.json", app, config=config)
        fuzz.realistic_bodies(schema, primed)
        return fuzz.run(schema, seed)

    report = run(seed, phases)
    assert len(report.operations) >= 59
    check(report, "direct", phases, capsys)
    stateful_reach(run, seed, report)


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("seed", "phases"), RUNS, ids=["derandomized", "seed-777"])
def test_through_the_front(seeded_front, auth, empty_queues, capsys, seed, phases):
    served, primed = seeded_front
    headers = auth.headers(USER, ttl=3600)

    def run(seed: int | None, phases: tuple[str, ...]) -> fuzz.Report:
        config = fuzz.fuzz_config(
            seed=seed, examples=EXAMPLES, headers=headers, albums=[ALBUM], phases=phases
        )
        url = f"{served.url}/openapi.json"
        schema = schemathesis.openapi.from_url(url, config=config, headers=headers)
        fuzz.realistic_bodies(schema, primed)
        return fuzz.run(schema.exclude(method="DELETE"), seed)

    report = run(seed, phases)
    assert len(report.operations) >= 54
    check(report, "front", phases, capsys)
    stateful_reach(run, seed, report)
