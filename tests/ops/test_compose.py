"""docker-compose.yaml: valid against the Compose Specification (and `docker compose config` where installed), and
wired as the README says: secrets for every credential, a scoped S3 user, MAX unpublished, one model for both."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

from server import access
from server.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
SERVICES = COMPOSE["services"]
ENGINE = SERVICES["learning-engine"]
CREDENTIALS = {"postgres_password", "database_url", "minio_root_user", "minio_root_password", "s3_access_key",
               "s3_secret_key", "auth_tokens"}


def test_the_compose_check_validates_and_fails_on_an_invalid_file(tmp_path: Path):
    result = subprocess.run(["bash", "scripts/check_compose.sh"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "compose-spec schema: ok" in result.stdout
    broken = tmp_path / "docker-compose.yaml"
    broken.write_text((ROOT / "docker-compose.yaml").read_text().replace("    restart: unless-stopped",
                                                                         "    restart: sometimes", 1)
                      .replace("    expose: [\"8000\"]", "    expose: 8000"))
    result = subprocess.run([sys.executable, "scripts/check_compose.py", str(broken)], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 1 and "expose" in result.stderr


def test_every_credential_is_a_secret_without_default():
    assert set(COMPOSE["secrets"]) == CREDENTIALS
    text = (ROOT / "docker-compose.yaml").read_text()
    assert not re.search(r"(PASSWORD|SECRET|ACCESS_KEY|TOKENS|DATABASE_URL)\w*:\s*\$\{", text)
    assert "MINIO_ROOT_PASSWORD:" not in text and "POSTGRES_PASSWORD:" not in text
    assert SERVICES["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    # The application's S3 user is not MinIO's root: minio-init creates it with a policy for its bucket only.
    engine_secrets = {s if isinstance(s, str) else s["source"] for s in ENGINE["secrets"]}
    assert engine_secrets == {"database_url", "s3_access_key", "s3_secret_key", "auth_tokens"}
    init = SERVICES["minio-init"]["command"][0]
    assert "mc admin user add" in init and "mc admin policy attach" in init
    mount = "./scripts/compose/s3-policy.json:/etc/learning-engine/s3-policy.json:ro"
    assert mount in SERVICES["minio-init"]["volumes"]  # a bind mount: Compose v1 ignores `configs`
    policy = json.loads((ROOT / "scripts/compose/s3-policy.json").read_text())
    resources = {r for statement in policy["Statement"] for r in statement["Resource"]}
    assert resources == {"arn:aws:s3:::learning-engine", "arn:aws:s3:::learning-engine/*"}


def test_engine_settings_come_from_its_environment_and_secret_files(tmp_path: Path, monkeypatch):
    env = ENGINE["environment"]
    fields = set(Settings.model_fields)
    names = [k.removeprefix("LEARNING_ENGINE_").lower() for k in env if k.startswith("LEARNING_ENGINE_")]
    assert [n for n in names if n not in fields and n != "secrets_dir"] == []
    secrets = tmp_path / "run-secrets"  # what compose mounts at /run/secrets, with the targets it names
    secrets.mkdir()
    for entry in ENGINE["secrets"]:
        target = entry if isinstance(entry, str) else entry["target"]
        value = {"database_url": "postgresql://learning:x@postgres:5432/learning",
                 "learning_engine_auth_tokens": json.dumps(
                     [{"name": "ops", "role": "operator", "sha256": access.hash_token("t")}])}.get(target, "set")
        (secrets / target).write_text(value)
    models = tmp_path / "models"  # the volume model-init fills, mounted at /models (base_models must be there)
    for name in json.loads(env["LEARNING_ENGINE_BASE_MODELS"]):
        (models / name).mkdir(parents=True)
    for key, value in env.items():
        if key != "LEARNING_ENGINE_SECRETS_DIR":
            value = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value))
            monkeypatch.setenv(key, value.replace('"/models/', f'"{models}/') if key.endswith("BASE_MODELS") else value)
    monkeypatch.setenv("LEARNING_ENGINE_SECRETS_DIR", str(secrets))
    from server.settings import load_settings

    settings = load_settings({"data_dir": tmp_path})
    assert settings.host == "0.0.0.0" and settings.auth_tokens and settings.database_url.startswith("postgresql://")
    assert settings.s3_secret_key.get_secret_value() == "set" and settings.metrics_port == 9464


def test_max_is_unpublished_and_serves_the_model_the_engine_trains_on():
    max_serve = SERVICES["max-serve"]
    assert "ports" not in max_serve
    flags = max_serve["command"]
    for flag in ("--enable-lora", "--prefer-module-v3", "--no-enable-prefix-caching", "--max-lora-rank=16"):
        assert flag in flags
    served = next(f.split("=", 1)[1] for f in flags if f.startswith("--model="))
    base_models = json.loads(ENGINE["environment"]["LEARNING_ENGINE_BASE_MODELS"])
    default = ENGINE["environment"]["LEARNING_ENGINE_DEFAULT_BASE_MODEL"]
    assert base_models == {default: served}
    assert "models:/models:ro" in max_serve["volumes"] and "models:/models:ro" in ENGINE["volumes"]
    assert "models:/models" in SERVICES["model-init"]["volumes"] and default in SERVICES["model-init"]["command"][0]
    for name in ("max-serve", "learning-engine"):
        assert SERVICES[name]["depends_on"]["model-init"]["condition"] == "service_completed_successfully"
        gpu = SERVICES[name]["deploy"]["resources"]["reservations"]["devices"][0]
        assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"], name
    for name in ("postgres", "minio", "max-serve", "learning-engine"):
        assert "healthcheck" in SERVICES[name], name
    assert ENGINE["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    assert "engine-data:/data" in ENGINE["volumes"] and "engine-data:/data:ro" in max_serve["volumes"]
