"""What a CPU can check of the GPU paths, with torch.cuda answering as a machine with GPUs would:
which GPU each torchrun process takes, the peak FLOP/s behind MFU per card, the fused AdamW
kernel on CUDA only, and the dtype and autocast chosen per device. tests/test_model.py and
tests/test_nothing_lost.py check the rest of devices.py (ranks beyond the GPUs, V100's float16,
more peak-table names); tests/test_gpu.py runs these paths on a real GPU.

    python -m pytest -q tests/test_devices.py
"""

from contextlib import nullcontext

import pytest
import torch

import devices
from errors import InputError
from model import GPT, GPTConfig
from muon import configure_muon
from test_model import fake_cuda  # noqa: F401 (a fixture)

# (the autocast context for CUDA, made on a machine without it)
pytestmark = pytest.mark.filterwarnings('ignore:User provided device_type')


def test_each_process_of_a_full_node_takes_its_own_gpu(fake_cuda):
    # torchrun --nproc_per_node=8 on 8 GPUs: rank r on GPU r, made current before anything else
    fake_cuda['count'] = 8
    for rank in range(8):
        fake_cuda['calls'].clear()
        device = devices.setup_device('cuda', 'auto', local_rank=rank, local_world_size=8)[0]
        assert device == f'cuda:{rank}' and fake_cuda['calls'][0] == f'set_device cuda:{rank}'
    # one process too many: refused in every process (rank 0 too), with the count that fits
    with pytest.raises(InputError, match=r'start at most 8 processes per node, one per GPU '
                                         r'\(torchrun --nproc_per_node=8\)'):
        devices.gpu_of_local_rank('cuda', 0, 9)


def test_peak_flops_per_card():
    tera = 1e12
    # H100 SXM and PCIe differ, in both dtypes; float16 has bfloat16's peak; float32 is TF32's
    cards = [('NVIDIA H100 80GB HBM3', 989, 495), ('NVIDIA H100 PCIe', 756, 378),
             ('NVIDIA A100-SXM4-40GB', 312, 156), ('NVIDIA A100 80GB PCIe', 312, 156),
             ('NVIDIA GeForce RTX 4090', 165, 83)]
    for name, half, fp32 in cards:
        assert devices.peak_flops(name, torch.bfloat16) == half * tera, name
        assert devices.peak_flops(name, torch.float16) == half * tera, name
        assert devices.peak_flops(name, torch.float32) == fp32 * tera, name
    # a card not in the table, and a MIG slice of one that is: no peak, so no MFU
    assert devices.peak_flops('NVIDIA GeForce RTX 3060', torch.bfloat16) is None
    assert devices.peak_flops('NVIDIA H100 80GB HBM3 MIG 1g.10gb', torch.bfloat16) is None
    # a laptop's chip of a desktop card's name is slower: no peak either
    assert devices.peak_flops('NVIDIA GeForce RTX 4090 Laptop GPU', torch.bfloat16) is None
    # the Ti is not the plain 3090
    assert devices.peak_flops('NVIDIA GeForce RTX 3090 Ti', torch.float16) == 80 * tera
    assert devices.peak_flops('NVIDIA GeForce RTX 3090', torch.float16) == 71 * tera
    # tensor cores without bfloat16: a float16 peak, none for bfloat16
    assert devices.peak_flops('Tesla V100-SXM2-16GB', torch.float16) == 125 * tera
    assert devices.peak_flops('Tesla V100-SXM2-16GB', torch.bfloat16) is None
    assert devices.peak_flops('Tesla T4', torch.bfloat16) is None


def test_device_peak_flops_asks_the_gpu_it_names(monkeypatch):
    names = {0: 'NVIDIA A100-SXM4-80GB', 1: 'NVIDIA H100 80GB HBM3'}
    asked = []

    def get_device_name(device=None):
        asked.append(device)
        return names[torch.device(device).index]
    monkeypatch.setattr(torch.cuda, 'get_device_name', get_device_name)
    assert devices.device_peak_flops('cuda:1', torch.bfloat16) == 989e12
    assert devices.device_peak_flops('cuda:0', torch.float32) == 156e12
    assert asked == ['cuda:1', 'cuda:0']
    # no honest peak for a CPU or MPS; their names are not asked
    assert devices.device_peak_flops('cpu', torch.float32) is None
    assert devices.device_peak_flops('mps', torch.float32) is None
    assert len(asked) == 2


def test_fused_adamw_on_cuda_only():
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=11))
    for device_type in ('cuda', 'cpu', 'mps'):
        opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), device_type)
        assert bool(opt.defaults.get('fused')) == (device_type == 'cuda'), device_type
    # the same choice for the parameters train.py passes with LoRA and Muon's AdamW half
    trained = [p for p in model.parameters() if p.dim() < 2]
    assert model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cuda', trained).defaults['fused']
    if hasattr(torch.optim, 'Muon'):
        muon = dict(lr=0.02, momentum=0.95, weight_decay=0.0)
        for device_type in ('cuda', 'cpu'):
            opt = configure_muon(model, 0.1, 1e-3, (0.9, 0.95), device_type, muon)
            assert bool(opt.adamw.defaults.get('fused')) == (device_type == 'cuda')


def test_dtype_and_autocast_per_card(fake_cuda, monkeypatch):
    # Ampere and newer: bfloat16 autocast on CUDA
    _, device_type, ptdtype, ctx = devices.setup_device('cuda', 'auto')
    assert (device_type, ptdtype) == ('cuda', torch.bfloat16)
    assert (ctx.device, ctx.fast_dtype) == ('cuda', torch.bfloat16)
    # V100, T4 (bfloat16 emulated only): float16 autocast, which train.py scales
    fake_cuda['native_bf16'] = False
    _, _, ptdtype, ctx = devices.setup_device('cuda', 'auto')
    assert ptdtype == torch.float16 and ctx.fast_dtype == torch.float16
    # a card without any bfloat16 (Pascal): float16, and bfloat16 asked for is refused
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda including_emulation=True: False)
    assert devices.setup_device('cuda', 'auto')[2] == torch.float16
    with pytest.raises(InputError, match='this GPU has no bfloat16; use --dtype=float16'):
        devices.setup_device('cuda', 'bfloat16')
    # float32 asked for on a GPU: no autocast
    _, _, ptdtype, ctx = devices.setup_device('cuda', 'float32')
    assert ptdtype == torch.float32 and isinstance(ctx, nullcontext)
    # no GPU: MPS, then the CPU, both float32 without autocast
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setattr(torch.backends.mps, 'is_available', lambda: True)
    device, _, ptdtype, ctx = devices.setup_device('auto', 'auto')
    assert (device, ptdtype) == ('mps', torch.float32) and isinstance(ctx, nullcontext)
    monkeypatch.setattr(torch.backends.mps, 'is_available', lambda: False)
    device, _, ptdtype, ctx = devices.setup_device('auto', 'auto')
    assert (device, ptdtype) == ('cpu', torch.float32) and isinstance(ctx, nullcontext)
