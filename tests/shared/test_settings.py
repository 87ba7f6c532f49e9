"""Typed settings: deployment variable names, Docker secrets, derived URLs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared.config import Settings


@pytest.fixture
def clean_env(monkeypatch):
    """Remove the variables the test session sets, so defaults show."""
    for name in ("DATABASE_URL", "QI2_DATA_DIR", "CELERY_BROKER_URL", "KEYCLOAK_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_existing_deployment_variable_names(clean_env):
    clean_env.setenv("DB_HOST", "db")
    clean_env.setenv("DB_DATABASE", "quantimage2")
    clean_env.setenv("DB_USER", "qi")
    clean_env.setenv("DB_PASSWORD", "p@ss:word")
    clean_env.setenv("KEYCLOAK_BASE_URL", "http://keycloak:8081/auth/")
    clean_env.setenv("KEYCLOAK_REALM_NAME", "QuantImage-v2")
    clean_env.setenv("KEYCLOAK_QUANTIMAGE2_FRONTEND_CLIENT_ID", "quantimage2-frontend")
    clean_env.setenv("KEYCLOAK_FRONTEND_ADMIN_ROLE", "admin")
    clean_env.setenv("CORS_ALLOWED_ORIGINS", "http://a.org, http://b.org")
    clean_env.setenv("GRID_SEARCH_CONCURRENCY", "-1")
    settings = Settings(_env_file=None)
    assert settings.sqlalchemy_url == (
        "mysql+pymysql://qi:p%40ss%3Aword@db:3306/quantimage2?charset=utf8mb4"
    )
    assert settings.jwks_url == (
        "http://keycloak:8081/auth/realms/QuantImage-v2/protocol/openid-connect/certs"
    )
    assert settings.expected_issuer == "http://keycloak:8081/auth/realms/QuantImage-v2"
    assert settings.cors_allowed_origins == ["http://a.org", "http://b.org"]
    assert settings.grid_search_concurrency == -1


def test_password_from_docker_secret_file(clean_env, tmp_path: Path):
    secret = tmp_path / "db-user-password"
    secret.write_text("from-secret\n")
    clean_env.setenv("DB_HOST", "db")
    clean_env.setenv("DB_USER_PASSWORD_FILE", str(secret))
    settings = Settings(_env_file=None)
    assert settings.db_password == "from-secret"
    assert ":from-secret@db" in settings.sqlalchemy_url


def test_redis_password_from_its_secret_goes_into_the_three_urls(clean_env, tmp_path: Path):
    secret = tmp_path / "redis-password"
    secret.write_text("a/b:c@d\n")  # URL-special characters are escaped
    clean_env.setenv("REDIS_PASSWORD_FILE", str(secret))
    clean_env.setenv("CELERY_BROKER_URL", "redis://10.0.0.1:6379/0")
    clean_env.setenv("CELERY_RESULT_BACKEND", "rediss://worker@10.0.0.1:6379/1")
    clean_env.setenv("SOCKET_MESSAGE_QUEUE", "redis://:explicit@10.0.0.1:6380/0")
    settings = Settings(_env_file=None)
    assert settings.celery_broker_url == "redis://:a%2Fb%3Ac%40d@10.0.0.1:6379/0"
    assert settings.celery_result_backend == "rediss://worker:a%2Fb%3Ac%40d@10.0.0.1:6379/1"
    assert settings.socket_message_queue == "redis://:explicit@10.0.0.1:6380/0"  # left alone
    without = Settings(_env_file=None, REDIS_PASSWORD_FILE=str(tmp_path / "absent"))
    assert without.redis_password is None
    assert without.celery_broker_url == "redis://10.0.0.1:6379/0"


def test_embedded_default_is_sqlite_in_data_dir(clean_env, tmp_path: Path):
    clean_env.setenv("QI2_DATA_DIR", str(tmp_path))
    settings = Settings(_env_file=None)
    assert settings.sqlalchemy_url == f"sqlite:///{tmp_path / 'quantimage2.db'}"


def test_invalid_value_is_rejected(clean_env):
    clean_env.setenv("IMAGE_SOURCE", "ftp")
    with pytest.raises(ValueError, match=r"image_source|IMAGE_SOURCE"):
        Settings(_env_file=None)


# Reads of the environment: os.getenv(...), os.environ.get(...), os.environ[...] not assigned,
# or the mapping itself passed on. Setting a variable for a child library is not a read.
ENV_READ = re.compile(
    r"os\.getenv|os\.environ\.(get|copy|items|keys|values)\b"
    r"|os\.environ\[[^\]]+\](?!\s*=[^=])|[(=,]\s*os\.environ\s*[),]|dict\(os\.environ"
)


def test_only_the_settings_module_reads_the_environment():
    """Environment reads appear in shared/config.py only (pydantic-settings) and dev tooling."""
    root = Path(__file__).resolve().parents[2]
    offenders = []
    for package in ("shared", "webapp", "workers"):
        for path in (root / package).rglob("*.py"):
            if "dev" in path.relative_to(root).parts:
                continue
            if ENV_READ.search(path.read_text()):
                offenders.append(str(path.relative_to(root)))
    assert offenders == []


def test_the_environment_read_pattern_catches_reads():
    reads = ["os.getenv('X')", "os.environ.get('X')", "x = os.environ['X']", "dict(os.environ)"]
    writes = ['os.environ["OMP_NUM_THREADS"] = str(count)']
    assert all(ENV_READ.search(text) for text in reads)
    assert not any(ENV_READ.search(text) for text in writes)


def test_a_training_is_lost_after_the_lost_message_delay_with_8_beats_in_it(clean_env):
    settings = Settings()
    assert settings.silent_after_seconds == 120
    assert settings.heartbeat_seconds == 15
    clean_env.setenv("LOST_MESSAGE_AFTER_SECONDS", "10")
    fast = Settings()
    assert fast.silent_after_seconds == 10 and fast.heartbeat_seconds == 1.25
