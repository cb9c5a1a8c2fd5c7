"""``adapters list``'s "train loss" is the version's ``Adapter.train_loss`` (docs/training.md). An imported version
has none (the field unset, 0): ``adapters list`` shows "-" for it, as ``adapters lineage`` does, never "0.0000", a
perfect fit it never had."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.test_cli_e2e import cli
from tests.fixtures.peft_adapters import build_peft_adapter


@pytest.fixture(scope="module")
def peft_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_peft_adapter(tiny_model_dir, tmp_path_factory.mktemp("peft-list") / "run", seed=3)


def _train_loss_cell(table: str, version: str) -> str:
    """The "train loss" cell of ``version``'s row in a printed table (its columns aligned under the headers)."""
    lines = table.splitlines()
    start = next(line for line in lines if "train loss" in line).index("train loss")
    row = next(line for line in lines if f" {version} " in line)
    return row[start:start + len("train loss")].strip()


async def test_an_imported_version_has_no_train_loss_in_adapters_list(make_memory_server, peft_dir) -> None:
    port = (await make_memory_server()).app.port
    imported = await cli(port, "adapters", "import", str(peft_dir))
    assert imported.code == 0, imported.err
    listed = await cli(port, "adapters", "list", columns=200)
    lineage = await cli(port, "adapters", "lineage", "v1.0", columns=200)
    assert listed.code == 0 and lineage.code == 0, listed.err + lineage.err
    assert _train_loss_cell(lineage.out, "v1.0") == "-", lineage.out
    assert _train_loss_cell(listed.out, "v1.0") == "-", f"a train loss the import never had:\n{listed.out}"
