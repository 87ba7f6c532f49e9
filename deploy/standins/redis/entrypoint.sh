#!/bin/sh
# Like the official image: bare options go to redis-server, and without a config file the
# server leaves protected mode so that other containers can connect.
set -e
case "$1" in -*) set -- redis-server "$@" ;; esac
if [ "$1" = redis-server ]; then
  case "$2" in *.conf) ;; *) shift; set -- redis-server --protected-mode no "$@" ;; esac
fi
exec "$@"
