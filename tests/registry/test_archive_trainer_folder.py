"""The tar.gz of a trainer's output folder imports as the folder itself does: its tokenizer, README, training
arguments and checkpoints beside the adapter were refused (UNEXPECTED_ARCHIVE_MEMBER) while the client, packing the
same folder, leaves them out. They are dropped unread; pickles among them are still refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import InvalidArgument
from engine.registry.archive import unpack_archive
from tests.fixtures.peft_adapters import tar_gz

ADAPTER = {"out/adapter_config.json": b'{"peft_type": "LORA"}', "out/adapter_model.safetensors": b"weights"}


def test_a_trainers_folder_keeps_the_adapter_and_drops_the_rest(tmp_path: Path) -> None:
    upload = tmp_path / "upload.tar.gz"
    upload.write_bytes(tar_gz({**ADAPTER, "out/tokenizer.json": b"{}", "out/README.md": b"# notes",
                                "out/training_args.json": b"{}",
                                "out/checkpoint-10/adapter_model.safetensors": b"an earlier step"}))
    dest = unpack_archive(upload, tmp_path / "peft")
    assert sorted(p.name for p in dest.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert (dest / "adapter_model.safetensors").read_bytes() == b"weights"  # not the checkpoint's


def test_pickled_weights_beside_it_are_still_refused(tmp_path: Path) -> None:
    upload = tmp_path / "upload.tar.gz"
    upload.write_bytes(tar_gz({**ADAPTER, "out/training_args.bin": b"pickle"}))
    with pytest.raises(InvalidArgument) as err:
        unpack_archive(upload, tmp_path / "peft")
    assert err.value.reason == "PICKLED_WEIGHTS"
    assert not (tmp_path / "peft").exists()
