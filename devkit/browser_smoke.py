"""A researcher's journey through the real frontend in Debian's chromium (`./qi2 browser-smoke`).

Starts a fresh platform (`devkit.platform` in a child process, its own ports and data folder
under `var/browser-smoke/`), builds the unmodified frontend for it (cached, `devkit.frontend`),
serves it, and drives Debian's `/usr/bin/chromium` with Playwright for Python (no browser is
downloaded) as a user: a refused login, a login, the dashboard with the demo album and its
studies (and without the admin's album), an extraction with the default preset whose progress
moves in the page through Socket.IO events, the feature table, outcomes uploaded from a CSV, a
classification model trained with live progress, the model list with its metrics, a download,
the admin's dashboard, a refused redirect URI, logout. Every step records the browser's console
errors, page errors and failed requests (network failures and HTTP error answers) and fails on
any it did not expect; each leaves a screenshot. Prints
`browser_smoke: steps= passed= failed= seconds=` and exits 0 only when every step passed.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import BrowserContext, Page, Playwright, expect, sync_playwright
from playwright.sync_api import Error as PlaywrightError

from devkit import frontend
from devkit.demo_album import DEMO_ALBUM, DEMO_ALBUMS
from devkit.platform import FRONTEND_ENV, ROOT, port_free

CHROMIUM = "/usr/bin/chromium"
# Debian's chromium as root, headless, with no traffic of its own (updates, sync, QUIC).
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LONG = 20 * 60 * 1000  # ms: an extraction or a training on a loaded 2-core machine
SHORT = 60 * 1000
STEPS = 14
CT_PRESET = "PET/CT"  # the seeded default preset with a CT entry
EVENTS = ("feature-status", "extraction-status", "training-status")
# keycloak-js removes its hidden iframes (the third-party-cookie check's step 2, the silent
# check-sso page) as soon as their page posted its answer, which Chromium reports as an aborted
# load of that page while it finishes: expected with any Keycloak.
EXPECTED = (
    r"^request failed: GET \S+/silent-check-sso\.html(#\S*)? \(net::ERR_ABORTED\)$",
    r"^request failed: GET \S+/openid-connect/3p-cookies/step2\.html \(net::ERR_ABORTED\)$",
)


@dataclass
class StepResult:
    """What one step did: its verdict, time, problems seen and its screenshot."""

    name: str
    ok: bool
    seconds: float
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    screenshot: Path | None = None


LOOPBACK = re.compile(r"^(https?|wss?)://(127\.0\.0\.1|localhost)(:\d+)?(/|$)|^(data|blob|about):")


class Recorder:
    """Collects a page's console errors, page errors, failed requests and Socket.IO events.

    Requests off this machine are blocked and listed (the frontend's home page embeds a video
    from another host): the smoke only talks to loopback.
    """

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.allowed: list[re.Pattern[str]] = []
        self.events: dict[str, int] = dict.fromkeys(EVENTS, 0)
        self.blocked: set[str] = set()

    def attach(self, context: BrowserContext, page: Page) -> None:
        """Listen to one page (and its websockets); block requests that leave loopback."""
        context.route(re.compile(r".*"), self._route)
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self._add(f"page error: {exc}"))
        page.on("requestfailed", self._failed)
        page.on("response", self._response)
        page.on("websocket", self._websocket)

    def _add(self, problem: str) -> None:
        if not any(p.search(problem) for p in self.allowed):
            self.problems.append(problem)

    def _route(self, route: Any) -> None:
        url = route.request.url
        if LOOPBACK.match(url):
            route.continue_()
        else:
            self.blocked.add(url)
            route.abort("blockedbyclient")

    def _console(self, message: Any) -> None:
        if message.type == "error" and message.location.get("url") not in self.blocked:
            self._add(f"console error: {message.text}")

    def _failed(self, request: Any) -> None:
        if request.url not in self.blocked:
            self._add(f"request failed: {request.method} {request.url} ({request.failure})")

    def _response(self, response: Any) -> None:
        if response.status >= 400:
            self._add(f"HTTP {response.status}: {response.request.method} {response.url}")

    def _websocket(self, socket: Any) -> None:
        def count(payload: Any) -> None:
            text = payload if isinstance(payload, str) else ""
            for name in EVENTS:
                if text.startswith("42") and f'"{name}"' in text[:40]:
                    self.events[name] += 1

        socket.on("framereceived", count)


class Journey:
    """Runs steps in order, stopping at the first failure; one screenshot per step."""

    def __init__(self, page: Page, recorder: Recorder, out: Path) -> None:
        self.page = page
        self.recorder = recorder
        self.out = out
        self.results: list[StepResult] = []
        self.stopped = False
        self.planned = 0  # every step counts, run or skipped after a failure

    def step(self, name: str, action: Callable[[], Any], allowed: tuple[str, ...] = ()) -> None:
        """Run one step unless an earlier one failed; record and print its verdict."""
        self.planned += 1
        if self.stopped:
            return
        self.recorder.problems.clear()
        self.recorder.allowed = [re.compile(a) for a in (*EXPECTED, *allowed)]
        started = time.monotonic()
        result = StepResult(name, True, 0.0)
        try:
            notes = action()
            result.notes = [notes] if isinstance(notes, str) else list(notes or [])
        except Exception as exc:  # a failed expectation or a timeout: the step fails
            result.ok = False
            result.problems.append(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
        self.page.wait_for_timeout(300)  # let late console messages and answers arrive
        result.problems += self.recorder.problems
        result.ok = result.ok and not self.recorder.problems
        result.seconds = time.monotonic() - started
        shot = self.out / f"{len(self.results) + 1:02d}-{name}.png"
        try:
            self.page.screenshot(path=str(shot), full_page=False)
            result.screenshot = shot
        except Exception as exc:  # a screenshot that fails is a problem of the run
            result.problems.append(f"screenshot: {exc}")
            result.ok = False
        self.results.append(result)
        verdict = "PASS" if result.ok else "FAIL"
        print(f"[{verdict}] {name} ({result.seconds:.1f} s) {'; '.join(result.notes)}", flush=True)
        for problem in result.problems:
            print(f"        {problem}", flush=True)
        self.stopped = not result.ok


@dataclass
class Platform:
    """A running `./qi2 run` of this smoke: its URLs and the child process."""

    process: subprocess.Popen
    values: dict[str, str]
    data: Path
    api: str
    frontend_port: int


@contextmanager
def platform(run_dir: Path, base_port: int) -> Iterator[Platform]:
    """Start devkit.platform on ports from base_port; stop it (and its children) after."""
    ports = {
        "--port": base_port,
        "--api-port": base_port + 1,
        "--issuer-port": base_port + 10,
        "--kheops-port": base_port + 20,
        "--frontend-port": base_port + 30,
        "--flower-port": base_port + 55,
    }
    busy = [p for p in ports.values() if not port_free(p)]
    if busy:
        raise SystemExit(f"port {busy[0]} is in use: pass --base-port")
    data = run_dir / "platform"
    command = [sys.executable, "-m", "devkit.platform", "--data-dir", str(data)]
    for option, port in ports.items():
        command += [option, str(port)]
    log = (run_dir / "platform.log").open("ab")
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        api = f"http://127.0.0.1:{base_port}"
        wait_platform(process, api, data / FRONTEND_ENV, run_dir / "platform.log")
        values = frontend.read_env_file(data / FRONTEND_ENV)
        yield Platform(process, values, data, api, base_port + 30)
    finally:
        os.killpg(process.pid, signal.SIGINT)  # the launcher stops its children on SIGINT
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


@contextmanager
def attached(data: Path, frontend_port: int) -> Iterator[Platform]:
    """A platform already running (`./qi2 run --data-dir data`): nothing to start or stop."""
    values = frontend.read_env_file(data / FRONTEND_ENV)
    api = values["REACT_APP_PYTHON_BACKEND_URL"]
    if httpx.get(f"{api}/health/ready", timeout=10).status_code != 200:
        raise SystemExit(f"the platform at {api} is not ready")
    yield Platform(None, values, data, api, frontend_port)  # type: ignore[arg-type]


def wait_platform(process: subprocess.Popen, api: str, env_file: Path, log: Path) -> None:
    """Wait while the launcher lives until it printed its banner (the API is ready then)."""
    while "QuantImage v2 backend is running" not in log.read_text(errors="replace"):
        if process.poll() is not None:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            raise SystemExit(f"the platform exited with {process.returncode}:\n{tail}")
        time.sleep(1)
    if not env_file.is_file() or httpx.get(f"{api}/health/ready", timeout=10).status_code != 200:
        raise SystemExit("the platform announced itself but is not ready")


def demo_patients(values: dict[str, str]) -> list[str]:
    """The demo album's PatientIDs, as the researcher's Kheops lists them."""
    token = httpx.post(
        f"{frontend.realm_url(values)}/protocol/openid-connect/token",
        data={
            "grant_type": "password",
            "client_id": values["REACT_APP_KEYCLOAK_FRONTEND_CLIENT_ID"],
            "username": "researcher",
            "password": "researcher",
        },
        timeout=30,
    ).json()["access_token"]
    studies = httpx.get(
        f"{values['REACT_APP_KHEOPS_URL']}/api/studies",
        params={"album": DEMO_ALBUM},
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    ).json()
    return sorted({s["00100020"]["Value"][0] for s in studies})


def outcomes_csv(patients: list[str], path: Path) -> Path:
    """Write PatientID,Outcome for the patients (two classes, alternating)."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["PatientID", "Outcome"])
        writer.writerows([p, i % 2] for i, p in enumerate(patients))
    return path


def launch(play: Playwright, profile: Path) -> BrowserContext:
    """Debian's chromium, headless, with a fresh profile."""
    if not Path(CHROMIUM).is_file():
        raise SystemExit(
            f"{CHROMIUM} is missing (`./qi2 browser-smoke` installs Debian's chromium)"
        )
    return play.chromium.launch_persistent_context(
        str(profile),
        executable_path=CHROMIUM,
        headless=True,
        args=CHROMIUM_FLAGS,
        accept_downloads=True,
        viewport={"width": 1400, "height": 1000},
    )


def log_in(page: Page, username: str, password: str) -> None:
    """Fill Keycloak's login form and submit it."""
    page.locator("#username").fill(username)
    page.locator("#password").fill(password)
    page.locator("#kc-login").click()


def open_home(page: Page, site: str) -> None:
    """Open the home page and let it settle (keycloak-js's iframes, the images) as a user would."""
    page.goto(site)
    expect(page.get_by_role("button", name="Log in")).to_be_visible(timeout=SHORT)
    page.wait_for_load_state("networkidle", timeout=SHORT)


# Records every text the album's status shows, as the browser renders it: on a fast machine the
# demo album extracts in about a second, quicker than any polling of the page could see.
WATCH_STATUS = """row => {
  const seen = [];
  const record = () => {
    const status = row.querySelector("div.d-flex");
    const text = status ? status.innerText.replace(/\\s+/g, " ").trim() : "";
    if (text && seen[seen.length - 1] !== text) seen.push(text);
  };
  record();
  new MutationObserver(record).observe(row, {subtree: true, childList: true, characterData: true});
  window.__qi2StatusSeen = seen;
}"""


def album_row(page: Page, album: str) -> Any:
    """The dashboard's list entry of one album."""
    return page.locator(".albums > .list-group-item").filter(
        has=page.locator("h5", has_text=re.compile(rf"^{re.escape(album)}\b"))
    )


def researcher_journey(journey: Journey, site: str, smoke: Platform, out: Path) -> None:
    """The steps of one researcher, from the home page to a downloaded file."""
    page = journey.page
    other = [a.album_id for a in DEMO_ALBUMS if "dev-researcher" not in a.users]
    patients = demo_patients(smoke.values)
    outcome = f"Outcome {time.strftime('%H%M%S')}"

    def home() -> str:
        open_home(page, site)
        return "keycloak-js started (3p-cookie check and silent check-sso answered)"

    def wrong_password() -> str:
        page.get_by_role("button", name="Log in").click()
        expect(page.locator("#kc-login")).to_be_visible(timeout=SHORT)
        log_in(page, "researcher", "not-the-password")
        expect(page.locator("#input-error")).to_have_text("Invalid username or password.")
        expect(page.locator("#kc-login")).to_be_visible()
        return "refused: the form again with Keycloak's error"

    def login() -> str:
        log_in(page, "researcher", "researcher")
        page.wait_for_url(re.compile(r"/dashboard"), timeout=SHORT)
        expect(album_row(page, DEMO_ALBUM)).to_be_visible(timeout=SHORT)
        expect(album_row(page, DEMO_ALBUM).locator(".badge")).to_have_text("12 studies")
        for album in other:
            expect(album_row(page, album)).to_have_count(0)
        return f"dashboard lists '{DEMO_ALBUM}' (12 studies), not {other}"

    def studies() -> str:
        row = album_row(page, DEMO_ALBUM)
        row.get_by_role("button", name="Show studies").click()
        links = row.locator("a[href^='/study/']")
        expect(links).to_have_count(12, timeout=SHORT)
        return f"{links.count()} studies listed"

    def extract() -> str:
        row = album_row(page, DEMO_ALBUM)
        row.get_by_role("button", name=re.compile(r"^(Re-)?Extract Features$")).click()
        modal = page.locator(".modal-dialog")
        checked = page.locator("input[name='selectedPreset']:checked")
        expect(modal.locator(checked)).to_have_count(1, timeout=SHORT)
        preselected = modal.locator("label", has=checked).inner_text().strip()
        # The frontend pre-selects the first preset by name, "MRI", which has no CT entry; the
        # CT demo album takes the seeded default preset for CT, "PET/CT".
        modal.locator("label", has_text=CT_PRESET).locator("input").check()
        extract = modal.locator(".btn-success", has_text="Extract Features")
        expect(extract).to_be_enabled(timeout=SHORT)
        row.evaluate(WATCH_STATUS)
        extract.click()
        confirm = page.get_by_role("button", name="Yes, Re-Extract Features")
        if confirm.is_visible():  # only when attached to a platform that extracted before
            confirm.click()
        expect(modal).to_have_count(0, timeout=SHORT)
        return f"started with the seeded preset '{CT_PRESET}' (pre-selected: '{preselected}')"

    def progress() -> list[str]:
        row = album_row(page, DEMO_ALBUM)
        status = row.locator("div.d-flex").first
        seen: list[str] = []
        deadline = time.monotonic() + LONG / 1000
        while True:
            text = re.sub(r"\s+", " ", status.inner_text()).strip()
            if not seen or seen[-1] != text:
                seen.append(text)
            if "Explore Features" in text:
                break
            if "Failed" in text or time.monotonic() > deadline:
                raise AssertionError(f"extraction did not succeed; seen {seen}")
            page.wait_for_timeout(300)
        rendered = page.evaluate("window.__qi2StatusSeen || []")
        seen = [text for text in rendered if text not in seen] + seen
        events = journey.recorder.events
        moving = {m for s in seen for m in re.findall(r"\((\d+)%\)", s)}
        if len(moving) < 2 or events["feature-status"] == 0:
            raise AssertionError(f"no live progress without a reload: seen {seen}, events {events}")
        return [
            f"states seen without reload: {' | '.join(seen)}",
            f"Socket.IO events: {events['feature-status']} feature-status, "
            f"{events['extraction-status']} extraction-status",
        ]

    def feature_table() -> str:
        album_row(page, DEMO_ALBUM).get_by_role("button", name="Explore Features").click()
        page.wait_for_url(re.compile(rf"/features/{DEMO_ALBUM}/overview"), timeout=SHORT)
        page.get_by_text("Feature Table", exact=True).click()
        rows = page.locator("tbody tr:visible").filter(has_text=re.compile("|".join(patients)))
        expect(rows).to_have_count(len(patients), timeout=SHORT)
        columns = rows.first.locator("td").count()
        return f"feature table open: {rows.count()} patients x {columns} columns"

    def outcomes() -> str:
        labels = outcomes_csv(patients, out / "outcomes.csv")
        page.get_by_text("Outcomes", exact=False).first.click()
        page.get_by_role("button", name="Create New Outcome").click()
        dialog = page.locator(".modal-dialog")
        dialog.locator("#newOutcomeName").fill(outcome)
        dialog.locator("#outcome-type").select_option("Classification")
        dialog.get_by_role("button", name="Create New Outcome").click()
        expect(dialog).to_have_count(0, timeout=SHORT)
        page.get_by_role("button", name="Import Labels").click()
        page.locator("#label-file").set_input_files(str(labels))
        expect(page.locator(".alert-success", has_text="valid")).to_be_visible(timeout=SHORT)
        page.get_by_role("button", name="Save Labels").last.click()
        expect(page.get_by_role("button", name="Save Labels").last).to_be_enabled(timeout=SHORT)
        expect(page.get_by_text(f"Outcomes (Current - {outcome})")).to_be_visible(timeout=SHORT)
        return f"outcome '{outcome}' from {labels.name} ({len(patients)} patients, 2 classes)"

    def train() -> list[str]:
        before = journey.recorder.events["training-status"]
        page.get_by_text("Model Training", exact=False).first.click()
        another = page.get_by_role("button", name=re.compile(r"^Train a new"))
        if another.count():  # attached to a platform that has models: open the form
            another.click()
        button = page.locator("button.btn-info", has_text=re.compile(r"^Train"))
        expect(button).to_be_enabled(timeout=SHORT)
        button.click()
        # The button shows the live phase and percentage; the model list replaces it at the end.
        status = page.locator("button.btn-info", has_text=re.compile(r"Train|Test"))
        seen: list[str] = []
        deadline = time.monotonic() + LONG / 1000
        while page.get_by_text("Existing models for album").count() == 0:
            try:
                text = status.first.inner_text(timeout=1000).strip()
            except PlaywrightError:
                text = ""
            if text and (not seen or seen[-1] != text):
                seen.append(text)
            if page.locator(".alert-danger").count() or time.monotonic() > deadline:
                raise AssertionError(f"training did not finish: {seen}")
            page.wait_for_timeout(300)
        events = journey.recorder.events["training-status"] - before
        if events == 0:
            raise AssertionError("no training-status event reached the page")
        return [
            f"button states: {' | '.join(seen)} | model list",
            f"{events} training-status events",
        ]

    def models() -> str:
        page.get_by_text("Model Evaluation / Comparison", exact=False).first.click()
        table = page.locator("table:visible").filter(has_text=re.compile("AUC", re.I)).first
        expect(table).to_be_visible(timeout=SHORT)
        text = table.inner_text()
        numbers = re.findall(r"\b[01]\.\d{2,}", text)
        if not numbers:
            raise AssertionError(f"no metric value in the model list: {text[:300]!r}")
        return f"model list shows metrics ({len(numbers)} values, e.g. {numbers[:4]})"

    def save(click: Callable[[], Any]) -> Path:
        """Click something that downloads; keep the file; fail on an empty one."""
        with page.expect_download(timeout=SHORT) as info:
            click()
        target = out / info.value.suggested_filename
        info.value.save_as(str(target))
        if target.stat().st_size == 0:
            raise AssertionError(f"the download {target.name} is empty")
        return target

    def download() -> list[str]:
        scores = save(lambda: page.get_by_role("button", name="Scores").first.click())
        page.locator(".tabs-row-first").get_by_text("Overview", exact=True).click()
        features = save(lambda: page.get_by_role("button", name="Download features").click())
        with zipfile.ZipFile(features) as archive:
            members = archive.namelist()
        return [
            f"model scores {scores.name} ({scores.stat().st_size} bytes)",
            f"features {features.name} ({features.stat().st_size} bytes: {members})",
        ]

    journey.step("home", home)
    journey.step("login-wrong-password", wrong_password)
    journey.step("login", login)
    journey.step("dashboard-studies", studies)
    journey.step("extraction-start", extract)
    journey.step("extraction-progress-live", progress)
    journey.step("feature-table", feature_table)
    journey.step("outcomes-from-csv", outcomes)
    journey.step("train-classification-model", train)
    journey.step("model-metrics", models)
    journey.step("download", download)


def other_checks(journey: Journey, site: str, smoke: Platform) -> None:
    """Logout, a refused redirect URI, and the admin who sees their own album too."""
    page = journey.page
    realm = frontend.realm_url(smoke.values)

    def logout() -> str:
        page.goto(f"{site}/dashboard")
        # Once the album shows its buttons, the dashboard's extraction and model reads are done.
        explore = album_row(page, DEMO_ALBUM).get_by_role("button", name="Explore Features")
        expect(explore).to_be_visible(timeout=SHORT)
        page.get_by_role("button", name="Logout").click()
        expect(page.get_by_role("button", name="Log in")).to_be_visible(timeout=SHORT)
        return "back on the home page, logged out"

    def bad_redirect() -> str:
        query = (
            f"client_id={smoke.values['REACT_APP_KEYCLOAK_FRONTEND_CLIENT_ID']}"
            "&redirect_uri=http%3A%2F%2Fevil.example%2Fcallback&response_type=code&state=x"
        )
        answer = page.goto(f"{realm}/protocol/openid-connect/auth?{query}")
        assert answer is not None and answer.status == 400, answer and answer.status
        expect(page.locator("#kc-error-message")).to_have_text("Invalid parameter: redirect_uri")
        expect(page.locator("#kc-login")).to_have_count(0)
        return "refused with Keycloak's error page (HTTP 400), no login form, no redirect"

    def admin_albums() -> str:
        open_home(page, site)
        page.get_by_role("button", name="Log in").click()
        log_in(page, "admin", "admin")
        page.wait_for_url(re.compile(r"/dashboard"), timeout=SHORT)
        for album in DEMO_ALBUMS:
            expect(album_row(page, album.album_id)).to_be_visible(timeout=SHORT)
        expect(page.get_by_text("Feature Presets")).to_be_visible()
        return f"admin sees {[a.album_id for a in DEMO_ALBUMS]} and the admin menu"

    journey.step("logout", logout)
    # The refusal itself is a 400 page, which Chromium also logs in the console.
    refusal = (
        r"^HTTP 400: GET \S+/protocol/openid-connect/auth\?",
        r"status of 400 \(BAD REQUEST\)$",
    )
    journey.step("wrong-redirect-uri-refused", bad_redirect, allowed=refusal)
    journey.step("admin-sees-own-album", admin_albums)


def drive(site: str, smoke: Platform, run_dir: Path) -> tuple[Journey, Recorder]:
    """Run every step in a fresh chromium profile; return the journey and what it recorded."""
    profile = Path(tempfile.mkdtemp(prefix="qi2-chromium-"))
    try:
        with sync_playwright() as play:
            context = launch(play, profile)
            page = context.new_page()
            recorder = Recorder()
            recorder.attach(context, page)
            journey = Journey(page, recorder, run_dir / "screenshots")
            researcher_journey(journey, site, smoke, run_dir)
            other_checks(journey, site, smoke)
            context.close()
        return journey, recorder
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def _stop(signum: int, _frame: Any) -> None:
    """End the run from a signal, as a failure."""
    raise SystemExit(f"stopped by signal {signum}")


def main() -> int:
    """Start the platform and the frontend, run the journey, report."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--base-port", type=int, default=5100, help="ports base..base+55")
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "browser-smoke")
    parser.add_argument("--source", type=Path, help="a frontend tarball or folder")
    parser.add_argument(
        "--attach",
        type=Path,
        metavar="DATA_DIR",
        help="use the `./qi2 run --data-dir DATA_DIR` and `./qi2 frontend` already running "
        "(its demo album without an extraction yet) instead of starting them",
    )
    parser.add_argument(
        "--frontend-port", type=int, default=3000, help="with --attach: its --frontend-port"
    )
    args = parser.parse_args()
    # `timeout` (CI) sends SIGTERM, and a background job ignores SIGINT: either one ends the
    # run through the `finally`s, so the platform and its workers are stopped too.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _stop)
    started = time.monotonic()
    run_dir = args.out / time.strftime("%Y%m%d-%H%M%S")
    (run_dir / "screenshots").mkdir(parents=True)
    results: list[StepResult] = []
    timings: dict[str, float] = {}
    blocked: set[str] = set()
    planned = STEPS  # when the platform or the build fails, every step counts as failed
    try:
        running = (
            attached(args.attach, args.frontend_port)
            if args.attach
            else platform(run_dir, args.base_port)
        )
        with running as smoke:
            timings["platform"] = time.monotonic() - started
            t0 = time.monotonic()
            server = None
            if not args.attach:  # attached: the caller's `./qi2 frontend` serves it
                source = (args.source or frontend.default_source()).resolve()
                # The cache of `./qi2 frontend` (default data dir): one npm install per checkout.
                cache = ROOT / "var" / "frontend-cache"
                build_dir, steps = frontend.build(smoke.values, source, cache)
                timings.update({f"frontend {k}": v for k, v in steps.items()})
                timings["frontend total"] = time.monotonic() - t0
                server = frontend.serve(build_dir, "127.0.0.1", smoke.frontend_port)
            site = f"http://127.0.0.1:{smoke.frontend_port}"
            t0 = time.monotonic()
            try:
                journey, recorder = drive(site, smoke, run_dir)
                results, blocked, planned = journey.results, recorder.blocked, journey.planned
            finally:
                if server is not None:
                    server.shutdown()
            timings["journey"] = time.monotonic() - t0
    except SystemExit as exc:
        print(f"browser_smoke: could not run: {exc}", file=sys.stderr, flush=True)
    passed = sum(r.ok for r in results)
    seconds = time.monotonic() - started
    print("\nscreenshots:")
    for result in results:
        print(f"  {result.screenshot}")
    print("timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    if blocked:
        print(f"blocked (not loopback): {', '.join(sorted(blocked))}")
    print(
        f"browser_smoke: steps={planned} passed={passed} failed={planned - passed} "
        f"seconds={seconds:.0f}",
        flush=True,
    )
    return 0 if passed == planned else 1


if __name__ == "__main__":
    sys.exit(main())
