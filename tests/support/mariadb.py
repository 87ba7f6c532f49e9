"""The machine's MariaDB server as root: create and drop throwaway databases."""

from __future__ import annotations

import pymysql

MYSQL = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}


def admin(sql: str) -> None:
    """Run one statement as the MariaDB root user."""
    connection = pymysql.connect(**MYSQL, autocommit=True)
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
    finally:
        connection.close()
