"""Archives are checked while they stream: a decompression bomb is refused at its header and leaves nothing."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest

from engine.errors import InvalidArgument
from engine.registry.archive import unpack_archive


def bomb(declared: int, zeros: int = 16 << 20) -> bytes:
    """A tar.gz whose weights member declares ``declared`` bytes of zeros: ``zeros`` of them are really there (a
    few KiB compressed), the rest would come from decompressing on."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        config = json.dumps({"peft_type": "LORA", "r": 4}).encode()
        info = tarfile.TarInfo("adapter_config.json")
        info.size = len(config)
        tar.addfile(info, io.BytesIO(config))
        end = tar.offset  # where the end-of-archive blocks begin
    header = tarfile.TarInfo("adapter_model.safetensors")
    header.size = declared
    body = raw.getvalue()[:end]
    body += header.tobuf(tarfile.PAX_FORMAT) + bytes(zeros)
    return gzip.compress(body, compresslevel=9)


def test_a_bomb_is_refused_before_a_byte_of_it_is_written(tmp_path: Path):
    upload = tmp_path / "upload.tar.gz"
    upload.write_bytes(bomb(declared=1 << 40))
    assert upload.stat().st_size < 1 << 20
    dest = tmp_path / "peft"
    with pytest.raises(InvalidArgument) as err:
        unpack_archive(upload, dest)
    assert err.value.reason == "ARCHIVE_TOO_LARGE" and "adapter_model.safetensors" in err.value.message
    assert not dest.exists()  # the config member already written is removed too


def test_the_cap_counts_what_all_members_declare(tmp_path: Path):
    upload = tmp_path / "upload.tar.gz"
    upload.write_bytes(bomb(declared=8 << 20, zeros=8 << 20))  # a complete member of 8 MiB
    with pytest.raises(InvalidArgument) as err:
        unpack_archive(upload, tmp_path / "small", max_total_bytes=4 << 20)
    assert err.value.reason == "ARCHIVE_TOO_LARGE"
    assert not (tmp_path / "small").exists()
    unpack_archive(upload, tmp_path / "large", max_total_bytes=16 << 20)
    assert (tmp_path / "large" / "adapter_model.safetensors").stat().st_size == 8 << 20
