"""Typed settings: the one place that reads the environment and Docker-secret files.

Variable names follow the existing deployment (`DB_DATABASE`, `KEYCLOAK_BASE_URL`, ...) so its env
files carry over. Flask, Celery and the workers derive their configuration from `Settings`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import quote, quote_plus, urlsplit, urlunsplit

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_SECRETS_DIR = Path("/run/secrets")
REDIS_SCHEMES = {"redis", "rediss"}


def with_redis_password(url: str, password: str) -> str:
    """Put the password into a redis:// URL that carries none (other URLs are left alone)."""
    parts = urlsplit(url)
    if parts.scheme not in REDIS_SCHEMES or parts.password is not None:
        return url
    user, _, host = parts.netloc.rpartition("@")  # an ACL user name, if any, is kept
    return urlunsplit(parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}"))


def _secret(file: Path | None, default_name: str) -> str | None:
    """Read a password from its file, else from the default Docker secret; None if neither."""
    for path in (file, DEFAULT_SECRETS_DIR / default_name):
        if path is not None and path.is_file():
            return path.read_text().strip()
    return None


def _csv(value: object) -> object:
    """Split a comma-separated environment value into a list."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Every setting of the platform, with development defaults."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True
    )

    # Storage and database ------------------------------------------------------------------
    data_dir: Path = Field(Path("var"), alias="QI2_DATA_DIR")
    database_url: str | None = Field(None, alias="DATABASE_URL")
    db_host: str | None = Field(None, alias="DB_HOST")
    db_port: int = Field(3306, alias="DB_PORT")
    db_database: str = Field("quantimage2", alias="DB_DATABASE")
    db_user: str = Field("quantimage2", alias="DB_USER")
    db_password: str | None = Field(
        None, validation_alias=AliasChoices("DB_PASSWORD", "DB_USER_PASSWORD")
    )
    db_password_file: Path | None = Field(None, alias="DB_USER_PASSWORD_FILE")
    db_pool_size: int = Field(10, alias="DB_POOL_SIZE")
    db_echo: bool = Field(False, alias="DB_ECHO")
    # TLS to a MySQL on another host (docs/runbooks/deploy.md): with DB_SSL_CA set, PyMySQL
    # connects over TLS and checks the server's certificate against that CA.
    db_ssl_ca: Path | None = Field(None, alias="DB_SSL_CA")
    db_ssl_cert: Path | None = Field(None, alias="DB_SSL_CERT")
    db_ssl_key: Path | None = Field(None, alias="DB_SSL_KEY")
    db_ssl_verify_identity: bool = Field(True, alias="DB_SSL_VERIFY_IDENTITY")

    # Keycloak -------------------------------------------------------------------------------
    keycloak_base_url: str = Field("http://127.0.0.1:8180/", alias="KEYCLOAK_BASE_URL")
    keycloak_realm_name: str = Field("QuantImage-v2", alias="KEYCLOAK_REALM_NAME")
    keycloak_client_id: str = Field(
        "quantimage2-frontend", alias="KEYCLOAK_QUANTIMAGE2_FRONTEND_CLIENT_ID"
    )
    keycloak_admin_role: str = Field("admin", alias="KEYCLOAK_FRONTEND_ADMIN_ROLE")
    # The issuer Keycloak writes into tokens; it differs from the base URL when the browser
    # reaches Keycloak under another host name than the backend does.
    keycloak_issuer: str | None = Field(None, alias="KEYCLOAK_ISSUER")
    keycloak_audience: Annotated[list[str], NoDecode] = Field(
        default_factory=list, alias="KEYCLOAK_AUDIENCE"
    )
    keycloak_allowed_azp: Annotated[list[str], NoDecode] = Field(
        default_factory=list, alias="KEYCLOAK_ALLOWED_AZP"
    )
    keycloak_jwks_cache_seconds: int = Field(300, alias="KEYCLOAK_JWKS_CACHE_SECONDS")
    keycloak_leeway_seconds: int = Field(10, alias="KEYCLOAK_LEEWAY_SECONDS")

    # Image sources ----------------------------------------------------------------------------
    image_source: Literal["local", "kheops", "dicomweb"] = Field("local", alias="IMAGE_SOURCE")
    kheops_base_url: str = Field("http://127.0.0.1:8080", alias="KHEOPS_BASE_URL")
    dicomweb_url: str | None = Field(None, alias="DICOMWEB_URL")
    # YAML/JSON file: album id -> {name, study_uids: [...]} or {name, query: {DICOM keyword: value}}
    dicomweb_albums_file: Path | None = Field(None, alias="DICOMWEB_ALBUMS_FILE")
    local_albums_dir: Path | None = Field(None, alias="LOCAL_ALBUMS_DIR")
    http_timeout_seconds: float = Field(30.0, alias="HTTP_TIMEOUT_SECONDS")
    http_retries: int = Field(3, alias="HTTP_RETRIES")

    # Redis, Celery, Socket.IO ------------------------------------------------------------------
    celery_broker_url: str = Field("redis://127.0.0.1:6379/0", alias="CELERY_BROKER_URL")
    celery_result_backend: str = Field("redis://127.0.0.1:6379/1", alias="CELERY_RESULT_BACKEND")
    socket_message_queue: str = Field("redis://127.0.0.1:6379/2", alias="SOCKET_MESSAGE_QUEUE")
    socketio_channel: str = Field("flask-socketio", alias="SOCKETIO_CHANNEL")
    # Put into the three Redis URLs above when they carry none: the prod and VM overlays make
    # Redis require one (Docker secret redis-password) because worker machines reach it.
    redis_password: str | None = Field(None, alias="REDIS_PASSWORD")
    redis_password_file: Path | None = Field(None, alias="REDIS_PASSWORD_FILE")
    # Opt-in for an unmodified old frontend that connects without a token: anonymous
    # clients are accepted and receive events in a shared room (a privacy trade-off).
    socketio_legacy_anonymous: bool = Field(False, alias="SOCKETIO_LEGACY_ANONYMOUS")
    # How long the broker keeps a delivered, unacknowledged message before handing it out
    # again (a worker killed whole never acks). Default: longer than any task may run.
    celery_visibility_timeout: int | None = Field(None, alias="CELERY_VISIBILITY_TIMEOUT")
    # Every so often each worker re-queues running studies that no live worker executes
    # (a worker killed whole); 0 turns the sweep off.
    extraction_orphan_sweep_seconds: float = Field(60.0, alias="EXTRACTION_ORPHAN_SWEEP_SECONDS")
    # Every so often each worker looks for trainings and predictions still PENDING whose
    # message the broker holds neither queued nor delivered (lost, e.g. by a Redis restart
    # without its append-only file): unchanged for LOST_MESSAGE_AFTER_SECONDS, such a job is
    # sent again once, then failed with a message. 0 turns the sweep off.
    lost_message_sweep_seconds: float = Field(60.0, alias="LOST_MESSAGE_SWEEP_SECONDS")
    lost_message_after_seconds: float = Field(120.0, alias="LOST_MESSAGE_AFTER_SECONDS")
    extraction_task_time_limit: int = Field(7200, alias="EXTRACTION_TASK_TIME_LIMIT")
    training_task_time_limit: int = Field(6 * 3600, alias="TRAINING_TASK_TIME_LIMIT")
    prediction_task_time_limit: int = Field(600, alias="PREDICTION_TASK_TIME_LIMIT")
    celery_worker_concurrency_extraction: int = Field(
        2, alias="CELERY_WORKER_CONCURRENCY_EXTRACTION"
    )
    celery_worker_concurrency_training: int = Field(1, alias="CELERY_WORKER_CONCURRENCY_TRAINING")
    celery_worker_concurrency_prediction: int = Field(
        1, alias="CELERY_WORKER_CONCURRENCY_PREDICTION"
    )
    # Processes of one training task's grid search (joblib/loky); -1 = every core.
    grid_search_concurrency: int = Field(-1, alias="GRID_SEARCH_CONCURRENCY")

    # Web app ---------------------------------------------------------------------------------
    cors_allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["*"], alias="CORS_ALLOWED_ORIGINS"
    )
    max_upload_bytes: int = Field(64 * 1024 * 1024, alias="MAX_UPLOAD_BYTES")
    log_level: str = Field("INFO", alias="LOG_LEVEL")
    # spectree checks every JSON response against its declared schema when on: a test-time
    # check of our own output (the test suite turns it on); in production it costs more CPU
    # than building the response (issue #8 §1).
    validate_responses: bool = Field(False, alias="QI2_VALIDATE_RESPONSES")

    @field_validator(
        "cors_allowed_origins", "keycloak_audience", "keycloak_allowed_azp", mode="before"
    )
    @classmethod
    def _split_lists(cls, value: object) -> object:
        return _csv(value)

    @model_validator(mode="after")
    def _read_secret_files(self) -> Settings:
        """Take the DB and Redis passwords from Docker secrets when not given directly."""
        # Assigned only when found: an assignment marks the field as set by the caller
        # (model_fields_set, which `./qi2 run` reads).
        db_found = _secret(self.db_password_file, "db-user-password")
        if self.db_password is None and db_found is not None:
            self.db_password = db_found
        redis_found = _secret(self.redis_password_file, "redis-password")
        if self.redis_password is None and redis_found is not None:
            self.redis_password = redis_found
        if self.redis_password:
            self.celery_broker_url = with_redis_password(
                self.celery_broker_url, self.redis_password
            )
            self.celery_result_backend = with_redis_password(
                self.celery_result_backend, self.redis_password
            )
            self.socket_message_queue = with_redis_password(
                self.socket_message_queue, self.redis_password
            )
        return self

    @property
    def db_connect_args(self) -> dict[str, object]:
        """Return PyMySQL's TLS arguments (empty without DB_SSL_CA: a plain connection)."""
        if self.db_ssl_ca is None:
            return {}
        args: dict[str, object] = {
            "ssl_ca": str(self.db_ssl_ca),
            "ssl_verify_cert": True,
            "ssl_verify_identity": self.db_ssl_verify_identity,
        }
        if self.db_ssl_cert is not None:
            args["ssl_cert"] = str(self.db_ssl_cert)
        if self.db_ssl_key is not None:
            args["ssl_key"] = str(self.db_ssl_key)
        return args

    @property
    def sqlalchemy_url(self) -> str:
        """Return the database URL: explicit, MySQL from DB_* parts, or the embedded SQLite file."""
        if self.database_url:
            return self.database_url
        if self.db_host:
            password = f":{quote_plus(self.db_password)}" if self.db_password else ""
            return (
                f"mysql+pymysql://{quote_plus(self.db_user)}{password}@{self.db_host}:"
                f"{self.db_port}/{self.db_database}?charset=utf8mb4"
            )
        return f"sqlite:///{(self.data_dir / 'quantimage2.db').resolve()}"

    @property
    def silent_after_seconds(self) -> float:
        """Seconds without a heartbeat after which a running training or prediction counts as
        lost (its worker's machine died): the patience the sweep has with a queued job, too."""
        return self.lost_message_after_seconds

    @property
    def heartbeat_seconds(self) -> float:
        """Seconds between the heartbeats of a running job: 8 per silence allowed."""
        return self.silent_after_seconds / 8

    @property
    def realm_url(self) -> str:
        """Return the realm root, e.g. http://keycloak/auth/realms/QuantImage-v2."""
        return f"{self.keycloak_base_url.rstrip('/')}/realms/{self.keycloak_realm_name}"

    @property
    def jwks_url(self) -> str:
        """Return the realm's JWKS endpoint."""
        return f"{self.realm_url}/protocol/openid-connect/certs"

    @property
    def expected_issuer(self) -> str:
        """Return the issuer that access tokens must carry."""
        return self.keycloak_issuer or self.realm_url


@lru_cache
def get_settings() -> Settings:
    """Return the process-wide settings, read once."""
    return Settings()
