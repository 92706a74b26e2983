"""What a user hits first: no command loses a run or a checkpoint, nothing trains or samples with
the wrong vocabulary or tokenizer, and a bad input is one `error:` line. Tiny models on a CPU.

    python -m pytest -q tests/test_nothing_lost.py
"""

import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

import data
import devices
import distributed
from checkpoint import load_checkpoint
from conftest import char_dataset, python
from cpu_generation import can_pack
from errors import InputError
from model import GPT, GPTConfig
from test_model import fake_cuda  # noqa: F401 (a fixture)
from test_train import TINY, char_data, ok, tiny, train  # noqa: F401 (char_data: a fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT = os.path.join(ROOT, 'data', 'text', 'prepare.py')
OWT = os.path.join(ROOT, 'data', 'openwebtext', 'prepare.py')


def one_error_line(r, *words):
    """The run failed with exactly one line, `error: ...`, holding each of words; no traceback."""
    assert r.returncode != 0, r.stdout[-2000:]
    lines = [
        line for line in r.stderr.strip().splitlines() if not line.startswith('Loading weights')
    ]
    assert len(lines) == 1 and lines[0].startswith('error: '), r.stderr[-3000:]
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def sample(*args, cwd=ROOT):
    return python([os.path.join(ROOT, 'sample.py'), *args], cwd=cwd, timeout=180)


def read(path):
    with open(path, 'rb') as f:
        return f.read()


def interrupted(args, after):
    """train.py with args, stopped by Ctrl-C (SIGINT) once it has printed a line starting with
    after; what it returned, checked to be status 0."""
    run = python.start(['train.py', *args], env=dict(os.environ, PYTHONUNBUFFERED='1'))
    run.wait_for(after)
    os.kill(run.pid, signal.SIGINT)
    r = run.wait(60)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


def tiny_gpt2(path, vocab_size, n_positions=64, **config):
    """A random 2-layer GPT-2 saved by transformers."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    GPT2LMHeadModel(
        GPT2Config(
            vocab_size=vocab_size,
            n_positions=n_positions,
            n_embd=32,
            n_layer=2,
            n_head=2,
            bos_token_id=None,
            eos_token_id=None,
            **config,
        )
    ).save_pretrained(path)
    return str(path)


# ---------------------------------------------------------------------------- loses work


def test_an_export_into_the_run_folder_keeps_the_checkpoint(char_data, tmp_path):
    out = tmp_path / 'run'
    ok(train(*tiny(char_data, out, '--max_iters=2', '--eval_interval=2')))
    kept = {name: read(out / name) for name in ('ckpt.pt', 'metrics.jsonl')}
    one_error_line(
        sample(f'--out_dir={out}', f'--export_hf={out}'), 'not empty', '--overwrite=True'
    )
    for _ in range(2):  # and again over its own export
        ok(sample(f'--out_dir={out}', f'--export_hf={out}', '--overwrite=True'))
        assert {name: read(out / name) for name in kept} == kept
    from transformers import GPT2LMHeadModel

    GPT2LMHeadModel.from_pretrained(out)
    ok(
        sample(f'--out_dir={out}', f'--export_hf={tmp_path / "alone"}')
    )  # the same export into a folder of its own
    assert sorted(os.listdir(out)) == sorted([*kept, *os.listdir(tmp_path / 'alone')])


def test_a_stop_keeps_the_best_checkpoint_and_resumes_from_the_stop(char_data, tmp_path):
    # always_save_checkpoint=False: ckpt.pt is the best model. Ctrl-C after its save at iter 100
    # must leave it, and save the state of the stop beside it for a resume.
    interrupted(tiny(char_data, tmp_path, '--max_iters=100000', '--eval_interval=100',
                     '--always_save_checkpoint=False', '--n_embd=64'), after='saved')
    best, last = (load_checkpoint(str(tmp_path / name)) for name in ('ckpt.pt', 'last.pt'))
    assert best['iter_num'] == 100 and last['iter_num'] > 100
    assert last['best_val_loss'] == best['best_val_loss']
    stopped_at = last['iter_num']
    r = ok(
        train(
            *tiny(
                char_data,
                tmp_path,
                f'--max_iters={stopped_at + 2}',
                '--eval_interval=100',
                '--always_save_checkpoint=False',
                '--n_embd=64',
                '--init_from=resume',
            )
        )
    )
    assert f"iter {stopped_at + 1}:" in r.stdout and 'last.pt' in r.stdout


def test_a_new_run_leaves_the_earlier_one_until_it_saves_and_never_destroys_one(
    char_data, tmp_path
):
    args = ['--max_iters=2', '--eval_interval=2']
    ok(train(*tiny(char_data, tmp_path, *args)))
    first = {name: read(tmp_path / name) for name in ('ckpt.pt', 'metrics.jsonl')}
    # a new run stopped before its first evaluation: the folder as it was
    interrupted(tiny(char_data, tmp_path, '--max_iters=100000', '--eval_interval=100000',
                     '--seed=2'), after='iter 2:')
    assert sorted(os.listdir(tmp_path)) == sorted(first)
    assert {name: read(tmp_path / name) for name in first} == first
    # two new runs that finish: each earlier one is set aside under its own name, none destroyed
    ok(train(*tiny(char_data, tmp_path, *args, '--seed=3')))
    second = read(tmp_path / 'ckpt.pt')
    ok(train(*tiny(char_data, tmp_path, *args, '--seed=4')))
    assert read(tmp_path / 'ckpt.pt.prev') == first['ckpt.pt']
    assert read(tmp_path / 'metrics.jsonl.prev') == first['metrics.jsonl']
    assert read(tmp_path / 'ckpt.pt.prev2') == second
    assert load_checkpoint(str(tmp_path / 'ckpt.pt'))['config']['seed'] == 4
    # the last run's metrics, whole, in a file of its own
    records = [json.loads(line) for line in open(tmp_path / 'metrics.jsonl')]
    assert [r['iter'] for r in records if 'val_loss' in r] == [0, 2]
    assert [r['iter'] for r in records if 'loss' in r] == [1, 2]


def test_a_stop_after_the_first_evaluation_saves_the_new_run(char_data, tmp_path):
    # with always_save_checkpoint=False and no better val loss (lr 0: the weights stay), the new
    # run saves nothing at its evaluation; a stop after it saves the new run, the earlier set aside
    ok(train(*tiny(char_data, tmp_path, '--max_iters=2', '--eval_interval=2')))
    first = read(tmp_path / 'ckpt.pt')
    r = interrupted(tiny(char_data, tmp_path, '--max_iters=100000', '--eval_interval=5',
                         '--seed=7', '--always_save_checkpoint=False', '--learning_rate=0',
                         '--decay_lr=False'), after='eval iter 5')
    lines = r.stdout.splitlines()
    after_eval = lines[[i for i, line in enumerate(lines) if line.startswith('eval iter 5')][0] + 1]
    assert not after_eval.startswith('saved')  # (no better val loss: nothing saved there)
    assert read(tmp_path / 'ckpt.pt.prev') == first
    stopped = load_checkpoint(str(tmp_path / 'ckpt.pt'))
    assert stopped['config']['seed'] == 7 and stopped['iter_num'] > 5
    r = ok(
        train(
            *tiny(
                char_data,
                tmp_path,
                f"--max_iters={stopped['iter_num'] + 1}",
                '--seed=7',
                '--always_save_checkpoint=False',
                '--eval_interval=5',
                '--init_from=resume',
            )
        )
    )
    assert f"at iter {stopped['iter_num']}" in r.stdout


# ---------------------------------------------------------------------------- silently wrong


def test_train_refuses_a_dataset_of_another_vocabulary(char_data, tmp_path, shakespeare_txt):
    out = tmp_path / 'out'
    ok(train(*tiny(char_data, out, '--max_iters=2', '--eval_interval=2')))
    before = read(out / 'ckpt.pt')
    lower = char_dataset(tmp_path / 'lower', open(shakespeare_txt).read()[:20_000].lower())
    one_error_line(
        train(*tiny(lower, out, '--max_iters=4', '--init_from=resume')), 'characters', '--out_dir'
    )
    assert read(out / 'ckpt.pt') == before
    # GPT-2's 50257 tokens finetuned on characters: refused before anything is trained or written
    gpt2 = tiny_gpt2(tmp_path / 'gpt2', 50257)
    r = train(*tiny(char_data, tmp_path / 'ft', f'--init_from={gpt2}', '--max_iters=2'))
    one_error_line(r, 'tokenizer=gpt2')
    assert not os.path.exists(tmp_path / 'ft') and 'iter ' not in r.stdout
    # a token id beyond the vocabulary points at the data, not at a setting train.py does not have
    tokens = data.Tokens(os.path.join(char_data, 'val.bin'))
    tokens.vocab_size = 3
    with pytest.raises(InputError) as error:
        tokens.batch(2, 8, torch.Generator().manual_seed(0))
    assert 'vocab_size=' not in str(error.value).split(':', 1)[1] and 'tokenizer' in str(
        error.value
    )


def test_gpt2_token_datasets_remove_a_character_vocabulary(tmp_path, shakespeare_txt):
    # openwebtext's (and fineweb_edu's) prepare.py into a folder that held a character dataset
    text = open(shakespeare_txt).read()[:40_000]
    char_dataset(tmp_path / 'ds', text)
    with open(tmp_path / 'corpus.jsonl', 'w') as f:
        for i in range(8):
            f.write(json.dumps({'text': text[i * 5000 : (i + 1) * 5000]}) + '\n')
    env = dict(
        os.environ,
        HF_HUB_OFFLINE='1',
        HF_DATASETS_OFFLINE='1',
        TQDM_DISABLE='1',
        HF_DATASETS_CACHE=str(tmp_path / 'cache'),
    )
    r = python(
        [
            OWT,
            f'--source={tmp_path / "corpus.jsonl"}',
            f'--out_dir={tmp_path / "ds"}',
            '--val_fraction=0.25',
            '--num_proc=1',
        ],
        env=env,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(os.listdir(tmp_path / 'ds')) == ['train.bin', 'val.bin']


def prepare_bpe(text_path, name, *args):
    r = python(
        [
            TEXT,
            f'--input={text_path}',
            f'--name={name}',
            '--tokenizer=bpe',
            '--vocab_size=300',
            '--min_split_tokens=64',
            *args,
        ]
    )
    assert r.returncode == 0, r.stderr[-2000:]


def test_a_checkpoint_keeps_its_tokenizer(tmp_path, shakespeare_txt):
    text = open(shakespeare_txt).read()
    (tmp_path / 'a.txt').write_text(text[:30_000])
    (tmp_path / 'b.txt').write_text(text[60_000:90_000].upper())
    ds, out = tmp_path / 'ds', tmp_path / 'out'
    prepare_bpe(tmp_path / 'a.txt', ds)
    original = data.load_tokenizer(str(ds))
    ok(train(*tiny(str(ds), out, '--max_iters=4', '--eval_interval=4')))
    prepare_bpe(tmp_path / 'b.txt', ds)  # the same name, other text: other tokens of the same count
    again = data.load_tokenizer(str(ds))
    assert again.vocab_size == original.vocab_size and again.tok.to_str() != original.tok.to_str()
    # sample.py encodes and decodes with the checkpoint's tokenizer, and the export ships it
    model = GPT.from_checkpoint(load_checkpoint(str(out / 'ckpt.pt'))).eval()
    prompt = 'ROMEO: the king'
    ids = model.generate(torch.tensor([original.encode(prompt)]), 20, temperature=0)[0].tolist()
    r = ok(
        sample(
            f'--out_dir={out}',
            f'--start={prompt}',
            '--num_samples=1',
            '--max_new_tokens=20',
            '--temperature=0',
            '--dtype=float32',
            '--device=cpu',
        )
    )
    assert original.decode(ids) + '\n---------------' in r.stdout
    ok(sample(f'--out_dir={out}', f'--export_hf={tmp_path / "hf"}'))
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(tmp_path / 'hf').encode(prompt) == original.encode(prompt)
    # and a resume on the dataset prepared again is refused
    one_error_line(train(*tiny(str(ds), out, '--max_iters=8', '--init_from=resume')), 'tokenizer')


def test_from_pretrained_refuses_what_it_does_not_compute(tmp_path):
    with pytest.raises(InputError, match='scale_attn_weights'):
        GPT.from_pretrained(tiny_gpt2(tmp_path / 'unscaled', 65, scale_attn_weights=False))
    # the same model with GPT-2's scaling loads, and computes transformers' logits
    from transformers import GPT2LMHeadModel

    path = tiny_gpt2(tmp_path / 'scaled', 65)
    ours, theirs = GPT.from_pretrained(path).eval(), GPT2LMHeadModel.from_pretrained(path).eval()
    idx = torch.randint(65, (1, 16))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx, idx)[0], theirs(idx).logits, atol=1e-5, rtol=1e-4)


LORA = [
    '--lora_rank=4',
    '--lora_alpha=8',
    '--learning_rate=1e-2',
    '--max_iters=2',
    '--eval_interval=2',
]


def test_a_lora_resume_checks_its_base(char_data, tmp_path):
    from transformers import GPT2LMHeadModel

    vocab = pickle.load(open(os.path.join(char_data, 'meta.pkl'), 'rb'))['vocab_size']
    base, out = tiny_gpt2(tmp_path / 'base', vocab), tmp_path / 'out'
    ok(train(*tiny(char_data, out, f'--init_from={base}', *LORA)))
    resume = [*tiny(char_data, out, *LORA[:3], '--max_iters=4', '--init_from=resume')]
    ok(train(*resume))  # the base as it was: the run continues
    before = read(out / 'ckpt.pt')
    resume = [*tiny(char_data, out, *LORA[:3], '--max_iters=6', '--init_from=resume')]
    # an adapted matrix of the base changed a little: base + update is no longer what was saved
    changed = GPT2LMHeadModel.from_pretrained(base)
    with torch.no_grad():
        changed.transformer.h[1].mlp.c_fc.weight.mul_(1.01)
    changed.save_pretrained(base)
    one_error_line(train(*resume), 'not the model this LoRA run started from', 'mlp.c_fc.weight')
    assert read(out / 'ckpt.pt') == before
    shutil.rmtree(base)
    one_error_line(train(*resume), 'base model', base, 'missing')
    assert read(out / 'ckpt.pt') == before


def test_bpe_data_keeps_a_literal_end_of_text_as_text(tmp_path, shakespeare_txt):
    text = open(shakespeare_txt).read()[:20_000]
    (tmp_path / 'a.txt').write_text(text[:10_000] + ' write <|endoftext|> here ' + text[10_000:])
    prepare_bpe(tmp_path / 'a.txt', tmp_path / 'ds')
    tokenizer = data.load_tokenizer(str(tmp_path / 'ds'))
    ids = np.concatenate(
        [np.fromfile(tmp_path / 'ds' / f'{s}.bin', dtype=np.uint16) for s in ('train', 'val')]
    )
    assert (
        list(ids).count(tokenizer.eot) == 1 and ids[-1] == tokenizer.eot
    )  # the separator after the file only
    assert tokenizer.decode(ids[:-1].tolist()) == (tmp_path / 'a.txt').read_text()


# ---------------------------------------------------------------------------- crashes


@pytest.mark.skipif(
    not can_pack(torch.zeros(1, dtype=torch.bfloat16)), reason='no bfloat16 oneDNN on this CPU'
)
def test_sample_compiled_in_bfloat16_past_block_size(char_data, tmp_path):
    ok(train(*tiny(char_data, tmp_path, '--max_iters=2', '--eval_interval=2', '--block_size=16')))
    r = ok(
        sample(
            f'--out_dir={tmp_path}',
            '--compile=True',
            '--dtype=bfloat16',
            '--device=cpu',
            '--num_samples=1',
            '--max_new_tokens=40',
        )
    )
    # (after the settings)
    text = r.stdout.split('compile = True\n', 1)[1].split('\n---------------')[0]
    assert len(text) == 41  # the prompt '\n' and 40 characters


def can_write_in(folder):
    try:
        with open(os.path.join(folder, 'probe.tmp'), 'wb'):
            pass
    except OSError:
        return False
    os.remove(os.path.join(folder, 'probe.tmp'))
    return True


def out_dir_cases(tmp_path):
    (tmp_path / 'a_file').write_text('keep me')
    locked = tmp_path / 'locked'
    locked.mkdir()
    locked.chmod(0o555)
    if can_write_in(locked):  # root writes anyway: a folder where the kernel refuses files instead
        locked = '/sys' if os.path.isdir('/sys') and not can_write_in('/sys') else None
    return {
        'a file': (tmp_path / 'a_file', 'a file'),
        'empty': ('', 'out_dir is empty'),
        'under a file': (tmp_path / 'a_file' / 'out', 'a file'),
        'read-only': (locked, 'cannot write'),
    }


@pytest.mark.parametrize('case', ['a file', 'empty', 'under a file', 'read-only'])
def test_a_bad_out_dir_is_one_line_before_training(char_data, tmp_path, case):
    out_dir, words = out_dir_cases(tmp_path)[case]
    if out_dir is None:
        pytest.skip('no folder here that this user cannot write')
    r = train(
        *TINY,
        f'--dataset={char_data}',
        f'--out_dir={out_dir}',
        '--max_iters=2',
        '--eval_interval=2',
    )
    one_error_line(r, words)
    assert 'iter ' not in r.stdout and (tmp_path / 'a_file').read_text() == 'keep me'


@pytest.mark.parametrize('value', ['2.0', '-0.1', '1.0'])
def test_dropout_outside_0_1_is_one_line(char_data, tmp_path, value):
    one_error_line(
        train(*tiny(char_data, tmp_path / 'out', f'--dropout={value}', '--max_iters=2')), 'dropout'
    )
    assert not os.path.exists(tmp_path / 'out')
    with pytest.raises(InputError, match='dropout'):
        GPTConfig(dropout=float(value))


def test_fsdp_on_a_torch_before_2_6_is_one_line(monkeypatch, char_data, tmp_path):
    monkeypatch.setattr(torch, '__version__', '2.5.1+cu124')
    with pytest.raises(InputError, match='torch 2.6'):
        distributed.shard_model(
            GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=4, vocab_size=8)),
            'cpu',
            torch.float32,
            1,
        )
    # train.py says it before any process group or import of FSDP
    driver = (
        "import sys, runpy, torch; torch.__version__ = '2.5.1+cu124'; sys.argv = sys.argv[1:]; "
        "runpy.run_path('train.py', run_name='__main__')"
    )
    r = train_through(driver, dict(RANK='0', LOCAL_RANK='0', WORLD_SIZE='1', LOCAL_WORLD_SIZE='1'),
                      tiny(char_data, tmp_path, '--fsdp=True'))
    one_error_line(r, 'torch 2.6', '2.5.1')


@pytest.mark.filterwarnings('ignore:User provided device_type')
def test_more_processes_than_gpus_on_a_node_is_one_line(fake_cuda):  # noqa: F811
    fake_cuda['count'] = 1
    with pytest.raises(InputError, match='sees only 1 GPUs'):
        devices.setup_device(
            'cuda', 'auto', local_rank=0, local_world_size=2
        )  # rank 0 too: all stop at once
    assert devices.setup_device('cuda', 'auto', local_rank=0, local_world_size=1)[0] == 'cuda:0'
    fake_cuda['count'] = 4
    with pytest.raises(InputError, match='sees only 4 GPUs'):
        devices.setup_device('cuda', 'auto', local_rank=1, local_world_size=8)
    assert devices.setup_device('cuda', 'auto', local_rank=3, local_world_size=4)[0] == 'cuda:3'


def test_train_refuses_more_processes_than_gpus_before_the_process_group(char_data, tmp_path):
    # torchrun --nproc_per_node=2 on a node with one GPU (torch.cuda answers as such a machine)
    driver = (
        "import sys, runpy, torch; torch.cuda.is_available = lambda: True; "
        "torch.cuda.device_count = lambda: 1; sys.argv = sys.argv[1:]; "
        "runpy.run_path('train.py', run_name='__main__')"
    )
    args = [a for a in tiny(char_data, tmp_path) if a != '--device=cpu']
    r = train_through(driver, dict(RANK='1', LOCAL_RANK='1', WORLD_SIZE='2', LOCAL_WORLD_SIZE='2'),
                      [*args, '--device=cuda'])
    one_error_line(r, 'sees only 1 GPUs', '--nproc_per_node=1')


def train_through(driver, env, args):
    """train.py args run by driver (python -c code that patches torch, then runs train.py) as
    one process of a torchrun world, its variables in env."""
    return subprocess.run([sys.executable, '-c', driver, 'train.py', *args], cwd=ROOT,
                          env=dict(os.environ, **env), capture_output=True, text=True,
                          timeout=120)


def test_the_readme_export_example_runs_on_the_quick_start_model(char_data, tmp_path):
    readme = open(os.path.join(ROOT, 'README.md')).read()
    block = (
        readme.split('## Exporting to Hugging Face', 1)[1].split('```sh\n', 1)[1].split('```', 1)[0]
    )
    export, use = block.strip().splitlines()
    # the quick start's model on a CPU: config/train_shakespeare_char_cpu.py's context
    settings = {}
    exec(open(os.path.join(ROOT, 'config', 'train_shakespeare_char_cpu.py')).read(), settings)
    out = tmp_path / settings['out_dir']
    ok(
        train(
            *tiny(
                char_data,
                out,
                '--max_iters=2',
                '--eval_interval=2',
                f"--block_size={settings['block_size']}",
            )
        )
    )
    r = ok(python([os.path.join(ROOT, 'sample.py'), *export.split()[2:]], cwd=tmp_path))
    assert re.search(
        rf"context {settings['block_size']}\b", r.stdout
    )  # the export says the context
    code = use.split('python -c ', 1)[1].strip('"')
    r = subprocess.run(
        [sys.executable, '-c', code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, HF_HUB_OFFLINE='1'),
    )
    assert r.returncode == 0 and r.stdout.startswith('ROMEO:'), r.stderr[-2000:]
