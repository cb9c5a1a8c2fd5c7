#!/usr/bin/env bash
# Validate docker-compose.yaml (syntax, merge, required variables) without a Docker engine.
# Uses `docker compose` (v2 plugin) or `docker-compose` (v1), whichever exists; says so and
# succeeds when neither is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
export POSTGRES_PASSWORD=${POSTGRES_PASSWORD:-check} MINIO_ROOT_PASSWORD=${MINIO_ROOT_PASSWORD:-check-check}
export BASE_MODEL=${BASE_MODEL:-/data/models/base}
export LEARNING_ENGINE_AUTH_TOKENS=${LEARNING_ENGINE_AUTH_TOKENS:-'[{"name":"ops","role":"operator","sha256":"0000000000000000000000000000000000000000000000000000000000000000"}]'}
if docker compose version >/dev/null 2>&1; then
  docker compose -f docker-compose.yaml config -q
  echo "docker compose config: ok"
elif command -v docker-compose >/dev/null 2>&1; then
  docker-compose -f docker-compose.yaml config -q
  echo "docker-compose config: ok"
else
  echo "docker compose not installed: skipped the docker-compose.yaml check"
fi
