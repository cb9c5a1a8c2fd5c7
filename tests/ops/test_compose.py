"""docker-compose.yaml: `docker compose config` when available, and its wiring checked against the settings."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from server import access
from server.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
ENGINE = COMPOSE["services"]["learning-engine"]


def _has_compose() -> bool:
    if shutil.which("docker-compose"):
        return True
    return (
        shutil.which("docker") is not None
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    )


@pytest.mark.skipif(not _has_compose(), reason="neither `docker compose` nor `docker-compose` is installed")
def test_docker_compose_config_is_valid():
    result = subprocess.run(["bash", "scripts/check_compose.sh"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "config: ok" in result.stdout


def _interpolate(value: str) -> str:
    """${VAR:-default} -> default; ${VAR} / ${VAR:?message} -> a placeholder (as if the operator set it)."""
    return re.sub(r"\$\{\w+(:-([^}]*)|[^}]*)\}", lambda m: m.group(2) if m.group(2) is not None else "set", value)


def test_every_engine_variable_is_a_setting_and_the_result_validates():
    env = ENGINE["environment"]
    fields = set(Settings.model_fields)
    names = [k.removeprefix("LEARNING_ENGINE_").lower() for k in env if k.startswith("LEARNING_ENGINE_")]
    assert [n for n in names if n not in fields] == []
    token = access.hash_token("compose-test-token")
    values = {
        k.removeprefix("LEARNING_ENGINE_").lower(): _interpolate(str(v))
        for k, v in env.items()
        if k.startswith("LEARNING_ENGINE_") and k != "LEARNING_ENGINE_AUTH_TOKENS"
    }
    settings = Settings(
        **values,
        auth_tokens=[{"name": "ops", "role": "operator", "sha256": token}],
        database_url="postgresql://learning:x@postgres:5432/learning",
    )
    assert settings.host == "0.0.0.0" and settings.metrics_port == 9464 and settings.serving_url


def test_services_are_wired_with_health_checks_gpu_and_lora_flags():
    services = COMPOSE["services"]
    for name in ("postgres", "minio", "max-serve", "learning-engine"):
        assert "healthcheck" in services[name], name
    flags = services["max-serve"]["command"]
    for flag in ("--enable-lora", "--prefer-module-v3", "--no-enable-prefix-caching", "--max-lora-rank=16"):
        assert flag in flags
    gpu = services["max-serve"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    assert ENGINE["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    assert "engine-data:/data" in ENGINE["volumes"] and "engine-data:/data:ro" in services["max-serve"]["volumes"]
