"""Build the QuantImage v2 frontend with the platform's settings and serve it (`./qi2 frontend`).

The source is the frontend snapshot in `../shared/frontend/` (or `--source`: a tarball or an
unpacked folder), used as it is: it is unpacked (or copied) into a cache and never changed.
Its dependencies are installed with yarn 1 run through npm's `npx` with `--frozen-lockfile`:
the snapshot's yarn.lock pins every package, so two builds of one source are the same (a plain
`npm install` resolves newer versions and stops on the snapshot's peer-dependency conflicts).
The build is Create React App's (`react-app-rewired build`) with the five `REACT_APP_*` values
of `<data-dir>/frontend.env`, which `./qi2 run` writes. Cached: the dependencies per source,
the build per (source, values). Served as a single-page app (unknown paths get index.html).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from werkzeug.middleware.shared_data import SharedDataMiddleware
from werkzeug.serving import BaseWSGIServer, make_server

ROOT = Path(__file__).resolve().parents[1]
SHARED_FRONTEND = ROOT.parent / "shared" / "frontend"
SETTINGS = (
    "REACT_APP_PYTHON_BACKEND_URL",
    "REACT_APP_KEYCLOAK_URL",
    "REACT_APP_KEYCLOAK_REALM",
    "REACT_APP_KEYCLOAK_FRONTEND_CLIENT_ID",
    "REACT_APP_KHEOPS_URL",
)
YARN = "yarn@1.22.22"  # the snapshot's package.json `packageManager`
SKIPPED = {"node_modules", "build", ".git"}
INSTALLED = ".qi2-installed"


def read_env_file(path: Path) -> dict[str, str]:
    """Read NAME=value lines (blank lines and # comments skipped); all five must be there."""
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    missing = [name for name in SETTINGS if not values.get(name)]
    if missing:
        raise SystemExit(f"{path} lacks {', '.join(missing)} (`./qi2 run` writes it)")
    return {name: values[name] for name in SETTINGS}


def default_source() -> Path:
    """Return the one frontend tarball in ../shared/frontend/."""
    found = sorted(SHARED_FRONTEND.glob("quantimage2-frontend-*.tar.gz"))
    if len(found) != 1:
        raise SystemExit(f"expected one quantimage2-frontend-*.tar.gz in {SHARED_FRONTEND}")
    return found[0]


def source_files(folder: Path) -> Iterable[Path]:
    """Yield an unpacked source's files in a stable order, without dependencies or builds."""
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.is_file() and not SKIPPED & set(relative.parts):
            yield path


def source_digest(source: Path) -> str:
    """Hash the source: a tarball's bytes, or a folder's file names and contents."""
    digest = hashlib.sha256()
    if source.is_file():
        with source.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    else:
        for path in source_files(source):
            digest.update(str(path.relative_to(source)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def unpack(source: Path, dest: Path) -> Path:
    """Put a pristine copy of the source at `dest` (once); return the folder with package.json."""
    if not (dest / "package.json").is_file():
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        if source.is_file():
            # The safe extraction filter exists from Python 3.11.4 on (the floor is 3.11.3).
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            with tarfile.open(source) as archive:
                archive.extractall(tmp, **safe)
            tops = [p for p in tmp.iterdir() if p.is_dir()]
            root = tops[0] if len(tops) == 1 and not (tmp / "package.json").exists() else tmp
        else:
            root = tmp / "src"
            for path in source_files(source):
                target = root / path.relative_to(source)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
        shutil.rmtree(dest, ignore_errors=True)
        root.rename(dest)
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def run_logged(command: list[str], cwd: Path, env: dict[str, str], log: Path) -> float:
    """Run a command with its output in a log file; return its seconds; fail with the log's end."""
    started = time.monotonic()
    with log.open("ab") as out:
        done = subprocess.run(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-30:]
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n" + "\n".join(tail))
    return time.monotonic() - started


def node_env(values: dict[str, str] | None = None) -> dict[str, str]:
    """Node's environment: a heap big enough for the build; warnings are not errors (CI=true)."""
    env = dict(os.environ)
    env.update(
        CI="false",
        GENERATE_SOURCEMAP="false",
        NODE_OPTIONS="--max-old-space-size=4096",
        BROWSERSLIST_IGNORE_OLD_DATA="1",
        DISABLE_ESLINT_PLUGIN="true",
    )
    env.update(values or {})
    return env


def build(values: dict[str, str], source: Path, cache: Path) -> tuple[Path, dict[str, float]]:
    """Return the build for these values (cached), and the seconds each step took."""
    for tool in ("node", "npx"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (`./qi2 frontend` installs nodejs and npm)")
    digest = source_digest(source)
    key = hashlib.sha256((digest + repr(sorted(values.items()))).encode()).hexdigest()[:16]
    out = cache / "builds" / key
    if (out / "index.html").is_file():
        return out, {}
    cache.mkdir(parents=True, exist_ok=True)
    log = cache / "build.log"
    src = unpack(source, cache / f"src-{digest}")
    seconds: dict[str, float] = {}
    if not (src / "node_modules" / INSTALLED).is_file():
        install = ["npx", "--yes", YARN, "install", "--frozen-lockfile", "--non-interactive"]
        seconds["install"] = run_logged(
            [*install, "--network-timeout", "600000"], src, node_env(), log
        )
        (src / "node_modules" / INSTALLED).touch()
    shutil.rmtree(src / "build", ignore_errors=True)
    rewired = str(src / "node_modules" / ".bin" / "react-app-rewired")
    seconds["build"] = run_logged([rewired, "build"], src, node_env(values), log)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out, ignore_errors=True)
    (src / "build").rename(out)
    return out, seconds


def spa(build_dir: Path) -> Any:
    """A WSGI app serving the build's files, and index.html for every other path."""
    index = (build_dir / "index.html").read_bytes()

    def page(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response(
            "200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-cache")]
        )
        return [index]

    return SharedDataMiddleware(page, {"/": str(build_dir)})


def serve(build_dir: Path, host: str, port: int) -> BaseWSGIServer:
    """Serve the build on a background thread; return the server (call shutdown() to stop)."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per static file
    server = make_server(host, port, spa(build_dir), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def realm_url(values: dict[str, str]) -> str:
    """The realm URL the frontend is built for (keycloak-js: url + /realms/ + realm)."""
    return f"{values['REACT_APP_KEYCLOAK_URL']}/realms/{values['REACT_APP_KEYCLOAK_REALM']}"


def redirect_refused(values: dict[str, str], url: str) -> str | None:
    """Ask the issuer whether it accepts this frontend's login redirect; say why not."""
    auth = f"{realm_url(values)}/protocol/openid-connect/auth"
    query = {
        "client_id": values["REACT_APP_KEYCLOAK_FRONTEND_CLIENT_ID"],
        "redirect_uri": f"{url}/silent-check-sso.html",
        "response_type": "code",
        "response_mode": "fragment",
        "prompt": "none",
        "state": "qi2-frontend-check",
    }
    try:
        answer = httpx.get(f"{auth}?{urlencode(query)}", timeout=10)
    except httpx.HTTPError as exc:
        return f"the issuer at {auth} does not answer ({type(exc).__name__}): is `./qi2 run` up?"
    if answer.status_code != 302:
        return f"the issuer refuses {url} as a redirect URI (HTTP {answer.status_code})"
    return None


def main() -> int:
    """Build (or reuse) the frontend for `./qi2 run`'s settings and serve it."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data-dir", default=str(ROOT / "var"), help="as `./qi2 run --data-dir`")
    parser.add_argument("--env-file", help="default: <data-dir>/frontend.env")
    parser.add_argument("--source", type=Path, help="a frontend tarball or folder")
    parser.add_argument("--port", type=int, default=3000, help="as `./qi2 run --frontend-port`")
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument(
        "--unpack-to",
        type=Path,
        metavar="DIR",
        help="only unpack the source into DIR with the settings in DIR/.env.production.local "
        "(the compose `frontend` service's build context, QI2_FRONTEND_DIR)",
    )
    args = parser.parse_args()
    data = Path(args.data_dir)
    values = read_env_file(Path(args.env_file) if args.env_file else data / "frontend.env")
    source = (args.source or default_source()).resolve()
    if args.unpack_to:
        context = unpack(source, args.unpack_to.resolve())
        lines = "".join(f"{k}={v}\n" for k, v in values.items())
        (context / ".env.production.local").write_text(lines, encoding="utf-8")
        print(f"frontend build context ready: {context} (QI2_FRONTEND_DIR)", flush=True)
        return 0
    print(f"frontend source {source}; settings:", flush=True)
    for name, value in values.items():
        print(f"  {name}={value}", flush=True)
    started = time.monotonic()
    build_dir, seconds = build(values, source, data / "frontend-cache")
    took = ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()) or "cached"
    print(f"frontend build {build_dir} ({took}; {time.monotonic() - started:.0f} s)", flush=True)
    if args.build_only:
        return 0
    url = f"http://127.0.0.1:{args.port}"
    refused = redirect_refused(values, url)
    if refused:
        print(f"WARNING: {refused}; logging in will fail.", file=sys.stderr, flush=True)
    server = serve(build_dir, "127.0.0.1", args.port)
    print(
        f"\nQuantImage v2 frontend: {url}   (Ctrl-C stops it)\n"
        "  log in as researcher/researcher, or admin/admin (feature presets)\n",
        flush=True,
    )
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
