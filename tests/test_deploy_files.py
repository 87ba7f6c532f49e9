"""Deployment files: `.env.example` covers the settings, and every compose combination validates.

The compose check runs Debian's `docker-compose` 1.29 (compose v1), which validates files
without a Docker engine. It is installed by `./qi2 test`; a machine without it fails here
rather than skipping, so a green run always means the files were checked.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml
from pydantic import AliasChoices, AliasPath

from shared.config import Settings

ROOT = Path(__file__).resolve().parents[1]
ENV_EXAMPLE = ROOT / ".env.example"
BASE = "docker-compose.yml"
OVERLAYS = {
    "base": [],
    "base+override": ["docker-compose.override.yml"],
    "base+local": ["docker-compose.local.yml"],
    "base+vm": ["docker-compose.vm.yml"],
    "base+local+vm": ["docker-compose.local.yml", "docker-compose.vm.yml"],
    "base+prod": ["docker-compose.prod.yml"],
}
# The worker machine's file stands alone (docs/runbooks/deploy.md, "Add a worker machine").
WORKER = "docker-compose.worker.yml"
COMPOSE_FILES = [BASE, *sorted({f for files in OVERLAYS.values() for f in files}), WORKER]

# Variables that only the compose files (or Compose itself) read; documented at the end of
# .env.example. Anything else in .env.example must be a Settings variable.
COMPOSE_ONLY = {
    "COMPOSE_PROJECT_NAME",
    "COMPOSE_HTTP_TIMEOUT",
    "QI2_IMAGE_TAG",
    "QI2_BIND_ADDRESS",
    "QI2_API_PORT",
    "QI2_FLOWER_PORT",
    "QI2_DB_PORT",
    "QI2_REDIS_PORT",
    "QI2_OIDC_PORT",
    "QI2_ALBUMS_DIR",
    "QI2_FRONTEND_PORT",
    "QI2_FRONTEND_DIR",
    "QI2_OIDC_PUBLIC_URL",
    "DEV_KEYCLOAK_BASE_URL",
    "DEV_KEYCLOAK_ISSUER",
    "FLOWER_URL_PREFIX",
    "FLOWER_PERSISTENT",
    "TRAEFIK_NETWORK",
    "TRAEFIK_URL_FLASKAPP",
    "TRAEFIK_URL_FLOWER",
    "TRAEFIK_ENTRYPOINT",
    "TRAEFIK_CERTRESOLVER",
    "DB_BACKUP_DIRECTORY",
    "DATA_BACKUP_DIRECTORY",
    "QI2_BACKEND_BIND_ADDRESS",
    "QI2_REDIS_SOCKET_PORT",
    "QI2_REDIS_PASSWORD_FILE",
    "QI2_MAIN_HOST",
    "QI2_WORKER_DB_USER",
}
# Read by Compose itself rather than interpolated into a file.
COMPOSE_BUILTIN = {"COMPOSE_PROJECT_NAME", "COMPOSE_HTTP_TIMEOUT"}
# `NAME=value`, or `# NAME=value` for a documented variable left unset.
ASSIGNMENT = re.compile(r"^\s*(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$")
INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")


def settings_env_names() -> set[str]:
    """Return every environment variable name that Settings reads (all alias choices)."""
    names: set[str] = set()
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(c for c in alias.choices if isinstance(c, str))
        elif isinstance(alias, str):
            names.add(alias)
        elif isinstance(alias, AliasPath):
            names.add(str(alias.path[0]))
        else:
            names.add(field.alias or field_name)
    return {name.upper() for name in names}


def env_example_entries() -> dict[str, tuple[bool, str]]:
    """Map each variable named in .env.example to (assigned, value); commented ones too."""
    entries: dict[str, tuple[bool, str]] = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = ASSIGNMENT.match(line)
        if match:
            commented, name, value = match.groups()
            assigned = commented is None
            if name in entries and entries[name][0] and assigned:
                pytest.fail(f".env.example assigns {name} twice")
            if assigned or name not in entries:
                entries[name] = (assigned, value)
    return entries


def compose_variables() -> set[str]:
    """Return the variables interpolated anywhere in the compose files (`$$` is a literal)."""
    found: set[str] = set()
    for name in COMPOSE_FILES:
        found.update(INTERPOLATION.findall((ROOT / name).read_text(encoding="utf-8")))
    return found


def test_env_example_names_every_settings_variable() -> None:
    missing = settings_env_names() - set(env_example_entries())
    assert not missing, f".env.example does not mention: {sorted(missing)}"


def test_env_example_has_no_unknown_variable() -> None:
    unknown = set(env_example_entries()) - settings_env_names() - COMPOSE_ONLY
    assert not unknown, (
        f".env.example names variables that neither Settings nor the compose files read: "
        f"{sorted(unknown)} (add them to Settings, or to COMPOSE_ONLY and a compose file)"
    )


def test_compose_only_variables_are_used_and_documented() -> None:
    used = compose_variables()
    entries = env_example_entries()
    stale = COMPOSE_ONLY - used - COMPOSE_BUILTIN
    assert not stale, f"COMPOSE_ONLY lists variables no compose file uses: {sorted(stale)}"
    undocumented = used - set(entries)
    assert not undocumented, f"compose files use variables .env.example omits: {undocumented}"


def test_env_example_sets_no_password() -> None:
    entries = env_example_entries()
    for name in ("DB_PASSWORD", "DB_USER_PASSWORD", "REDIS_PASSWORD"):
        assigned, value = entries[name]
        assert not assigned or not value, f"{name} must stay unset: passwords are secrets"


def test_env_example_values_are_valid_settings() -> None:
    # The assigned values as the env file passes them (init arguments win over the process
    # environment that the test conftest sets); a wrong type fails validation here.
    names = settings_env_names()
    values = {
        name: value
        for name, (assigned, value) in env_example_entries().items()
        if assigned and name in names
    }
    settings = Settings(_env_file=None, **values)
    assert settings.cors_allowed_origins == ["http://localhost:3000"]
    assert settings.keycloak_audience == []


def _docker_compose() -> str:
    """Return the docker-compose v1 binary, failing (not skipping) when it is missing."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail(
            "docker-compose is not installed: the compose files cannot be validated. "
            "Install the Debian package (apt-get install -y docker-compose); ./qi2 test does."
        )
    return binary


def _compose(
    files: list[str], *args: str, env_file: Path = ENV_EXAMPLE
) -> subprocess.CompletedProcess:
    """Run docker-compose on `files` in a clean environment: only `env_file` feeds it."""
    command = [_docker_compose(), "--env-file", str(env_file)]
    for name in files:
        command += ["-f", name]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(
        [*command, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# The Redis password file the prod and VM overlays (and worker machines) require.
REDIS_REQUIRED = {"QI2_REDIS_PASSWORD_FILE": "./secrets/redis-password"}
# The variables docker-compose.prod.yml guards with ${NAME:?...}, and values a server would set.
PROD_REQUIRED = {
    "TRAEFIK_NETWORK": "traefik",
    "TRAEFIK_URL_FLASKAPP": "qi2-api.example.org",
    "TRAEFIK_URL_FLOWER": "qi2-flower.example.org",
    "DB_BACKUP_DIRECTORY": "/srv/qi2/backups/db",
    "DATA_BACKUP_DIRECTORY": "/srv/qi2/backups/data",
    **REDIS_REQUIRED,
}
WORKER_REQUIRED = {"QI2_MAIN_HOST": "10.0.0.1", **REDIS_REQUIRED}


def _env_with(tmp: Path, name: str, values: dict[str, str]) -> Path:
    """Write .env.example plus `values`, as an operator fills in the required variables."""
    path = tmp / name
    lines = [f"{key}={value}" for key, value in values.items()]
    path.write_text(ENV_EXAMPLE.read_text(encoding="utf-8") + "\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def prod_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """.env.example with the prod overlay's required variables filled in, as an operator would."""
    return _env_with(tmp_path_factory.mktemp("env"), "prod.env", PROD_REQUIRED)


@pytest.fixture(scope="module")
def vm_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """.env.example with the Redis password file the VM overlay requires."""
    return _env_with(tmp_path_factory.mktemp("env"), "vm.env", REDIS_REQUIRED)


@pytest.fixture(scope="module")
def worker_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """.env.example with what a worker machine must set."""
    return _env_with(tmp_path_factory.mktemp("env"), "worker.env", WORKER_REQUIRED)


def _env_file_for(combination: str, prod_env: Path, vm_env: Path | None = None) -> Path:
    """The env file a combination is checked with: prod and VM need their required variables."""
    if "docker-compose.prod.yml" in OVERLAYS[combination]:
        return prod_env
    if "docker-compose.vm.yml" in OVERLAYS[combination]:
        assert vm_env is not None, combination
        return vm_env
    return ENV_EXAMPLE


def test_prod_guards_name_exactly_the_required_variables() -> None:
    text = (ROOT / "docker-compose.prod.yml").read_text(encoding="utf-8")
    assert set(re.findall(r"\$\{([A-Z0-9_]+):\?", text)) == set(PROD_REQUIRED)


def test_env_example_leaves_the_prod_guards_armed() -> None:
    # A copied .env.example must not quietly deploy example host names and backup folders.
    entries = env_example_entries()
    for name in PROD_REQUIRED:
        assert name in entries, f".env.example does not document {name}"
        assert not entries[name][0], f".env.example assigns {name}: the prod guard never fires"
    result = _compose([BASE, "docker-compose.prod.yml"], "config", "-q")
    print(f"base+prod with .env.example: rc={result.returncode} {result.stderr.strip()}")
    assert result.returncode != 0
    assert any(name in result.stderr for name in PROD_REQUIRED), result.stderr


@pytest.mark.parametrize("combination", list(OVERLAYS))
def test_compose_combination_is_valid(combination: str, prod_env: Path, vm_env: Path) -> None:
    files = [BASE, *OVERLAYS[combination]]
    env_file = _env_file_for(combination, prod_env, vm_env)
    result = _compose(files, "config", "-q", env_file=env_file)
    shown = " ".join(f"-f {name}" for name in files)
    env_name = (
        f"{env_file.name} (.env.example + the required variables)"
        if env_file != ENV_EXAMPLE
        else ".env.example"
    )
    print(f"\ndocker-compose --env-file {env_name} {shown} config -q: rc={result.returncode}")
    assert result.returncode == 0, (
        f"docker-compose {' -f '.join(['', *files])} config -q failed:\n{result.stderr}"
    )
    # Compose v1 only warns about unset variables and unparsable env-file lines.
    assert "WARNING" not in result.stderr, result.stderr
    assert "could not parse" not in result.stderr, result.stderr


def test_published_host_ports_are_variables() -> None:
    # Compose v1 cannot move a port from an overlay, so a fixed host port forces editing a
    # tracked file on a host where it is taken.
    for name in COMPOSE_FILES:
        services = yaml.safe_load((ROOT / name).read_text(encoding="utf-8")).get("services", {})
        for service_name, service in services.items():
            for port in service.get("ports", []):
                # [address:]host:container, the host part being ${QI2_..._PORT:-default}
                assert re.search(r"(^|:)\$\{QI2_[A-Z_]+_PORT:-\d+\}:\d+$", str(port)), (
                    f"{name}: {service_name} publishes {port}: the host port must be a variable"
                )


@pytest.mark.parametrize("combination", list(OVERLAYS))
def test_long_running_services_of_ours_have_an_init(combination: str, rendered) -> None:
    # Our images run Python as PID 1, which ignores SIGTERM unless an init forwards it.
    for name, service in rendered[combination].items():
        if str(service.get("image", "")).startswith("quantimage2/"):
            assert service.get("init") is True, f"{combination}: {name} has no init: true"


def test_local_overlay_offers_the_dev_issuer_behind_a_profile(rendered) -> None:
    # Containers cannot reach the issuer of `./qi2 run` on the host's loopback.
    issuer = rendered["base+local"]["oidc-issuer"]
    assert issuer["profiles"] == ["dev-issuer"]
    assert "devkit.oidc_issuer" in issuer["command"]
    assert "oidc-issuer" not in rendered["base+prod"]


@pytest.mark.parametrize("combination", ["base+override", "base+local", "base+local+vm"])
def test_dev_issuer_runs_from_its_own_image(combination: str, rendered) -> None:
    # Never the web image: that one ships without the development kit.
    issuer = rendered[combination]["oidc-issuer"]
    assert issuer["build"]["dockerfile"] == "devkit/Dockerfile", issuer["build"]
    assert issuer["image"].startswith("quantimage2/dev-issuer:"), issuer["image"]
    assert issuer["command"][:3] == ["python", "-m", "devkit.oidc_issuer"]
    web_images = {rendered[combination][name]["image"] for name in ("webapp", "sockets")}
    assert issuer["image"] not in web_images


# Services that run our code and read Settings; the rest (db, redis, flower...) read none of it.
APP_SERVICES = {
    "migrate",
    "webapp",
    "sockets",
    "worker-extraction",
    "worker-training",
    "worker-prediction",
}
# Passed to the app containers on top of Settings' own variables (Python's, gunicorn's).
APP_EXTRA_ENV = {"PYTHONUNBUFFERED", "PYTHONPATH", "FORWARDED_ALLOW_IPS"}
# For running outside Docker only: the containers read the Docker secret instead.
HOST_ONLY = {"DB_PASSWORD", "DB_USER_PASSWORD", "REDIS_PASSWORD"}
PROXY_AND_BACKUP = {n for n in COMPOSE_ONLY if n.startswith("TRAEFIK_") or "BACKUP" in n}


@pytest.fixture(scope="module")
def rendered(prod_env: Path, vm_env: Path) -> dict[str, dict]:
    """The normalised services of every overlay combination, as compose renders them."""
    out: dict[str, dict] = {}
    for combination, overlays in OVERLAYS.items():
        env_file = _env_file_for(combination, prod_env, vm_env)
        result = _compose([BASE, *overlays], "config", env_file=env_file)
        assert result.returncode == 0, result.stderr
        out[combination] = yaml.safe_load(result.stdout)["services"]
    return out


@pytest.mark.parametrize("combination", list(OVERLAYS))
def test_app_services_get_only_settings_variables(combination: str, rendered) -> None:
    settings = settings_env_names()
    for name, service in rendered[combination].items():
        passed = set(service.get("environment") or {})
        if name in APP_SERVICES:
            missing = settings - HOST_ONLY - passed
            assert not missing, f"{combination}: {name} does not receive {sorted(missing)}"
            foreign = passed - settings - APP_EXTRA_ENV
            assert not foreign, f"{combination}: {name} receives {sorted(foreign)}"
            assert "env_file" not in service, f"{combination}: {name} has an env_file"
        else:
            # Flower reads the broker URL and its own FLOWER_* variables, nothing else of ours.
            leaked = passed & (PROXY_AND_BACKUP | (settings - {"CELERY_BROKER_URL"}))
            assert not leaked, f"{combination}: {name} receives {sorted(leaked)}"


# --- what ships: the app's wheel and the images built from it ------------------------------------

# The production images run `pip install .` in their build stage and keep only the venv, so the
# wheel's file list is what the images carry of the project.
SHIPPED_DOCKERFILES = ["webapp/Dockerfile", "workers/Dockerfile"]
# The app's wheel alone, offline, with the venv's setuptools (the images install it the same way).
PIP_WHEEL = [
    *(sys.executable, "-m", "pip", "wheel", "-q"),
    *("--no-deps", "--no-build-isolation", "--no-index"),
]


@pytest.fixture(scope="module")
def app_wheel_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The module paths in the app's wheel, built from a copy of the tracked tree."""
    tmp = tmp_path_factory.mktemp("wheel")
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60
    ).stdout.decode()
    # A copy, so that the build's build/ and egg-info never land in the working tree.
    source = tmp / "src"
    for name in filter(None, tracked.split("\0")):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    out = tmp / "out"
    subprocess.run([*PIP_WHEEL, "-w", str(out), str(source)], check=True, timeout=300)
    (wheel,) = out.glob("quantimage2_backend-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return [n for n in archive.namelist() if n.endswith(".py")]


def test_app_wheel_has_the_app_and_no_dev_doubles(app_wheel_files: list[str]) -> None:
    tops = {name.split("/")[0] for name in app_wheel_files}
    print(f"\napp wheel: {len(app_wheel_files)} modules under {sorted(tops)}")
    for package in ("shared", "webapp", "workers"):
        assert f"{package}/__init__.py" in app_wheel_files, f"the wheel lacks {package}"
    assert "webapp/wsgi.py" in app_wheel_files
    assert "workers/celery_app.py" in app_wheel_files
    doubles = [
        name
        for name in app_wheel_files
        if name.startswith(("devkit/", "webapp/dev/")) or "synthetic" in name
    ]
    assert not doubles, f"the app wheel ships development doubles: {doubles}"
    assert tops <= {"shared", "webapp", "workers"}, f"unexpected top-level packages: {tops}"


@pytest.mark.parametrize("dockerfile", SHIPPED_DOCKERFILES)
def test_production_images_copy_no_devkit(dockerfile: str) -> None:
    copies = [
        line.split()
        for line in (ROOT / dockerfile).read_text(encoding="utf-8").splitlines()
        if line.strip().upper().startswith(("COPY", "ADD"))
    ]
    # From the build context only: `COPY --from=<stage>` moves files between stages.
    sources = {
        word
        for words in copies
        if not any(w.startswith("--from=") for w in words)
        for word in words[1:-1]
        if not word.startswith("--")
    }
    assert sources, f"{dockerfile} copies nothing?"
    assert not {s for s in sources if "devkit" in s or "dev/" in s}, f"{dockerfile}: {sources}"
    # The project goes in as its three packages; a new top-level folder must be chosen on purpose.
    assert {s for s in sources if not s.startswith(("requirements/", "pyproject", "README"))} == {
        "shared",
        "webapp",
        "workers",
    }, f"{dockerfile} copies {sorted(sources)}"


# --- the local issuer's image (devkit/Dockerfile) -------------------------------------------------


def _pins(name: str) -> dict[str, str]:
    """Map each distribution pinned in requirements/<name> (normalised name) to its version."""
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements" / name).read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            dist, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", dist).lower()] = version
    return pins


def test_issuer_image_copies_only_the_issuer() -> None:
    text = (ROOT / "devkit" / "Dockerfile").read_text(encoding="utf-8")
    copies = [line.split()[1:] for line in text.splitlines() if line.startswith(("COPY", "ADD"))]
    from_context = {w for words in copies if not words[0].startswith("--") for w in words[:-1]}
    assert from_context == {
        "requirements/issuer.txt",
        "devkit/__init__.py",
        "devkit/oidc_issuer.py",
        "devkit/oidc_browser.py",
    }, from_context
    # The same base as the web image, so the two are patched together.
    base = re.compile(r"^ARG PYTHON_IMAGE=(\S+)$", re.M)
    web = (ROOT / "webapp" / "Dockerfile").read_text(encoding="utf-8")
    assert base.findall(text) == base.findall(web)


def test_issuer_image_has_every_distribution_the_issuer_imports() -> None:
    # The image holds the issuer's modules and requirements/issuer.txt, nothing of the app: each
    # top-level import must come from the standard library, one of those pins or those modules.
    tops: set[str] = set()
    for module in ("oidc_issuer.py", "oidc_browser.py"):
        tree = ast.parse((ROOT / "devkit" / module).read_text(encoding="utf-8"))
        tops |= {
            alias.name for n in ast.walk(tree) if isinstance(n, ast.Import) for alias in n.names
        }
        tops |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    copied = {"devkit.oidc_issuer", "devkit.oidc_browser"}
    assert not {t for t in tops if t.startswith("devkit")} - copied, tops
    tops = {t.split(".")[0] for t in tops if t not in copied}
    third_party = tops - set(sys.stdlib_module_names) - {"__future__"}
    assert third_party, "the issuer imports no third-party module?"
    owners = importlib.metadata.packages_distributions()
    pins = _pins("issuer.txt")
    for module in sorted(third_party):
        dists = {re.sub(r"[-_.]+", "-", d).lower() for d in owners.get(module, [])}
        assert dists & set(pins), f"devkit/oidc_issuer.py imports {module}: not in issuer.txt"


def test_issuer_pins_match_the_web_image() -> None:
    web, issuer = _pins("web.txt"), _pins("issuer.txt")
    assert {"flask", "pyjwt", "cryptography"} <= set(issuer)
    differ = {d: (v, web.get(d)) for d, v in issuer.items() if web.get(d) != v}
    assert not differ, f"issuer.txt pins differ from web.txt (issuer, web): {differ}"


# The frontend's five build settings for an operator's .env (docs/runbooks/deploy.md, section 6):
# (what the operator adds to .env.example, the settings, the frontend's origin).
FRONTEND = {
    "base+local+vm": (
        # The VM's containers reach Keycloak as host.docker.internal, the browser as localhost.
        {"KEYCLOAK_ISSUER": "http://localhost:8180/realms/QuantImage-v2"},
        {
            "REACT_APP_PYTHON_BACKEND_URL": "http://localhost:5000",
            "REACT_APP_KEYCLOAK_URL": "http://localhost:8180",
            "REACT_APP_KEYCLOAK_REALM": "QuantImage-v2",
            "REACT_APP_KEYCLOAK_FRONTEND_CLIENT_ID": "quantimage2-frontend",
            "REACT_APP_KHEOPS_URL": "http://localhost",
        },
        "http://localhost:3000",
    ),
    "base+prod": (
        {
            "CORS_ALLOWED_ORIGINS": "https://qi2.example.org",
            "KEYCLOAK_BASE_URL": "https://keycloak.example.org/auth/",
            "KHEOPS_BASE_URL": "https://kheops.example.org",
        },
        {
            "REACT_APP_PYTHON_BACKEND_URL": f"https://{PROD_REQUIRED['TRAEFIK_URL_FLASKAPP']}",
            "REACT_APP_KEYCLOAK_URL": "https://keycloak.example.org/auth",
            "REACT_APP_KEYCLOAK_REALM": "QuantImage-v2",
            "REACT_APP_KEYCLOAK_FRONTEND_CLIENT_ID": "quantimage2-frontend",
            "REACT_APP_KHEOPS_URL": "https://kheops.example.org",
        },
        "https://qi2.example.org",
    ),
}


def test_runbook_names_the_frontend_settings() -> None:
    text = (ROOT / "docs" / "runbooks" / "deploy.md").read_text(encoding="utf-8")
    section = text.split("## 6. The frontend", 1)[1].split("\n## 7.", 1)[0]
    for name in FRONTEND["base+prod"][1]:
        assert f"| `{name}` |" in section, name
    assert "SOCKETIO_LEGACY_ANONYMOUS" in section and "auth:" in section


@pytest.mark.parametrize("combination", list(FRONTEND))
def test_cors_and_issuer_match_the_frontend(
    combination: str, prod_env: Path, vm_env: Path, tmp_path
) -> None:
    additions, values, origin = FRONTEND[combination]
    env_file = tmp_path / "operator.env"
    base = _env_file_for(combination, prod_env, vm_env).read_text(encoding="utf-8")
    env_file.write_text(base + "".join(f"{k}={v}\n" for k, v in additions.items()))
    result = _compose([BASE, *OVERLAYS[combination]], "config", env_file=env_file)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    for name in ("webapp", "sockets"):
        environment = services[name]["environment"]
        keys = (
            "CORS_ALLOWED_ORIGINS",
            "KEYCLOAK_BASE_URL",
            "KEYCLOAK_REALM_NAME",
            "KEYCLOAK_ISSUER",
            "KEYCLOAK_QUANTIMAGE2_FRONTEND_CLIENT_ID",
            "KEYCLOAK_ALLOWED_AZP",
        )
        # Explicit values (None for unset) so that nothing comes from this process's environment.
        settings = Settings(_env_file=None, **{k: environment.get(k) or None for k in keys})
        assert "*" not in settings.cors_allowed_origins, (combination, name)
        assert origin in settings.cors_allowed_origins, (combination, name)
        realm = values["REACT_APP_KEYCLOAK_REALM"]
        assert settings.keycloak_realm_name == realm
        # keycloak-js's tokens name the URL the browser used; the API must expect exactly it.
        assert settings.expected_issuer == f"{values['REACT_APP_KEYCLOAK_URL']}/realms/{realm}"
        client = values["REACT_APP_KEYCLOAK_FRONTEND_CLIENT_ID"]
        assert settings.keycloak_client_id == client
        assert not settings.keycloak_allowed_azp or client in settings.keycloak_allowed_azp
    backend = values["REACT_APP_PYTHON_BACKEND_URL"]
    if combination == "base+prod":
        assert f"Host(`{backend.removeprefix('https://')}`)" in str(services["sockets"]["labels"])
    else:
        port = services["sockets"]["ports"][0]  # compose v1: "address:host:container"
        assert backend.endswith(f":{str(port).split(':')[-2]}"), port


def test_frontend_service_builds_the_snapshot_with_its_own_dockerfile(rendered) -> None:
    # Built from the unpacked frontend by the Dockerfile its repository ships; none is copied.
    service = rendered["base+local"]["frontend"]
    assert service["profiles"] == ["frontend"]
    assert service["build"]["dockerfile"] == "Dockerfile.prod"
    # Tracked files only: ./qi2 browser-smoke unpacks the frontend, its Dockerfile too, in var/.
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60
    ).stdout.decode()
    copies = [name for name in tracked.split("\0") if Path(name).name == "Dockerfile.prod"]
    assert not copies, "a copy of the frontend's Dockerfile"
    assert "frontend" not in rendered["base+prod"]


def test_the_api_command_is_spelled_the_same_everywhere() -> None:
    """webapp/Dockerfile and docker-compose.yml run webapp/servers.py's gunicorn command."""
    from webapp.servers import api_command

    expected = ["gunicorn", *api_command("0.0.0.0", 5000)[1:]]  # the image's PATH finds it
    cmd = re.search(r"^CMD (\[.*\])$", (ROOT / "webapp" / "Dockerfile").read_text(), re.M)
    assert cmd is not None and json.loads(cmd.group(1)) == expected
    compose = yaml.safe_load((ROOT / BASE).read_text(encoding="utf-8"))
    assert compose["services"]["webapp"]["command"] == expected


# --- worker machines: the worker-only file and Redis with a password ----------------------------

WORKER_SERVICES = {"worker-extraction", "worker-training", "worker-prediction"}
PUBLISHING = {"base+vm": "vm", "base+local+vm": "vm", "base+prod": "prod"}


def test_worker_file_alone_is_valid(worker_env: Path) -> None:
    result = _compose([WORKER], "config", "-q", env_file=worker_env)
    print(f"\ndocker-compose --env-file worker.env -f {WORKER} config -q: rc={result.returncode}")
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr, result.stderr


@pytest.mark.parametrize("missing", sorted(WORKER_REQUIRED))
def test_worker_file_refuses_without_its_required_variables(missing: str, tmp_path) -> None:
    values = {k: v for k, v in WORKER_REQUIRED.items() if k != missing}
    result = _compose([WORKER], "config", "-q", env_file=_env_with(tmp_path, "w.env", values))
    print(f"\nworker file without {missing}: rc={result.returncode} {result.stderr.strip()}")
    assert result.returncode != 0
    assert missing in result.stderr and "set " in result.stderr, result.stderr


def test_worker_file_starts_only_workers_pointed_at_the_first_machine(worker_env: Path) -> None:
    result = _compose([WORKER], "config", env_file=worker_env)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert set(services) == WORKER_SERVICES
    base = yaml.safe_load((ROOT / BASE).read_text(encoding="utf-8"))["x-app-environment"]
    host = WORKER_REQUIRED["QI2_MAIN_HOST"]
    for name, service in services.items():
        environment = service["environment"]
        # The same names as the first machine's app containers: a setting added there is not
        # forgotten here.
        assert set(environment) == set(base), (name, set(environment) ^ set(base))
        assert environment["DB_HOST"] == host
        assert environment["DB_USER"] == "quantimage2_worker"
        assert environment["CELERY_BROKER_URL"] == f"redis://{host}:6379/0"
        assert environment["CELERY_RESULT_BACKEND"] == f"redis://{host}:6379/1"
        assert environment["SOCKET_MESSAGE_QUEUE"] == f"redis://{host}:6380/0"
        assert environment["REDIS_PASSWORD_FILE"] == "/run/secrets/redis-password"
        assert {s["source"] for s in service["secrets"]} == {"db-worker-password", "redis-password"}
        assert "depends_on" not in service and "ports" not in service, name
        assert service["init"] is True and service["image"].startswith("quantimage2/backend-worker")
        # Nothing of the worker stays on this machine: no data volume, the albums read-only.
        assert [v.split(":")[1:] for v in service["volumes"]] == [["/albums", "ro"]], name
    queues = {name: s["command"][s["command"].index("-Q") + 1] for name, s in services.items()}
    assert queues == {n: n.removeprefix("worker-") for n in WORKER_SERVICES}


def test_worker_settings_read_the_first_machine_and_the_redis_password(tmp_path) -> None:
    # What the container's Settings make of the worker file's environment and secrets.
    secret = tmp_path / "redis-password"
    secret.write_text("s3cr3t-pw\n")
    settings = Settings(
        _env_file=None,
        CELERY_BROKER_URL="redis://10.0.0.1:6379/0",
        CELERY_RESULT_BACKEND="redis://10.0.0.1:6379/1",
        SOCKET_MESSAGE_QUEUE="redis://10.0.0.1:6380/0",
        REDIS_PASSWORD_FILE=str(secret),
    )
    assert settings.celery_broker_url == "redis://:s3cr3t-pw@10.0.0.1:6379/0"
    assert settings.celery_result_backend == "redis://:s3cr3t-pw@10.0.0.1:6379/1"
    assert settings.socket_message_queue == "redis://:s3cr3t-pw@10.0.0.1:6380/0"


@pytest.mark.parametrize("overlay", ["docker-compose.prod.yml", "docker-compose.vm.yml"])
def test_redis_password_guard_fires_without_the_password_file(overlay: str, tmp_path) -> None:
    values = {k: v for k, v in PROD_REQUIRED.items() if k not in REDIS_REQUIRED}
    env_file = _env_with(tmp_path, "no-redis-password.env", values)
    files = [BASE, overlay] if "prod" in overlay else [BASE, "docker-compose.local.yml", overlay]
    result = _compose(files, "config", "-q", env_file=env_file)
    print(f"\n{' + '.join(files)} without QI2_REDIS_PASSWORD_FILE: rc={result.returncode}")
    print(result.stderr.strip())
    assert result.returncode != 0
    assert "QI2_REDIS_PASSWORD_FILE" in result.stderr and "without a password" in result.stderr


@pytest.mark.parametrize("combination", list(PUBLISHING))
def test_published_redis_requires_the_password(combination: str, rendered) -> None:
    services = rendered[combination]
    for name in ("redis", "redis-socket"):
        redis = services[name]
        assert redis["ports"], f"{combination}: {name} is not published for worker machines"
        assert {s["source"] for s in redis["secrets"]} == {"redis-password"}
        script = redis["command"][-1]
        assert "requirepass" in script and "exit 1" in script, script
        assert "redis-password" in " ".join(redis["healthcheck"]["test"])
    for name in APP_SERVICES | {"flower"}:
        secrets = {s["source"] for s in services[name]["secrets"]}
        assert "redis-password" in secrets, f"{combination}: {name} lacks the Redis password"
    assert "redis-password" in services["flower"]["command"][-1]
    for name in ("db", "redis", "redis-socket"):
        for port in services[name]["ports"]:
            assert str(port.get("host_ip") if isinstance(port, dict) else port).startswith(
                "127.0.0.1"
            ), f"{combination}: {name} is published beyond loopback by default: {port}"


def _redis_script(overlay: str, service: str, secret: Path, port: int, work: Path) -> str:
    """The overlay's Redis start-up script, run here against the host's redis-server."""
    command = yaml.safe_load((ROOT / overlay).read_text(encoding="utf-8"))["services"][service][
        "command"
    ]
    script = command[-1].replace("$$", "$").replace("/run/secrets/redis-password", str(secret))
    conf = work / "auth.conf"
    script = script.replace("chown redis", "true")  # no redis user needed here
    script = script.replace(
        "exec docker-entrypoint.sh redis-server /tmp/auth.conf",
        f"exec redis-server {conf} --port {port} --bind 127.0.0.1 --dir {work}",
    )
    return script.replace("/tmp/auth.conf", str(conf))


@pytest.mark.parametrize("overlay", ["docker-compose.prod.yml", "docker-compose.vm.yml"])
def test_redis_refuses_an_empty_password_and_requires_a_set_one(overlay: str, tmp_path) -> None:
    import redis

    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (apt-get install -y redis-server)")
    secret = tmp_path / "redis-password"
    secret.write_text("")
    port = 6950 + (1 if "vm" in overlay else 0)  # this worktree's ports
    script = _redis_script(overlay, "redis", secret, port, tmp_path)
    empty = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30)
    assert empty.returncode == 1 and "refusing to start without a password" in empty.stderr
    secret.write_text("bad pw with spaces")
    spaced = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30)
    assert spaced.returncode == 1 and "letters, digits" in spaced.stderr

    secret.write_text("0123abcd-pw_OK\n")
    server = subprocess.Popen(["sh", "-c", script], stdout=subprocess.DEVNULL)
    try:
        settings = Settings(
            _env_file=None,
            CELERY_BROKER_URL=f"redis://127.0.0.1:{port}/0",
            REDIS_PASSWORD_FILE=str(secret),
        )
        client = redis.Redis.from_url(settings.celery_broker_url)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.1)
        assert client.ping()  # with the password the Settings put into the URL
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=port).ping()  # no password: refused
        # requirepass came from a file: the process list does not show the password.
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_text().replace("\0", " ")
        assert "redis-server" in cmdline and "0123abcd" not in cmdline, cmdline
        client.close()
        services = yaml.safe_load((ROOT / overlay).read_text(encoding="utf-8"))["services"]
        # The health check authenticates with the secret (redis-cli reads REDISCLI_AUTH).
        check = services["redis"]["healthcheck"]["test"][1].replace("$$", "$")
        check = check.replace("/run/secrets/redis-password", str(secret))
        check = check.replace("redis-cli", f"redis-cli -p {port}")
        assert subprocess.run(["sh", "-c", check], timeout=30).returncode == 0
        # The same probe without the password gets NOAUTH, not PONG.
        unauthenticated = "redis-cli" + check.split("redis-cli", 1)[1]
        assert "REDISCLI_AUTH" not in unauthenticated and "ping" in unauthenticated
        denied = subprocess.run(["sh", "-c", unauthenticated], timeout=30, capture_output=True)
        assert denied.returncode != 0
        # Flower builds its broker URL from the same secret.
        flower = services["flower"]["command"][-1].replace("$$", "$")
        flower = flower.replace("/run/secrets/redis-password", str(secret))
        probe = (
            f"{sys.executable} -c 'import os, redis; redis.Redis.from_url(os.environ"
            f'["CELERY_BROKER_URL"].replace("@redis:6379", "@127.0.0.1:{port}")).ping()\''
        )
        flower = flower.replace("celery flower --conf=/app/flowerconfig.py", probe)
        assert subprocess.run(["sh", "-c", flower], timeout=60).returncode == 0, flower
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_prod_sockets_keep_a_session_on_one_replica(rendered) -> None:
    # Long-polling requests of one Engine.IO session must reach the process that holds it.
    labels = rendered["base+prod"]["sockets"]["labels"]
    labels = labels if isinstance(labels, dict) else dict(x.split("=", 1) for x in labels)
    sticky = {k.rsplit("loadbalancer.", 1)[1]: v for k, v in labels.items() if ".sticky." in k}
    assert sticky == {
        "sticky.cookie": "true",
        "sticky.cookie.name": "qi2_sockets",
        "sticky.cookie.secure": "true",
        "sticky.cookie.httponly": "true",
    }
    assert "ports" not in rendered["base+prod"]["sockets"]  # replicas cannot collide
