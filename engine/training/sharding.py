"""A job's model sharded across its processes (``sharding: FSDP``): torch's FSDP2 through accelerate.

A distributed run (engine.training.distributed) with ``Hyperparameters.sharding`` FSDP is launched with
accelerate's FSDP flags (:data:`FSDP_LAUNCH_ARGUMENTS`: FSDP2, one unit per decoder layer, resharded after
each forward, the weights loaded once); the first process loads the base on the host, the others build it on
the meta device, each attaches the job's adapter and hands the model to accelerate's ``fsdp2_prepare_model``,
which applies torch's ``fully_shard`` per decoder layer (the model's ``_no_split_modules``), to the embeddings
and head, and to the root, sends each process its shards of the first one's weights and moves them to its
device. Every parameter, frozen base and LoRA alike, is then a ``DTensor`` sharded on its first dimension.

What differs from a process holding the whole model, and how it is handled here:

* state leaves a process only whole: :func:`full_trainable_state` gathers the LoRA weights (not the base),
  :func:`full_optimizer_state` the optimiser's state (torch.distributed.checkpoint's full state dicts), in the
  format one device writes, so a checkpoint of a sharded run resumes on one device and the other way round
  (:func:`load_trainable_state`, :func:`load_optimizer_state`);
* a penalty sees sharded parameters: :func:`local_part` gives a whole tensor's part matching a parameter's
  local shard and :func:`sum_over_shards` adds up per-process parts (engine.continual.ewc);
* every collective (each layer's all-gather in a forward, its reduce-scatter in a backward, a gather of state)
  needs every process: they run the same passes in the same order (engine.training.distributed.ShardedGroup).

accelerate turns FSDP on only for GPU distributed types (its ``AcceleratorState`` ignores the plugin on CPU
processes); ``fsdp2_prepare_model`` itself runs anywhere, so it is called directly with the plugin accelerate
builds from the launcher's environment, the same on GPUs (NCCL) and on CPU processes (gloo, the tests).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

# ``accelerate launch`` flags of a sharded run (they become the FSDP_* environment of every process).
FSDP_LAUNCH_ARGUMENTS = [
    "--use_fsdp", "--fsdp_version", "2",
    "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP",  # one unit per decoder layer (_no_split_modules)
    "--fsdp_reshard_after_forward", "true",  # a layer's whole weights exist only while it runs
    "--fsdp_offload_params", "false",
    # only the first process loads the weights; the others build the model on the meta device and receive
    # their shards from it (accelerate's fsdp2_load_full_state_dict): one copy in host memory, not one each
    # (the launcher asks for sync_module_states with it; FSDP2 itself has no such option)
    "--fsdp_cpu_ram_efficient_loading", "true", "--fsdp_sync_module_states", "true",
    "--fsdp_state_dict_type", "FULL_STATE_DICT",
]


def fsdp_plugin() -> Any:
    """accelerate's FSDP plugin as the launcher configured it (the FSDP_* environment of this process)."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin()
    if plugin.fsdp_version != 2:
        raise RuntimeError("this process was not started by a sharded launch (FSDP_VERSION is not 2)")
    return plugin


@dataclass
class _AcceleratorView:
    """What ``fsdp2_prepare_model`` reads of an Accelerator (whose state disables FSDP on CPU processes)."""

    state: Any
    is_main_process: bool
    device: torch.device
    mixed_precision: str = "no"  # the recipe's own autocast decides precision, as on one device
    torch_device_mesh: Any = None  # one flat mesh of every process (fully_shard's default)


@dataclass
class _PluginState:
    fsdp_plugin: Any


def shard_model(model: Any, device: str, *, is_main: bool) -> Any:
    """Shard ``model`` (loaded on the host, adapter attached) across this run's processes onto ``device``."""
    from accelerate.utils.fsdp_utils import fsdp2_prepare_model

    view = _AcceleratorView(_PluginState(fsdp_plugin()), is_main, torch.device(device))
    return fsdp2_prepare_model(view, model)


def sharding_summary(model: Any, processes: int) -> str:
    """What a sharded model's process holds, for the job's notice."""
    from torch.distributed.fsdp import FSDPModule

    units = [m for m in model.modules() if isinstance(m, FSDPModule)]
    layers = sum(1 for m in units if type(m).__name__.removeprefix("FSDP") in (model._no_split_modules or ()))
    held = sum(local_tensor(p).numel() for p in model.parameters())
    total = sum(p.numel() for p in model.parameters())
    return (f"the model is sharded across {processes} processes by FSDP2 in {len(units)} units ({layers} decoder "
            f"layers); this process holds {held:,} of its {total:,} parameters")


def is_sharded(model: Any) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def _resharded(model: Any) -> None:
    """Every unit back to its shards (the root keeps its weights whole after a forward without backward)."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def full_trainable_state(model: Any) -> dict[str, torch.Tensor]:
    """The trainable (LoRA) parameters, whole, on the host, by parameter name; every process takes part."""
    from torch.distributed.tensor import DTensor

    _resharded(model)
    state: dict[str, torch.Tensor] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            value = param.detach()
            state[name] = (value.full_tensor() if isinstance(value, DTensor) else value).cpu()
    return state


def load_trainable_state(model: Any, weights: Mapping[str, torch.Tensor]) -> list[str]:
    """Load whole LoRA weights, by their names in an adapter file, into a sharded model (each process keeps its
    shards); the names the model has no parameter for."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    adapter = f".{getattr(model, 'active_adapter', 'default')}."  # PEFT's file names leave the adapter's out
    names = {n.replace(adapter, "."): n for n, p in model.named_parameters() if p.requires_grad}
    unexpected = sorted(set(weights) - set(names))
    if not unexpected:
        _resharded(model)
        set_model_state_dict(model, {names[k]: v for k, v in weights.items()},
                             options=StateDictOptions(full_state_dict=True, strict=False))
    return unexpected


def _trainable_names(model: Any) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]  # the optimiser's order


def full_optimizer_state(model: Any, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimiser's state, whole, as ``optimizer.state_dict()`` of one device writes it (parameters by
    position); every process takes part, the main process gets it (the others an empty one)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    _resharded(model)
    named: Any = get_optimizer_state_dict(model, optimizer,
                                          options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not named:
        return {}
    position = {name: i for i, name in enumerate(_trainable_names(model))}
    return {  # the groups' settings are every process's own (and already by position)
        "state": {position[name]: value for name, value in named["state"].items()},
        "param_groups": optimizer.state_dict()["param_groups"],
    }


def load_optimizer_state(model: Any, optimizer: torch.optim.Optimizer, state: Mapping[str, Any]) -> None:
    """Load an optimiser state of one device's format (parameters by position) into a sharded run's."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    names = _trainable_names(model)
    named: Any = {
        "state": {names[int(i)]: value for i, value in state["state"].items()},
        "param_groups": [{**group, "params": [names[int(i)] for i in group["params"]]}
                         for group in state["param_groups"]],
    }
    _resharded(model)
    set_optimizer_state_dict(model, optimizer, named, options=StateDictOptions(full_state_dict=True))
    for group, saved in zip(optimizer.param_groups, state["param_groups"], strict=True):
        group.update({k: v for k, v in saved.items() if k != "params"})  # as saved (torch's copy makes lists)


def local_part(whole: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """The part of ``whole`` (shaped as ``param``) that ``param``'s local shard holds; ``whole`` itself when
    ``param`` is not sharded. No communication: every process has ``whole``."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if not isinstance(param, DTensor):
        return whole
    return distribute_tensor(whole, param.device_mesh, param.placements, src_data_rank=None).to_local()


def local_tensor(param: torch.Tensor) -> torch.Tensor:
    """A parameter's local shard (differentiable: its gradient reaches the sharded parameter), or itself."""
    from torch.distributed.tensor import DTensor

    return param.to_local() if isinstance(param, DTensor) else param


def sum_over_shards(local: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """``local`` (this process's part of a sum over ``param``'s shards) as the whole sum's value, its gradient
    still the local part's: each process's shard gets exactly its own terms' gradient."""
    from torch.distributed.tensor import DTensor

    if not isinstance(param, DTensor):
        return local
    import torch.distributed as dist

    total = local.detach().clone()
    dist.all_reduce(total, group=param.device_mesh.get_group())
    return local + (total - local.detach())


def whole(param: torch.Tensor) -> torch.Tensor:
    """A parameter whole on every process (differentiable: an all-gather forward, each shard's slice of the
    gradient backward, which is right when every process computes the same function of it)."""
    from torch.distributed.tensor import DTensor

    return param.full_tensor() if isinstance(param, DTensor) else param


def as_float(value: torch.Tensor) -> float:
    """A scalar that may be a replicated DTensor (clip_grad_norm_ over sharded gradients)."""
    from torch.distributed.tensor import DTensor

    return float(value.full_tensor() if isinstance(value, DTensor) else value)
