"""What only a CUDA GPU can check, each fast path against a simple reference: compiled bfloat16
training through train.py (the loss falls, a resume continues, the first step equals eager's, no
recompile per step), float16 loss scaling (an overflow skips its step, a resume restores the
scale), KV-cache generation against recomputation, SDPA's fused kernels, DDP and FSDP over NCCL,
README's memory table and bench.py's MFU. Random weights and a made-up dataset: no download. On a
machine without CUDA every test is skipped. All of it (meant to take under 5 minutes on one
H100; not timed yet):

    python3 -m pytest -q -rs tests/test_gpu.py

On one GPU, DDP and FSDP run as a world of one process (NCCL's start-up, its collectives and
the gathered checkpoint, but no traffic between ranks); the comparison of DDP over several GPUs
with one runs where there are 2 or more.

What the tests measure (step times, peak memory, MFU, ...) is written at the end, with the card,
torch and CUDA versions and the date, to $GPU_FIGURES (default: gpu_figures.md here), for
BENCHMARKS.md.
"""

import datetime
import gc
import json
import math
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from checkpoint import load_checkpoint, save_checkpoint
from conftest import char_dataset
from devices import cuda_has_bf16, setup_device
from lora import add_lora
from model import GPT, GPTConfig, KVCache
from test_generate import BLOCK, CASES, chaotic_model, reference_generate

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# train.py's settings for a tiny model; each test adds its own
TINY = ['--device=cuda', '--n_layer=2', '--n_head=4', '--n_embd=128', '--block_size=64',
        '--eval_iters=5', '--log_interval=1']


@pytest.fixture(scope='session')
def figures():
    """record(name, value, unit): a figure a test measured. At the end of the session they are
    written as a markdown table, with the card, torch and CUDA versions and the date, to
    $GPU_FIGURES (default gpu_figures.md in the current directory)."""
    rows = []
    yield lambda name, value, unit: rows.append((name, value, unit))
    if not rows:
        return
    path = os.environ.get('GPU_FIGURES', 'gpu_figures.md')
    now = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
    lines = ['# GPU figures from tests/test_gpu.py', '',
             f'- card: {torch.cuda.get_device_name()} ({torch.cuda.device_count()} GPU(s) seen)',
             f'- torch {torch.__version__}, CUDA {torch.version.cuda}',
             f'- date: {now}',
             '- command: python3 -m pytest -q -rs tests/test_gpu.py', '',
             '| figure | value | unit |', '| --- | --- | --- |']
    for name, value, unit in rows:
        lines.append(f'| {name} | {shown(value)} | {unit} |')
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')


def shown(value):
    """A figure as the table shows it: whole from 1,000 on, else 4 significant digits."""
    if isinstance(value, int):
        return f'{value:,}'
    return f'{value:,.0f}' if abs(value) >= 1000 else f'{value:.4g}'


@pytest.fixture(scope='module')
def words_data(tmp_path_factory):
    """A character dataset made here: 60,000 words drawn at random from 12, so that a tiny model
    learns (the spelling, the spaces) within tens of steps: loss ln(16) = 2.8 at start, ~0.7 at
    best (ln 12 per word of 3.7 characters)."""
    rng = np.random.default_rng(0)
    words = 'the a cat dog sat ran on in mat bed red big'.split()
    text = ' '.join(rng.choice(words, 60_000)) + '\n'
    return char_dataset(tmp_path_factory.mktemp('words'), text)


def run(args, env=None, timeout=300):
    """python args (a script and its settings) as a process of its own, from the repository root;
    its CompletedProcess, checked to have succeeded."""
    r = subprocess.run([sys.executable, *args], cwd=ROOT, env=dict(os.environ, **(env or {})),
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r


def train(data, out, *args, env=None, timeout=300):
    return run(['train.py', *TINY, f'--dataset={data}', f'--out_dir={out}', *args], env, timeout)


def torchrun(nproc, data, out, *args, timeout=300):
    """train.py under torchrun --standalone --nproc_per_node=nproc."""
    return run(['-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={nproc}',
                'train.py', *TINY, f'--dataset={data}', f'--out_dir={out}', *args],
               {'OMP_NUM_THREADS': '1'}, timeout)


def steps(out):
    """train.py's log lines: {iter: (loss, grad norm, ms or None for the untimed first step)}."""
    found = {}
    for line in out.splitlines():
        m = re.match(r'iter (\d+): loss ([^,]+), lr [^,]+, norm ([^,]+), (.*)', line)
        if m:
            ms = re.match(r'([\d.]+) ms, ', m[4])
            found[int(m[1])] = (float(m[2]), float(m[3]), float(ms[1]) if ms else None)
    return found


def evals(out):
    """train.py's evaluation lines: {iter: (train loss, val loss)}."""
    found = {}
    for line in out.splitlines():
        m = re.match(r'eval iter (\d+): train loss ([^,]+), val loss ([^,]+)', line)
        if m:
            found[int(m[1])] = (float(m[2]), float(m[3]))
    return found


def median_ms(log):
    times = sorted(ms for _, _, ms in log.values() if ms is not None)
    return times[len(times) // 2]


def difference(a, b):
    """Every weight's absolute difference between two checkpoints' models, in one flat tensor."""
    return torch.cat([(a['model'][k].float() - b['model'][k].float()).abs().flatten()
                      for k in a['model']])


# -----------------------------------------------------------------------------------------------
# train.py on the GPU, each run a process of its own

def test_compiled_bfloat16_training_learns_resumes_and_matches_eager(words_data, tmp_path,
                                                                     figures):
    common = ['--dtype=bfloat16', '--batch_size=16', '--gradient_accumulation_steps=1',
              '--warmup_iters=5', '--lr_decay_iters=100', '--learning_rate=1e-2', '--min_lr=1e-3',
              '--eval_interval=30']
    # TORCH_LOGS=recompiles: one stderr line 'Recompiling function ...' per recompilation
    env = {'TORCH_LOGS': 'recompiles'}
    out = tmp_path / 'compiled'
    first = train(words_data, out, *common, '--compile=True', '--max_iters=60', env=env)
    assert 'compiling the model' in first.stdout and '1 process(es) on cuda' in first.stdout
    log, evaluated = steps(first.stdout), evals(first.stdout)
    assert sorted(log) == list(range(1, 61)) and sorted(evaluated) == [0, 30, 60]
    # ln(16) at start; the words' spelling learnt
    assert evaluated[0][1] > 2.5 and evaluated[60][1] < 1.6, first.stdout[-3000:]
    assert all(math.isfinite(loss) and math.isfinite(norm) for loss, norm, _ in log.values())
    # A graph for training and one for evaluation (no_grad): not one per step. The count is of
    # the whole run, 60 steps and 3 evaluations.
    recompiles = first.stderr.count('Recompiling function')
    assert recompiles <= 3, first.stderr[-3000:]

    # a resumed run continues at the saved iteration, from the same weights
    resumed = train(words_data, out, *common, '--compile=True', '--max_iters=80',
                    '--init_from=resume', env=env)
    assert f"resuming from {out / 'ckpt.pt'} at iter 60" in resumed.stdout
    assert sorted(steps(resumed.stdout)) == list(range(61, 81))
    again = evals(resumed.stdout)
    # the same weights on the same evaluation batches
    assert abs(again[60][1] - evaluated[60][1]) < 1e-2, (again, evaluated)
    assert again[80][1] < evaluated[30][1]
    assert load_checkpoint(str(out / 'ckpt.pt'))['iter_num'] == 80
    assert resumed.stderr.count('Recompiling function') <= 3, resumed.stderr[-3000:]

    # eager, the same first step: the same loss and gradient norm within bfloat16's rounding
    eager = train(words_data, tmp_path / 'eager', *common, '--compile=False', '--max_iters=1')
    assert 'compiling' not in eager.stdout
    (loss, norm, _), (eager_loss, eager_norm, _) = log[1], steps(eager.stdout)[1]
    assert abs(loss - eager_loss) < 2e-2, (loss, eager_loss)
    assert abs(norm - eager_norm) < 0.05 * eager_norm, (norm, eager_norm)
    assert abs(evals(eager.stdout)[0][1] - evaluated[0][1]) < 2e-2

    figures('train.py compiled, bfloat16, tiny model: median step', median_ms(log), 'ms')
    figures('recompiles in a compiled run of 60 steps and 3 evaluations', recompiles, 'count')
    figures('first-step loss, compiled minus eager (bfloat16)', loss - eager_loss, 'nats')


def test_float16_overflow_skips_its_step_and_resume_restores_the_scale(words_data, tmp_path,
                                                                       figures):
    common = ['--dtype=float16', '--compile=False', '--batch_size=16',
              '--gradient_accumulation_steps=1', '--decay_lr=False', '--learning_rate=1e-3',
              '--dropout=0.1', '--eval_interval=30']
    train(words_data, tmp_path / 'base', *common, '--max_iters=4')
    ckpt = load_checkpoint(str(tmp_path / 'base' / 'ckpt.pt'))
    steps_before = int(ckpt['optimizer']['state'][0]['step'].item())
    # A loss scale far too large: the gradients overflow float16 until the scaler has halved it
    # enough. 3 x 2^30, so that no number of halvings lands on the scaler's default (2^16): a
    # resume that started a fresh scaler would show.
    start_scale = 3.0 * 2 ** 30
    ckpt['scaler']['scale'] = start_scale
    for name in ('straight', 'split', 'short'):
        os.makedirs(tmp_path / name)
        save_checkpoint(ckpt, str(tmp_path / name / 'ckpt.pt'))

    straight = train(words_data, tmp_path / 'straight', *common, '--max_iters=64',
                     '--init_from=resume')
    log = steps(straight.stdout)
    assert sorted(log) == list(range(5, 65))
    assert all(math.isfinite(loss) for loss, _, _ in log.values())
    # a skipped step: an inf or nan gradient norm; the run goes on
    skipped = [i for i, (_, norm, _) in log.items() if not math.isfinite(norm)]
    assert skipped and skipped[0] == 5, straight.stdout[-3000:]
    assert len(skipped) <= 40 and log[64][0] < log[5][0] - 0.2, straight.stdout[-3000:]
    end = load_checkpoint(str(tmp_path / 'straight' / 'ckpt.pt'))
    # each skip halves the scale (it grows only after 2000 good steps) and leaves AdamW's step
    # count as it was
    assert end['scaler']['scale'] == start_scale / 2 ** len(skipped)
    assert end['optimizer']['state'][0]['step'].item() == steps_before + 60 - len(skipped)

    # stopped at 34 and resumed: the scale carries over, and the weights are the unbroken run's
    train(words_data, tmp_path / 'split', *common, '--max_iters=34', '--init_from=resume')
    middle = load_checkpoint(str(tmp_path / 'split' / 'ckpt.pt'))
    assert middle['scaler']['scale'] == start_scale / 2 ** len([i for i in skipped if i <= 34])
    train(words_data, tmp_path / 'split', *common, '--max_iters=64', '--init_from=resume')
    split = load_checkpoint(str(tmp_path / 'split' / 'ckpt.pt'))
    assert split['iter_num'] == end['iter_num'] == 64
    assert split['scaler'] == end['scaler']
    assert split['optimizer']['state'][0]['step'] == end['optimizer']['state'][0]['step']
    # GPU kernels need not add in the same order twice (flash attention's backward): the weights
    # are compared to one step's change, that of the unbroken run stopped at 63
    # (a skipped last step would change nothing to compare with)
    assert math.isfinite(log[64][1]), 'step 64 was skipped: no step to compare with'
    train(words_data, tmp_path / 'short', *common, '--max_iters=63', '--init_from=resume')
    one_step = difference(end, load_checkpoint(str(tmp_path / 'short' / 'ckpt.pt')))
    resume_error = difference(end, split)
    assert resume_error.mean() < 0.1 * one_step.mean(), (resume_error.mean(), one_step.mean())
    assert resume_error.max() <= one_step.max()

    figures('float16: steps skipped from a loss scale of 3 x 2^30', len(skipped), 'steps')
    figures('float16 resume at 34 of 64: mean weight difference from the unbroken run, over '
            "one step's change", (resume_error.mean() / one_step.mean()).item(), 'ratio')


def test_ddp_and_fsdp_over_nccl_agree_and_resume_on_another_process_count(words_data, tmp_path,
                                                                          figures):
    n = torch.cuda.device_count()
    # the same global batch on any process count: 2 micro-steps per process
    common = ['--dtype=bfloat16', '--compile=False', '--backend=nccl', '--batch_size=8',
              f'--gradient_accumulation_steps={2 * n}', '--warmup_iters=2',
              '--lr_decay_iters=100', '--learning_rate=1e-3', '--min_lr=1e-4', '--eval_interval=6']
    ddp = torchrun(n, words_data, tmp_path / 'ddp', *common, '--max_iters=6')
    assert f'{n} process(es) on cuda:0' in ddp.stdout
    fsdp = torchrun(n, words_data, tmp_path / 'fsdp', *common, '--max_iters=6', '--fsdp=True')
    share = re.search(r'fsdp: each process holds ([\d.]+)%', fsdp.stdout)
    assert share and abs(float(share[1]) - 100 / n) < 1, fsdp.stdout[-2000:]
    # FSDP runs the residual stream in bfloat16 (distributed.shard_model), DDP in float32: the
    # same losses within that rounding, while training moves them by far more
    a, b = steps(ddp.stdout), steps(fsdp.stdout)
    assert sorted(a) == sorted(b) == list(range(1, 7))
    fsdp_gap = max(abs(a[i][0] - b[i][0]) for i in a)
    assert fsdp_gap < 0.05, (a, b)
    assert a[1][0] - a[6][0] > 0.5, a
    assert abs(evals(ddp.stdout)[6][1] - evals(fsdp.stdout)[6][1]) < 0.05

    # The DDP checkpoint resumed by the same number of processes (the reference) and by one
    # process without torchrun; the FSDP one by one process too, unsharded.
    shutil.copytree(tmp_path / 'ddp', tmp_path / 'same')
    more = [*common, '--max_iters=9', '--init_from=resume']
    same = torchrun(n, words_data, tmp_path / 'same', *more)
    one = train(words_data, tmp_path / 'ddp', *more)
    from_fsdp = train(words_data, tmp_path / 'fsdp', *more)
    reference = steps(same.stdout)
    for name, r in (('same', same), ('ddp', one), ('fsdp', from_fsdp)):
        assert 'at iter 6' in r.stdout and sorted(steps(r.stdout)) == [7, 8, 9], r.stdout[-2000:]
        assert load_checkpoint(str(tmp_path / name / 'ckpt.pt'))['iter_num'] == 9
    assert '1 process(es) on cuda,' in one.stdout
    for r, tolerance in ((one, 0.02), (from_fsdp, 0.05)):
        log = steps(r.stdout)
        assert all(abs(log[i][0] - reference[i][0]) < tolerance for i in log), (log, reference)

    figures(f'DDP over {n} GPU(s), tiny model: median step', median_ms(a), 'ms')
    figures(f'FSDP over {n} GPU(s), tiny model: median step', median_ms(b), 'ms')
    figures('FSDP vs DDP: largest loss difference in 6 steps (bfloat16)', fsdp_gap, 'nats')


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason='needs 2 or more CUDA GPUs')
def test_ddp_over_the_gpus_matches_one_gpu(words_data, tmp_path, figures):
    n = torch.cuda.device_count()
    common = ['--dtype=bfloat16', '--compile=False', '--backend=nccl', '--batch_size=8',
              f'--gradient_accumulation_steps={2 * n}', '--warmup_iters=2',
              '--lr_decay_iters=100', '--learning_rate=1e-3', '--min_lr=1e-4', '--eval_interval=4',
              '--max_iters=4']
    ddp = torchrun(n, words_data, tmp_path / 'ddp', *common)
    one = train(words_data, tmp_path / 'one', *common)
    a, b = steps(ddp.stdout), steps(one.stdout)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    gap = max(abs(a[i][0] - b[i][0]) for i in a)
    # the same batches; only the order of the additions differs
    assert gap < 0.02, (a, b)
    assert abs(evals(ddp.stdout)[4][1] - evals(one.stdout)[4][1]) < 0.02
    figures(f'DDP over {n} GPUs vs one GPU: largest loss difference in 4 steps', gap, 'nats')


def test_bench_reports_gpt2_124m_speed_and_mfu(figures):
    if not cuda_has_bf16():
        pytest.skip('this GPU has no native bfloat16')
    r = run(['bench.py', '--device=cuda', '--gpt2_shape=True', '--compile=True',
             '--dtype=bfloat16'], timeout=400)
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result['mode'] == 'train' and result['dtype'] == 'bfloat16'
    assert result['block_size'] == 1024 and 123e6 < result['params'] < 125e6
    line = re.search(r'([\d.]+) ms/iter, ([\d,]+) tokens/s, (.*)', r.stdout)
    assert line, r.stdout
    assert abs(float(line[1]) - result['ms_per_iter']) < 0.01
    assert abs(result['tokens_per_s'] - 12 * 1024 / (result['ms_per_iter'] / 1000)) < 1
    figures('bench.py GPT-2 124M, 12 x 1024, compiled bfloat16', result['ms_per_iter'], 'ms/iter')
    figures('bench.py GPT-2 124M, 12 x 1024, compiled bfloat16', result['tokens_per_s'], 'tok/s')
    if result['mfu'] is None:
        pytest.skip(f'no peak FLOP/s for {torch.cuda.get_device_name()} in devices.PEAK_TFLOPS')
    assert line[3].startswith(f"MFU {result['mfu'] * 100:.1f}%"), line[0]
    figures('bench.py GPT-2 124M, 12 x 1024, compiled bfloat16: MFU', result['mfu'] * 100, '%')
    assert 0.05 <= result['mfu'] <= 1.0, result
    # against the card's peak: the one devices.py holds (H100 SXM: 989 dense TFLOP/s in bf16)
    from devices import device_peak_flops
    peak = device_peak_flops('cuda', torch.bfloat16)
    assert abs(result['tflops'] * 1e12 / result['mfu'] - peak) < 0.01 * peak, (result, peak)
    if 'H100' in torch.cuda.get_device_name() and 'HBM3' in torch.cuda.get_device_name():
        assert peak == 989e12


# -----------------------------------------------------------------------------------------------
# In this process: generation, attention kernels, memory

def test_float32_kv_cache_generation_equals_recomputation():
    # Full float32 (TF32 off, which setup_device turns on): the cached steps and the whole
    # context's recomputation pick the same greedy tokens, as on a CPU (tests/test_generate.py)
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        for B, T, new in CASES:
            m = chaotic_model().cuda()
            idx = torch.randint(96, (B, T), generator=torch.Generator().manual_seed(T)).cuda()
            cached = m.generate(idx, new, temperature=0)
            plain = m.generate(idx, new, temperature=0, use_cache=False)
            with torch.no_grad():
                expected = reference_generate(m, idx, new,
                                              lambda logits: logits.argmax(dim=-1, keepdim=True))
            assert torch.equal(plain, expected) and torch.equal(cached, expected), (B, T, new)
            assert len(set(cached[:, T:].flatten().tolist())) > 3
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def test_bfloat16_kv_cache_follows_recomputation(figures):
    if not cuda_has_bf16():
        pytest.skip('this GPU has no native bfloat16')
    # the weights cast to bfloat16, as sample.py casts them
    m = chaotic_model().cuda().to(torch.bfloat16)
    # Teacher-forced: a prompt of 5, then one token at a time through the cache, against the
    # whole prefix recomputed. Both round to bfloat16, in different orders.
    seq = torch.randint(96, (3, BLOCK), generator=torch.Generator().manual_seed(0)).cuda()
    cache = KVCache(m.config)
    with torch.inference_mode():
        cached = [m(seq[:, :5], cache=cache)[0]]
        cached += [m(seq[:, t:t + 1], cache=cache)[0] for t in range(5, BLOCK)]
        full = [m(seq[:, :t])[0] for t in range(5, BLOCK + 1)]
    scale = max(f.float().abs().max().item() for f in full)
    error = max((c.float() - f.float()).abs().max().item() for c, f in zip(cached, full))
    # (logits of a few units, which a wrong key, value or position moves by as much)
    assert scale > 3
    tolerance = 0.05 * scale
    assert error <= tolerance, (error, scale)
    # Greedy generation: the same tokens, except where recomputation's two best tokens are a
    # near-tie that bfloat16's rounding can turn; from there on the sequences part.
    same = total = 0
    for B, T, new in [(3, 5, 30), (4, 2, 12)]:
        idx = torch.randint(96, (B, T), generator=torch.Generator().manual_seed(T)).cuda()
        a = m.generate(idx, new, temperature=0)
        b = m.generate(idx, new, temperature=0, use_cache=False)
        same, total = same + (a == b)[:, T:].sum().item(), total + B * new
        for row in range(B):
            differ = (a[row] != b[row]).nonzero()
            if len(differ):
                at = differ[0].item()
                with torch.inference_mode():
                    logits = m(b[row:row + 1, :at][:, -BLOCK:])[0][0, -1].float()
                best, second = logits.topk(2).values.tolist()
                assert best - second <= 2 * tolerance, (B, T, new, row, at, best - second)
    figures('KV cache, bfloat16: largest logit difference from recomputation', error, 'logit')
    figures('KV cache, bfloat16: greedy tokens equal to recomputation', 100 * same / total, '%')


@pytest.mark.parametrize('backend', ['FLASH_ATTENTION', 'EFFICIENT_ATTENTION'])
def test_training_attention_takes_the_fused_kernel(backend):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    if backend == 'FLASH_ATTENTION' and torch.cuda.get_device_capability() < (8, 0):
        pytest.skip('flash attention needs an Ampere or newer GPU')
    # GPT-2's heads (64 wide) at a training shape, dropout on, as in finetuning; with one backend
    # allowed, SDPA raises where that backend cannot run
    _, _, ptdtype, ctx = setup_device('cuda', 'auto')
    torch.manual_seed(0)
    m = GPT(GPTConfig(n_layer=2, n_head=12, n_embd=768, block_size=1024, vocab_size=50304,
                      dropout=0.1)).cuda().train()
    X, Y = (torch.randint(50304, (4, 1024), device='cuda') for _ in range(2))
    with sdpa_kernel([getattr(SDPBackend, backend)]):
        with ctx:
            loss = m(X, Y)[1]
        loss.backward()
    assert math.isfinite(loss.item()) and 10 < loss.item() < 12  # ~ln(50304) = 10.8
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())
    if backend == 'FLASH_ATTENTION':
        # the check can fail: flash attention has no float32 kernel
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]), pytest.raises(RuntimeError):
            m(X, Y)


def readme_memory_table():
    """README's table of GPU memory for training at batch 1 x 1024 in bfloat16 (the one said to be
    computed, not measured), in GB: {'gpt2': {'full': 3.1, ..., 'LoRA r=8 + recompute': 0.9}}."""
    text = open(os.path.join(ROOT, 'README.md')).read()
    assert '**computed, not measured**' in text, "README's memory table not found"
    rows = []
    for line in text.split('**computed, not measured**', 1)[1].splitlines()[1:]:
        if line.startswith('|'):
            rows.append([cell.strip() for cell in line.strip().strip('|').split('|')])
        elif rows:
            break
    # (without the |---| line)
    header, *body = [row for row in rows if not set(''.join(row)) <= set('-: ')]
    return {row[0]: {column: float(cell.split()[0]) for column, cell in zip(header[2:], row[2:])}
            for row in body}


# the shapes of README's table (OpenAI's GPT-2: biases, 50257 tokens, 1024 positions)
SHAPES = {'gpt2': dict(n_layer=12, n_head=12, n_embd=768),
          'gpt2-xl': dict(n_layer=48, n_head=25, n_embd=1600)}


@pytest.mark.parametrize('name, column', [('gpt2', 'full'), ('gpt2-xl', 'LoRA r=8 + recompute')])
def test_training_memory_is_readmes(name, column, figures):
    if not cuda_has_bf16():
        pytest.skip("README's table is for bfloat16; this GPU has no native bfloat16")
    expected = readme_memory_table()[name][column]
    lora_rank, recompute = (8 if 'LoRA' in column else 0), 'recompute' in column
    # The model and optimizer as train.py makes them (random weights, built on the GPU), then two
    # of its steps (the first makes AdamW's moments, which the table counts) at batch 1 x 1024
    device, device_type, ptdtype, ctx = setup_device('cuda', 'bfloat16')
    # (what earlier tests left in reference cycles goes first, not into the baseline)
    gc.collect()
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    torch.manual_seed(0)
    with torch.device(device):
        model = GPT(GPTConfig(**SHAPES[name], vocab_size=50257, block_size=1024, bias=True))
        if lora_rank:
            add_lora(model, lora_rank, 16.0, ptdtype)
            for p in model.parameters():
                p.grad = torch.zeros_like(p) if p.requires_grad else None
    model.recompute = recompute
    opt = model.configure_optimizers(0.1, 6e-4, (0.9, 0.95), device_type)
    scaler = torch.amp.GradScaler(device_type, enabled=ptdtype == torch.float16)
    X, Y = (torch.randint(50257, (1, 1024), device=device) for _ in range(2))
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    for _ in range(2):
        with ctx:
            loss = model(X, Y)[1]
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=not lora_rank)
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - before) / 1e9
    finite = math.isfinite(loss.item())
    del model, opt, X, Y, loss
    gc.collect()
    torch.cuda.empty_cache()
    figures(f'peak memory, {name} {column}, batch 1 x 1024, bfloat16 (README: {expected} GB)',
            peak, 'GB')
    assert finite
    assert abs(peak - expected) <= 0.2 * expected, (peak, expected)
