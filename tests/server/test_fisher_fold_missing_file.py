"""A continuation folds in the Fisher snapshot its parent was trained with (online EWC). A delete removes a
snapshot's row, then its file: a fold landing between the two finds the row and no file, which failed the child
job (DATA_LOSS FISHER_FILE_MISSING) where a snapshot gone altogether is a warning (EARLIER_FISHER_MISSING)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.server.conftest import spec
from tests.server.test_fisher_service import ewc_spec, train


@pytest.mark.slow
async def test_a_parents_snapshot_whose_file_is_gone_is_not_folded_in_and_says_so(make_pg_server,
                                                                                   data_dir: Path) -> None:
    client = await make_pg_server()
    await train(client, spec(epochs=2))
    v11, _ = await train(client, ewc_spec("v1.0"))
    snapshot_id = v11.ewc_lineage.fisher_snapshot.removeprefix("fisherSnapshots/")
    [stored] = [p for p in data_dir.rglob(f"{snapshot_id}.safetensors")]
    stored.unlink()  # the row is still there, as during a delete under way
    v12, events = await train(client, ewc_spec("v1.1"))
    warned = {e.warning.code: e.warning.message for e in events if e.HasField("warning")}
    assert "EARLIER_FISHER_MISSING" in warned and v11.ewc_lineage.fisher_snapshot in warned["EARLIER_FISHER_MISSING"]
    assert v12.ewc_lineage.fisher_snapshot and v12.output_adapter_version == "v1.2"
