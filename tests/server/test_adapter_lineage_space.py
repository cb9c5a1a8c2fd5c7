"""An adapter's EWC space as a client reads it, including records stored before spaces were recorded."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

from pydantic import TypeAdapter

from engine.domain import FisherSpace, LoraSpec
from engine.registry import AdapterRecord
from learning.v1 import common_pb2
from server.convert_adapter import adapter_to_pb

_RECORD = TypeAdapter(AdapterRecord)
_PLAIN = AdapterRecord(base_model="tiny", version="v1.0", lora=LoraSpec(rank=16, alpha=32, dropout=0.0),
                       create_time=datetime(2026, 1, 1, tzinfo=UTC), sha256="0" * 64, size_bytes=1)


def _stored_before_spaces(record: AdapterRecord) -> AdapterRecord:
    """``record`` as the registry reads a document written before ``ewc_fisher_space`` existed."""
    doc = json.loads(_RECORD.dump_json(record))
    del doc["ewc_fisher_space"]
    return _RECORD.validate_json(json.dumps(doc))


def test_each_space_round_trips_through_the_stored_document() -> None:
    for space, expected in ((FisherSpace.LORA_PRODUCT, common_pb2.FISHER_SPACE_LORA_PRODUCT),
                            (FisherSpace.LORA_PARAMETERS, common_pb2.FISHER_SPACE_LORA_PARAMETERS)):
        record = replace(_PLAIN, version="v1.1", ewc_lambda=0.3, fisher_snapshot="fisherSnapshots/x",
                         ewc_fisher_space=space)
        assert adapter_to_pb(_RECORD.validate_json(_RECORD.dump_json(record))).ewc_fisher_space == expected


def test_records_from_before_spaces_read_as_the_entries_when_trained_with_ewc() -> None:
    with_ewc = replace(_PLAIN, version="v1.1", ewc_lambda=0.3, fisher_snapshot="fisherSnapshots/x")
    assert adapter_to_pb(_stored_before_spaces(with_ewc)).ewc_fisher_space == common_pb2.FISHER_SPACE_LORA_PARAMETERS
    assert adapter_to_pb(_stored_before_spaces(_PLAIN)).ewc_fisher_space == common_pb2.FISHER_SPACE_UNSPECIFIED
