"""``adapters download --out`` names a directory. One that exists and is not a directory is a usage error
saying so (exit 3, USAGE), with or without --force, and the file is left as it was; the "--force overwrites it"
advice is kept for the archive that exists in the directory, and --force then does overwrite it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.test_cli_e2e import cli
from tests.fixtures.peft_adapters import build_peft_adapter


@pytest.fixture(scope="module")
def peft_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_peft_adapter(tiny_model_dir, tmp_path_factory.mktemp("peft-download") / "run", seed=3)


async def test_download_out_must_be_a_directory(make_server, peft_dir, tmp_path):
    port = (await make_server(embedded_worker=False)).app.port
    assert (await cli(port, "adapters", "import", str(peft_dir))).code == 0
    not_a_dir = tmp_path / "notes.txt"
    not_a_dir.write_text("mine")
    for force in ([], ["--force"]):
        refused = await cli(port, "adapters", "download", "v1.0", "--out", str(not_a_dir), *force)
        assert refused.code == 3 and "USAGE" in refused.err, refused.err
        assert "--out must be a directory" in refused.err and str(not_a_dir) in refused.err, refused.err
        assert "--force overwrites it" not in refused.err, refused.err
        assert "Traceback" not in refused.err
    scripted = await cli(port, "--json", "adapters", "download", "v1.0", "--out", str(not_a_dir), "--force")
    error = json.loads(scripted.out)["error"]
    assert scripted.code == 3 and error["reason"] == "USAGE" and error["metadata"] == {"path": str(not_a_dir)}
    assert not_a_dir.read_text() == "mine"

    # The archive that exists in the directory: the --force advice, and --force overwrites it.
    into = tmp_path / "adapters"
    first = await cli(port, "adapters", "download", "v1.0", "--out", str(into))
    assert first.code == 0, first.err
    again = await cli(port, "adapters", "download", "v1.0", "--out", str(into))
    assert again.code == 3 and "exists; --force overwrites it" in again.err, again.err
    forced = await cli(port, "adapters", "download", "v1.0", "--out", str(into), "--force")
    assert forced.code == 0, forced.err
