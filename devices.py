"""
Devices and precision: which device and dtype a script runs on (CPU, CUDA GPUs, Apple's MPS),
the autocast context for training, the dtype to cast weights to for generation, and the peak
FLOP/s of known GPUs for MFU.

    python -c "import devices; print(devices.setup_device('cpu', 'auto')[:3])"
"""

from contextlib import nullcontext

import torch

from errors import InputError

DTYPES = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}


def setup_device(device='auto', dtype='auto', local_rank=None, local_world_size=None):
    """Resolve 'auto' and check what was asked for. Returns (device, device_type, ptdtype, ctx):
    ctx is the autocast context for forward passes (a no-op in float32). local_rank: this
    process's index on its node under torchrun; on CUDA it picks (and makes current) GPU
    local_rank, or the only GPU a process sees (srun --gpus-per-task=1). local_world_size:
    torchrun's processes on this node (LOCAL_WORLD_SIZE), each of which needs a GPU of its own."""
    if device == 'auto':
        device = 'cpu'
        if torch.cuda.is_available():
            device = 'cuda'
        elif torch.backends.mps.is_available():
            device = 'mps'
    try:
        device_type = torch.device(device).type
    except RuntimeError:
        raise InputError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps")
    if device_type == 'cuda' and not torch.cuda.is_available():
        raise InputError(f"device {device!r} asked for, but this PyTorch sees no CUDA GPU; "
                         "use --device=cpu")
    if device_type == 'mps' and not torch.backends.mps.is_available():
        raise InputError(f"device {device!r} asked for, but MPS is not available here; "
                         "use --device=cpu")
    if device_type not in ('cpu', 'cuda', 'mps'):
        raise InputError(f"device {device!r} is not supported: use auto, cpu, cuda, cuda:N or mps")
    if device_type == 'cuda':
        if local_rank is not None:
            device = gpu_of_local_rank(device, local_rank, local_world_size)
        if torch.device(device).index is not None:
            # Before anything touches the GPU: otherwise every process opens a context on GPU 0.
            torch.cuda.set_device(device)
        # float32 matmuls on tensor cores (the MFU peak for float32 assumes TF32)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if dtype == 'auto':
        dtype = 'float32'
        if device_type == 'cuda':
            dtype = 'bfloat16' if cuda_has_bf16() else 'float16'
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}: use auto, float32, bfloat16 or float16")
    if dtype == 'bfloat16' and device_type == 'cuda' and not torch.cuda.is_bf16_supported():
        raise InputError("this GPU has no bfloat16; use --dtype=float16 (with loss scaling) "
                         "or float32")
    ptdtype = DTYPES[dtype]
    ctx = nullcontext()
    if ptdtype != torch.float32:
        ctx = torch.amp.autocast(device_type=device_type, dtype=ptdtype)
    return device, device_type, ptdtype, ctx


def gpu_of_local_rank(device, local_rank, local_world_size):
    """The GPU of a torchrun process: cuda:local_rank, or cuda:0 where each process sees one GPU
    (srun --gpus-per-task=1). Refused, before any process group starts: more processes on the
    node than GPUs (NCCL would find two on one GPU), or an index asked for by hand."""
    count = torch.cuda.device_count()
    if torch.device(device).index is not None:
        raise InputError(f"--device={device} under torchrun, where each process takes the GPU of "
                         "its local rank: use --device=cuda, and CUDA_VISIBLE_DEVICES to choose "
                         "the GPUs")
    too_many = local_world_size is not None and local_world_size > count
    if too_many or (count > 1 and local_rank >= count):
        of = f" of {local_world_size} processes on this node" if local_world_size else ""
        raise InputError(f"local rank {local_rank}{of}, but this process sees only {count} GPUs: "
                         f"start at most {count} processes per node, one per GPU "
                         f"(torchrun --nproc_per_node={count})")
    return f'cuda:{0 if count == 1 else local_rank}'


def cuda_has_bf16():
    """Whether the current GPU computes in bfloat16 natively (Ampere and newer). V100 and T4 only
    emulate it, slowly, and torch.cuda.is_bf16_supported() counts that unless told not to (the
    argument is new in torch 2.4)."""
    return torch.cuda.is_bf16_supported(including_emulation=False)


def inference_dtype(device_type, dtype='auto'):
    """The dtype to cast the weights to for generation (model.to(dtype)), instead of autocast,
    which casts every weight again at every step. 'auto' picks, per device, the fastest dtype
    that stays accurate (BENCHMARKS.md, Generation): generating one token reads every weight
    once, so fewer bytes per weight mean more tokens per second.
    - cuda: bfloat16 (float32's range, so nothing overflows), float16 where bfloat16 is not native.
    - cpu: bfloat16 where the CPU multiplies it natively (AVX512-BF16), else float32.
    - mps: float32."""
    if dtype != 'auto':
        # (setup_device has checked the name)
        return DTYPES[dtype]
    if device_type == 'cuda':
        return torch.bfloat16 if cuda_has_bf16() else torch.float16
    # (a private torch function)
    native_bf16 = getattr(torch.cpu, '_is_avx512_bf16_supported', lambda: False)
    if device_type == 'cpu' and native_bf16():
        return torch.bfloat16
    return torch.float32


# Dense peak TFLOP/s from the vendors' datasheets: (bf16/fp16 tensor cores, fp32 as TF32).
# Matched against torch.cuda.get_device_name() word for word (see peak_flops).
PEAK_TFLOPS = [
    ('H100 PCIe', 756, 378), ('H100 NVL', 835, 418), ('H100', 989, 495), ('H200 NVL', 835, 418),
    ('H200', 989, 495), ('GH200', 989, 495), ('B200', 2250, 1100), ('A100', 312, 156),
    ('L40S', 362, 183), ('L40', 181, 90.5), ('L4', 121, 60), ('A10G', 70, 35), ('A10', 125, 62.5),
    ('RTX 4090', 165, 83), ('RTX 3090 Ti', 80, 40), ('RTX 3090', 71, 36), ('V100', 125, 15.7),
    ('T4', 65, 8.1),
]
# cards whose tensor cores have float16 but no bfloat16 (it runs emulated, far below the peak)
NO_BF16 = ('V100', 'T4')


def peak_flops(device_name, dtype):
    """Peak FLOP/s of a GPU for a compute dtype, or None if the card is not in PEAK_TFLOPS. A
    table entry matches whole words of the name ('NVIDIA A100-SXM4-80GB' is an A100; 'NVIDIA
    L40S' is not an L40 and 'NVIDIA L40' is not an L4), the entry with the most words first
    ('NVIDIA H100 NVL' is not the SXM 'H100')."""
    words = device_name.replace('-', ' ').split()
    # a slice of a GPU (its share of the peak is not known here), or a laptop's chip of the same
    # name (slower, by how much depends on the laptop)
    if 'MIG' in words or 'Laptop' in words:
        return None
    for name, half, fp32 in sorted(PEAK_TFLOPS, key=lambda entry: -len(entry[0].split())):
        n = len(name.split())
        if any(words[i:i + n] == name.split() for i in range(len(words))):
            if dtype == torch.bfloat16 and name in NO_BF16:
                return None
            return (fp32 if dtype == torch.float32 else half) * 1e12
    return None


def device_peak_flops(device, dtype):
    """The peak of the GPU that device names (see peak_flops); None on a CPU or MPS."""
    if torch.device(device).type != 'cuda':
        return None
    return peak_flops(torch.cuda.get_device_name(device), dtype)
