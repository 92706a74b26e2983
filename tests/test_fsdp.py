"""FSDP (fsdp=True) on a CPU with gloo and torchrun's 2 processes: the same training as one process,
half of the weights and optimizer state in each process, one whole checkpoint that one process
(and sample.py) reads, exact resume after SIGTERM, a kill -9 during a save. And the loop's promise
that makes a GPU run fast: nothing is read from the device between log steps."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import python
from test_cluster import children
from test_train import (  # noqa: F401 (a fixture)
    ROOT,
    assert_same_weights,
    char_data,
    load_checkpoint,
    ok,
    tiny,
    torchrun,
    train,
    weights,
)

TORCHRUN = [sys.executable, '-u', '-m', 'torch.distributed.run', '--standalone',
            '--nproc_per_node=2']
ARGS = ['--max_iters=3', '--eval_interval=3', '--gradient_accumulation_steps=4']


def logged_losses(out):
    return [line.split('loss ')[1].split(',')[0]
            for line in out.splitlines() if line.startswith('iter ')]


def assert_close_weights(a, b, atol=1e-5):
    assert list(a) == list(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=k)


def test_fsdp_matches_one_process_and_saves_the_same_checkpoint(char_data, tmp_path):
    # 2 processes x 2 micro-steps against 1 process x 4: the same batches, so the same weights
    single = ok(train(*tiny(char_data, tmp_path / 'single', *ARGS)))
    fsdp = ok(torchrun('train.py', *tiny(char_data, tmp_path / 'fsdp', *ARGS, '--fsdp=True')))
    assert 'fsdp: each process holds 50.0%' in fsdp.stdout and fsdp.stdout.count('saved') == 1
    assert logged_losses(fsdp.stdout) == logged_losses(single.stdout)
    assert len(logged_losses(single.stdout)) == 3
    a = load_checkpoint(str(tmp_path / 'single' / 'ckpt.pt'))
    b = load_checkpoint(str(tmp_path / 'fsdp' / 'ckpt.pt'))
    assert_close_weights(a['model'], b['model'])
    # the whole optimizer state, in the same layout as one process's (so nanoGPT can resume it)
    assert a['optimizer']['param_groups'] == b['optimizer']['param_groups']
    for i, state in a['optimizer']['state'].items():
        assert_close_weights(state, b['optimizer']['state'][i])
    # the tied embedding and output layer are still one tensor
    model = b['model']
    assert model['lm_head.weight'].data_ptr() == model['transformer.wte.weight'].data_ptr()


def test_fsdp_checkpoint_resumes_anywhere_and_samples(char_data, tmp_path):
    # FSDP -> one process, and one process -> FSDP: each equal to an unbroken one-process run
    ok(torchrun('train.py', *tiny(char_data, tmp_path / 'from_fsdp', *ARGS, '--fsdp=True')))
    ok(train(*tiny(char_data, tmp_path / 'to_fsdp', *ARGS)))
    more = [*ARGS[1:], '--max_iters=6', '--init_from=resume']
    ok(train(*tiny(char_data, tmp_path / 'from_fsdp', *more)))
    ok(torchrun('train.py', *tiny(char_data, tmp_path / 'to_fsdp', *more, '--fsdp=True')))
    ok(train(*tiny(char_data, tmp_path / 'straight', *ARGS[1:], '--max_iters=6')))
    for out in ('from_fsdp', 'to_fsdp'):
        assert load_checkpoint(str(tmp_path / out / 'ckpt.pt'))['iter_num'] == 6
        assert_close_weights(weights(tmp_path / out), weights(tmp_path / 'straight'))
    # sample.py reads an FSDP checkpoint as any other
    ok(torchrun('train.py', *tiny(char_data, tmp_path / 'fsdp', *ARGS, '--fsdp=True')))
    r = ok(python(['sample.py', f'--out_dir={tmp_path / "fsdp"}', '--device=cpu', '--num_samples=2',
                   '--max_new_tokens=20', '--start=ROMEO:'], timeout=120))
    assert [line[:6] for line in r.stdout.splitlines()].count('ROMEO:') == 2


# Runs train.py in each process and writes, per process, how many elements of the parameters and
# of the optimizer state it holds (FSDP: its local shards) and how many the whole model has. (From
# an exit handler: a distributed run ends the process itself, after its exit handlers.)
COUNT_SHARDS = """
import atexit, json, os, sys
sys.path.insert(0, {root!r})
sys.argv = sys.argv[1:]
g = dict(__name__='__main__', __file__=sys.argv[0])

def count():
    local = lambda t: t.to_local() if hasattr(t, 'to_local') else t
    params = list(g['raw_model'].parameters())
    state = [v for s in g['opt'].state.values() for v in s.values() if v.dim() > 0]
    counts = dict(params=sum(local(p).numel() for p in params),
                  whole=sum(p.numel() for p in params),
                  state=sum(local(v).numel() for v in state),
                  whole_state=sum(v.numel() for v in state))
    json.dump(counts, open(os.path.join({out!r}, 'counts%s.json' % os.environ['RANK']), 'w'))

atexit.register(count)
exec(compile(open(sys.argv[0]).read(), sys.argv[0], 'exec'), g)
"""


def test_each_process_holds_half_of_the_weights_and_optimizer_state(char_data, tmp_path):
    driver = tmp_path / 'count_shards.py'
    driver.write_text(COUNT_SHARDS.format(root=ROOT, out=str(tmp_path)))
    for mode in ('fsdp', 'ddp'):
        args = tiny(char_data, tmp_path / mode, *ARGS, f'--fsdp={mode == "fsdp"}')
        ok(torchrun(str(driver), 'train.py', *args))
        counts = [json.load(open(tmp_path / f'counts{rank}.json')) for rank in (0, 1)]
        whole, whole_state = counts[0]['whole'], counts[0]['whole_state']
        assert whole_state == 2 * whole  # AdamW: two moments per weight
        if mode == 'fsdp':  # a shard each, together the whole, nothing twice
            assert sum(c['params'] for c in counts) == whole
            assert sum(c['state'] for c in counts) == whole_state
            assert all(0.45 * whole <= c['params'] <= 0.55 * whole for c in counts)
            assert all(0.45 * whole_state <= c['state'] <= 0.55 * whole_state for c in counts)
        else:  # DDP: all of it in each, so the count can tell them apart
            assert all(c['params'] == whole and c['state'] == whole_state for c in counts)


def test_fsdp_sigterm_then_resume_is_exact(char_data, tmp_path):
    common = ['--dropout=0.1', '--eval_interval=1000', '--max_iters=400', '--fsdp=True']
    run = python.start(['train.py', *tiny(char_data, tmp_path / 'stopped', *common)], nproc=2,
                       env=dict(os.environ, PYTHONUNBUFFERED='1'))
    run.wait_for('iter 5:')
    # as a cluster's preemption does (torchrun itself would exit 1)
    for pid in children(run.pid):
        os.kill(pid, signal.SIGTERM)
    r = run.wait(timeout=60)
    assert r.returncode == 0 and 'SIGTERM received' in r.stdout, r.stderr[-3000:]
    stopped_at = load_checkpoint(str(tmp_path / 'stopped' / 'ckpt.pt'))['iter_num']
    assert 5 <= stopped_at < 400
    end = stopped_at + 3
    resumed = ok(torchrun('train.py', *tiny(char_data, tmp_path / 'stopped', *common[:-2],
                                            f'--max_iters={end}', '--fsdp=True',
                                            '--init_from=resume')))
    assert 'no RNG state' not in resumed.stdout
    ok(torchrun('train.py', *tiny(char_data, tmp_path / 'straight', *common[:-2],
                                  f'--max_iters={end}', '--fsdp=True')))
    assert_same_weights(weights(tmp_path / 'stopped'), weights(tmp_path / 'straight'))


def test_kill_9_during_an_fsdp_save_leaves_a_loadable_checkpoint(char_data, tmp_path):
    # save at every iteration, and kill every process at several moments, some of them mid-save
    for delay in (0.0, 0.05, 0.13):
        run = python.start(['train.py', *tiny(char_data, tmp_path, '--eval_interval=1',
                                              '--eval_iters=1', '--max_iters=100000',
                                              '--n_embd=128', '--n_head=4', '--fsdp=True')],
                           nproc=2, env=dict(os.environ, PYTHONUNBUFFERED='1'))
        run.wait_for('saved')
        time.sleep(delay)
        os.killpg(run.pid, signal.SIGKILL)  # torchrun's part and both processes
        run.wait()
        time.sleep(0.2)  # (the workers, killed too, let go of their files)
        ckpt = load_checkpoint(str(tmp_path / 'ckpt.pt'))
        assert ckpt['iter_num'] >= 1 and torch.isfinite(ckpt['model']['lm_head.weight']).all()


def test_fsdp_with_muon_matches_one_process(char_data, tmp_path):
    args = [*ARGS, '--optimizer=muon']
    ok(train(*tiny(char_data, tmp_path / 'single', *args)))
    ok(torchrun('train.py', *tiny(char_data, tmp_path / 'fsdp', *args, '--fsdp=True')))
    ok(train(*tiny(char_data, tmp_path / 'other', *args, '--seed=7')))
    single, fsdp, other = (weights(tmp_path / out) for out in ('single', 'fsdp', 'other'))
    # Muon orthogonalises in bfloat16 (see the DDP test in test_train.py): equal within its
    # rounding, far from a run on other batches
    difference = lambda a, b: torch.cat([(a[k] - b[k]).abs().flatten() for k in a])  # noqa: E731
    assert difference(single, fsdp).mean() < 2e-4 and difference(single, fsdp).max() < 1e-2
    assert difference(single, other).mean() > 5e-3


def test_fsdp_compiled_matches_one_process(char_data, tmp_path):
    args = [*ARGS[1:], '--max_iters=2']
    ok(train(*tiny(char_data, tmp_path / 'single', *args)))
    r = ok(torchrun('train.py', *tiny(char_data, tmp_path / 'fsdp', *args, '--fsdp=True',
                                      '--compile=True'), timeout=300))
    assert 'compiling the model' in r.stdout
    assert_close_weights(weights(tmp_path / 'single'), weights(tmp_path / 'fsdp'))


def test_fsdp_bad_settings(char_data, tmp_path):
    for args, message in ((['--fsdp=True'], 'error: fsdp=True shards the model over the processes '
                                            'that torchrun starts'),
                          (['--fsdp=1'], 'error: --fsdp expects bool')):
        r = train(*tiny(char_data, tmp_path, *args))
        assert r.returncode != 0 and r.stderr.startswith(message), r.stderr
        assert r.stderr.count('\n') == 1, r.stderr
        assert not os.path.exists(tmp_path / 'ckpt.pt')


# Runs train.py and watches what it reads from the device. 'cpu': records every read (item,
# tolist, bool, float, ...) made by train.py's own lines, and where. 'cuda': makes any
# synchronising CUDA call an error (torch.cuda.set_sync_debug_mode), from the end of the first read
# of a step (the first step compiles and warms up) until the next read, evaluation or save.
WATCH_READS = """
import json, os, runpy, sys, torch
sys.path.insert(0, {root!r})
mode, out = {mode!r}, {out!r}
reads, calls = [], dict(read_step=0)
ALLOWED = ('read_step', 'estimate_loss', 'evaluate_hellaswag', 'save', 'rng_state')
def watch(name):
    original = getattr(torch.Tensor, name)
    def watched(self, *args, **kwargs):
        frame = sys._getframe(1)
        if frame.f_code.co_filename.endswith('train.py'):
            reads.append([frame.f_code.co_name, frame.f_lineno, name])
        return original(self, *args, **kwargs)
    setattr(torch.Tensor, name, watched)
def profile(frame, event, arg):
    name = frame.f_code.co_name
    if not frame.f_code.co_filename.endswith('train.py') or name not in ALLOWED:
        return
    if event == 'call':
        calls['read_step'] += name == 'read_step'
        torch.cuda.set_sync_debug_mode(0)
    elif event == 'return' and name == 'read_step':
        torch.cuda.set_sync_debug_mode('error')
if mode == 'cpu':
    for name in ('item', 'tolist', 'numpy', 'cpu', '__bool__', '__float__', '__int__', '__index__',
                 '__format__'):
        watch(name)
else:
    sys.setprofile(profile)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
sys.setprofile(None)
loop = open(sys.argv[0]).read().split('while True:')[0].count(chr(10)) + 1
json.dump(dict(reads=reads, calls=calls, loop=loop), open(out, 'w'))
"""


def watch_reads(tmp_path, mode, *args, torchrun=False):
    driver, record = tmp_path / 'watch_reads.py', tmp_path / 'reads.json'
    driver.write_text(WATCH_READS.format(root=ROOT, mode=mode, out=str(record)))
    launch = [*TORCHRUN[:-1], '--nproc_per_node=1'] if torchrun else [sys.executable]
    ok(subprocess.run([*launch, str(driver), 'train.py', *args], cwd=ROOT, capture_output=True,
                      text=True, timeout=300))
    return json.load(open(record))


def test_the_loop_reads_the_device_only_at_log_steps(char_data, tmp_path):
    watched = watch_reads(tmp_path, 'cpu', *tiny(char_data, tmp_path / 'out', '--max_iters=12',
                                               '--eval_interval=6', '--log_interval=4'))
    # reads in the loop come from the functions that read on purpose, and from nothing else
    stray = [r for r in watched['reads']
             if r[0] not in ('read_step', 'estimate_loss', 'save', 'rng_state')
             and not (r[0] == '<module>' and r[1] < watched['loop'])]
    assert stray == [], stray
    # (the watch sees train.py's reads)
    assert any(r[0] == 'read_step' for r in watched['reads'])
    # read_step (one tolist each): after iters 1, 4, 8 and 12 (log steps), and before the saves at
    # 6 and 12
    assert [r[0] for r in watched['reads'] if r[2] == 'tolist'].count('read_step') == 6


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
@pytest.mark.parametrize('fsdp,compile',
                         [(False, False), (True, False), (False, True), (True, True)])
def test_no_cuda_synchronisation_between_log_steps(char_data, tmp_path, fsdp, compile):
    dtype = '--dtype=bfloat16' if torch.cuda.is_bf16_supported() else '--dtype=float32'
    args = tiny(char_data, tmp_path / 'out', '--device=cuda', '--max_iters=12',
                '--eval_interval=1000', '--log_interval=6', dtype, f'--fsdp={fsdp}',
                f'--compile={compile}')
    watched = watch_reads(tmp_path, 'cuda', *args, torchrun=fsdp)  # FSDP: one process
    assert watched['calls']['read_step'] >= 3  # after iters 1, 6 and 12, and before the final save
