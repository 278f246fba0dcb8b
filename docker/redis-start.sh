#!/bin/sh
# Redis, the Celery broker of the scale profile (docker-compose --profile scale): it refuses to start
# without REDIS_PASSWORD, and takes it from the environment through stdin (never on a command line
# that `ps` shows). Messages are kept on disk (append-only file), so a restart loses no queued step.
set -eu
if [ -z "${REDIS_PASSWORD:-}" ]; then
  echo "redis-start: set REDIS_PASSWORD (the Celery broker's password; URL-safe characters)" >&2
  exit 1
fi
mkdir -p "${REDIS_DATA_DIR:-/data}"
printf 'requirepass "%s"\nport %s\nbind %s\nappendonly yes\ndir %s\n' \
  "$REDIS_PASSWORD" "${REDIS_PORT:-6379}" "${REDIS_BIND:-* -::*}" "${REDIS_DATA_DIR:-/data}" | redis-server -
