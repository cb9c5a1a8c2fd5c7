"""Protobuf <-> domain conversion for LoraControl, in one place."""

from __future__ import annotations

from google.protobuf import duration_pb2, timestamp_pb2

from engine.lora.state import LoadedLora, LoraStatus, OperationKind, OperationRecord
from learning.v1 import lora_control_pb2 as pb
from server.convert_adapter import eval_to_pb
from server.errors import failure_status
from server.version import SERVER_VERSION

_KIND = {k: pb.LoraOperationKind.Value(f"LORA_OPERATION_KIND_{k.value}") for k in OperationKind}


def _duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def loaded_to_pb(item: LoadedLora) -> pb.LoadedAdapter:
    return pb.LoadedAdapter(lora_name=item.lora_name, version=item.version, path=item.path)


def operation_to_pb(op: OperationRecord) -> pb.LoraOperation:
    start = timestamp_pb2.Timestamp()
    start.FromDatetime(op.start_time)
    msg = pb.LoraOperation(
        kind=_KIND[op.kind], version=op.version, actor=op.actor, reason=op.reason, start_time=start,
        duration=_duration(op.duration_seconds),
    )
    for name, seconds in op.phases:
        msg.phase_durations[name].CopyFrom(_duration(seconds))
    if op.error is not None:
        msg.error.CopyFrom(failure_status(op.error.code, op.error.reason, op.error.message, dict(op.error.metadata)))
    if op.gate is not None:
        msg.gate.CopyFrom(eval_to_pb(op.gate))
    return msg


def status_to_pb(status: LoraStatus) -> pb.LoraStatus:
    msg = pb.LoraStatus(
        target=status.target, base_model=status.base_model, enabled=status.enabled,
        active_version=status.active_version, previous_version=status.previous_version,
        known_good_version=status.known_good_version, alias=status.alias,
        loaded=[loaded_to_pb(a) for a in status.loaded], serving_reachable=status.serving_reachable,
        server_version=SERVER_VERSION, gateway_url=status.gateway_url,
    )
    if status.last_operation is not None:
        msg.last_operation.CopyFrom(operation_to_pb(status.last_operation))
    return msg
