"""model.py: shapes, init, weight tying, parity with transformers' GPT-2, cropping, optimizer
groups, MFU and checkpoint helpers."""

import math
import os

import pytest
import torch

import checkpoint
import devices
import model as M
from errors import InputError
from model import GPT, GPTConfig

TINY = dict(block_size=16, vocab_size=96, n_layer=2, n_head=4, n_embd=32)


def tiny(**kw):
    torch.manual_seed(0)
    return GPT(GPTConfig(**{**TINY, **kw}))


def test_output_shapes():
    m = tiny()
    idx = torch.randint(96, (3, 10))
    logits, loss = m(idx, idx)
    assert logits.shape == (3, 10, 96) and loss.shape == ()
    logits, loss = m(idx)
    assert logits.shape == (3, 1, 96) and loss is None
    # without targets, the one row returned is the last position's
    full, _ = m(idx, idx)
    torch.testing.assert_close(logits[:, 0], full[:, -1])


def test_too_long_sequence_is_an_error():
    m = tiny()
    with pytest.raises(ValueError, match='longer than block_size 16'):
        m(torch.zeros(1, 17, dtype=torch.long))


def test_loss_at_init_is_uniform():
    m = tiny(vocab_size=1000, n_embd=64)
    idx, targets = torch.randint(1000, (2, 8, 16))  # independent targets: with tied weights a
    _, loss = m(idx, targets)                         # token predicts itself a little at init
    assert abs(loss.item() - math.log(1000)) < 0.1


def test_ignore_index():
    m = tiny()
    idx = torch.randint(96, (2, 8))
    targets = idx.clone()
    targets[:, 4:] = -1
    logits, loss = m(idx, targets)
    expected = torch.nn.functional.cross_entropy(logits[:, :4].reshape(-1, 96),
                                                 idx[:, :4].reshape(-1))
    torch.testing.assert_close(loss, expected)


def test_weight_tying():
    m = tiny()
    assert m.lm_head.weight is m.transformer.wte.weight
    with torch.no_grad():
        m.lm_head.weight[0, 0] = 123.0
    assert m.transformer.wte.weight[0, 0] == 123.0


def test_gpt2_init():
    m = tiny(n_layer=8, n_embd=256, vocab_size=2048)
    std_proj = 0.02 / math.sqrt(2 * 8)
    assert abs(m.transformer.h[0].attn.c_proj.weight.std().item() - std_proj) < 0.1 * std_proj
    assert abs(m.transformer.h[0].mlp.c_fc.weight.std().item() - 0.02) < 0.002
    assert abs(m.transformer.wpe.weight.std().item() - 0.02) < 0.002
    assert m.transformer.h[0].attn.c_attn.bias.abs().max() == 0


def test_parameter_names_match_nanogpt():
    names = set(tiny().state_dict())
    for n in ['transformer.wte.weight', 'transformer.wpe.weight', 'transformer.h.1.ln_1.weight',
              'transformer.h.1.ln_1.bias', 'transformer.h.1.attn.c_attn.weight',
              'transformer.h.1.attn.c_proj.bias', 'transformer.h.1.ln_2.weight',
              'transformer.h.1.mlp.c_fc.weight', 'transformer.h.1.mlp.c_proj.weight',
              'transformer.ln_f.weight', 'lm_head.weight']:
        assert n in names
    assert len(names) == 2 + 2 * 12 + 2 + 1


def test_no_bias_option():
    m = tiny(bias=False)
    assert not any(n.endswith('.bias') for n in m.state_dict())


def test_plain_attention_matches_sdpa():
    m = tiny().eval()
    idx = torch.randint(96, (2, 16))
    fast, _ = m(idx, idx)
    M.CausalSelfAttention.use_sdpa = False
    try:
        slow, _ = m(idx, idx)
    finally:
        M.CausalSelfAttention.use_sdpa = True
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


def test_causality():
    m = tiny().eval()
    idx = torch.randint(96, (1, 12))
    a, _ = m(idx, idx)
    idx2 = idx.clone()
    idx2[0, 8:] = (idx2[0, 8:] + 1) % 96  # change only the future of position 7
    b, _ = m(idx2, idx2)
    torch.testing.assert_close(a[:, :8], b[:, :8])
    assert not torch.allclose(a[:, 8:], b[:, 8:])


@pytest.fixture(scope='module')
def hf_dir(tmp_path_factory):
    """A tiny random GPT-2 saved by transformers, with every bias and LayerNorm moved off its
    init value so that a transposed, missing or misplaced tensor changes the logits."""
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(1)
    cfg = GPT2Config(vocab_size=101, n_positions=24, n_embd=48, n_layer=3, n_head=4,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     initializer_range=0.1)  # large enough that GELU's exact form matters
    hf = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith('bias') or '.ln_' in name:
                p.add_(torch.randn_like(p) * 0.1)
    path = tmp_path_factory.mktemp('hf-gpt2')
    hf.save_pretrained(path)
    return str(path), hf


def test_logits_match_transformers_gpt2(hf_dir):
    path, hf = hf_dir
    ours = GPT.from_pretrained(path).eval()
    assert ours.config.vocab_size == 101 and ours.config.block_size == 24
    assert ours.config.n_layer == 3
    idx = torch.randint(101, (2, 24))
    with torch.no_grad():
        expected = hf(idx).logits
        logits, _ = ours(idx, idx)
    diff = (logits - expected).abs().max().item()
    assert diff < 1e-4, diff


def test_from_pretrained_overrides_only_dropout(hf_dir):
    path, _ = hf_dir
    assert GPT.from_pretrained(path, dict(dropout=0.1)).config.dropout == 0.1
    with pytest.raises(InputError, match='only override dropout'):
        GPT.from_pretrained(path, dict(n_layer=2))


def test_from_pretrained_bad_names(tmp_path):
    with pytest.raises(InputError, match="unknown model 'gpt3'"):
        GPT.from_pretrained('gpt3')
    with pytest.raises(InputError, match='is not a GPT-2 checkpoint'):
        GPT.from_pretrained(str(tmp_path))  # an empty directory
    (tmp_path / 'config.json').write_text('{"model_type": "llama"}')
    with pytest.raises(InputError, match="model_type='llama'"):
        GPT.from_pretrained(str(tmp_path))


def test_crop_block_size():
    m = tiny()
    wpe = m.transformer.wpe.weight[:8].detach().clone()
    m.crop_block_size(8)
    assert m.config.block_size == 8 and m.transformer.wpe.weight.shape == (8, 32)
    torch.testing.assert_close(m.transformer.wpe.weight, wpe)
    logits, _ = m(torch.zeros(1, 8, dtype=torch.long), torch.zeros(1, 8, dtype=torch.long))
    assert logits.shape == (1, 8, 96)
    with pytest.raises(ValueError):
        m(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(InputError):
        m.crop_block_size(9)


def test_num_params():
    m = tiny()
    total = sum(p.numel() for p in m.parameters())
    assert m.get_num_params(non_embedding=False) == total
    assert m.get_num_params() == total - 16 * 32


def test_optimizer_groups():
    m = tiny()
    opt = m.configure_optimizers(weight_decay=0.1, learning_rate=1e-3, betas=(0.9, 0.95),
                                 device_type='cpu')
    decay, no_decay = opt.param_groups
    assert decay['weight_decay'] == 0.1 and no_decay['weight_decay'] == 0.0
    assert all(p.dim() >= 2 for p in decay['params'])
    assert all(p.dim() < 2 for p in no_decay['params'])
    # every parameter exactly once (the tied embedding / lm_head counted once)
    ids = [id(p) for g in opt.param_groups for p in g['params']]
    assert len(ids) == len(set(ids)) == len(list(m.parameters()))
    assert opt.defaults['lr'] == 1e-3 and opt.defaults['betas'] == (0.9, 0.95)


def test_mfu_uses_the_device_peak():
    assert devices.peak_flops('NVIDIA A100-SXM4-80GB', torch.bfloat16) == 312e12
    assert devices.peak_flops('NVIDIA H100 80GB HBM3', torch.bfloat16) == 989e12
    assert devices.peak_flops('NVIDIA H100 PCIe', torch.float16) == 756e12
    assert devices.peak_flops('NVIDIA H200', torch.float32) == 495e12
    assert devices.peak_flops('NVIDIA L4', torch.bfloat16) == 121e12
    assert devices.peak_flops('Some Future GPU', torch.bfloat16) is None
    # whole words, the longest entry first: no card takes the peak of another whose name is inside
    # its own
    assert devices.peak_flops('NVIDIA L40', torch.bfloat16) == 181e12  # not the L4's
    assert devices.peak_flops('NVIDIA L40S', torch.bfloat16) == 362e12
    assert devices.peak_flops('NVIDIA H100 NVL', torch.bfloat16) == 835e12  # not the SXM's
    assert devices.peak_flops('NVIDIA A10', torch.bfloat16) == 125e12
    assert devices.peak_flops('NVIDIA A10G', torch.bfloat16) == 70e12
    assert devices.peak_flops('NVIDIA GH200 480GB', torch.bfloat16) == 989e12
    assert devices.peak_flops('Tesla V100-SXM2-16GB', torch.float32) == 15.7e12
    # not an A6000 'A10...' or 'RTX 4090'
    assert devices.peak_flops('NVIDIA RTX A6000', torch.bfloat16) is None
    assert devices.peak_flops('NVIDIA H200 NVL', torch.bfloat16) == 835e12
    # a seventh of an A100
    assert devices.peak_flops('NVIDIA A100-SXM4-40GB MIG 1g.5gb', torch.bfloat16) is None
    m = tiny()
    assert m.estimate_mfu(4, 0.1) is None  # a CPU has no honest peak
    # flops per iteration: 6N + 12 L H Q T per token, T tokens per sequence
    N = m.get_num_params()
    assert m.flops_per_iter(4) == (6 * N + 12 * 2 * 4 * 8 * 16) * 16 * 4


def test_setup_device_errors():
    device, device_type, ptdtype, _ = devices.setup_device('cpu', 'auto')
    assert (device, device_type, ptdtype) == ('cpu', 'cpu', torch.float32)
    for bad in ['tpu', 'gpu:0', 'banana']:
        with pytest.raises(InputError, match='device'):
            devices.setup_device(bad, 'auto')
    with pytest.raises(InputError, match="unknown dtype 'fp8'"):
        devices.setup_device('cpu', 'fp8')
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match='no CUDA GPU'):
            devices.setup_device('cuda', 'auto')


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch.cuda as a machine with GPUs would answer, recording the calls: (names, bf16 native)."""
    gpus = {'count': 4, 'native_bf16': True, 'calls': []}

    def is_bf16_supported(including_emulation=True):
        gpus['calls'].append('is_bf16_supported')
        return gpus['native_bf16'] or including_emulation  # V100/T4: emulated only

    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: gpus['count'])
    monkeypatch.setattr(torch.cuda, 'set_device', lambda d: gpus['calls'].append(f'set_device {d}'))
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', is_bf16_supported)
    # The TF32 flags are properties of torch's backend modules, not attributes that monkeypatch can
    # put back (pytest 9.2 cannot): saved and restored here by hand.
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield gpus
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


@pytest.mark.filterwarnings('ignore:User provided device_type')  # autocast for CUDA on a CPU build
def test_setup_device_picks_the_gpu_then_the_dtype(fake_cuda):
    # torchrun: local rank 3 of a node whose processes each see 4 GPUs -> GPU 3, made current
    # before anything asks the GPU a question (else every process opens a context on GPU 0)
    device, device_type, ptdtype, _ = devices.setup_device('auto', 'auto', local_rank=3)
    assert (device, device_type, ptdtype) == ('cuda:3', 'cuda', torch.bfloat16)
    assert fake_cuda['calls'][0] == 'set_device cuda:3'
    assert 'is_bf16_supported' in fake_cuda['calls']
    with pytest.raises(InputError, match='local rank 5, but this process sees only 4 GPUs'):
        # two processes on one GPU: NCCL would refuse it later
        devices.setup_device('cuda', 'auto', local_rank=5)
    with pytest.raises(InputError, match='under torchrun'):
        devices.setup_device('cuda:2', 'auto', local_rank=0)
    # the MFU peak assumes TF32
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    # srun --gpus-per-task=1: each process sees one GPU, whatever its local rank
    fake_cuda['count'] = 1
    assert devices.setup_device('cuda', 'auto', local_rank=3)[0] == 'cuda:0'
    # one process, no index: no set_device (it needs one), the current GPU stays
    fake_cuda['calls'].clear()
    assert devices.setup_device('cuda', 'float32')[0] == 'cuda' and fake_cuda['calls'] == []
    # a V100 or T4 emulates bfloat16: 'auto' takes float16 (with loss scaling) there
    fake_cuda['native_bf16'] = False
    assert devices.setup_device('cuda:0', 'auto')[2] == torch.float16
    # asked for explicitly: allowed
    assert devices.setup_device('cuda:0', 'bfloat16')[2] == torch.bfloat16


def test_checkpoint_roundtrip_and_nanogpt_prefix(tmp_path):
    m = tiny()
    path = str(tmp_path / 'ckpt.pt')
    # nanoGPT saves compiled models with an '_orig_mod.' prefix on every key
    sd = {'_orig_mod.' + k: v for k, v in m.state_dict().items()}
    checkpoint.save_checkpoint({'model': sd, 'model_args': dict(TINY, bias=True, dropout=0.0),
                                'iter_num': 3}, path)
    assert not os.path.exists(path + '.tmp')
    ckpt = checkpoint.load_checkpoint(path)
    m2 = GPT.from_checkpoint(ckpt)
    for k, v in m.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k])


def test_checkpoint_with_nan_weights_is_refused():
    m = tiny()
    for name in ['transformer.h.1.mlp.c_fc.weight', 'lm_head.weight']:
        sd = {k: v.clone() for k, v in m.state_dict().items()}
        sd[name][3, 2] = float('nan') if name.startswith('lm') else float('inf')
        reported = name.replace('lm_head', 'transformer.wte')
        with pytest.raises(InputError, match=f"{reported} holds NaN or inf"):
            GPT.from_checkpoint({'model': sd, 'model_args': dict(TINY, bias=True, dropout=0.0)})


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(InputError, match='no checkpoint at'):
        checkpoint.load_checkpoint(str(tmp_path / 'missing.pt'))
    bad = tmp_path / 'bad.pt'
    bad.write_bytes(b'not a checkpoint at all')
    with pytest.raises(InputError, match='not a readable checkpoint'):
        checkpoint.load_checkpoint(str(bad))
    # a truncated real checkpoint
    good = tmp_path / 'good.pt'
    checkpoint.save_checkpoint({'model': tiny().state_dict(), 'model_args': TINY}, str(good))
    bad.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(InputError, match='not a readable checkpoint'):
        checkpoint.load_checkpoint(str(bad))
    torch.save({'weights': 1}, str(bad))
    with pytest.raises(InputError, match='not a training checkpoint'):
        checkpoint.load_checkpoint(str(bad))


def test_checkpoint_cannot_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ('touch ' + str(tmp_path / 'pwned'),))
    path = str(tmp_path / 'evil.pt')
    torch.save({'model': {}, 'model_args': {}, 'x': Evil()}, path)
    with pytest.raises(InputError):
        checkpoint.load_checkpoint(path)
    assert not (tmp_path / 'pwned').exists()


def test_bad_head_count():
    with pytest.raises(InputError, match='not divisible by n_head'):
        GPTConfig(n_embd=100, n_head=3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_cuda_mixed_precision_step_learns():
    device, device_type, ptdtype, ctx = devices.setup_device('cuda', 'auto')
    m = tiny().to(device)
    opt = m.configure_optimizers(0.1, 1e-2, (0.9, 0.95), device_type)
    assert opt.defaults.get('fused')  # the fused AdamW kernel on CUDA
    scaler = torch.amp.GradScaler(device_type, enabled=ptdtype == torch.float16)
    idx = torch.randint(96, (4, 16), device=device)
    losses = []
    for _ in range(20):
        with ctx:
            _, loss = m(idx, idx)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]


def test_save_checkpoint_is_atomic(tmp_path, monkeypatch):
    # a save that dies half-way (a crash, a full disk) must leave the previous checkpoint whole
    path = str(tmp_path / 'ckpt.pt')
    checkpoint.save_checkpoint({'model': tiny().state_dict(), 'model_args': TINY, 'iter_num': 1},
                               path)
    before = open(path, 'rb').read()
    real_save = torch.save

    def dies_half_way(obj, f):
        real_save(obj, f)
        f.truncate(len(before) // 2)
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(torch, 'save', dies_half_way)
    # one line for the script
    with pytest.raises(InputError, match=r'cannot write .*ckpt.pt \(No space left on device\)'):
        checkpoint.save_checkpoint({'model': tiny(n_embd=64).state_dict(), 'model_args': TINY,
                                    'iter_num': 2}, path)
    # and no half-written file beside it
    assert open(path, 'rb').read() == before and os.listdir(tmp_path) == ['ckpt.pt']
    assert checkpoint.load_checkpoint(path)['iter_num'] == 1


@pytest.mark.parametrize('change', [dict(activation_function='relu'), dict(n_inner=40),
                                    dict(layer_norm_epsilon=1e-6), dict(tie_word_embeddings=False)])
def test_from_pretrained_refuses_gpt2_variants(tmp_path, change):
    from transformers import GPT2Config, GPT2LMHeadModel
    config = GPT2Config(vocab_size=50, n_positions=8, n_embd=16, n_layer=1, n_head=2, **change)
    GPT2LMHeadModel(config).save_pretrained(tmp_path)
    with pytest.raises(InputError, match='GPT-2 variant this model does not implement'):
        GPT.from_pretrained(str(tmp_path))


def test_a_checkpoint_never_replaces_a_directory(tmp_path):
    # a folder where the checkpoint goes (a mistyped --out_dir, say) is refused and left as it was
    (tmp_path / 'ckpt.pt' / 'sub').mkdir(parents=True)
    (tmp_path / 'ckpt.pt' / 'sub' / 'precious').write_text('keep me')
    with pytest.raises(InputError, match=r'cannot write .*ckpt.pt'):
        checkpoint.save_checkpoint({'model': tiny().state_dict(), 'model_args': TINY,
                                    'iter_num': 1}, str(tmp_path / 'ckpt.pt'))
    assert (tmp_path / 'ckpt.pt' / 'sub' / 'precious').read_text() == 'keep me'
    assert sorted(os.listdir(tmp_path)) == ['ckpt.pt']
