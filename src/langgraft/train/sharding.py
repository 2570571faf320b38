"""Which engine a launch asks for, and langgraft's own FSDP2 sharding of the loss module.

Under an FSDP launch (`recipes/accelerate/fsdp.yaml`, `fsdp_version: 2`) langgraft shards the model itself with
torch's `fully_shard` (each decoder layer, then the rest) instead of leaving it to `accelerator.prepare`: the same
code then runs on GPUs (NCCL) and on CPUs (gloo), where Accelerate cannot set up FSDP at all, so the sharded path
is tested on every machine. Accelerate still owns the process group, the device, autocast and the collectives.

The trained state (LoRA + trained rows, their optimizer state) is read and written through torch's distributed
state-dict API with `full_state_dict` and `ignore_frozen_params`: every engine (one process, DDP, FSDP2) gives the
same full tensors of the trained parameters only, so saving an adapter or a checkpoint never gathers the base model.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from dataclasses import dataclass

import torch

from langgraft.errors import UserError

LAUNCH_ENGINES = {"FSDP": ("FSDP", "ACCELERATE_USE_FSDP"),
                  "DEEPSPEED": ("ZeRO (DeepSpeed)", "ACCELERATE_USE_DEEPSPEED")}
ZERO3 = ("deepspeed_config.zero_stage: 3 is not supported (the fused loss reads the head and the trained rows "
         "directly, which ZeRO-3 keeps partitioned); for weights sharded over the ranks launch with "
         "recipes/accelerate/fsdp.yaml (FSDP2, resumable the same way), or use zero2.yaml")


@dataclass(frozen=True)
class FsdpOptions:
    """What langgraft honours of an FSDP launch configuration (`accelerate launch` passes it as FSDP_* variables)."""

    reshard_after_forward: bool = True
    offload_params: bool = False


def check_launch(engine: str | None = None, resolved: str | None = None) -> str | None:
    """The sharding engine an `accelerate launch` configuration asks for ("FSDP", "DEEPSPEED" or None), refused
    with one line when this run cannot honour it: before the Accelerator exists (an FSDP setting langgraft does not
    implement, deepspeed missing, ZeRO without CUDA), and again with the distributed type Accelerate resolved
    (`resolved`), since a launch that is not distributed cannot shard and Accelerate would quietly fall back to
    one device or plain DDP, which for a model sized for sharding means an out-of-memory hours later."""
    from accelerate.utils import parse_flag_from_env

    if engine is None:
        engine = next((e for e, (_, var) in LAUNCH_ENGINES.items() if parse_flag_from_env(var)), None)
    if engine is None:
        return None
    name, var = LAUNCH_ENGINES[engine]
    asked = f"the accelerate launch configuration asks for {name} ({var}=true)"
    if resolved is not None:
        # FSDP: langgraft shards over Accelerate's data-parallel process group (MULTI_GPU / MULTI_CPU)
        fine = ("MULTI_GPU", "MULTI_CPU") if engine == "FSDP" else ("DEEPSPEED",)
        if resolved not in fine:
            raise UserError(f"{asked}, but Accelerate resolved this launch to {resolved} (no process group to shard "
                            "over: every rank would hold the whole model); launch with `accelerate launch "
                            "--config_file recipes/accelerate/fsdp.yaml` or torchrun, and check num_processes")
        return engine
    if engine == "FSDP":
        fsdp_options()
        return engine
    if importlib.util.find_spec("deepspeed") is None:
        raise UserError(f"{asked}, but deepspeed is not installed (pip install deepspeed), or launch with "
                        "recipes/accelerate/fsdp.yaml or ddp.yaml")
    if os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3":
        raise UserError(ZERO3)
    return engine


def fsdp_options() -> FsdpOptions:
    """The FSDP launch settings, each one langgraft cannot honour refused with one line naming the config key."""
    from accelerate.utils import parse_flag_from_env

    version = os.environ.get("FSDP_VERSION", "1")
    if version != "2":
        raise UserError(f"fsdp_config.fsdp_version: {version}; langgraft shards with FSDP2, set fsdp_version: 2 "
                        "(as recipes/accelerate/fsdp.yaml does)")
    if parse_flag_from_env("FSDP_ACTIVATION_CHECKPOINTING"):
        raise UserError("fsdp_config.fsdp_activation_checkpointing: true; set it to false and use the train "
                        "config's gradient_checkpointing (and checkpoint_layers) instead")
    reshard = os.environ.get("FSDP_RESHARD_AFTER_FORWARD", "true").lower()
    if reshard not in ("true", "false"):
        raise UserError(f"fsdp_config.fsdp_reshard_after_forward: {reshard}; FSDP2 takes true or false")
    return FsdpOptions(reshard_after_forward=reshard == "true",
                       offload_params=parse_flag_from_env("FSDP_OFFLOAD_PARAMS"))


@contextlib.contextmanager
def unsharded_env(engine: str | None):
    """Hide an FSDP launch from Accelerate and transformers while langgraft shards by itself: Accelerate would
    otherwise build its own FSDP plugin (failing on CPU), and transformers would load the weights on the meta
    device on ranks > 0 (`fsdp_cpu_ram_efficient_loading`), where the instruct probe and the row init cannot run."""
    if engine != "FSDP":
        yield
        return
    saved = os.environ.get("ACCELERATE_USE_FSDP")
    os.environ["ACCELERATE_USE_FSDP"] = "false"
    try:
        yield
    finally:
        os.environ["ACCELERATE_USE_FSDP"] = saved  # type: ignore[assignment] - set: engine FSDP was read from it


def shard(loss_module, accelerator, options: FsdpOptions):
    """FSDP2 over all ranks: every decoder layer its own unit (gathered for its forward and backward only), the
    embedding, head and final norm in the root unit. Every rank holds the same weights before this (the same
    files and seed), so each keeps its slice of identical tensors."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy, fully_shard, register_fsdp_forward_method
    from transformers.modeling_layers import GradientCheckpointingLayer

    mesh = init_device_mesh(accelerator.device.type, (accelerator.num_processes,))
    offload = CPUOffloadPolicy() if options.offload_params else OffloadPolicy()
    layers = [m for m in loss_module.modules() if isinstance(m, GradientCheckpointingLayer)]
    if not layers:
        raise UserError("FSDP: this model has no transformers decoder layers to shard; launch with "
                        "recipes/accelerate/ddp.yaml")
    for layer in layers:
        fully_shard(layer, mesh=mesh, reshard_after_forward=options.reshard_after_forward, offload_policy=offload)
    fully_shard(loss_module, mesh=mesh, reshard_after_forward=options.reshard_after_forward, offload_policy=offload)
    register_fsdp_forward_method(loss_module, "loss_sum")  # validation calls it instead of forward
    return loss_module


def is_sharded(module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def gradient_sync(accelerator, module, sync: bool):
    """The context of one micro-batch's backward: without the gradient all-reduce / reduce-scatter unless `sync`."""
    if is_sharded(module):
        module.set_requires_gradient_sync(sync)
        return contextlib.nullcontext()
    return contextlib.nullcontext() if sync else accelerator.no_sync(module)


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's part of a (possibly sharded) tensor."""
    from torch.distributed.tensor import DTensor

    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole of a (possibly sharded or partial) tensor; a collective when it is sharded."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def _options(**extra):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True, **extra)


def _plain(optimizer):
    return getattr(optimizer, "optimizer", optimizer)  # Accelerate's AcceleratedOptimizer wraps the torch one


def trained_state(module, optimizer=None) -> tuple[dict, dict]:
    """(weights, optimizer state) of the trained parameters as full CPU tensors keyed by parameter name; a
    collective under FSDP (every rank calls it), filled on rank 0 only when distributed."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

    if optimizer is None:
        return get_model_state_dict(module, options=_options()), {}
    return get_state_dict(module, _plain(optimizer), options=_options())


def load_trained_state(module, optimizer, weights: dict, optim_state: dict) -> None:
    """Put full `weights` and `optim_state` (as `trained_state` returned them, read on every rank) back into the
    model and optimizer, each rank keeping its own slice under FSDP."""
    from torch.distributed.checkpoint.state_dict import set_state_dict

    trained = {name for name, p in module.named_parameters() if p.requires_grad}
    unknown = sorted(set(weights) - trained)
    if unknown:
        raise UserError(f"checkpoint holds weights this model does not train ({unknown[0]}); was it written by "
                        "this run?")
    missing = sorted(trained - set(weights))
    if missing:
        raise UserError(f"checkpoint lacks trained weight {missing[0]}; was it written by this run?")
    set_state_dict(module, _plain(optimizer), model_state_dict=dict(weights), optim_state_dict=optim_state,
                   options=_options(strict=False))


def zero_engine(accelerator):
    """The DeepSpeed engine of a ZeRO run (after `accelerator.prepare`), else None."""
    wrapped = getattr(accelerator, "deepspeed_engine_wrapped", None)
    return None if wrapped is None else wrapped.engine


def configure_zero(accelerator, cfg) -> None:
    """The train config decides the batch, accumulation and clipping under ZeRO too: written into the DeepSpeed
    config before `prepare` (the launch file's values would otherwise win, and langgraft's loop feeds no
    DataLoader for Accelerate to read the micro-batch from)."""
    plugin = accelerator.state.deepspeed_plugin
    if plugin.zero_stage == 3:  # set in a deepspeed_config_file, which check_launch does not read
        raise UserError(ZERO3)
    ds = plugin.deepspeed_config
    ds.update(train_micro_batch_size_per_gpu=cfg.micro_batch_size, gradient_accumulation_steps=cfg.grad_accum,
              train_batch_size=cfg.micro_batch_size * cfg.grad_accum * accelerator.num_processes,
              gradient_clipping=cfg.optim.max_grad_norm or 0.0)


def backward(accelerator, loss: torch.Tensor, sync: bool) -> None:
    """One micro-batch's backward (`loss` already divided by the accumulation). Under ZeRO the engine also takes
    the optimizer step after the last micro-batch (`sync`): it reduces, clips and steps itself."""
    engine = zero_engine(accelerator)
    if engine is None:
        accelerator.backward(loss)
        return
    engine.set_gradient_accumulation_boundary(is_boundary=sync)
    engine.backward(loss, scale_wrt_gas=False)
    if sync:
        engine.step()


def gather_trained(accelerator, module, optimizer=None) -> tuple[dict, dict]:
    """(weights, optimizer state) of the trained parameters, whole: a collective (every rank calls it). Under ZeRO
    the weights are the optimizer's fp32 masters and the optimizer state stays in DeepSpeed's own files ({})."""
    if zero_engine(accelerator) is not None:
        return zero_trained_weights(module), {}
    return trained_state(module, optimizer)


def zero_trained_weights(module) -> dict:
    """The trained parameters' fp32 master weights (ZeRO keeps them in the optimizer's partitions), whole, on
    every rank: a collective (every rank calls it)."""
    from deepspeed.utils import safe_get_full_fp32_param

    return {name: safe_get_full_fp32_param(p).detach().cpu().clone()
            for name, p in module.named_parameters() if p.requires_grad}
