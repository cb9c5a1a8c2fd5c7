#!/usr/bin/env bash
# Validate docker-compose.yaml: always against the Compose Specification's JSON schema (no Docker needed;
# fails, never skips), and also with `docker compose config` (v2) or `docker-compose config` (v1) where one is
# installed, run on a copy beside placeholder secret files (the real ones are the operator's).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
"$PYTHON" scripts/check_compose.py docker-compose.yaml

compose=()
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  compose=(docker-compose)
fi
if [ ${#compose[@]} -gt 0 ]; then
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' EXIT
  cp docker-compose.yaml Dockerfile "$scratch/"
  mkdir -p "$scratch/scripts" && cp -r scripts/compose "$scratch/scripts/"
  mkdir "$scratch/secrets"
  for name in postgres_password database_url minio_root_user minio_root_password s3_access_key s3_secret_key \
              auth_tokens; do
    echo placeholder > "$scratch/secrets/$name"
  done
  (cd "$scratch" && "${compose[@]}" -f docker-compose.yaml config -q)
  echo "${compose[*]} config: ok"
fi
