"""Distributed engines for the recipes' `Trainer`s: FSDP2 on CPU processes, checkpoints of sharded runs, and the
full model of a sharded run for saving.

`accelerate launch --config_file recipes/accelerate_configs/fsdp.yaml` on a machine without GPUs starts CPU
processes that talk over gloo. accelerate 1.15 then picks `MULTI_CPU` and turns FSDP on only for accelerator devices
(`AcceleratorState.__init__` sets `DistributedType.FSDP` inside its `MULTI_GPU`/`MULTI_XPU`/... branch), so the run
would silently train with plain DDP. PyTorch's FSDP2 (`fully_shard`) itself runs on CPU over gloo;
[`FsdpOnCpuMixin`] switches the Trainer's accelerator to it, so the sharded path (wrapping, sharded checkpoints,
resume, gathering the full model) is the one a GPU run takes, and tests run it on CPU.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from accelerate.state import PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

logger = logging.getLogger(__name__)

#: What a sharded (FSDP, `SHARDED_STATE_DICT`) checkpoint holds instead of `model.safetensors` / `optimizer.pt`.
FSDP_MODEL_DIR = "pytorch_model_fsdp_0"
FSDP_OPTIMIZER_DIR = "optimizer_0"


def fsdp_requested() -> bool:
    """Whether the process was started by `accelerate launch` with an FSDP config."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def deepspeed_requested() -> bool:
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def enable_fsdp_on_cpu(accelerator) -> bool:
    """If the process was launched with an FSDP config but accelerate chose `MULTI_CPU` (no GPU), make the
    accelerator shard with FSDP2 over gloo instead of falling back to DDP. Returns whether it did.

    Only FSDP2 (`fsdp_version: 2`) runs on CPU: FSDP1 needs CUDA streams."""
    state = accelerator.state
    if not fsdp_requested() or state.distributed_type != DistributedType.MULTI_CPU:
        return False
    plugin = (
        FullyShardedDataParallelPlugin()
    )  # reads the FSDP_* variables `accelerate launch` set from the config
    if plugin.fsdp_version != 2:
        raise ValueError(
            "FSDP on CPU processes needs FSDP2: set `fsdp_version: 2` in the accelerate config "
            "(FSDP1 needs CUDA streams)."
        )
    if state.mixed_precision != "no":
        plugin.set_mixed_precision(state.mixed_precision)
    state.distributed_type = DistributedType.FSDP
    state.fsdp_plugin = plugin
    # Every `AcceleratorState()` copies the process state's type over its own, as accelerate does when it enables
    # FSDP itself: set both.
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    logger.info(
        "FSDP2 on %d CPU processes over gloo (accelerate alone would fall back to DDP).", state.num_processes
    )
    return True


class FsdpOnCpuMixin:
    """For a `Trainer`: an FSDP launch on CPU processes trains with FSDP2 (see [`enable_fsdp_on_cpu`]), and a
    DeepSpeed launch that accelerate did not turn into DeepSpeed is refused instead of silently running DDP."""

    def create_accelerator_and_postprocess(self):
        super().create_accelerator_and_postprocess()
        if enable_fsdp_on_cpu(self.accelerator):
            self.is_fsdp_enabled = True
        if self.is_fsdp_enabled:
            plugin = self.accelerator.state.fsdp_plugin
            if plugin.transformer_cls_names_to_wrap is None:  # the config names no classes: choose the units
                plugin.transformer_cls_names_to_wrap = fsdp_units(self.model)
        if self.is_fsdp_enabled or self.is_deepspeed_enabled:
            lift_scalar_parameters(self.model)
        if deepspeed_requested() and not self.is_deepspeed_enabled:
            raise RuntimeError(
                "The run was launched with a DeepSpeed config but accelerate did not enable DeepSpeed "
                f"(distributed type {self.accelerator.distributed_type}). Install it (`pip install deepspeed`) or "
                "launch with recipes/accelerate_configs/ddp.yaml or fsdp.yaml."
            )


def fsdp_units(model: torch.nn.Module) -> list[str]:
    """Class names FSDP wraps as units of their own: the model's no-split modules (transformers collects the fusion
    layers and every tower's layers and embeddings), except the modules holding the text tower's input embeddings.
    accelerate gives the input embeddings a unit of their own and fails ("Invariant encountered: value was None when
    it should not be") when an ancestor of them, e.g. `RobertaEmbeddings`, was wrapped first."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    embeddings = model.get_input_embeddings()
    holders = {
        type(module).__name__ for module in model.modules() if any(m is embeddings for m in module.modules())
    }
    return sorted(names - holders)


def lift_scalar_parameters(model: torch.nn.Module) -> list[str]:
    """Give each 0-d parameter (the learned `logit_scale` and `logit_bias`) the shape `(1,)`, in place: FSDP2 cannot
    shard scalars ("fully_shard doesn't support scalar parameters") and DeepSpeed cannot broadcast them ("self.dim()
    cannot be 0 to view Float as Byte"). The models broadcast them either way; [`gather_full_model`] gives them back
    their shape, so the saved folder is the same as without these engines. Returns the names it changed."""
    lifted = []
    for name, parameter in model.named_parameters():
        if parameter.dim() == 0:
            parameter.data = parameter.data.reshape(1)
            lifted.append(name)
    return lifted


def restore_scalar_parameters(model: torch.nn.Module, reference: torch.nn.Module | None = None) -> None:
    """Undo [`lift_scalar_parameters`] in place: parameters of shape `(1,)` that are 0-d in `reference` (a fresh copy
    of the architecture; by default one is built on the meta device) become 0-d again."""
    reference = reference if reference is not None else _empty_copy(model)
    shapes = {name: parameter.shape for name, parameter in reference.named_parameters()}
    for name, parameter in model.named_parameters():
        if shapes.get(name) == torch.Size([]) and parameter.shape == torch.Size([1]):
            parameter.data = parameter.data.reshape(())


def frozen_prefix_cache_allowed(training_args) -> bool:
    """`cache_frozen_prefix`, off (with a warning) under FSDP: the towers' weights are sharded and gathered by
    collectives as each process runs them; a process that reads a prefix from the cache would skip its share."""
    if training_args.cache_frozen_prefix and fsdp_requested():
        logger.warning("cache_frozen_prefix is off under FSDP: the towers' frozen prefixes are sharded.")
        training_args.cache_frozen_prefix = False
    return training_args.cache_frozen_prefix


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether `model` (or a module in it) was sharded by FSDP2."""
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(module, FSDPModule) for module in model.modules())


def gather_full_model(trainer):
    """The trained model as a plain (unsharded) module on the main process, `None` on the others; every process
    must call it. Without FSDP, the trainer's model itself (under DeepSpeed with its scalars' shapes restored).

    Under FSDP the parameters are shards (`DTensor`); the full state dict is gathered to the main process (a
    collective), where a copy of the model is built on the meta device from its config (and its PEFT config), then
    takes the full tensors and the unsharded buffers."""
    model = trainer.model
    if not is_sharded(model):
        if not trainer.is_world_process_zero():
            return None
        if trainer.is_deepspeed_enabled:
            restore_scalar_parameters(model)
        return model
    state_dict = trainer.accelerator.get_state_dict(model)  # collective: all ranks
    if not trainer.is_world_process_zero():
        return None
    plain = _empty_copy(model)
    shapes = {name: tensor.shape for name, tensor in plain.state_dict().items()}
    state_dict = {  # the scalars FSDP sharded as (1,) (see `lift_scalar_parameters`)
        name: tensor.reshape(shapes[name]) if name in shapes and tensor.shape != shapes[name] else tensor
        for name, tensor in state_dict.items()
    }
    missing, unexpected = plain.load_state_dict(state_dict, strict=False, assign=True)
    buffers = dict(model.named_buffers())
    missing = [key for key in missing if key not in buffers]
    if missing or unexpected:
        raise RuntimeError(
            f"The gathered state dict does not match the model: missing {missing}, unexpected {unexpected}."
        )
    # Non-persistent buffers are not in the state dict; FSDP keeps them whole on every process.
    for name, buffer in buffers.items():
        owner, _, attribute = name.rpartition(".")
        module = plain.get_submodule(owner) if owner else plain
        if module._buffers.get(attribute) is not None and module._buffers[attribute].device.type == "meta":
            module._buffers[attribute] = buffer.detach().clone().cpu()
    base = plain.get_base_model() if hasattr(plain, "get_base_model") else plain
    if hasattr(base, "tie_weights"):
        base.tie_weights()
    still_meta = [
        name for name, tensor in [*plain.named_parameters(), *plain.named_buffers()] if tensor.is_meta
    ]
    if still_meta:
        raise RuntimeError(
            f"Tensors left on the meta device after gathering the sharded model: {still_meta[:5]}"
        )
    return plain


def _empty_copy(model: torch.nn.Module) -> torch.nn.Module:
    """The same architecture as `model` (a family model, or a PEFT model around one), with meta tensors."""
    base = model.get_base_model() if hasattr(model, "peft_config") else model
    with torch.device("meta"):
        copy = type(base)(base.config)
        if hasattr(model, "peft_config"):
            from peft import get_peft_model

            copy = get_peft_model(copy, model.peft_config["default"])
    copy.train(model.training)
    return copy


def is_sharded_checkpoint(checkpoint: Path) -> bool:
    """Whether `checkpoint` (a `checkpoint-N` folder) holds an FSDP sharded model and optimizer."""
    return (Path(checkpoint) / FSDP_MODEL_DIR).is_dir()
