"""An import's adapter_model.safetensors is checked as every loader reads it (safetensors' own check, shared by each
path): a file no engine loads is INVALID_ARGUMENT MALFORMED_SAFETENSORS naming it, never an internal error and
never a published version that fails only when it is activated. adapter_config.json's numbers are no booleans."""

from __future__ import annotations

import json
import resource
import struct
from pathlib import Path

import pytest

from engine.errors import InvalidArgument
from engine.registry import AdapterRegistry, peft_checks
from tests.fixtures.peft_adapters import tar_gz
from tests.registry.conftest import TINY

CONFIG = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"], "bias": "none"}
Q = "base_model.model.model.layers.0.self_attn.q_proj"
WEIGHTS = "adapter_model.safetensors"


def _safetensors(header: dict | bytes, data: bytes) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


async def _import(registry: AdapterRegistry, tmp_path: Path, weights: bytes):
    upload = tmp_path / "upload.tar.gz"
    upload.write_bytes(tar_gz({"adapter_config.json": json.dumps(CONFIG).encode(), WEIGHTS: weights}))
    return await registry.import_archive(base_model=TINY, upload=upload)


def _malformed(caught: pytest.ExceptionInfo[InvalidArgument]) -> None:
    assert caught.value.reason == "MALFORMED_SAFETENSORS"
    assert caught.value.violations and all(v.field.startswith(WEIGHTS) for v in caught.value.violations)


@pytest.mark.parametrize("header", [
    {f"{Q}.lora_A.weight": {"dtype": "F32", "shape": [4, 1e400], "data_offsets": [0, 16]}},  # 1e400: infinity
    {f"{Q}.lora_A.weight": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 1e400]}},
    b'{"' + f"{Q}.lora_A.weight".encode() + b'": {"dtype": "F32", "shape": [Infinity], "data_offsets": [0, 16]}}',
], ids=["shape-1e400", "offset-1e400", "shape-Infinity"])
async def test_a_header_number_of_infinity_is_invalid_argument(registry, tmp_path: Path, header):
    # json.loads takes Infinity (and 1e400) as float('inf'); int(inf) was an OverflowError: INTERNAL.
    with pytest.raises(InvalidArgument) as caught:
        await _import(registry, tmp_path, _safetensors(header, b"\0" * 16))
    _malformed(caught)


async def test_a_default_named_tensor_whose_bytes_do_not_match_its_header_is_invalid_argument(registry, tmp_path):
    # PEFT's adapter name in the key makes the import rewrite the file with safetensors' own loader, which refused
    # what the header check let through (the byte count of the shape): its SafetensorError was no EngineError.
    weights = _safetensors({f"{Q}.lora_A.default.weight": {"dtype": "F32", "shape": [4, 64], "data_offsets": [0, 16]}},
                           b"\0" * 16)
    with pytest.raises(InvalidArgument) as caught:
        await _import(registry, tmp_path, weights)
    _malformed(caught)


async def test_a_tensor_whose_bytes_do_not_match_its_shape_is_not_published(registry, tmp_path: Path):
    # [4, 64] float32 needs 1024 bytes; the header points at 16. Every loader (safetensors, PEFT, vLLM, MAX) refuses
    # the file; the header check only saw that the offsets lie inside the file, and it became a version.
    weights = _safetensors({f"{Q}.lora_A.weight": {"dtype": "F32", "shape": [4, 64], "data_offsets": [0, 16]},
                            f"{Q}.lora_B.weight": {"dtype": "F32", "shape": [64, 4], "data_offsets": [16, 32]}},
                           b"\0" * 32)
    with pytest.raises(InvalidArgument) as caught:
        await _import(registry, tmp_path, weights)
    _malformed(caught)
    assert (await registry.list(page_size=10))[0] == []


def _write(tmp_path: Path, header: dict | bytes, data: bytes) -> Path:
    (tmp_path / WEIGHTS).write_bytes(_safetensors(header, data))
    return tmp_path


def _u8(start: int, end: int, shape: object = None, dtype: str = "U8") -> dict:
    return {"dtype": dtype, "shape": [end - start] if shape is None else shape, "data_offsets": [start, end]}


@pytest.mark.parametrize(("header", "data"), [
    ({"a": _u8(0, 2), "b": _u8(4, 6)}, 6),  # a gap between tensors
    ({"a": _u8(0, 4), "b": _u8(2, 6)}, 6),  # overlapping tensors
    ({"a": _u8(0, 2), "b": _u8(0, 2)}, 2),  # two tensors on the same bytes
    ({"a": _u8(0, 2)}, 4),  # bytes past the last tensor
    ({"a": _u8(0, 2, dtype="F33")}, 2),  # a dtype safetensors does not know
    ({"a": _u8(0, 2, shape="12")}, 2),  # a shape that is a string (was read as (1, 2))
    ({"a": _u8(0, 1, shape=[True])}, 1),  # a boolean dimension (was read as 1)
    ({"a": _u8(0, 2, shape=[2.0])}, 2),  # a float dimension
    ({"a": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 16]}}, 16),  # a size past 64 bits
    ({"__metadata__": {"format": 1}, "a": _u8(0, 2)}, 2),  # metadata values are strings
    ({"a": _u8(0, 8, shape=[2], dtype="I32")}, 8),  # no floating point weights
    ({"__metadata__": {"format": "pt"}}, 0),  # no tensors
], ids=["gap", "overlap", "aliased", "trailing-bytes", "unknown-dtype", "string-shape", "bool-shape", "float-shape",
        "size-overflow", "metadata-number", "integer-dtype", "no-tensors"])
def test_a_file_no_loader_takes_is_malformed_safetensors(tmp_path: Path, header: dict, data: int):
    with pytest.raises(InvalidArgument) as caught:
        peft_checks.tensor_shapes(_write(tmp_path, header, b"\0" * data))
    _malformed(caught)


def test_the_check_reads_the_header_only(tmp_path: Path):
    """A file of any size costs its header: safe_open maps it, no tensor is read (a sparse 3 GB file here)."""
    shape = [2, 375_000_000]
    raw = json.dumps({"a": {"dtype": "F32", "shape": shape, "data_offsets": [0, 3_000_000_000]}}).encode()
    path = tmp_path / WEIGHTS
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(raw)) + raw)
        handle.truncate(8 + len(raw) + 3_000_000_000)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert peft_checks.tensor_shapes(tmp_path) == {"a": tuple(shape)}
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 256 << 10  # KiB: less than 256 MiB


@pytest.mark.parametrize(("field", "value"), [("r", True), ("lora_dropout", False)])
def test_a_boolean_is_no_number_of_the_config(tmp_path: Path, field: str, value: bool):
    # "r": true was read as rank 1.
    (tmp_path / "adapter_config.json").write_text(json.dumps({**CONFIG, field: value}))
    with pytest.raises(InvalidArgument) as caught:
        peft_checks.read_lora_config(tmp_path)
    assert caught.value.reason == "INVALID_ADAPTER_CONFIG"
    assert [v.field for v in caught.value.violations] == [f"adapter_config.json.{field}"]
