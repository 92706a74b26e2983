"""train.py end to end on tiny models: learning, exact step counts, bit-exact resume, DDP on CPU,
crash safety, preemption, the NaN guard, wandb offline and every bad input."""

import glob
import json
import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from checkpoint import load_checkpoint, save_checkpoint
from configurator import parse, settings_of
from conftest import char_dataset, later_wins, python
from errors import InputError
from muon import configure_muon

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--device=cpu', '--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=32',
        '--batch_size=8', '--gradient_accumulation_steps=2', '--eval_iters=4', '--log_interval=1',
        '--warmup_iters=5', '--lr_decay_iters=100', '--learning_rate=3e-3', '--min_lr=3e-4',
        '--compile=False']


@pytest.fixture(scope='module')
def char_data(tmp_path_factory, shakespeare_txt):
    """Character-level Shakespeare (first 200k characters), built here independently of
    prepare.py."""
    return char_dataset(tmp_path_factory.mktemp('shakespeare_char'),
                        open(shakespeare_txt).read()[:200_000])


def train(*args, env=None, timeout=120):
    return python(['train.py', *args], env=dict(os.environ, **(env or {})), timeout=timeout)


def torchrun(*args, nproc=2, timeout=180):
    """`torchrun --standalone --nproc_per_node=nproc script args`, each process forked from the fork
    server (test_cluster.py runs torchrun itself)."""
    return python(list(args), nproc=nproc, timeout=timeout)


def tiny(char_data, out, *args):
    return later_wins([*TINY, f'--dataset={char_data}', f'--out_dir={out}', *args])


def ok(r):
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r


def weights(out):
    return load_checkpoint(os.path.join(out, 'ckpt.pt'))['model']


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_loss_falls_on_shakespeare(char_data, tmp_path):
    r = ok(train(*tiny(char_data, tmp_path, '--max_iters=300', '--eval_interval=300',
                       '--eval_iters=10', '--lr_decay_iters=300', '--learning_rate=1e-2')))
    evals = [line for line in r.stdout.splitlines() if line.startswith('eval')]
    first, last = (float(line.split('val loss ')[1].split(',')[0])
                   for line in (evals[0], evals[-1]))
    assert first > 4.0  # ln(65) = 4.17 at init
    assert last < 2.9, r.stdout  # the unigram entropy of the characters is ~3.3


def test_exactly_max_iters_steps_then_eval_and_save(char_data, tmp_path):
    r = ok(train(*tiny(char_data, tmp_path, '--max_iters=7', '--eval_interval=5')))
    steps = [line for line in r.stdout.splitlines() if line.startswith('iter ')]
    assert [s.split(':')[0] for s in steps] == [f'iter {i}' for i in range(1, 8)]
    assert [line.split(':')[0] for line in r.stdout.splitlines() if line.startswith('eval')] == \
           ['eval iter 0', 'eval iter 5', 'eval iter 7']
    ckpt = load_checkpoint(os.path.join(tmp_path, 'ckpt.pt'))
    assert ckpt['iter_num'] == 7
    assert ckpt['optimizer']['state'][0]['step'].item() == 7  # seven optimizer steps, not eight
    val_losses = [float(line.split('val loss ')[1].split(',')[0])
                  for line in r.stdout.splitlines() if line.startswith('eval')]
    assert ckpt['best_val_loss'] == pytest.approx(min(val_losses), abs=1e-4)
    # each line has every field, and the lr is above zero from the first step; the first step
    # (compile, warm-up) is left out of the timings rather than shown as a slow step
    assert all(f in steps[0] for f in ('loss', 'lr', 'norm'))
    assert 'not timed' in steps[0] and ' ms' not in steps[0]
    assert all(f in step for step in steps[1:]
               for f in ('loss', 'lr', 'norm', 'ms', 'tok/s', 'TFLOP/s'))
    assert '-100' not in r.stdout and 'not timed' not in ''.join(steps[1:])
    assert float(steps[0].split('lr ')[1].split(',')[0]) > 0


def test_checkpoint_is_nanogpt_compatible(char_data, tmp_path):
    ok(train(*tiny(char_data, tmp_path, '--max_iters=2', '--eval_interval=2')))
    # what nanoGPT's sample.py does: torch.load (weights_only by default), GPTConfig(**model_args),
    # load_state_dict after stripping '_orig_mod.'
    ckpt = torch.load(os.path.join(tmp_path, 'ckpt.pt'), map_location='cpu', weights_only=True)
    assert {'model', 'optimizer', 'model_args', 'iter_num', 'best_val_loss', 'config'} <= set(ckpt)
    assert set(ckpt['model_args']) == {'n_layer', 'n_head', 'n_embd', 'block_size', 'bias',
                                       'vocab_size', 'dropout'}
    assert not any(k.startswith('_orig_mod.') or k.startswith('module.') for k in ckpt['model'])
    assert ckpt['config']['dataset'] == char_data


def test_bit_exact_resume(char_data, tmp_path):
    common = ['--dropout=0.1', '--eval_interval=4', '--always_save_checkpoint=True']
    ok(train(*tiny(char_data, tmp_path / 'straight', '--max_iters=10', *common)))
    # 6: not an eval iteration
    ok(train(*tiny(char_data, tmp_path / 'split', '--max_iters=6', *common)))
    ok(train(*tiny(char_data, tmp_path / 'split', '--max_iters=10', '--init_from=resume', *common)))
    straight, split = weights(tmp_path / 'straight'), weights(tmp_path / 'split')
    assert_same_weights(straight, split)
    # and the check can fail: a run with another seed differs
    ok(train(*tiny(char_data, tmp_path / 'other', '--max_iters=10', '--seed=1', *common)))
    other = weights(tmp_path / 'other')
    assert not torch.equal(straight['lm_head.weight'], other['lm_head.weight'])


def start(args, env=None):
    return subprocess.Popen([sys.executable, '-u', 'train.py', *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, **(env or {})))


def wait_for(proc, prefix):
    for line in proc.stdout:
        if line.startswith(prefix):
            return line
    raise AssertionError(f"never printed {prefix!r}: {proc.stderr.read()[-2000:]}")


def test_sigterm_saves_and_resume_is_exact(char_data, tmp_path):
    common = ['--dropout=0.1', '--eval_interval=1000', '--max_iters=400']
    proc = start(tiny(char_data, tmp_path / 'stopped', *common))
    wait_for(proc, 'iter 5:')
    proc.send_signal(signal.SIGTERM)
    sent = time.time()
    out, err = proc.communicate(timeout=30)
    assert time.time() - sent < 10 and proc.returncode == 0, err[-2000:]
    assert 'SIGTERM received' in out and 'saved' in out
    stopped_at = load_checkpoint(os.path.join(tmp_path / 'stopped', 'ckpt.pt'))['iter_num']
    assert 5 <= stopped_at < 400
    end = stopped_at + 3
    ok(train(*tiny(char_data, tmp_path / 'stopped', *common[:-1], f'--max_iters={end}',
                   '--init_from=resume')))
    ok(train(*tiny(char_data, tmp_path / 'straight', *common[:-1], f'--max_iters={end}')))
    assert_same_weights(weights(tmp_path / 'stopped'), weights(tmp_path / 'straight'))
    # metrics.jsonl: every step and evaluation of the two runs together once, in order
    records = [json.loads(line) for line in open(tmp_path / 'stopped' / 'metrics.jsonl')]
    assert [r['iter'] for r in records if 'loss' in r] == list(range(1, end + 1))
    assert [r['iter'] for r in records if 'val_loss' in r] == [0, end]


def test_kill_9_leaves_a_loadable_checkpoint(char_data, tmp_path):
    # save at every iteration, and kill at several moments, some of them mid-save
    for delay in (0.0, 0.05, 0.13):
        run = python.start(['train.py', *tiny(char_data, tmp_path, '--eval_interval=1',
                                              '--eval_iters=1', '--max_iters=100000',
                                              '--n_embd=128', '--n_head=4')],
                           env=dict(os.environ, PYTHONUNBUFFERED='1'))
        run.wait_for('saved')
        time.sleep(delay)
        os.kill(run.pid, signal.SIGKILL)
        assert run.wait().returncode == -signal.SIGKILL
        ckpt = load_checkpoint(os.path.join(tmp_path, 'ckpt.pt'))
        assert ckpt['iter_num'] >= 1


def test_ddp_on_cpu_matches_one_process(char_data, tmp_path):
    args = ['--max_iters=3', '--eval_interval=3', '--gradient_accumulation_steps=4']
    ok(train(*tiny(char_data, tmp_path / 'single', *args)))
    r = ok(torchrun('train.py', *tiny(char_data, tmp_path / 'ddp', *args)))
    # rank 0 alone prints and saves
    assert '2 process(es)' in r.stdout and r.stdout.count('saved') == 1
    single, ddp = weights(tmp_path / 'single'), weights(tmp_path / 'ddp')
    for k in single:
        torch.testing.assert_close(single[k], ddp[k], atol=2e-5, rtol=1e-4)

    # the same logged losses (mean over all micro-steps of all processes)
    def loss(out):
        return [line.split('loss ')[1].split(',')[0]
                for line in out.splitlines() if line.startswith('iter ')]

    single_out = train(*tiny(char_data, tmp_path / 'single2', *args)).stdout
    assert loss(single_out) == loss(r.stdout)


def test_nan_loss_stops_and_keeps_the_good_checkpoint(char_data, tmp_path):
    ok(train(*tiny(char_data, tmp_path, '--max_iters=3', '--eval_interval=3')))
    path = os.path.join(tmp_path, 'ckpt.pt')
    good = open(path, 'rb').read()
    os.makedirs(tmp_path / 'poisoned', exist_ok=True)

    def poisoned_checkpoint(value):
        ckpt = load_checkpoint(path)
        ckpt['model']['transformer.ln_f.weight'][:] = value
        save_checkpoint(ckpt, str(tmp_path / 'poisoned' / 'ckpt.pt'))
        return open(tmp_path / 'poisoned' / 'ckpt.pt', 'rb').read()

    # weights that are NaN: refused when loaded
    poisoned = poisoned_checkpoint(float('nan'))
    r = train(*tiny(char_data, tmp_path / 'poisoned', '--max_iters=10', '--eval_interval=3',
                    '--init_from=resume'))
    assert r.returncode != 0
    assert r.stderr.startswith("error: the checkpoint's transformer.ln_f.weight holds NaN")
    assert r.stderr.count('\n') == 1
    assert open(tmp_path / 'poisoned' / 'ckpt.pt', 'rb').read() == poisoned  # not overwritten
    # finite weights whose loss is not (the LayerNorm output overflows): the first eval stops the
    # run
    poisoned = poisoned_checkpoint(3e38)
    r = train(*tiny(char_data, tmp_path / 'poisoned', '--max_iters=10', '--eval_interval=3',
                    '--init_from=resume'))
    assert r.returncode != 0 and r.stderr.startswith('error: val loss is nan at iter 3'), r.stderr
    assert 'Last good checkpoint' in r.stderr and r.stderr.count('\n') == 1
    assert open(tmp_path / 'poisoned' / 'ckpt.pt', 'rb').read() == poisoned  # not overwritten
    # a diverging run: the guard stops at the first non-finite loss, before saving anything
    r = train(*tiny(char_data, tmp_path, '--max_iters=50', '--eval_interval=1000',
                    '--init_from=resume', '--learning_rate=1e12', '--grad_clip=0.0',
                    '--decay_lr=False'))
    assert r.returncode != 0 and 'error: ' in r.stderr and 'Traceback' not in r.stderr, r.stderr
    assert open(path, 'rb').read() == good


def test_wandb_offline(char_data, tmp_path):
    pytest.importorskip('wandb')
    r = ok(train(*tiny(char_data, tmp_path / 'out', '--max_iters=2', '--eval_interval=2',
                       '--wandb_log=True'),
                 env={'WANDB_MODE': 'offline', 'WANDB_DIR': str(tmp_path), 'WANDB_SILENT': 'true'}))
    runs = glob.glob(str(tmp_path / 'wandb' / 'offline-run-*' / '*.wandb'))
    assert len(runs) == 1 and os.path.getsize(runs[0]) > 0, r.stdout


def test_finetune_from_a_transformers_directory(char_data, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel
    # (a model of this vocabulary)
    vocab = pickle.load(open(os.path.join(char_data, 'meta.pkl'), 'rb'))['vocab_size']
    config = GPT2Config(vocab_size=vocab, n_positions=64, n_embd=32, n_layer=2, n_head=2)
    GPT2LMHeadModel(config).save_pretrained(tmp_path / 'hf')
    ok(train(*tiny(char_data, tmp_path / 'out', f'--init_from={tmp_path / "hf"}', '--max_iters=2',
                   '--eval_interval=2')))
    ckpt = load_checkpoint(os.path.join(tmp_path / 'out', 'ckpt.pt'))
    # block_size cropped from 64
    assert ckpt['model_args']['block_size'] == 32 and ckpt['model_args']['vocab_size'] == vocab
    assert ckpt['model']['transformer.wpe.weight'].shape == (32, 32)


def test_a_new_run_keeps_the_old_checkpoint(char_data, tmp_path):
    ok(train(*tiny(char_data, tmp_path, '--max_iters=2', '--eval_interval=2')))
    first = open(tmp_path / 'ckpt.pt', 'rb').read()
    ok(train(*tiny(char_data, tmp_path, '--max_iters=2', '--eval_interval=2', '--seed=5')))
    assert open(tmp_path / 'ckpt.pt.prev', 'rb').read() == first


@pytest.mark.parametrize('args, message', [
    (['--dataset=no_such_dataset'], "error: no dataset 'no_such_dataset'"),
    (['--block_size=100000'], 'val.bin holds 20000 tokens, not more than block_size=100000'),
    (['--init_from=resume'], 'error: no checkpoint at'),
    (['--init_from=gpt5'], "error: unknown init_from 'gpt5'"),
    (['--dtype=float8'], "error: unknown dtype 'float8'"),
    (['--device=tpu'], "error: unknown device 'tpu'"),
    (['--n_embd=33', '--n_head=2'], 'error: n_embd=33 is not divisible by n_head=2'),
    (['--bach_size=3'], "error: unknown setting 'bach_size'"),
    (['--max_iters=1.5'], 'error: --max_iters expects int'),
    (['config/no_such_config.py'], 'error: cannot read config file config/no_such_config.py'),
    (['--gradient_accumulation_steps=0'], 'gradient_accumulation_steps=0 must be at least 1'),
    (['--log_interval=0'], 'log_interval=0 must be at least 1'),
    (['--warmup_iters=100', '--lr_decay_iters=100'],
     'lr_decay_iters=100 must be larger than warmup_iters=100'),
    (['--backend=mpi2'], "unknown backend 'mpi2'"),
    (['--compile=banana'], "compile='banana'"),
    (['--optimizer=sgd'], "error: unknown optimizer 'sgd': use adamw or muon"),
])
def test_bad_input_is_one_line(char_data, tmp_path, args, message):
    r = train(*tiny(char_data, tmp_path), *args)
    assert r.returncode != 0 and r.stderr.startswith('error: '), r.stderr[-2000:]
    assert message in r.stderr, r.stderr[-2000:]
    assert r.stderr.count('\n') == 1 and 'Traceback' not in r.stderr


@pytest.mark.parametrize('split', ['train', 'val'])
def test_a_token_id_beyond_the_vocabulary_stops_the_run(tmp_path, split):
    # 40 tokens and block_size 32: every window holds token 20, so the first batch read finds it
    ids = np.arange(40, dtype=np.uint16) % 50
    for name in ('train', 'val'):
        tokens = np.where(np.arange(40) == 20, 60, ids).astype(np.uint16) if name == split else ids
        tokens.tofile(tmp_path / f'{name}.bin')
    with open(tmp_path / 'meta.pkl', 'wb') as f:
        pickle.dump({'vocab_size': 50, 'itos': {}, 'stoi': {}}, f)
    r = train(*tiny(str(tmp_path), tmp_path / 'out', '--max_iters=5', '--eval_interval=1'))
    assert r.returncode != 0 and r.stderr.count('\n') == 1, r.stderr
    assert r.stderr.startswith(f"error: {tmp_path / split}.bin holds token id 60 (token 20), "
                               "but the model's vocab_size is 50")
    assert not os.path.exists(tmp_path / 'out' / 'ckpt.pt')


def peak_memory_mb(args):
    """Run train.py; return its peak resident memory in MB, as the kernel counted it."""
    proc = subprocess.Popen([sys.executable, 'train.py', *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, proc.stderr.read()[-2000:]
    return usage.ru_maxrss / 1024


def test_start_up_does_not_read_the_whole_token_file(char_data, tmp_path):
    # a 4 GB train.bin of zeros that takes no disk space: reading it all, as a check of its largest
    # token id would, shows in the memory of the process; drawing a few batches does not
    big = tmp_path / 'big'
    big.mkdir()
    for name in ('val.bin', 'meta.pkl'):
        (big / name).write_bytes(open(os.path.join(char_data, name), 'rb').read())
    with open(big / 'train.bin', 'wb') as f:
        f.truncate(4 << 30)
    args = ['--max_iters=2', '--eval_interval=2', '--eval_iters=2']
    small = peak_memory_mb(tiny(char_data, tmp_path / 'small', *args))
    large = peak_memory_mb(tiny(str(big), tmp_path / 'large', *args))
    assert large < small + 100, (small, large)


def test_bad_input_corrupt_checkpoint_and_world_size(char_data, tmp_path):
    (tmp_path / 'ckpt.pt').write_bytes(b'\x80garbage')
    r = train(*tiny(char_data, tmp_path, '--init_from=resume'))
    assert r.returncode != 0 and r.stderr.startswith('error: ')
    assert 'not a readable checkpoint' in r.stderr
    assert (tmp_path / 'ckpt.pt').read_bytes() == b'\x80garbage'  # left as it was
    r = train(*tiny(char_data, tmp_path, '--gradient_accumulation_steps=5'),
              env={'RANK': '0', 'LOCAL_RANK': '0', 'WORLD_SIZE': '2'})
    assert r.returncode != 0
    assert r.stderr.startswith('error: gradient_accumulation_steps=5 does not divide by the 2')
    # srun -n4 python train.py
    r = train(*tiny(char_data, tmp_path), env={'SLURM_STEP_NUM_TASKS': '4'})
    assert r.returncode != 0
    assert r.stderr.startswith('error: srun started 4 copies of train.py without torchrun')


def train_settings():
    """train.py's settings, by running the part of it that defines them."""
    source = open(os.path.join(ROOT, 'train.py')).read().split('config = configure(globals())')[0]
    namespace = {'__file__': 'train.py'}
    exec(source, namespace)
    return settings_of(namespace)


@pytest.mark.parametrize('config', sorted(glob.glob(os.path.join(ROOT, 'config', '*.py'))))
def test_config_files_are_valid(config):
    settings = parse(train_settings(), [config])
    assert settings['batch_size'] * settings['block_size'] > 0


def test_resume_with_another_block_size_is_refused(char_data, tmp_path):
    ok(train(*tiny(char_data, tmp_path, '--max_iters=2', '--eval_interval=2')))
    r = train(*tiny(char_data, tmp_path, '--max_iters=4', '--init_from=resume', '--block_size=16'))
    assert r.returncode != 0
    assert r.stderr.startswith('error: the checkpoint was trained with block_size=32')


# Muon: optimizer='muon' trains the blocks' matrices with Muon and everything else with AdamW.

def test_muon_takes_the_blocks_matrices_and_adamw_the_rest():
    from model import GPT, GPTConfig
    from muon import MuonAdamW
    if not hasattr(torch.optim, 'Muon'):
        pytest.skip('torch.optim.Muon needs torch 2.9 or later')
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=8, vocab_size=11))
    opt = configure_muon(model, 0.1, 1e-3, (0.9, 0.95), 'cpu',
                         dict(lr=0.02, momentum=0.95, weight_decay=0.0))
    assert isinstance(opt, MuonAdamW)
    name = {id(p): n for n, p in model.named_parameters()}
    in_muon = {name[id(p)] for g in opt.muon.param_groups for p in g['params']}
    in_adamw = {name[id(p)] for g in opt.adamw.param_groups for p in g['params']}
    expected = {f'transformer.h.{i}.{m}.weight' for i in range(2)
                for m in ('attn.c_attn', 'attn.c_proj', 'mlp.c_fc', 'mlp.c_proj')}
    assert in_muon == expected
    # embeddings (tied lm_head), LayerNorms, biases
    assert in_adamw == set(name.values()) - expected
    assert 'transformer.wte.weight' in in_adamw and not in_muon & in_adamw
    assert all(g['muon'] for g in opt.muon.param_groups)
    assert not any(g.get('muon') for g in opt.adamw.param_groups)
    assert isinstance(opt.muon, torch.optim.Muon) and isinstance(opt.adamw, torch.optim.AdamW)
    # default: AdamW alone, as nanoGPT
    assert isinstance(model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cpu'), torch.optim.AdamW)


def test_muon_needs_a_torch_that_has_it(monkeypatch):
    from model import GPT, GPTConfig
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=11))
    monkeypatch.delattr(torch.optim, 'Muon', raising=False)  # torch before 2.9
    message = "optimizer='muon' needs torch.optim.Muon, new in torch 2.9"
    with pytest.raises(InputError, match=message):
        configure_muon(model, 0.1, 1e-3, (0.9, 0.95), 'cpu',
                       dict(lr=0.02, momentum=0.95, weight_decay=0.0))


def test_muon_learns_resumes_exactly_and_refuses_an_adamw_checkpoint(char_data, tmp_path):
    muon = ['--optimizer=muon', '--muon_lr=0.02']
    r = ok(train(*tiny(char_data, tmp_path / 'learn', '--max_iters=100', '--eval_interval=100',
                       '--eval_iters=10', '--lr_decay_iters=100', '--learning_rate=1e-2', *muon),
                 timeout=300))
    evals = [float(line.split('val loss ')[1].split(',')[0])
             for line in r.stdout.splitlines() if line.startswith('eval')]
    assert evals[0] > 4.0 and evals[-1] < 2.9, r.stdout
    ckpt = load_checkpoint(os.path.join(tmp_path / 'learn', 'ckpt.pt'))
    assert set(ckpt['optimizer']) == {'muon', 'adamw'}  # both states
    assert all('momentum_buffer' in s for s in ckpt['optimizer']['muon']['state'].values())
    # bit-exact resume, with dropout; 6 is not an eval iteration
    common = ['--dropout=0.1', '--eval_interval=4', '--always_save_checkpoint=True', *muon]
    ok(train(*tiny(char_data, tmp_path / 'straight', '--max_iters=10', *common)))
    ok(train(*tiny(char_data, tmp_path / 'split', '--max_iters=6', *common)))
    ok(train(*tiny(char_data, tmp_path / 'split', '--max_iters=10', '--init_from=resume', *common)))
    assert_same_weights(weights(tmp_path / 'straight'), weights(tmp_path / 'split'))
    # the same run with AdamW differs, so the check above can fail
    ok(train(*tiny(char_data, tmp_path / 'adamw', '--max_iters=10', *common[:-2])))
    assert not torch.equal(weights(tmp_path / 'adamw')['transformer.h.0.mlp.c_fc.weight'],
                           weights(tmp_path / 'straight')['transformer.h.0.mlp.c_fc.weight'])
    # one optimizer's checkpoint resumed with the other: one line, in both directions
    for out, other in (('adamw', 'muon'), ('straight', 'adamw')):
        r = train(*tiny(char_data, tmp_path / out, '--max_iters=12', '--init_from=resume',
                        f'--optimizer={other}'))
        trained = out if out == 'adamw' else 'muon'
        assert r.returncode != 0
        assert r.stderr.startswith(f"error: the checkpoint was trained with optimizer='{trained}'")
        assert r.stderr.count('\n') == 1 and 'Traceback' not in r.stderr


def test_muon_ddp_on_cpu_matches_one_process(char_data, tmp_path):
    args = ['--max_iters=3', '--eval_interval=3', '--gradient_accumulation_steps=4',
            '--optimizer=muon']
    ok(train(*tiny(char_data, tmp_path / 'single', *args)))
    r = ok(torchrun('train.py', *tiny(char_data, tmp_path / 'ddp', *args)))
    assert '2 process(es)' in r.stdout
    single, ddp = weights(tmp_path / 'single'), weights(tmp_path / 'ddp')
    # torch.optim.Muon orthogonalises in bfloat16, which turns the all-reduce's rounding into
    # differences of ~2e-5 on average (a few reach 1e-3) after 3 steps; a run on other batches
    # differs by ~2e-2 on average
    ok(train(*tiny(char_data, tmp_path / 'other', *args, '--seed=7')))
    other = weights(tmp_path / 'other')
    difference = lambda a, b: torch.cat([(a[k] - b[k]).abs().flatten() for k in a])  # noqa: E731
    assert difference(single, ddp).mean() < 2e-4 and difference(single, ddp).max() < 1e-2
    assert difference(single, other).mean() > 5e-3


def test_muon_with_float16_loss_scaling(char_data, tmp_path):
    # GradScaler unscales and steps both optimizers; on a CPU float16 runs as well (slowly)
    r = ok(train(*tiny(char_data, tmp_path, '--max_iters=3', '--eval_interval=3',
                       '--optimizer=muon', '--dtype=float16')))
    assert 'float16' in r.stdout
    assert all(torch.isfinite(w).all() for w in weights(tmp_path).values())


def test_float16_resume_from_any_checkpoint(char_data, tmp_path):
    # a float32 (or bfloat16) run saves an empty scaler state: a float16 resume starts a fresh
    # scaler
    ok(train(*tiny(char_data, tmp_path, '--max_iters=2', '--eval_interval=2')))
    assert load_checkpoint(os.path.join(tmp_path, 'ckpt.pt'))['scaler'] == {}
    r = ok(train(*tiny(char_data, tmp_path, '--max_iters=4', '--eval_interval=2',
                       '--init_from=resume', '--dtype=float16')))
    assert 'float16' in r.stdout and 'iter 4:' in r.stdout
    ckpt = load_checkpoint(os.path.join(tmp_path, 'ckpt.pt'))
    # 2 ** 16: GradScaler's initial scale
    assert ckpt['iter_num'] == 4 and ckpt['scaler']['scale'] == 2.0 ** 16
    # a float16 checkpoint's scaler is restored: a scale the run would never reach by itself
    # carries on
    ckpt['scaler']['scale'] = 1024.0
    save_checkpoint(ckpt, os.path.join(tmp_path, 'ckpt.pt'))
    ok(train(*tiny(char_data, tmp_path, '--max_iters=6', '--eval_interval=2', '--init_from=resume',
                   '--dtype=float16')))
    assert load_checkpoint(os.path.join(tmp_path, 'ckpt.pt'))['scaler']['scale'] == 1024.0
    # and back to float32, which has no use for it
    ok(train(*tiny(char_data, tmp_path, '--max_iters=7', '--eval_interval=2',
                   '--init_from=resume')))


def test_evaluation_runs_only_append_to_the_metrics(char_data, tmp_path):
    ok(train(*tiny(char_data, tmp_path, '--max_iters=6', '--eval_interval=3')))
    path = tmp_path / 'metrics.jsonl'
    training = path.read_text().splitlines()
    assert [json.loads(line)['iter'] for line in training if 'val_loss' in line] == [0, 3, 6]
    ok(train(*tiny(char_data, tmp_path, '--max_iters=6', '--eval_interval=3', '--init_from=resume',
                   '--eval_only=True')))
    # as config/eval_gpt2.py into a training out_dir
    ok(train(*tiny(char_data, tmp_path, '--eval_only=True')))
    ok(train(*tiny(char_data, tmp_path, '--eval_only=True')))
    lines = path.read_text().splitlines()
    assert lines[:len(training)] == training and not os.path.exists(str(path) + '.prev')
    added = [json.loads(line) for line in lines[len(training):]]
    assert len(added) == 3 and all(r['eval_only'] and 'val_loss' in r for r in added)
    assert [r['iter'] for r in added] == [6, 0, 0]
    # and the checkpoint stays
    assert load_checkpoint(os.path.join(tmp_path, 'ckpt.pt'))['iter_num'] == 6


def test_recompute_trains_the_same_weights_and_keeps_only_block_inputs(char_data, tmp_path):
    # the same run with and without recompute, dropout on: the same losses and weights, bit for bit
    args = ['--max_iters=3', '--eval_interval=3', '--dropout=0.1']
    plain = ok(train(*tiny(char_data, tmp_path / 'plain', *args)))
    again = ok(train(*tiny(char_data, tmp_path / 'recompute', *args, '--recompute=True')))

    def loss(out):
        return [line.split('loss ')[1].split(',')[0]
                for line in out.splitlines() if line.startswith('iter ')]

    assert loss(plain.stdout) == loss(again.stdout) and len(loss(plain.stdout)) == 3
    assert_same_weights(weights(tmp_path / 'plain'), weights(tmp_path / 'recompute'))
    # what the forward pass keeps for the backward pass: with recompute, the blocks' inputs and
    # little else
    from model import GPT, GPTConfig
    model = GPT(GPTConfig(n_layer=4, n_head=2, n_embd=64, block_size=64, vocab_size=65,
                          dropout=0.1))
    x = torch.randint(65, (4, 64))

    def saved_bytes(recompute):
        model.recompute, kept = recompute, []

        def pack(t):  # counts the bytes of each tensor saved, and saves it as it is
            kept.append(t.numel() * t.element_size())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(x, x)
        return sum(kept)
    assert saved_bytes(True) < 0.5 * saved_bytes(False)
