"""``learning-engine health`` lists the server and every service the protos define (protos/learning/v1), each with
the status the server reports for it: none left out (PipelineService, OnlineLearningService and
DataPreparationService were), whatever services are added later."""

from __future__ import annotations

import json
import re
from pathlib import Path

from learning_engine.cli.ops import SERVICES
from tests.cli.test_cli_e2e import cli

PROTOS = Path(__file__).resolve().parents[2] / "protos" / "learning" / "v1"


def defined_services() -> set[str]:
    names = set()
    for proto in PROTOS.glob("*.proto"):
        text = proto.read_text()
        package = re.search(r"^package\s+([\w.]+)\s*;", text, re.M)
        assert package is not None, proto
        names |= {f"{package.group(1)}.{name}" for name in re.findall(r"^service\s+(\w+)\s*\{", text, re.M)}
    return names


def test_every_service_the_protos_define_is_checked() -> None:
    defined = defined_services()
    assert len(defined) >= 11 and {"learning.v1.PipelineService", "learning.v1.OnlineLearningService",
                                   "learning.v1.DataPreparationService"} <= defined
    assert set(SERVICES) == defined and len(SERVICES) == len(defined)


async def test_health_reports_every_service_the_server_serves(make_server) -> None:
    port = (await make_server(embedded_worker=False)).app.port
    result = await cli(port, "--json", "health")
    assert result.code == 0, (result.code, result.out, result.err)
    statuses = json.loads(result.out)
    assert set(statuses) == {"server", *defined_services()}, statuses
    assert set(statuses.values()) == {"SERVING"}, statuses
    table = await cli(port, "health")
    assert all(name in table.out for name in defined_services()), table.out
