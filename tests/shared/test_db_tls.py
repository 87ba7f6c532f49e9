"""MySQL over TLS between machines (issue #17): DB_SSL_* reach PyMySQL and the server checks them.

The machine's shared MariaDB runs without TLS and cannot get it without a restart, so this test
starts a private mariadbd of its own (a throwaway data folder, a free port, a self-signed CA).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest
import sqlalchemy as sa

from shared.config import Settings
from shared.db.grants import worker_grant_statements
from shared.db.session import make_engine


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def _certificates(folder: Path, name: str) -> None:
    """A CA (name-ca.pem) and a server certificate for 127.0.0.1 signed by it."""
    ca, key = folder / f"{name}-ca.pem", folder / f"{name}-ca-key.pem"
    _openssl(
        *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
        *("-subj", f"/CN={name} test CA", "-keyout", str(key), "-out", str(ca)),
    )
    if name == "server":
        csr, ext = folder / "server.csr", folder / "ext.cnf"
        ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        _openssl(
            *("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1"),
            *("-keyout", str(folder / "server-key.pem"), "-out", str(csr)),
        )
        _openssl(
            *("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(key)),
            *("-CAcreateserial", "-days", "2", "-extfile", str(ext)),
            *("-out", str(folder / "server.pem")),
        )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """A private mariadbd that offers TLS; (port, folder with server-ca.pem and other-ca.pem)."""
    for tool in ("mariadbd", "mariadb-install-db", "openssl"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing (apt-get install -y mariadb-server openssl)")
    folder = tmp_path_factory.mktemp("tls")
    _certificates(folder, "server")
    _certificates(folder, "other")  # a CA that did not sign the server's certificate
    data = folder / "data"
    subprocess.run(
        [
            *("mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root"),
            *("--auth-root-authentication-method=normal", "--skip-test-db"),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    port = _free_port()
    log = (folder / "server.log").open("wb")  # closed after the server
    server = subprocess.Popen(
        [
            *("mariadbd", "--no-defaults", f"--datadir={data}", "--user=root"),
            *(f"--port={port}", "--bind-address=127.0.0.1", f"--socket={folder / 'sock'}"),
            *(f"--pid-file={folder / 'pid'}", "--skip-log-bin", "--innodb-buffer-pool-size=16M"),
            f"--ssl-ca={folder / 'server-ca.pem'}",
            f"--ssl-cert={folder / 'server.pem'}",
            f"--ssl-key={folder / 'server-key.pem'}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                pymysql.connect(host="127.0.0.1", port=port, user="root").close()
                break
            except pymysql.err.OperationalError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError((folder / "server.log").read_text()[-2000:]) from None
                time.sleep(0.3)
        root = pymysql.connect(host="127.0.0.1", port=port, user="root", autocommit=True)
        with root.cursor() as cursor:
            cursor.execute("CREATE DATABASE qi2")
            statements = worker_grant_statements(
                database="qi2", user="worker", host="%", password="pw-tls", require_ssl=True
            )
            for statement in statements:
                cursor.execute(statement)
        root.close()
        yield port, folder
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()


def _engine(port: int, **env: str) -> sa.Engine:
    """An engine made the way the app makes it, with Settings built from `env`."""
    settings = Settings(_env_file=None, **env)
    url = f"mysql+pymysql://worker:pw-tls@127.0.0.1:{port}/qi2?charset=utf8mb4"
    return make_engine(url, connect_args=settings.db_connect_args, poolclass=sa.pool.NullPool)


def _cipher(engine: sa.Engine) -> str:
    with engine.connect() as connection:
        return connection.execute(sa.text("SHOW STATUS LIKE 'Ssl_cipher'")).one()[1]


def test_the_settings_reach_pymysql_and_the_connection_is_encrypted(tls_server) -> None:
    port, folder = tls_server
    engine = _engine(port, DB_SSL_CA=str(folder / "server-ca.pem"))
    try:
        cipher = _cipher(engine)
    finally:
        engine.dispose()
    print(f"\nworker over TLS: Ssl_cipher={cipher}")
    assert cipher.startswith("TLS_") or "AES" in cipher, cipher


def test_the_worker_user_requiring_tls_is_refused_in_clear(tls_server) -> None:
    port, _folder = tls_server
    with pytest.raises(pymysql.err.OperationalError) as error:
        pymysql.connect(
            host="127.0.0.1", port=port, user="worker", password="pw-tls", ssl_disabled=True
        )
    assert error.value.args[0] == 1045, error.value.args  # access denied: REQUIRE SSL


def test_without_a_ca_pymysql_encrypts_but_checks_no_certificate(tls_server) -> None:
    # PyMySQL's default is "preferred": TLS when the server offers it, any certificate
    # accepted. Encrypted against eavesdropping, not against a man in the middle: hence
    # DB_SSL_CA between machines (docs/runbooks/deploy.md).
    port, _folder = tls_server
    engine = _engine(port)
    try:
        assert _cipher(engine)
    finally:
        engine.dispose()


def test_a_certificate_from_another_ca_is_refused(tls_server) -> None:
    port, folder = tls_server
    engine = _engine(port, DB_SSL_CA=str(folder / "other-ca.pem"))
    try:
        with pytest.raises(sa.exc.OperationalError) as error:
            _cipher(engine)
    finally:
        engine.dispose()
    assert "CERTIFICATE_VERIFY_FAILED" in str(error.value), error.value


class Captured(Exception):
    """Raised from do_connect: the arguments were seen, no connection is wanted."""


def test_the_app_engine_takes_the_tls_settings_from_settings(tmp_path) -> None:
    # A runtime built from settings (the API's and each worker's) connects over TLS to MySQL.
    from shared import bootstrap

    ca = tmp_path / "ca.pem"
    settings = Settings(
        _env_file=None,
        DATABASE_URL="mysql+pymysql://w:p@db.example.org/qi2",
        DB_SSL_CA=str(ca),
        DB_SSL_VERIFY_IDENTITY="false",
    )
    engine = bootstrap.build(settings).sessions.kw["bind"]
    seen: dict[str, object] = {}

    @sa.event.listens_for(engine, "do_connect")
    def capture(_dialect, _record, _cargs, cparams) -> None:
        seen.update(cparams)
        raise Captured

    with pytest.raises(Captured):
        engine.connect()
    engine.dispose()
    assert seen["ssl_ca"] == str(ca)
    assert seen["ssl_verify_cert"] is True and seen["ssl_verify_identity"] is False
    assert Settings(_env_file=None).db_connect_args == {}
