"""
What train.py, sample.py, bench.py and the tests share that is not the model: the error a user's
input raises, atomic writing, checkpoint files, device and precision setup, the GPU peak table,
the Muon+AdamW pair and FSDP sharding. model.py is the GPT alone; data/ reads and writes datasets.

    python -c "import common; print(common.setup_device('cpu', 'auto')[:3])"

Library code raises InputError with the one line a user needs ("no checkpoint at out/ckpt.pt:
check --out_dir, ..."); the scripts print it as `error: ...` and exit with status 1, no traceback
(configurator.configure installs that). In a notebook it is an ordinary exception.
"""

import atexit
import json
import os
import random
import shutil
import sys
import uuid
import warnings
from contextlib import contextmanager, nullcontext

import numpy as np
import torch


class InputError(ValueError):
    """A bad input: a setting, a file, a model name. The message says what is wrong and what to do."""


# -----------------------------------------------------------------------------
# Writing files so that a crash at any moment leaves the old file or the new one, never half of one.

def temporary_name(path):
    """A name beside path for writing it before an atomic rename, unique to this run: two runs at
    once (two nodes on a shared filesystem) must not write into each other's temporary file."""
    return f"{path}.{uuid.uuid4().hex[:12]}.tmp"


@contextmanager
def atomic_write(path, unique=True):
    """with atomic_write(path) as tmp: write a file, or make a directory, at tmp. When the block
    ends, tmp is flushed to disk and renamed over path (a directory replaces the old one and its
    files); if the block fails, tmp is removed and path is left as it was. Several of these
    nested (contextlib.ExitStack) rename only once every one of them is complete. A write that the
    operating system refuses (a full disk, no permission) raises InputError. unique=False names
    tmp path.tmp, so that a writer killed mid-write leaves one stale file, which the next replaces."""
    tmp, old = temporary_name(path) if unique else path + '.tmp', None
    in_the_way = os.path.isdir(tmp)  # (not ours to remove)
    try:
        yield tmp
        if os.path.isfile(tmp):
            with open(tmp, 'rb+') as f:  # (writable: Windows syncs only such handles)
                os.fsync(f.fileno())
        if os.path.isdir(tmp) and os.path.isdir(path) and os.listdir(path):  # a full directory cannot be renamed over
            old = temporary_name(path)
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException as e:
        if old is not None and not os.path.exists(path):
            os.replace(old, path)
        if os.path.isfile(tmp):
            os.remove(tmp)
        elif os.path.isdir(tmp) and not in_the_way:
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise InputError(f"cannot write {e.filename or path} ({e.strerror}); check the free disk space, "
                             "or write elsewhere") from e
        raise
    if old is not None:
        shutil.rmtree(old)


# -----------------------------------------------------------------------------
# Checkpoints: out_dir/ckpt.pt, nanoGPT's keys (model, optimizer, model_args, iter_num,
# best_val_loss, config) plus what an exact resume needs (rng, scaler); and out_dir/metrics.jsonl.

def check_out_dir(out_dir):
    """Refuse an out_dir that cannot take a checkpoint (empty, a file, not writable) before any
    work is done. A missing one is not made here: its nearest existing parent must be writable."""
    if not out_dir:
        raise InputError("out_dir is empty: name the folder for the checkpoint, e.g. --out_dir=out")
    folder = os.path.abspath(out_dir)
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if folder != os.path.abspath(out_dir) and not os.path.isdir(folder):
        raise InputError(f"out_dir {out_dir} lies under {folder}, which is a file: choose another --out_dir")
    if not os.path.isdir(folder):
        raise InputError(f"out_dir {out_dir} is a file, not a folder: choose another --out_dir")
    probe = temporary_name(os.path.join(folder, 'write-test'))
    try:
        with open(probe, 'wb'):
            pass
        os.remove(probe)
    except OSError as e:
        raise InputError(f"cannot write in {folder} ({e.strerror}): choose another --out_dir, "
                         "or make it writable") from e


def save_checkpoint(checkpoint, path):
    with atomic_write(path, unique=False) as tmp, open(tmp, 'wb') as f:  # (a checkpoint has one writer: rank 0)
        torch.save(checkpoint, f)


def load_checkpoint(path):
    """Load a checkpoint dict written by save_checkpoint (or by nanoGPT) without unpickling code.
    Everything lands in CPU memory: the caller moves the model (and the optimizer's load_state_dict
    its state) to the device, RNG states must stay CPU tensors, and a GPU never holds two copies."""
    if not os.path.isfile(path):
        raise InputError(f"no checkpoint at {path}: check --out_dir, or train one first with train.py")
    try:
        with warnings.catch_warnings():  # a damaged file also makes torch warn; the one line below says it all
            warnings.simplefilter('ignore')
            # mmap: the file's pages are read as needed and shared by the processes of a node
            checkpoint = torch.load(path, map_location='cpu', weights_only=True, mmap=True)
    except Exception as e:
        raise InputError(f"{path} is not a readable checkpoint ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:120]}); restore a good copy or start again")
    missing = [k for k in ('model', 'model_args') if not isinstance(checkpoint, dict) or k not in checkpoint]
    if missing:
        raise InputError(f"{path} is not a training checkpoint (no {', '.join(missing)})")
    return checkpoint


def latest_checkpoint(out_dir):
    """The path of the checkpoint that --init_from=resume continues: out_dir/ckpt.pt, or
    out_dir/last.pt where a run that keeps only its best model (always_save_checkpoint=False) was
    stopped later than its best evaluation. None when out_dir holds neither."""
    paths = [os.path.join(out_dir, name) for name in ('ckpt.pt', 'last.pt')]
    present = [path for path in paths if os.path.isfile(path)]
    if not present:
        return None
    return max(present, key=lambda path: load_checkpoint(path).get('iter_num', 0))


def set_aside(paths):
    """Rename each existing file of paths to NAME.prev (NAME.prev2, NAME.prev3, ... where that is
    taken), one suffix for all of them, so that a new run never destroys an earlier one. Returns
    the new names."""
    present = [path for path in paths if os.path.exists(path)]
    n = 1
    while any(os.path.exists(f"{path}.prev{n if n > 1 else ''}") for path in present):
        n += 1
    moved = []
    for path in present:
        new = f"{path}.prev{n if n > 1 else ''}"
        os.replace(path, new)
        moved.append(new)
    return moved


def check_resume(checkpoint, path, **settings):
    """Refuse a resume that cannot continue the run: no optimizer state, or settings (block_size, optimizer,
    lora_rank, lora_alpha) other than the run's own. One line naming the setting to pass."""
    if not {'optimizer', 'iter_num', 'best_val_loss'} <= set(checkpoint):
        raise InputError(f"{path} has no optimizer state or iteration count to resume from; start a new run with another --out_dir")
    lora = checkpoint.get('lora') or dict(rank=0, alpha=settings['lora_alpha'])  # (alpha means nothing without LoRA)
    saved = dict(block_size=checkpoint['model_args']['block_size'], optimizer='muon' if 'muon' in checkpoint['optimizer'] else 'adamw',
                 lora_rank=lora['rank'], lora_alpha=lora['alpha'])
    for name, value in saved.items():
        if settings[name] != value:
            raise InputError(f"the checkpoint was trained with {name}={value!r}; resume with --{name}={value}, "
                             "or start a new run with another --out_dir")


def lora_state(model, rank, alpha, base):
    """A LoRA run's checkpoint entry 'lora', beside the merged weights: what an exact resume needs
    (the updates, and where the frozen base came from and in which dtype it was kept)."""
    adapters = {k: v for k, v in model.state_dict().items() if '.lora_' in k}
    frozen = model.transformer.h[0].attn.c_attn.weight.dtype
    return dict(rank=rank, alpha=alpha, base=base, adapters=adapters, frozen_dtype=str(frozen))


def load_lora(model, checkpoint, base):
    """Put a LoRA checkpoint's updates into model: its frozen base, loaded again, with add_lora's.
    The base must be the model the run started from: every weight as saved, and base + update
    equal to the saved merged weights (to float32 rounding; to 16-bit rounding where the run kept
    the base in another dtype than this one)."""
    lora = checkpoint['lora']
    model.load_state_dict(lora['adapters'], strict=False)
    state, merged = model.state_dict(), model.merged_state_dict()
    adapted = {k.rsplit('.', 1)[0] + '.weight' for k in lora['adapters']}
    same_dtype = lora.get('frozen_dtype') == str(model.transformer.h[0].attn.c_attn.weight.dtype)
    rtol = 1e-5 if same_dtype else 2 ** -7  # (bfloat16 keeps 8 bits of mantissa)

    def differs(k, v):
        if k in adapted:
            return not torch.allclose(merged[k], v.float(), rtol=rtol, atol=1e-7)
        return not (k in state and torch.equal(v, state[k]))
    changed = [k for k, v in checkpoint['model'].items() if differs(k, v)]
    if changed:
        raise InputError(f"{base} is not the model this LoRA run started from (its {changed[0]} differs "
                         "from the checkpoint's): put that model back, or start a new run with another "
                         "--out_dir")


def rng_state(device):
    """Every random number generator's state, as plain types and CPU tensors (weights_only loads it)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {'torch': torch.get_rng_state(), 'numpy': (kind, keys.tolist(), pos, has_gauss, gauss), 'python': random.getstate()}
    if torch.device(device).type == 'cuda':
        state['cuda'] = torch.cuda.get_rng_state(device)
    elif torch.device(device).type == 'mps':
        state['mps'] = torch.mps.get_rng_state()
    return state


def set_rng_state(state, device):
    torch.set_rng_state(state['torch'])
    kind, keys, pos, has_gauss, gauss = state['numpy']
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    random.setstate(state['python'])
    if 'cuda' in state and torch.device(device).type == 'cuda':
        torch.cuda.set_rng_state(state['cuda'], device)
    elif 'mps' in state and torch.device(device).type == 'mps':
        torch.mps.set_rng_state(state['mps'])


def trim_metrics(path, iter_num, evaluates_now):
    """For a run resumed at iter_num: drop from out_dir/metrics.jsonl what the run that died
    logged past its checkpoint, and the evaluation at iter_num if the resumed run evaluates there
    again, so that each step and evaluation appears once. Lines cut short by the crash go too."""
    kept = []
    for line in open(path):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict) or not isinstance(record.get('iter'), int):
            continue
        if record['iter'] < iter_num or (record['iter'] == iter_num and not ('val_loss' in record and evaluates_now)):
            kept.append(line)
    with atomic_write(path) as tmp, open(tmp, 'w') as f:
        f.writelines(kept)


# -----------------------------------------------------------------------------
# Device and precision.

DTYPES = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}


def setup_device(device='auto', dtype='auto', local_rank=None, local_world_size=None):
    """Resolve 'auto' and check what was asked for. Returns (device, device_type, ptdtype, ctx):
    ctx is the autocast context for forward passes (a no-op in float32). local_rank: this
    process's index on its node under torchrun; on CUDA it picks (and makes current) GPU
    local_rank, or the only GPU a process sees (srun --gpus-per-task=1). local_world_size:
    torchrun's processes on this node (LOCAL_WORLD_SIZE), which must each have a GPU of their own."""
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'mps' if torch.backends.mps.is_available() else 'cpu'
    try:
        device_type = torch.device(device).type
    except RuntimeError:
        raise InputError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps")
    if device_type == 'cuda' and not torch.cuda.is_available():
        raise InputError(f"device {device!r} asked for, but this PyTorch sees no CUDA GPU; use --device=cpu")
    if device_type == 'mps' and not torch.backends.mps.is_available():
        raise InputError(f"device {device!r} asked for, but MPS is not available here; use --device=cpu")
    if device_type not in ('cpu', 'cuda', 'mps'):
        raise InputError(f"device {device!r} is not supported: use auto, cpu, cuda, cuda:N or mps")
    if device_type == 'cuda':
        if local_rank is not None:
            count = torch.cuda.device_count()
            if torch.device(device).index is not None:
                raise InputError(f"--device={device} under torchrun, where each process takes the GPU of its "
                                 "local rank: use --device=cuda, and CUDA_VISIBLE_DEVICES to choose the GPUs")
            too_many = local_world_size is not None and local_world_size > count
            if too_many or (count > 1 and local_rank >= count):
                of = f" of {local_world_size} processes on this node" if local_world_size else ""
                raise InputError(f"local rank {local_rank}{of}, but this process sees only {count} GPUs: "
                                 f"start at most {count} processes per node, one per GPU "
                                 f"(torchrun --nproc_per_node={count})")
            device = f'cuda:{0 if count == 1 else local_rank}'  # one GPU visible: srun --gpus-per-task=1
        if torch.device(device).index is not None:
            # Before anything touches the GPU: otherwise every process opens a context on GPU 0.
            torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True  # float32 matmuls on tensor cores (the MFU peak
        torch.backends.cudnn.allow_tf32 = True  # for float32 assumes TF32)
    if dtype == 'auto':
        dtype = ('bfloat16' if cuda_has_bf16() else 'float16') if device_type == 'cuda' else 'float32'
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}: use auto, float32, bfloat16 or float16")
    if dtype == 'bfloat16' and device_type == 'cuda' and not torch.cuda.is_bf16_supported():
        raise InputError("this GPU has no bfloat16; use --dtype=float16 (with loss scaling) or float32")
    ptdtype = DTYPES[dtype]
    ctx = nullcontext() if ptdtype == torch.float32 else torch.amp.autocast(device_type=device_type, dtype=ptdtype)
    return device, device_type, ptdtype, ctx


def cuda_has_bf16():
    """Whether the current GPU computes in bfloat16 natively (Ampere and newer). V100 and T4 only
    emulate it, slowly, and torch.cuda.is_bf16_supported() counts that unless told not to."""
    return torch.cuda.is_bf16_supported(including_emulation=False)  # (the argument: torch >= 2.4)


def inference_dtype(device_type, dtype='auto'):
    """The dtype to cast the weights to for generation (model.to(dtype)), instead of autocast,
    which casts every weight again at every step. 'auto' picks, per device, the fastest dtype
    that stays accurate (BENCHMARKS.md, Generation): generating one token reads every weight once,
    so half the bytes can mean up to twice the tokens/s.
    - cuda: bfloat16 (float32's range, so nothing overflows), float16 where bfloat16 is not native.
    - cpu: bfloat16 where the CPU multiplies it natively (AVX512-BF16), else float32: on an Intel
      Xeon with it, bfloat16 was at least as fast as float32 and float16 the slowest.
    - mps: float32, not measured."""
    if dtype != 'auto':
        return DTYPES[dtype]  # setup_device has checked the name
    if device_type == 'cuda':
        return torch.bfloat16 if cuda_has_bf16() else torch.float16
    if device_type == 'cpu' and getattr(torch.cpu, '_is_avx512_bf16_supported', lambda: False)():  # (a private torch function)
        return torch.bfloat16
    return torch.float32


# Dense peak TFLOP/s from the vendors' datasheets: (bf16/fp16 tensor cores, fp32 as TF32).
# Matched against torch.cuda.get_device_name() word for word (see peak_flops).
PEAK_TFLOPS = [
    ('H100 PCIe', 756, 378), ('H100 NVL', 835, 418), ('H100', 989, 495), ('H200 NVL', 835, 418), ('H200', 989, 495),
    ('GH200', 989, 495), ('B200', 2250, 1100), ('A100', 312, 156), ('L40S', 362, 183),
    ('L40', 181, 90.5), ('L4', 121, 60), ('A10G', 70, 35), ('A10', 125, 62.5), ('RTX 4090', 165, 83),
    ('RTX 3090', 71, 36), ('V100', 125, 15.7), ('T4', 65, 8.1),
]


def peak_flops(device_name, dtype):
    """Peak FLOP/s of a GPU for a compute dtype, or None if the card is not in PEAK_TFLOPS. A
    table entry matches whole words of the name ('NVIDIA A100-SXM4-80GB' is an A100; 'NVIDIA
    L40S' is not an L40 and 'NVIDIA L40' is not an L4), the entry with the most words first
    ('NVIDIA H100 NVL' is not the SXM 'H100')."""
    words = device_name.replace('-', ' ').split()
    if 'MIG' in words:  # a slice of a GPU: its share of the peak is not known here
        return None
    for name, half, fp32 in sorted(PEAK_TFLOPS, key=lambda entry: -len(entry[0].split())):
        n = len(name.split())
        if any(words[i:i + n] == name.split() for i in range(len(words))):
            return (fp32 if dtype == torch.float32 else half) * 1e12
    return None


def device_peak_flops(device, dtype):
    """The peak of the GPU that device names (see peak_flops); None on a CPU or MPS."""
    return peak_flops(torch.cuda.get_device_name(device), dtype) if torch.device(device).type == 'cuda' else None


# -----------------------------------------------------------------------------
# Optimizers.

class MuonAdamW:
    """Two optimizers stepped as one: Muon for the blocks' matrices, AdamW for the rest
    (GPT.configure_optimizers). It has what train.py and GradScaler use of an optimizer:
    param_groups (both optimizers' groups, so one loop sets every lr), step, zero_grad,
    state_dict and load_state_dict. The state dict holds both states, {'muon': ..., 'adamw': ...}."""

    def __init__(self, matrices, adamw, lr, momentum, weight_decay):
        if not hasattr(torch.optim, 'Muon'):
            raise InputError(f"optimizer='muon' needs torch.optim.Muon, new in torch 2.9 (this is torch "
                             f"{torch.__version__}): upgrade torch, or use --optimizer=adamw")
        # torch.optim.Muon: SGD with Nesterov momentum whose update of each matrix is orthogonalised
        # (Newton-Schulz), its lr scaled by sqrt(max(1, rows / cols)), decoupled weight decay.
        # 'muon': True marks its group for train.py's schedule, which scales it to Muon's own peak lr.
        self.muon = torch.optim.Muon([{'params': matrices, 'muon': True}], lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.adamw = adamw
        self.param_groups = self.muon.param_groups + adamw.param_groups

    def step(self):
        self.muon.step()
        self.adamw.step()

    def zero_grad(self, set_to_none=True):
        self.muon.zero_grad(set_to_none=set_to_none)
        self.adamw.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return {'muon': self.muon.state_dict(), 'adamw': self.adamw.state_dict()}

    def load_state_dict(self, state_dict):
        self.muon.load_state_dict(state_dict['muon'])
        self.adamw.load_state_dict(state_dict['adamw'])
        # load_state_dict replaces the group dicts: point at the new ones
        self.param_groups = self.muon.param_groups + self.adamw.param_groups


# -----------------------------------------------------------------------------
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
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else MixedPrecisionPolicy()
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
    """The end of a distributed run that finished or stopped after its save: destroy the process group,
    run the exit handlers (wandb's among them), then end the process with status 0 without the
    interpreter's teardown. Never returns, and kills Python threads still running: nothing may be left
    in one. Why: gloo's worker threads outlive destroy_process_group, and one still letting go of a
    tensor as the interpreter tears itself down aborts the process (SIGABRT, "terminate called without
    an active exception"), so torchrun reports a good run as failed (1 tiny run in ~150, 2 busy CPUs)."""
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
        return {name: shard_optimizer_state(state_dict[name], getattr(optimizer, name)) for name in ('muon', 'adamw')}
    params = [p for group in optimizer.param_groups for p in group['params']]  # in state_dict's numbering
    state = {}
    for i, param_state in state_dict['state'].items():
        p = params[i]
        state[i] = {k: distribute_tensor(v.to(p.dtype), p.device_mesh, p.placements, src_data_rank=None)
                    if isinstance(p, DTensor) and torch.is_tensor(v) and v.shape == p.shape else v
                    for k, v in param_state.items()}
    return {**state_dict, 'state': state}


# -----------------------------------------------------------------------------
# Export (sample.py --export_hf).

# The files an export writes, in transformers' names: --overwrite=True replaces these in a folder
# and keeps everything else there (a checkpoint, metrics, notes).
EXPORT_FILES = ('config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json',
                'tokenizer_config.json', 'special_tokens_map.json', 'chat_template.jinja')


def save_hf_directory(model, path, tokenizer=None, dtype=torch.float32, overwrite=False):
    """Write path as a transformers GPT-2 directory: the model's weights and configs
    (GPT.save_pretrained) and, when given, its tokenizer (a transformers tokenizer,
    tokenizer.hf() of data.load_tokenizer), which GPT2LMHeadModel.from_pretrained, pipeline('text-generation') and
    GPT.from_pretrained read. All of it goes to a temporary directory first, so a failure leaves
    path as it was. A folder that is not empty takes the export only with overwrite=True, which
    replaces the export's own files there (EXPORT_FILES) and nothing else."""
    path = os.path.normpath(path)  # no trailing slash
    if os.path.exists(path) and not os.path.isdir(path):
        raise InputError(f"{path} is a file, not a directory: choose another --export_hf")
    present = os.listdir(path) if os.path.isdir(path) else []
    if present and not overwrite:
        raise InputError(f"{path} exists and is not empty: choose another directory, or --overwrite=True to "
                         "replace the export's own files there (config.json, model.safetensors, ...; "
                         "other files are kept)")
    tmp = temporary_name(path)
    try:
        os.makedirs(tmp)
        model.save_pretrained(tmp, dtype, tokenizer)  # (the weights and configs, for this tokenizer)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
            # transformers 5 names the class TokenizersBackend, which transformers 4 (still pinned by
            # other tools) does not know; both versions load PreTrainedTokenizerFast.
            with open(os.path.join(tmp, 'tokenizer_config.json')) as f:
                tokenizer_config = json.load(f)
            if tokenizer_config.get('tokenizer_class') == 'TokenizersBackend':
                tokenizer_config['tokenizer_class'] = 'PreTrainedTokenizerFast'
                with open(os.path.join(tmp, 'tokenizer_config.json'), 'w') as f:
                    json.dump(tokenizer_config, f, indent=2)
        # safetensors writes its file private (0o600): give every file the permissions of a file
        # made as usual, for sharing or uploading
        umask = os.umask(0)
        os.umask(umask)
        written = os.listdir(tmp)
        for name in written:
            os.chmod(os.path.join(tmp, name), 0o666 & ~umask)
        if not present:  # the whole folder at once
            os.replace(tmp, path)
        else:  # the export's files replace their namesakes; an earlier export's others go
            for name in written:
                os.replace(os.path.join(tmp, name), os.path.join(path, name))
            for name in set(EXPORT_FILES) & set(present) - set(written):
                os.remove(os.path.join(path, name))
    except OSError as e:
        raise InputError(f"cannot write {e.filename or path} ({e.strerror}); check the free disk space, "
                         "or export elsewhere") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    c, size = model.config, os.path.getsize(os.path.join(path, 'model.safetensors'))
    print(f"wrote {path}: GPT-2 format, {c.n_layer} layers, {c.n_head} heads, {c.n_embd} wide, context "
          f"{c.block_size} tokens (a prompt and its new tokens together), vocab {len(tokenizer) if tokenizer is not None else c.vocab_size}, "
          f"{str(dtype).removeprefix('torch.')} weights ({size / 1e6:.1f} MB){'' if tokenizer is not None else ', no tokenizer'}")
