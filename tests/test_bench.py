"""bench.py on a CPU with a tiny model: both modes end with one JSON line of sensible figures."""

import json
import os
import pickle

import numpy as np
import pytest

from conftest import python
from devices import inference_dtype
from model import GPT, GPTConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--device=cpu', '--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=32']


def bench(*args, cwd):
    r = python([os.path.join(ROOT, 'bench.py'), *TINY, *args], cwd=cwd, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout, json.loads(r.stdout.strip().splitlines()[-1])


def test_train_mode_synthetic_data(tmp_path):
    out, result = bench('--batch_size=4', '--warmup_iters=1', '--num_iters=3', cwd=tmp_path)
    assert result['mode'] == 'train' and result['device'] == 'cpu' and result['dtype'] == 'float32'
    assert result['batch_size'] == 4 and result['block_size'] == 32 and result['num_iters'] == 3
    assert result['ms_per_iter'] > 0 and result['tflops'] > 0
    expected = 4 * 32 / (result['ms_per_iter'] / 1000)
    assert abs(result['tokens_per_s'] - expected) < 1e-6 * result['tokens_per_s']
    assert result['mfu'] is None  # no honest peak on a CPU: TFLOP/s instead, never a made-up MFU
    assert 'TFLOP/s achieved' in out and '%' not in out
    assert 3.0 < result['loss'] < 5.0  # about ln(65) at init


def test_train_mode_real_data_with_profile(tmp_path):
    dataset = tmp_path / 'tiny_char'
    dataset.mkdir()
    tokens = np.random.default_rng(0).integers(0, 20, size=2000, dtype=np.uint16)
    tokens.tofile(dataset / 'train.bin')
    tokens[:500].tofile(dataset / 'val.bin')
    with open(dataset / 'meta.pkl', 'wb') as f:
        pickle.dump({'vocab_size': 20, 'itos': {}, 'stoi': {}}, f)
    out, result = bench(f'--dataset={dataset}', '--batch_size=2', '--warmup_iters=1',
                        '--num_iters=2', '--profile=True', '--trace_file=trace.json', cwd=tmp_path)
    assert result['profile'] == 'trace.json'
    with open(tmp_path / 'trace.json') as f:
        assert json.load(f)['traceEvents']
    assert 2.0 < result['loss'] < 4.0  # about ln(20): the model was built with the dataset's vocab


def test_generate_mode_reports_identical_tokens(tmp_path):
    out, result = bench('--mode=generate', '--max_new_tokens=12', '--num_runs=1',
                        '--num_sequences=2', cwd=tmp_path)
    assert result['mode'] == 'generate' and result['identical'] is True
    assert result['num_sequences'] == 2 and result['max_new_tokens'] == 12
    assert result['cached_tokens_per_s'] > 0 and result['plain_tokens_per_s'] > 0
    speedup = result['cached_tokens_per_s'] / result['plain_tokens_per_s']
    assert abs(result['speedup'] - speedup) < 1e-9


def test_generate_mode_floor_and_transformers(tmp_path):
    # Weights in the inference dtype; the floor counts every weight's bytes once, of the position
    # embeddings one row; transformers' GPT-2 runs on the same weights: the same greedy tokens.
    out, result = bench('--mode=generate', '--bias=True', '--temperature=0', '--max_new_tokens=8',
                        '--num_runs=1', '--plain=False', '--hf=True', cwd=tmp_path)
    dtype = inference_dtype('cpu')
    assert result['dtype'] == str(dtype).removeprefix('torch.')
    assert result['plain_tokens_per_s'] is None
    m = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=65, bias=True))
    n = sum(p.numel() for p in m.parameters()) - 31 * 32  # 31 of the 32 rows of wpe are not read
    assert result['weight_bytes'] == n * dtype.itemsize
    assert result['floor_tokens_per_s'] > 0
    floor_ratio = result['floor_tokens_per_s'] / result['cached_tokens_per_s']
    assert abs(result['floor_ratio'] - floor_ratio) < 1e-9
    assert sorted(result['hf_tokens_per_s']) == ['bfloat16', 'float16', 'float32']
    assert 'transformers float32: ' in out
    assert 'tokens equal to ours in float32: True' in out.split('transformers float32: ')[1]


def test_bad_mode_is_one_line(tmp_path):
    r = python([os.path.join(ROOT, 'bench.py'), '--mode=fast', '--device=cpu'], cwd=tmp_path,
               timeout=60)
    assert r.returncode != 0
    assert r.stderr.strip().splitlines() == [
        "error: unknown mode 'fast': use --mode=train or --mode=generate"]


@pytest.mark.parametrize('args, message', [
    (['--block_size=0'], 'error: --block_size=0 must be at least 1'),
    (['--mode=generate', '--top_k=-1'],
     'error: warmup_iters, top_k and temperature must not be negative'),
    (['--profile=True', '--trace_file=/nonexistent/dir/trace.json', '--num_iters=1',
      '--warmup_iters=0'],
     'error: the profiler could not write /nonexistent/dir/trace.json'),
])
def test_bad_settings_are_one_line(tmp_path, args, message):
    r = python([os.path.join(ROOT, 'bench.py'), *TINY, *args], cwd=tmp_path, timeout=120)
    assert r.returncode != 0 and 'Traceback' not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(message), r.stderr
