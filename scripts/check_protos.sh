#!/usr/bin/env bash
# buf lint, buf format and buf breaking for protos/ (all offline, no remote deps).
# Breaking changes are checked against main (or, on main itself, the previous commit), once it has protos.
set -euo pipefail
cd "$(dirname "$0")/.."
buf lint
buf format --exit-code -d
branch=$(git rev-parse --abbrev-ref HEAD 2>/dev/null || echo "")
if [ "$branch" != "main" ] && git rev-parse --verify -q main >/dev/null; then
  against="main"
else
  against="HEAD~1"
fi
if git rev-parse --verify -q "$against" >/dev/null && git cat-file -e "$against:buf.yaml" 2>/dev/null \
   && git cat-file -e "$against:protos/learning/v1" 2>/dev/null; then
  buf breaking --against ".git#ref=$(git rev-parse "$against")"
  echo "buf breaking: no breaking changes against $against"
else
  echo "buf breaking: skipped ($against has no protos yet)"
fi
