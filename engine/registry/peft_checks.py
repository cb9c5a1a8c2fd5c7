"""Checks of a PEFT LoRA directory: its config, its safetensors header, and its tensor shapes
against the base model (built on the meta device, so no weights are loaded).

Blocking; callers run these off the event loop.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeGuard

from engine import json_input
from engine.domain import LoraSpec
from engine.errors import InvalidArgument, ViolationCollector
from engine.model_build import BUILDING
from engine.registry.archive import CONFIG_FILE, WEIGHTS_FILE, read_small, sha256_file

if TYPE_CHECKING:
    from torch import nn

PEFT_PREFIX = "base_model.model."
MAX_LORA_RANK = 256
MAX_SERVE_TARGET_MODULES = frozenset({"q_proj", "k_proj", "v_proj", "o_proj"})
# The dtypes of LoRA weights every loader (PEFT, vLLM, MAX Serve) takes, in safetensors' names.
_LORA_DTYPES = ("F16", "BF16", "F32", "F64")
_ADAPTER_NAME = "default"


@dataclass(frozen=True)
class ServingLimits:
    """What the serving engine adapters are hot-loaded into can load: a rank up to its --max-lora-rank and, for MAX
    Serve, LoRA on the attention projections only (max/pipelines/lora/lora.py refuses any other target module).
    Checked when a job is created and when an adapter is imported, so that an adapter the engine refuses fails
    there rather than at activation, after it was trained and published. The defaults limit nothing beyond
    MAX_LORA_RANK."""

    max_rank: int = MAX_LORA_RANK
    target_modules: frozenset[str] | None = None  # None: any module the base model has
    engine: str = "the serving engine"

    @classmethod
    def for_engine(cls, serving_mode: str, max_rank: int) -> ServingLimits:
        """The limits of a serving engine in ``serving_mode`` (max, vllm, custom) started with
        ``--max-lora-rank max_rank``."""
        if serving_mode == "max":
            return cls(max_rank, MAX_SERVE_TARGET_MODULES, "MAX Serve")
        return cls(max_rank, None, "vLLM" if serving_mode == "vllm" else "the serving engine")

    def violations(self, lora: LoraSpec, rank_field: str, targets_field: str) -> ViolationCollector:
        """What of ``lora`` the engine cannot load, under the given field names."""
        issues = ViolationCollector()
        issues.check(lora.rank <= self.max_rank, rank_field,
                     f"{lora.rank} is above {self.max_rank}, the highest rank {self.engine} loads "
                     "(serving_max_lora_rank, its --max-lora-rank)")
        refused = self.refused(lora.target_modules)
        issues.check(not refused, targets_field, f"{self.engine} cannot load LoRA on {', '.join(refused)}; it loads "
                                                 f"LoRA on {', '.join(sorted(self.target_modules or ()))} only")
        return issues

    def refused(self, target_modules: Sequence[str]) -> list[str]:
        """The modules of ``target_modules`` the engine cannot load LoRA on."""
        return [t for t in target_modules if self.target_modules is not None and t not in self.target_modules]

    def check(self, lora: LoraSpec, rank_field: str, targets_field: str) -> None:
        """INVALID_ARGUMENT LORA_NOT_SERVABLE naming the fields of ``lora`` the engine cannot load."""
        self.violations(lora, rank_field, targets_field).raise_if_any(
            "LORA_NOT_SERVABLE", f"{self.engine} cannot load this LoRA adapter")


def _invalid(reason: str, field_path: str, message: str) -> InvalidArgument:
    issues = ViolationCollector()
    issues.add(field_path, message)
    return InvalidArgument(reason, f"{field_path}: {message}", violations=issues.violations)


def read_lora_config(adapter_dir: Path) -> LoraSpec:
    """The LoRA shape in ``adapter_config.json``; INVALID_ARGUMENT listing every problem."""
    where = CONFIG_FILE
    try:
        config = json_input.loads(read_small(adapter_dir / CONFIG_FILE))
    except (OSError, ValueError) as exc:
        raise _invalid("MALFORMED_ADAPTER_CONFIG", where, f"is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise _invalid("MALFORMED_ADAPTER_CONFIG", where, "must be a JSON object")
    issues = ViolationCollector()
    peft_type = config.get("peft_type")
    issues.check(peft_type == "LORA", f"{where}.peft_type", f"must be LORA, got {peft_type!r}")
    rank = config.get("r")
    issues.check(_integer(rank) and 1 <= rank <= MAX_LORA_RANK, f"{where}.r",
                 f"must be an integer in 1..{MAX_LORA_RANK}, got {rank!r}")
    alpha = config.get("lora_alpha")
    issues.check(_finite_positive(alpha), f"{where}.lora_alpha", f"must be a finite number > 0, got {alpha!r}")
    dropout = config.get("lora_dropout", 0.0)
    issues.check(_number(dropout) and 0 <= dropout < 1, f"{where}.lora_dropout",
                 f"must be in [0, 1), got {dropout!r}")
    targets = config.get("target_modules")
    good_targets = (
        isinstance(targets, list) and bool(targets) and all(isinstance(t, str) and t for t in targets)
    )
    issues.check(good_targets, f"{where}.target_modules", "must be a non-empty list of module names")
    issues.check(config.get("bias", "none") == "none", f"{where}.bias",
                 "must be \"none\" (serving engines load bias-free LoRA only)")
    issues.check(not config.get("use_dora"), f"{where}.use_dora", "DoRA adapters are not supported")
    issues.check(not config.get("use_rslora"), f"{where}.use_rslora",
                 "rank-stabilized LoRA is not supported: engines scale it differently (MAX by lora_alpha / r); "
                 "an import folds it into lora_alpha")
    for key in ("rank_pattern", "alpha_pattern"):
        issues.check(not config.get(key), f"{where}.{key}", "per-module ranks/alphas are not supported")
    issues.check(not config.get("modules_to_save"), f"{where}.modules_to_save",
                 "fully trained extra modules are not supported")
    issues.raise_if_any("INVALID_ADAPTER_CONFIG", "invalid adapter config")
    # Checked above; the asserts tell the type checker so.
    assert isinstance(rank, int) and isinstance(alpha, int | float) and isinstance(dropout, int | float)
    assert isinstance(targets, list)
    return LoraSpec(rank=int(rank), alpha=float(alpha), dropout=float(dropout),
                    target_modules=tuple(sorted(set(targets))))


def _integer(value: object) -> TypeGuard[int]:
    """A JSON integer: not a boolean (``true`` is no rank 1), not a float."""
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: object) -> TypeGuard[int | float]:
    """A JSON number, not a boolean."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _finite_positive(value: object) -> bool:
    """A JSON number (not a boolean) that a float holds, finite and > 0: JSON numbers have no size limit, so a
    400-digit integer parses (and overflows float) and 1e400 parses as infinity."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        number = float(value)
    except OverflowError:
        return False
    return math.isfinite(number) and number > 0

def tensor_shapes(adapter_dir: Path) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the tensors of ``adapter_model.safetensors``, once the file passed the one check every
    path takes (an import's checks, and its renaming of PEFT's keys, which rewrites the file with safetensors' own
    loader): safetensors' own, as every loader (PEFT, vLLM, MAX Serve) reads the file. ``safe_open`` maps the file
    and reads its header only, no tensor (a file of any size costs its header), and refuses what no loader takes:
    a header that is not JSON of safetensors' form (shapes and offsets integers >= 0, not booleans, floats,
    strings, Infinity or numbers past 64 bits; a dtype safetensors knows; ``__metadata__`` strings only), a
    tensor whose bytes are not its shape's size in its dtype, and tensors that leave gaps, overlap or do not
    cover the data to its end. LoRA weights must also be floating point (F16, BF16, F32, F64). Each refusal is
    INVALID_ARGUMENT MALFORMED_SAFETENSORS naming the file (or the tensor)."""
    from safetensors import SafetensorError, safe_open  # noqa: PLC0415 - heavy

    path = adapter_dir / WEIGHTS_FILE
    found: dict[str, tuple[tuple[int, ...], str]] = {}
    try:
        with safe_open(str(path), framework="numpy") as handle:
            for name in handle.keys():  # noqa: SIM118 - safe_open is no Mapping
                tensor = handle.get_slice(name)
                found[name] = (tuple(tensor.get_shape()), tensor.get_dtype())
    except SafetensorError as exc:
        raise _invalid("MALFORMED_SAFETENSORS", WEIGHTS_FILE, f"is not a valid safetensors file: {exc}") from exc
    issues = ViolationCollector()
    for name, (_, dtype) in sorted(found.items()):
        issues.check(dtype in _LORA_DTYPES, f"{WEIGHTS_FILE}[{name}]",
                     f"is {dtype}; LoRA weights are floating point ({', '.join(_LORA_DTYPES)})")
    issues.check(bool(found), WEIGHTS_FILE, "holds no tensors")
    issues.raise_if_any("MALFORMED_SAFETENSORS", f"{WEIGHTS_FILE} holds no LoRA weights an engine loads")
    return {name: shape for name, (shape, _) in found.items()}


def check_shapes(shapes: dict[str, tuple[int, ...]], lora: LoraSpec, linears: dict[str, tuple[int, int]]) -> None:
    """Every tensor is a lora_A/lora_B of a targeted Linear of the base model, with the right shape."""
    issues = ViolationCollector()
    targets = set(lora.target_modules)
    seen: set[str] = set()
    for name, shape in sorted(shapes.items()):
        field_path = f"{WEIGHTS_FILE}[{name}]"
        module, kind = _split(name)
        if module is None:
            issues.add(field_path, "is not a LoRA weight (expected ...<module>.lora_A/lora_B.weight)")
            continue
        if module not in linears:
            issues.add(field_path, f"names module {module!r}, which the base model has no Linear for")
            continue
        if module.rsplit(".", 1)[-1] not in targets:
            issues.add(field_path, f"module {module!r} is not among target_modules {sorted(targets)}")
            continue
        in_features, out_features = linears[module]
        expected = (lora.rank, in_features) if kind == "lora_A" else (out_features, lora.rank)
        if shape != expected:
            issues.add(field_path, f"has shape {list(shape)}, the base model needs {list(expected)}")
        seen.add(f"{module}.{kind}")
    for module in sorted({n.rsplit(".", 1)[0] for n in seen}):
        for kind in ("lora_A", "lora_B"):
            issues.check(f"{module}.{kind}" in seen, WEIGHTS_FILE, f"{module} has no {kind} weight")
    issues.raise_if_any("ADAPTER_SHAPE_MISMATCH", "the adapter does not fit the base model")


def _split(name: str) -> tuple[str | None, str]:
    stem = name.removeprefix(PEFT_PREFIX)
    for kind in ("lora_A", "lora_B"):
        suffix = f".{kind}.weight"
        if stem.endswith(suffix):
            return stem[: -len(suffix)], kind
    return None, ""


def normalise_for_serving(adapter_dir: Path) -> None:
    """Rewrite, in place, what serving engines read differently from PEFT into the form they all read the same way.

    Tensor keys with PEFT's adapter name (``...lora_A.default.weight``) lose it: vLLM refuses such keys, and MAX
    Serve loads them but never reads them (it serves the base model). ``use_rslora`` is folded into ``lora_alpha``
    (alpha * sqrt(r), use_rslora false): PEFT and vLLM scale rank-stabilized LoRA by alpha / sqrt(r), MAX by
    alpha / r. Run on an import's unpacked copy, before its checks; a file that is not what it should be is left
    for them to refuse.
    """
    _fold_rslora(adapter_dir / CONFIG_FILE)
    _rename_adapter_keys(adapter_dir / WEIGHTS_FILE)


def _fold_rslora(path: Path) -> None:
    try:
        config = json_input.loads(read_small(path))
    except (OSError, ValueError):
        return
    if not isinstance(config, dict) or config.get("use_rslora") is not True:
        return
    rank, alpha = config.get("r"), config.get("lora_alpha")
    if not (_integer(rank) and rank >= 1 and _finite_positive(alpha)):
        return
    assert isinstance(alpha, int | float)
    config["lora_alpha"] = float(alpha) * math.sqrt(rank)
    config["use_rslora"] = False
    path.write_text(json.dumps(config, indent=2) + "\n")


def _rename_adapter_keys(path: Path) -> None:
    try:
        names = tensor_shapes(path.parent)  # what safetensors' loader below takes, or left for the checks to refuse
    except (OSError, InvalidArgument):
        return
    infix = f".{_ADAPTER_NAME}.weight"
    renames = {name: name[: -len(infix)] + ".weight" for name in names
               if any(name.endswith(f".{kind}{infix}") for kind in ("lora_A", "lora_B"))}
    if not renames:
        return
    clashes = sorted(old for old, new in renames.items() if new in names)
    if clashes:
        issues = ViolationCollector()
        for old in clashes:
            issues.add(f"{WEIGHTS_FILE}[{old}]", f"is {renames[old]} again, under PEFT's adapter name")
        issues.raise_if_any("ADAPTER_SHAPE_MISMATCH", "the adapter holds tensors twice")
    from safetensors import safe_open  # noqa: PLC0415 - heavy
    from safetensors.torch import load_file, save_file  # noqa: PLC0415 - heavy

    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata()
    tensors = {renames.get(name, name): tensor for name, tensor in load_file(str(path)).items()}
    renamed = path.with_name(f"{path.name}.renamed")
    save_file(tensors, str(renamed), metadata=metadata)
    renamed.replace(path)


@functools.lru_cache(maxsize=8)
def _linear_shapes(model_dir: str) -> dict[str, tuple[int, int]]:
    import torch  # noqa: PLC0415 - heavy


    model = meta_model(model_dir)
    return {
        name: (module.in_features, module.out_features)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
    }


def base_linear_shapes(model_dir: Path) -> dict[str, tuple[int, int]]:
    """Module path -> (in_features, out_features) of every Linear of the base model; cached."""
    return _linear_shapes(str(Path(model_dir).resolve()))


@functools.lru_cache(maxsize=8)
def _digest(model_dir: str, stamp: tuple[tuple[str, int, int], ...]) -> str:
    root = Path(model_dir)
    outer = hashlib.sha256()
    for path in sorted(root.glob("*.safetensors")) + [root / "config.json"]:
        outer.update(f"{path.name}\0{sha256_file(path)}\n".encode())
    return outer.hexdigest()


def base_model_digest(model_dir: Path) -> str:
    """sha256 over the base model's config.json and safetensors files; cached per file stamp."""
    root = Path(model_dir).resolve()
    files = sorted(root.glob("*.safetensors")) + [root / "config.json"]
    stamp = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files if p.exists())
    return _digest(str(root), stamp)


# ---- what LoRA can target on a base model ------------------------------------------------------------------

_LORA_LEAF_TYPES = ("Linear", "Embedding", "Conv1D", "Conv1d", "Conv2d", "Linear4bit", "Linear8bitLt")


def meta_model(model_dir: Path | str) -> nn.Module:
    """The base model's architecture on the meta device (no weights): for names and shapes."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    config_dict = config.to_dict()
    if "quantization_config" in config_dict:
        config_dict.pop("quantization_config")
        config = AutoConfig.for_model(**config_dict)
    with BUILDING, init_empty_weights():
        # transformers leaves from_config unannotated
        model: nn.Module = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
    return model


@functools.lru_cache(maxsize=16)
def _module_names(model_dir: str) -> frozenset[str]:
    model = meta_model(model_dir)
    return frozenset(
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if name and not any(True for _ in module.children()) and type(module).__name__ in _LORA_LEAF_TYPES
    )


def module_names(model_dir: Path) -> frozenset[str]:
    """Short names of the leaf modules LoRA can target (q_proj, gate_proj, lm_head, ...); cached."""
    return _module_names(str(Path(model_dir).resolve()))


def validate_lora(
    spec: LoraSpec, available: frozenset[str], field_prefix: str = "spec", limits: ServingLimits | None = None,
) -> None:
    """Raise InvalidArgument with every bad LoRA field (named under ``field_prefix``); UNKNOWN_TARGET_MODULES if only
    targets are wrong; LORA_NOT_SERVABLE for a valid LoRA the serving engine (``limits``) cannot load."""
    numbers = ViolationCollector()
    numbers.check(1 <= spec.rank <= MAX_LORA_RANK, f"{field_prefix}.lora.rank", f"must be in 1..{MAX_LORA_RANK}")
    numbers.check(0 < spec.alpha < math.inf, f"{field_prefix}.lora.alpha", "must be a finite number > 0")
    numbers.check(0 <= spec.dropout < 1, f"{field_prefix}.lora.dropout", "must be in [0, 1)")
    targets = ViolationCollector()
    unknown = sorted(set(spec.target_modules) - available)
    if not spec.target_modules:
        targets.add(f"{field_prefix}.lora.target_modules", "must name at least one module")
    elif unknown:
        targets.add(
            f"{field_prefix}.lora.target_modules",
            f"unknown module(s) {', '.join(unknown)}; the base model has {', '.join(sorted(available))}",
        )
    if targets.violations and not numbers.violations:
        targets.raise_if_any("UNKNOWN_TARGET_MODULES", "invalid LoRA target modules")
    combined = ViolationCollector(numbers.violations + targets.violations)
    combined.raise_if_any("INVALID_LORA_CONFIG", "invalid LoRA configuration")
    if limits is not None:
        limits.check(spec, f"{field_prefix}.lora.rank", f"{field_prefix}.lora.target_modules")
