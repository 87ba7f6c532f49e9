#!/bin/bash
# The official MySQL image's contract, on MariaDB: on an empty data directory create root's
# password, MYSQL_DATABASE and MYSQL_USER/MYSQL_PASSWORD (each *_FILE variant wins), then run
# the server over TCP. Bare options (--character-set-server=...) go to the server.
set -euo pipefail
case "${1:-}" in -*) set -- mariadbd "$@" ;; esac
if [ "${1:-}" != mariadbd ] && [ "${1:-}" != mysqld ]; then exec "$@"; fi

file_env() {
  local var="$1" file="${1}_FILE"
  if [ -n "${!file:-}" ]; then export "$var"="$(cat "${!file}")"; fi
}
file_env MYSQL_ROOT_PASSWORD
file_env MYSQL_PASSWORD
sql_quote() { printf "%s" "$1" | sed "s/'/''/g"; }

chown -R mysql:mysql /var/lib/mysql /run/mysqld
if [ ! -d /var/lib/mysql/mysql ]; then
  : "${MYSQL_ROOT_PASSWORD:?MYSQL_ROOT_PASSWORD or MYSQL_ROOT_PASSWORD_FILE is required}"
  mariadb-install-db --user=mysql --datadir=/var/lib/mysql --skip-test-db >/dev/null
  mariadbd --user=mysql --skip-networking --socket=/run/mysqld/init.sock &
  pid=$!
  for _ in $(seq 60); do mariadb-admin --socket=/run/mysqld/init.sock ping >/dev/null 2>&1 && break; sleep 1; done
  {
    echo "DELETE FROM mysql.global_priv WHERE User='';"
    echo "ALTER USER 'root'@'localhost' IDENTIFIED BY '$(sql_quote "$MYSQL_ROOT_PASSWORD")';"
    echo "CREATE USER 'root'@'%' IDENTIFIED BY '$(sql_quote "$MYSQL_ROOT_PASSWORD")';"
    echo "GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;"
    if [ -n "${MYSQL_DATABASE:-}" ]; then
      echo "CREATE DATABASE IF NOT EXISTS \`$MYSQL_DATABASE\`;"
    fi
    if [ -n "${MYSQL_USER:-}" ] && [ -n "${MYSQL_PASSWORD:-}" ]; then
      echo "CREATE USER '$MYSQL_USER'@'%' IDENTIFIED BY '$(sql_quote "$MYSQL_PASSWORD")';"
      [ -n "${MYSQL_DATABASE:-}" ] && echo "GRANT ALL ON \`$MYSQL_DATABASE\`.* TO '$MYSQL_USER'@'%';"
    fi
    echo "FLUSH PRIVILEGES;"
  } | mariadb --socket=/run/mysqld/init.sock -u root
  kill "$pid"
  wait "$pid" || true
fi
exec "$@" --user=mysql --bind-address=0.0.0.0 --port=3306
