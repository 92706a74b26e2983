"""
Training over several processes (torchrun): FSDP sharding of the model and its optimizer state,
the gathering of shards into one whole checkpoint and back, and the end of a distributed run.
DDP itself is torch's DistributedDataParallel, wrapped in train.py.

    torchrun --standalone --nproc_per_node=2 train.py config/train_shakespeare_char_cpu.py \
        --device=cpu --fsdp=True
"""

import atexit
import os
import sys

import torch

from errors import InputError
from muon import MuonAdamW

# FSDP (train.py --fsdp=True under torchrun): each process keeps 1/N of every parameter, gradient
# and optimizer state, and gathers one block's whole weights only while it computes that block.


def torch_version():
    """The installed torch's (major, minor) version."""
    major, minor = torch.__version__.split('.')[:2]
    return int(major), int(minor)


def check_fsdp_support():
    """FSDP here is FSDP2 (fully_shard, public in torch 2.6) with distribute_tensor's
    src_data_rank (also 2.6): one line where torch is older."""
    if torch_version() < (2, 6):
        raise InputError(f"fsdp=True needs torch 2.6 or later (this is torch {torch.__version__}): "
                         "upgrade torch, or drop --fsdp (DDP works from torch 2.4)")


def shard_model(model, device_type, dtype, world_size):
    """Shard the model over the processes with FSDP2, in place: each Block on its own, then the
    rest (the embeddings, tied with the output layer, and the last LayerNorm). The weights move to
    the device shard by shard, so the whole model never needs to fit there. On CUDA in bfloat16,
    the weights are gathered in bfloat16 (half the traffic; the residual stream then runs in
    bfloat16 too, as in torchtitan) and gradients are reduced in float32. In float16 the weights
    are gathered in float32 and autocast casts them, as under DDP: a float16 residual stream
    could overflow."""
    check_fsdp_support()
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    mesh = init_device_mesh(device_type, (world_size,))
    bf16 = device_type == 'cuda' and dtype == torch.bfloat16
    mp = MixedPrecisionPolicy()
    if bf16:
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for block in model.transformer.h:
        fully_shard(block, mesh=mesh, mp_policy=mp)
    fully_shard(model, mesh=mesh, mp_policy=mp)


def gather_state(state, keep):
    """A model or optimizer state dict with FSDP's shards (DTensors) gathered whole to the CPU, as
    one process would have saved it. Every process must call it, in step (each gather is a
    collective); those with keep=False get None. Tied weights stay one tensor."""
    from torch.distributed.tensor import DTensor
    gathered = {}  # id of a shard -> its whole tensor

    def gather(value):
        if isinstance(value, DTensor):
            if id(value) not in gathered:
                whole = value.detach().full_tensor()
                gathered[id(value)] = whole.cpu() if keep else None
            return gathered[id(value)]
        if isinstance(value, dict):
            return {k: gather(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(gather(v) for v in value)
        return value
    state = gather(state)
    return state if keep else None


def end_distributed_run():
    """The end of a distributed run that finished or stopped after its save: destroy the process
    group, run the exit handlers (wandb's among them), then end the process with status 0 without
    the interpreter's teardown. Never returns, and kills Python threads still running: nothing may
    be left in one. Why: gloo's worker threads outlive destroy_process_group, and one still
    letting go of a tensor as the interpreter tears itself down can abort the process (SIGABRT,
    "terminate called without an active exception"), so that torchrun reports a good run as
    failed."""
    import torch.distributed as dist
    dist.destroy_process_group()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def shard_optimizer_state(state_dict, optimizer):
    """The reverse for an optimizer: a whole state dict (from any checkpoint: FSDP, DDP, one
    process, nanoGPT) cut to this process's shards of the optimizer's FSDP parameters, for
    optimizer.load_state_dict. Every process holds the whole checkpoint, so no communication."""
    from torch.distributed.tensor import DTensor, distribute_tensor
    if isinstance(optimizer, MuonAdamW):
        return {name: shard_optimizer_state(state_dict[name], getattr(optimizer, name))
                for name in ('muon', 'adamw')}
    # in state_dict's numbering
    params = [p for group in optimizer.param_groups for p in group['params']]

    def shard(v, p):
        # a tensor of the parameter's shape (AdamW's moments) is cut as the parameter is
        if isinstance(p, DTensor) and torch.is_tensor(v) and v.shape == p.shape:
            return distribute_tensor(v.to(p.dtype), p.device_mesh, p.placements, src_data_rank=None)
        return v
    state = {i: {k: shard(v, params[i]) for k, v in param_state.items()}
             for i, param_state in state_dict['state'].items()}
    return {**state_dict, 'state': state}
