"""Validate docker-compose.yaml against the Compose Specification's JSON schema (scripts/compose/compose-spec.json).

Used by scripts/check_compose.sh, always: it needs no Docker. Exits 1 (and says why) when the file does not
validate or the validator is missing, so `make check` fails rather than skips.

    python scripts/check_compose.py [docker-compose.yaml]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "scripts" / "compose" / "compose-spec.json"


def problems(compose_file: Path) -> list[str]:
    import jsonschema  # noqa: PLC0415 - a dev dependency; missing is an error below
    import yaml  # noqa: PLC0415

    document = yaml.safe_load(compose_file.read_text())
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
        for error in sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    ]


def main(argv: list[str]) -> int:
    compose_file = Path(argv[0]) if argv else ROOT / "docker-compose.yaml"
    try:
        found = problems(compose_file)
    except ImportError as exc:
        print(f"cannot validate {compose_file.name}: {exc} (install the dev dependencies: make setup)", file=sys.stderr)
        return 1
    if found:
        print(f"{compose_file.name} does not follow the Compose Specification:", file=sys.stderr)
        for line in found:
            print(f"  {line}", file=sys.stderr)
        return 1
    print(f"{compose_file.name}: compose-spec schema: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
