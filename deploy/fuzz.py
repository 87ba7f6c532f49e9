"""`./qi2 fuzz`: a Schemathesis pass over a running platform, the way a user reaches it (issue #13).

    ./qi2 fuzz [--seed N] [--examples N] [--origin URL] [--token T] [--album ID] [--no-prime]

It loads <origin>/openapi.json (default http://127.0.0.1:5000, the one origin of `./qi2 run`,
so every request goes through the Socket.IO front) and runs Schemathesis' engine as `st run`
does: examples, coverage, fuzzing, then the stateful phase, which follows the links Schemathesis
infers from the document (a list's ids into the by-id routes). Only `not_a_server_error` is
checked. DELETE operations are left out, as in the issue's command, so the primed rows survive.

Priming (skip with --no-prime): random ids find nothing, so first the album (the dev platform's
`demo`) gets, through the API and the platform's real workers, one finished extraction, one
labelled outcome and one trained model; later runs reuse them. Half of the generated `album_id`
values are then that album, so the album routes return these rows and the by-id routes get
real ids (from the answers, and along the document's OpenAPI links in the stateful phase). A
quarter of the extraction and train request bodies are valid for the album, so the run also
starts a few real extractions and trainings itself; the workers finish them after the run.

Output: each distinct server error (operation, status, one request that caused it; never the
token), then exactly one line

    fuzz: operations=<n> cases=<n> 5xx=<n> seed=<n>

Exit status: 0 clean; 1 a 5xx or a request that got no answer; 2 the run could not start.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import time
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import schemathesis
from hypothesis import strategies
from schemathesis.engine import events, from_schema

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ORIGIN = "http://127.0.0.1:5000"
TOKEN_FILE = ROOT / "var" / "dev-token.txt"
DEMO_ALBUM = "demo"
# Share of generated album ids replaced by the primed album: the rest stays random, so odd
# album ids (control characters, 255 characters, ...) are still sent.
ALBUM_SHARE = 0.5
OUTCOME_NAME = "fuzz outcome"
PRIME_TIMEOUT = 900.0
# A small CT configuration: first-order and GLCM features extract the demo album in seconds.
PRIME_CONFIG: dict[str, Any] = {
    "general": {"padding": 10, "combine_segmentation": True, "result_format": "long"},
    "feature_extraction": {
        "CT": {
            "pyradiomics": {
                "original": {
                    "imageType": {"Original": {}},
                    "featureClass": {"firstorder": None, "glcm": None},
                    "setting": {"binWidth": 25, "label": 1},
                }
            }
        }
    },
}
PRIME_ALGORITHMS = ["LogisticRegression"]
# Schemathesis' phases, in the order it runs them (`st run` runs all four).
PHASES = ("examples", "coverage", "fuzzing", "stateful")
STATEFUL_FACTOR = 3


# --- the Schemathesis run -----------------------------------------------------------------------


def fuzz_config(
    *,
    seed: int | None,
    examples: int,
    headers: dict[str, str],
    albums: list[str] | None = None,
    workers: int = 1,
    phases: tuple[str, ...] = PHASES,
) -> schemathesis.Config:
    """Build the engine's configuration; seed None is Hypothesis' derandomised mode."""
    generation: dict[str, Any] = {"max-examples": examples, "database": "none"}
    data: dict[str, Any] = {
        "headers": headers,
        "workers": workers,
        "checks": {"enabled": False, "not_a_server_error": {"enabled": True}},
        "generation": generation,
        "phases": {phase: {"enabled": phase in phases} for phase in PHASES},
    }
    # A stateful scenario is a chain of calls that mostly ends at its first 4xx: more of them
    # reach a created row and then its by-id routes.
    stateful = {"max-examples": examples * STATEFUL_FACTOR}
    data["phases"]["stateful"]["generation"] = stateful
    if seed is None:
        generation["deterministic"] = True
    else:
        data["seed"] = seed
    if albums:
        data["dictionaries"] = {"albums": {"values": albums}}
        binding = {"dictionary": "albums", "probability": ALBUM_SHARE}
        data["parameters"] = {"path.album_id": binding, "query.album_id": binding}
    return schemathesis.Config.from_dict(data)


@dataclass
class Report:
    """What one run sent and what came back."""

    seed: int | None
    operations: set[str] = field(default_factory=set)
    cases: int = 0
    server_errors: int = 0
    statuses: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    # Phase -> operations that answered a 2xx in it.
    succeeded: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    failures: dict[tuple[str, int], str] = field(default_factory=dict)
    problems: dict[tuple[str, int], str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    phase_seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        """Return the one summary line."""
        seed = "derandomized" if self.seed is None else self.seed
        return (
            f"fuzz: operations={len(self.operations)} cases={self.cases} "
            f"5xx={self.server_errors} seed={seed}"
        )

    def answered(self, status_class: int) -> set[str]:
        """Return the operations that got at least one answer of a status class (2 for 2xx)."""
        return {
            label
            for label, codes in self.statuses.items()
            if any(code // 100 == status_class for code in codes)
        }

    def record(self, phase: str, label: str, request: Any, response: Any) -> None:
        """Count one request and its answer (None: the request got no answer)."""
        self.operations.add(label)
        self.cases += 1
        if response is None:
            self.errors.append(f"no answer: {label}: {reproduction(request)}")
            return
        status = response.status_code
        self.statuses[label][status] += 1
        if status < 300:
            self.succeeded[phase].add(label)
        if status >= 500:
            self.server_errors += 1
            self.failures.setdefault((label, status), reproduction(request))
        elif status >= 400 and not is_error_shape(response):
            self.problems.setdefault((label, status), reproduction(request))


def reproduction(request: Any) -> str:
    """Describe a sent request without its headers (they hold the token)."""
    line = f"{request.method} {request.uri}"
    if request.body:
        line += f" body={request.body[:300]!r}"
    return line


def is_error_shape(response: Any) -> bool:
    """Tell whether an error answer is the API's JSON `{"error": "<message>"}`."""
    content_type = (response.headers.get("content-type") or [""])[0]
    if not content_type.startswith("application/json"):
        return False
    try:
        body = json.loads(response.content)
    except ValueError:
        return False
    return isinstance(body, dict) and isinstance(body.get("error"), str)


def run(schema: Any, seed: int | None) -> Report:
    """Run every phase of the engine over a loaded schema and tally the answers."""
    report = Report(seed=seed)
    started = last = time.monotonic()
    for event in from_schema(schema).execute():
        if isinstance(event, events.PhaseFinished):
            now = time.monotonic()
            report.phase_seconds[event.phase.name.value] = round(now - last, 1)
            last = now
        elif isinstance(event, events.ScenarioFinished):
            recorder = event.recorder
            for case_id, interaction in recorder.interactions.items():
                label = recorder.cases[case_id].value.operation.label
                report.record(str(event.phase), label, interaction.request, interaction.response)
        elif isinstance(event, events.NonFatalError):
            report.errors.append(f"error: {event.label}: {event.info.message}")
        elif isinstance(event, events.FatalError):
            raise RuntimeError(f"Schemathesis stopped: {event.exception}") from event.exception
        elif isinstance(event, events.Interrupted):
            raise KeyboardInterrupt
    report.seconds = time.monotonic() - started
    return report


# --- priming: real rows behind the album's routes -----------------------------------------------


class Api:
    """A small client of the platform's API for priming."""

    def __init__(self, origin: str, token: str) -> None:
        self.http = httpx.Client(
            base_url=origin, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send one request; any answer but 2xx stops the priming with its message."""
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 300:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:300]}")
        return response.json() if "json" in response.headers.get("content-type", "") else response


def wait_for(what: str, probe: Callable[[], Any], timeout: float) -> Any:
    """Poll until the probe returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(2)
    raise RuntimeError(f"priming: {what} did not finish within {timeout:.0f} s")


@dataclass(frozen=True)
class Primed:
    """The rows that give the album's routes real targets."""

    album: str
    extraction: int
    outcome: int
    rois: list[str]


def prime(api: Api, album: str, timeout: float, say: Callable[[str], None]) -> Primed:
    """Give the album a finished extraction, a labelled outcome and a trained model (once)."""
    rois = sorted(api.call("GET", f"/albums/{album}"))
    extraction = finished_extraction(api, album, rois, timeout, say)
    outcome = labelled_outcome(api, album, patients_of(api, extraction))
    if not api.call("GET", f"/models/{album}"):
        say(f"priming: training a model on album {album!r} (real training worker)")
        api.call("POST", f"/models/{album}", json=train_body(extraction, outcome))
        wait_for("the training", lambda: api.call("GET", f"/models/{album}"), timeout)
    say(f"priming: album {album!r} has extraction {extraction}, outcome {outcome} and a model")
    return Primed(album, extraction, outcome, rois)


def train_body(extraction: int, outcome: int) -> dict[str, Any]:
    """A train request on the whole album, with a one-algorithm grid (seconds of work)."""
    return {
        "extraction-id": extraction,
        "label-category-id": outcome,
        "data-splitting-type": "fulldataset",
        "algorithms": PRIME_ALGORITHMS,
    }


def realistic_bodies(schema: Any, primed: Primed) -> None:
    """Make a share of the extraction and train request bodies valid for the primed album:
    random ones are always a 400, so the run would never create an extraction or a training
    itself. Each valid one is real work for the workers: half keeps it to a few jobs. (With one
    in four, whether the derandomised stateful phase drew a valid body at all changed with
    unrelated edits elsewhere in the code, e.g. four new Settings fields: issue #17.)"""
    extract = {"config": PRIME_CONFIG, "rois": primed.rois}
    train = train_body(primed.extraction, primed.outcome)
    for path, valid in (("/extract/album/{album_id}", extract), ("/models/{album_id}", train)):
        schema.hook("flatmap_body").apply_to(method="POST", path=path)(generated_or(valid))


def generated_or(valid: dict[str, Any]) -> Callable[[Any, Any], Any]:
    """Return a `flatmap_body` hook that draws the generated body or, every other time, the
    valid one."""

    def flatmap_body(_context: Any, body: Any) -> Any:
        return strategies.sampled_from([body, valid])

    return flatmap_body


def finished_extraction(
    api: Api, album: str, rois: list[str], timeout: float, say: Callable[[str], None]
) -> int:
    """Return the album's latest successful extraction, extracting it first if there is none."""
    latest = api.call("GET", f"/extractions/album/{album}")
    if latest and latest["status"]["successful"]:
        return latest["id"]
    say(f"priming: extracting album {album!r}, ROIs {rois} (real extraction workers)")
    body = {"config": PRIME_CONFIG, "rois": rois}
    created = api.call("POST", f"/extract/album/{album}", json=body)
    path = f"/extractions/{created['id']}/status"

    def ended() -> dict[str, Any] | None:
        status = api.call("GET", path)
        return status if status["ready"] else None

    status = wait_for("the extraction", ended, timeout)
    if not status["successful"]:
        raise RuntimeError(f"priming: extraction {created['id']} failed: {status['errors']}")
    return created["id"]


def patients_of(api: Api, extraction: int) -> list[str]:
    """Return the patients of an extraction, read from its feature download."""
    download = api.call("GET", f"/extractions/{extraction}/download")
    archive = zipfile.ZipFile(io.BytesIO(download.content))
    patients: set[str] = set()
    for name in archive.namelist():
        lines = archive.read(name).decode().splitlines()
        column = lines[0].split(",").index("PatientID")
        patients.update(line.split(",")[column] for line in lines[1:] if line)
    return sorted(patients)


def labelled_outcome(api: Api, album: str, patients: list[str]) -> int:
    """Return the fuzz outcome of the album, created with alternating labels if missing."""
    for category in api.call("GET", f"/label-categories/{album}"):
        if category["name"] == OUTCOME_NAME and category["labels"]:
            return category["id"]
    created = api.call(
        "POST",
        f"/label-categories/{album}",
        json={"label_type": "Classification", "name": OUTCOME_NAME},
    )
    labels = {p: {"Outcome": "yes" if i % 2 else "no"} for i, p in enumerate(patients)}
    api.call("POST", f"/labels/{created['id']}", json={"label_map": labels, "pos_label": "yes"})
    return created["id"]


# --- command line -------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Parse the options."""
    parser = argparse.ArgumentParser(prog="./qi2 fuzz", description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=None, help="default: a random seed")
    parser.add_argument("--examples", type=int, default=60, help="cases per operation and phase")
    parser.add_argument("--origin", default=DEFAULT_ORIGIN, help="the platform's one origin")
    parser.add_argument("--token", default=None, help=f"default: the token in {TOKEN_FILE}")
    parser.add_argument("--album", default=DEMO_ALBUM, help="album to prime and reuse")
    parser.add_argument("--no-prime", action="store_true", help="fuzz without priming")
    parser.add_argument("--prime-timeout", type=float, default=PRIME_TIMEOUT)
    return parser.parse_args(argv)


def read_token(args: argparse.Namespace) -> str:
    """Return the token given, else the dev platform's."""
    if args.token:
        return args.token
    if not TOKEN_FILE.is_file():
        raise SystemExit(f"no --token and no {TOKEN_FILE}: start `./qi2 run` first")
    return TOKEN_FILE.read_text().strip()


def say(message: str) -> None:
    """Print a progress line at once."""
    print(message, flush=True)


def print_report(report: Report) -> None:
    """Print the distinct failures, then the summary line."""
    for (label, status), request in sorted(report.failures.items()):
        print(f"5xx: {status} {label}: {request}")
    for (label, status), request in sorted(report.problems.items()):
        print(f"not the JSON error shape: {status} {label}: {request}")
    for error in dict.fromkeys(report.errors):
        print(error)
    print(report.summary(), flush=True)


def main(argv: list[str] | None = None) -> int:
    """Prime, fuzz, report."""
    args = parse(argv)
    seed = random.SystemRandom().randrange(2**31) if args.seed is None else args.seed
    token = read_token(args)
    origin = args.origin.rstrip("/")
    albums = None if args.no_prime else [args.album]
    try:
        primed = prime(Api(origin, token), args.album, args.prime_timeout, say) if albums else None
        headers = {"Authorization": f"Bearer {token}"}
        config = fuzz_config(seed=seed, examples=args.examples, headers=headers, albums=albums)
        url = f"{origin}/openapi.json"
        schema = schemathesis.openapi.from_url(url, config=config, headers=headers)
        if primed:
            realistic_bodies(schema, primed)
        report = run(schema.exclude(method="DELETE"), seed)
    except (RuntimeError, httpx.HTTPError, schemathesis.errors.LoaderError) as exc:
        print(f"fuzz: could not run: {exc}", file=sys.stderr)
        return 2
    print_report(report)
    return 1 if report.server_errors or report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
