"""An imported adapter is published in the form every serving engine loads the same way, or refused.

MAX Serve 26.7 (the max==26.7.0 wheel, the image docker-compose.yaml pins) and vLLM read adapters differently from
PEFT, the reference backend the tests serve with:
- tensor keys with PEFT's adapter name (``...lora_A.default.weight``, what ``model.state_dict()`` saved with
  safetensors gives): vLLM refuses them (parse_fine_tuned_lora_name); MAX loads them but fills its buffers only from
  ``...{q,k,v,o}_proj.lora_{A,B}.weight``, so it serves the base model. The import renames them.
- ``use_rslora``: PEFT and vLLM scale by alpha / sqrt(r), MAX by alpha / r (max/pipelines/lora/lora.py:668). The
  import folds it into lora_alpha (alpha * sqrt(r), use_rslora false): the same update on every engine.
- target modules: MAX loads LoRA on q_proj, k_proj, v_proj and o_proj only (lora.py:342-373).
- rank: MAX and vLLM refuse a rank above their --max-lora-rank (lora.py:671-674, PEFTHelper.validate_legal).
"""

from __future__ import annotations

import json
import math
import shutil
import tarfile
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from engine.errors import InvalidArgument
from engine.registry import AdapterRegistry, adapter_registry
from tests.fixtures.peft_adapters import build_peft_adapter, tar_dir
from tests.registry.conftest import TINY

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")


def _with_default_keys(src: Path, dest: Path) -> Path:
    """The same adapter, its tensors named with PEFT's in-memory adapter name (``lora_A.default.weight``)."""
    dest.mkdir()
    shutil.copy(src / "adapter_config.json", dest / "adapter_config.json")
    tensors = load_file(src / "adapter_model.safetensors")
    renamed = {k.replace(".weight", ".default.weight"): v for k, v in tensors.items()}
    save_file(renamed, dest / "adapter_model.safetensors", metadata={"format": "pt"})
    return dest


def _with_rslora(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    config = json.loads((dest / "adapter_config.json").read_text())
    config["use_rslora"] = True
    (dest / "adapter_config.json").write_text(json.dumps(config))
    return dest


async def _import(registry: AdapterRegistry, folder: Path, tmp_path: Path, name: str):
    upload = tmp_path / f"{name}.tar.gz"
    upload.write_bytes(tar_dir(folder))
    return await registry.import_archive(base_model=TINY, upload=upload)


async def _published(registry: AdapterRegistry, version: str, dest: Path) -> Path:
    archive_path = dest.with_suffix(".tar.gz")
    await registry.download(TINY, version, archive_path)
    dest.mkdir()
    with tarfile.open(archive_path) as tar:
        tar.extractall(dest, filter="data")
    return dest


def _violations(exc: pytest.ExceptionInfo[InvalidArgument]) -> list[str]:
    return [v.field for v in exc.value.violations]


async def test_import_renames_tensor_keys_with_the_adapter_name(registry: AdapterRegistry, tiny_model_dir: Path,
                                                                tmp_path: Path):
    plain = build_peft_adapter(tiny_model_dir, tmp_path / "plain", targets=ATTENTION)
    odd = _with_default_keys(plain, tmp_path / "odd")
    record = await _import(registry, odd, tmp_path, "odd")
    published = await _published(registry, record.version, tmp_path / "published")
    tensors = load_file(published / "adapter_model.safetensors")
    expected = load_file(plain / "adapter_model.safetensors")
    assert sorted(tensors) == sorted(expected)
    assert not any(".default." in key for key in tensors)
    assert all(tensors[k].equal(expected[k]) for k in expected)
    with safe_open(published / "adapter_model.safetensors", "pt") as handle:
        assert handle.metadata() == {"format": "pt"}


def test_the_check_refuses_tensor_keys_with_the_adapter_name(tiny_model_dir: Path, tmp_path: Path):
    """What the import did not rename is refused: vLLM refuses the key and MAX serves a zero adapter."""
    plain = build_peft_adapter(tiny_model_dir, tmp_path / "plain", targets=ATTENTION)
    odd = _with_default_keys(plain, tmp_path / "odd")
    with pytest.raises(InvalidArgument) as err:
        adapter_registry._validate_peft_dir(odd, tiny_model_dir)
    assert err.value.reason == "ADAPTER_SHAPE_MISMATCH"
    assert all(f.startswith("adapter_model.safetensors[") and ".default." in f for f in _violations(err))


async def test_import_refuses_a_key_given_twice(registry: AdapterRegistry, tiny_model_dir: Path, tmp_path: Path):
    """Both names of one tensor: which one an engine would take is not clear, so nothing is renamed."""
    plain = build_peft_adapter(tiny_model_dir, tmp_path / "plain")
    tensors = load_file(plain / "adapter_model.safetensors")
    key = sorted(tensors)[0]
    tensors[key.replace(".weight", ".default.weight")] = tensors[key].clone()
    both = tmp_path / "both"
    both.mkdir()
    shutil.copy(plain / "adapter_config.json", both / "adapter_config.json")
    save_file(tensors, both / "adapter_model.safetensors")
    with pytest.raises(InvalidArgument) as err:
        await _import(registry, both, tmp_path, "both")
    assert err.value.reason == "ADAPTER_SHAPE_MISMATCH"
    assert _violations(err) == [f"adapter_model.safetensors[{key.replace('.weight', '.default.weight')}]"]


async def test_import_folds_rslora_into_lora_alpha(registry: AdapterRegistry, tiny_model_dir: Path, tmp_path: Path):
    plain = build_peft_adapter(tiny_model_dir, tmp_path / "plain", rank=16)
    record = await _import(registry, _with_rslora(plain, tmp_path / "rs"), tmp_path, "rs")
    published = await _published(registry, record.version, tmp_path / "published")
    config = json.loads((published / "adapter_config.json").read_text())
    assert config["use_rslora"] is False
    assert config["lora_alpha"] == pytest.approx(32 * math.sqrt(16)) == record.lora.alpha
    assert config["lora_alpha"] / config["r"] == pytest.approx(32 / math.sqrt(16))  # what PEFT scaled it by
    original = json.loads((plain / "adapter_config.json").read_text())
    assert {k: v for k, v in config.items() if k not in ("lora_alpha", "use_rslora")} == {
        k: v for k, v in original.items() if k not in ("lora_alpha", "use_rslora")}


def test_the_check_refuses_rslora(tiny_model_dir: Path, tmp_path: Path):
    """An adapter the import did not fold is refused: MAX would scale it sqrt(r) times less than PEFT and vLLM."""
    plain = build_peft_adapter(tiny_model_dir, tmp_path / "plain", rank=16)
    with pytest.raises(InvalidArgument) as err:
        adapter_registry._validate_peft_dir(_with_rslora(plain, tmp_path / "rs"), tiny_model_dir)
    assert err.value.reason == "INVALID_ADAPTER_CONFIG"
    assert _violations(err) == ["adapter_config.json.use_rslora"]
