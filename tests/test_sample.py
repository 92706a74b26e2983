"""sample.py end to end, in a subprocess: our checkpoints (character-level and GPT-2 BPE), a
nanoGPT checkpoint, a transformers GPT-2 directory, prompts from files, and every bad input
stopping with one 'error: ' line. Greedy samples are checked against model.generate."""

import copy
import os
import pickle
import re

import pytest
import torch

from checkpoint import save_checkpoint
from conftest import python
from devices import inference_dtype
from model import GPT, GPTConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHARS = sorted(set("\n !',.:;?-abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"))
MODEL_ARGS = dict(n_layer=2, n_head=2, n_embd=32, block_size=32, bias=False, dropout=0.1)


def sample(*args, cwd):
    # float32 unless args say otherwise: the text is compared with model.generate's in float32
    return python([os.path.join(ROOT, 'sample.py'), '--device=cpu', '--dtype=float32', *args],
                  cwd=cwd, timeout=120)


def random_model(**model_args):
    torch.manual_seed(0)
    m = GPT(GPTConfig(**model_args))
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.5)  # far from init, so a wrongly loaded weight changes the text
    return m.eval()


def greedy(model, ids, n):
    return model.generate(torch.tensor([ids]), n, temperature=0)[0].tolist()


@pytest.fixture(scope='module')
def char_run(tmp_path_factory):
    """A character-level dataset folder (meta.pkl only) and a checkpoint trained 'on' it, in
    this project's format. Returns (out_dir, model, stoi, itos)."""
    root = tmp_path_factory.mktemp('char')
    dataset = root / 'tiny_char'
    dataset.mkdir()
    stoi = {ch: i for i, ch in enumerate(CHARS)}
    itos = {i: ch for i, ch in enumerate(CHARS)}
    with open(dataset / 'meta.pkl', 'wb') as f:
        pickle.dump({'vocab_size': len(CHARS), 'itos': itos, 'stoi': stoi}, f)
    model_args = dict(MODEL_ARGS, vocab_size=len(CHARS))
    model = random_model(**model_args)
    out_dir = root / 'out'
    out_dir.mkdir()
    optimizer = model.configure_optimizers(0.1, 1e-3, (0.9, 0.99), 'cpu')
    save_checkpoint({'model': model.state_dict(), 'optimizer': optimizer.state_dict(),
                     'model_args': model_args, 'iter_num': 10, 'best_val_loss': 2.5,
                     'config': {'dataset': str(dataset), 'batch_size': 4}, 'scaler': {}},
                    str(out_dir / 'ckpt.pt'))
    return str(out_dir), model, stoi, itos


def test_char_checkpoint_greedy_matches_generate(char_run, tmp_path):
    out_dir, model, stoi, itos = char_run
    r = sample(f'--out_dir={out_dir}', '--start=To be', '--temperature=0', '--num_samples=2',
               '--max_new_tokens=40', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    text = ''.join(itos[i] for i in greedy(model, [stoi[c] for c in 'To be'], 40))
    assert r.stdout.count(text + '\n---------------\n') == 2


def test_samples_in_batches(char_run, tmp_path):
    """All samples at once, or max_batch at a time: each the tokens the same seeded draws give
    model.generate on that batch (the old one-by-one loop with max_batch=1), each different."""
    out_dir, model, stoi, itos = char_run
    x = torch.tensor([[stoi['\n']]])
    for max_batch, sizes in [(0, [4]), (3, [3, 1]), (1, [1, 1, 1, 1])]:
        r = sample(f'--out_dir={out_dir}', '--num_samples=4', f'--max_batch={max_batch}',
                   '--max_new_tokens=20', '--seed=5', cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        torch.manual_seed(5)
        batches = [model.generate(x.expand(b, -1), 20, temperature=0.8, top_k=200) for b in sizes]
        expected = [row for batch in batches for row in batch.tolist()]
        texts = ''.join(''.join(itos[i] for i in ids) + '\n---------------\n' for ids in expected)
        assert r.stdout.endswith(texts)
        assert len({tuple(ids) for ids in expected}) == 4
        line = r.stderr.strip().splitlines()[-1]
        assert re.fullmatch(r'generated 80 tokens in [0-9.]+ s \([0-9,.]+ tokens/s, dtype float32; '
                            r'reading the 1-token prompt included\)', line), line


def test_weights_cast_to_the_inference_dtype(char_run, tmp_path):
    out_dir, model, stoi, itos = char_run
    dtype = inference_dtype('cpu')  # what --dtype=auto gives on this CPU
    r = sample(f'--out_dir={out_dir}', '--dtype=auto', '--start=To be', '--temperature=0',
               '--num_samples=1', '--max_new_tokens=30', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    cast = copy.deepcopy(model).to(dtype)
    text = ''.join(itos[i] for i in greedy(cast, [stoi[c] for c in 'To be'], 30))
    assert r.stdout.endswith(text + '\n---------------\n')
    assert f"dtype {str(dtype).removeprefix('torch.')};" in r.stderr


def test_seeded_sampling_is_repeatable(char_run, tmp_path):
    out_dir = char_run[0]
    runs = [sample(f'--out_dir={out_dir}', f'--seed={seed}', '--top_p=0.9', '--num_samples=1',
                   '--max_new_tokens=30', cwd=tmp_path).stdout for seed in (1, 1, 2)]
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_prompt_from_file(char_run, tmp_path):
    out_dir, model, stoi, itos = char_run
    (tmp_path / 'prompt.txt').write_text('First Citizen:\nSpeak.')
    r = sample(f'--out_dir={out_dir}', '--start=FILE:prompt.txt', '--temperature=0',
               '--num_samples=1', '--max_new_tokens=10', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    text = ''.join(itos[i] for i in greedy(model, [stoi[c] for c in 'First Citizen:\nSpeak.'], 10))
    assert text + '\n---------------\n' in r.stdout


def test_long_prompt_is_cropped_with_a_note(char_run, tmp_path):
    out_dir, model, stoi, itos = char_run
    prompt = 'abcdefghij' * 5  # 50 characters, block_size is 32
    r = sample(f'--out_dir={out_dir}', f'--start={prompt}', '--temperature=0', '--num_samples=1',
               '--max_new_tokens=5', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert 'note: the prompt is 50 tokens, longer than the model\'s block_size 32' in r.stdout
    text = ''.join(itos[i] for i in greedy(model, [stoi[c] for c in prompt[-32:]], 5))
    assert r.stdout.endswith('keeping its last 32\n' + text + '\n---------------\n')


def test_nanogpt_checkpoint(char_run, tmp_path):
    # nanoGPT's train.py saves the compiled model's state dict ('_orig_mod.' keys), best_val_loss
    # as a tensor, and these keys only.
    _, model, stoi, itos = char_run
    dataset = os.path.dirname(char_run[0]) + '/tiny_char'
    model_args = dict(MODEL_ARGS, vocab_size=len(CHARS))
    optimizer = model.configure_optimizers(0.1, 1e-3, (0.9, 0.99), 'cpu')
    nanogpt_config = {'out_dir': 'out-shakespeare-char', 'eval_interval': 250, 'dataset': dataset,
                      'batch_size': 64, 'block_size': 32, 'learning_rate': 1e-3, 'compile': True,
                      'dtype': 'bfloat16', 'device': 'cuda', 'backend': 'nccl', 'wandb_log': False}
    (tmp_path / 'out').mkdir()
    torch.save({'model': {'_orig_mod.' + k: v for k, v in model.state_dict().items()},
                'optimizer': optimizer.state_dict(), 'model_args': model_args, 'iter_num': 5000,
                'best_val_loss': torch.tensor(1.4697), 'config': nanogpt_config},
               tmp_path / 'out' / 'ckpt.pt')
    r = sample('--out_dir=out', '--start=\n', '--temperature=0', '--num_samples=1',
               '--max_new_tokens=30', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    text = ''.join(itos[i] for i in greedy(model, [stoi['\n']], 30))
    assert text + '\n---------------\n' in r.stdout


def test_gpt2_bpe_checkpoint(tmp_path):
    import tiktoken
    enc = tiktoken.get_encoding('gpt2')
    model_args = dict(n_layer=1, n_head=2, n_embd=16, block_size=32, bias=True, dropout=0.0,
                      vocab_size=50304)
    model = random_model(**model_args)
    with torch.no_grad():
        model.lm_head.weight[50257:] *= 4  # make the padding ids likely (they are never fed in)
    (tmp_path / 'out').mkdir()
    save_checkpoint({'model': model.state_dict(), 'model_args': model_args, 'iter_num': 0,
                     'best_val_loss': 9.0, 'config': {'dataset': str(tmp_path / 'no_meta_here')}},
                    str(tmp_path / 'out' / 'ckpt.pt'))
    r = sample('--out_dir=out', '--start=Hello, world', '--temperature=0', '--num_samples=1',
               '--max_new_tokens=20', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    ids = greedy(model, enc.encode('Hello, world'), 20)
    assert enc.decode([i for i in ids if i < enc.n_vocab]) + '\n---------------\n' in r.stdout
    # Ids of the padded vocabulary (50257 and up) have no text: they are left out, not an error.
    r = sample('--out_dir=out', '--start=Hi', '--temperature=3.0', '--top_k=0', '--seed=5',
               '--num_samples=1', '--max_new_tokens=25', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    torch.manual_seed(5)
    ids = model.generate(torch.tensor([enc.encode('Hi')]), 25, temperature=3.0)[0].tolist()
    assert max(ids) >= enc.n_vocab
    assert enc.decode([i for i in ids if i < enc.n_vocab]) + '\n---------------\n' in r.stdout
    # --top_k=None is all tokens, as 0 is (as the message for a bad top_k offers)
    r2 = sample('--out_dir=out', '--start=Hi', '--temperature=3.0', '--top_k=None', '--seed=5',
                '--num_samples=1', '--max_new_tokens=25', cwd=tmp_path)

    def sampled(out):  # (the settings are echoed above it)
        return out.split('---------------')[0].splitlines()[-1]

    assert r2.returncode == 0 and sampled(r2.stdout) == sampled(r.stdout), r2.stderr
    # a prompt file is read as written: its '\r\n' are the tokens of '\r\n', not of '\n'
    model = random_model(**model_args)  # (without likely padding ids, whose text is empty)
    (tmp_path / 'plain').mkdir()
    save_checkpoint({'model': model.state_dict(), 'model_args': model_args, 'iter_num': 0,
                     'best_val_loss': 9.0, 'config': {}}, str(tmp_path / 'plain' / 'ckpt.pt'))
    (tmp_path / 'prompt.txt').write_bytes(b'Hello,\r\nworld')
    r = sample('--out_dir=plain', '--start=FILE:prompt.txt', '--temperature=0', '--num_samples=1',
               '--max_new_tokens=20', cwd=tmp_path)
    assert r.returncode == 0, r.stderr

    def continuation(prompt):
        return enc.decode(greedy(model, enc.encode(prompt), 20)[len(enc.encode(prompt)):])

    # (so the check below can fail)
    assert continuation('Hello,\r\nworld') != continuation('Hello,\nworld')
    # (the output is read in text mode, which turns '\r\n' into '\n')
    text = ('Hello,\nworld' + continuation('Hello,\r\nworld')).replace('\r\n', '\n')
    assert text + '\n---------------\n' in r.stdout


def test_init_from_transformers_directory(tmp_path):
    import tiktoken
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_positions=32, n_embd=16, n_layer=1,
                                    n_head=2, initializer_range=0.5))
    hf.save_pretrained(tmp_path / 'tiny-gpt2')
    r = sample('--init_from=tiny-gpt2', '--start=The', '--temperature=0', '--num_samples=1',
               '--max_new_tokens=12', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    enc = tiktoken.get_encoding('gpt2')
    model = GPT.from_pretrained(str(tmp_path / 'tiny-gpt2')).eval()
    assert enc.decode(greedy(model, enc.encode('The'), 12)) + '\n---------------\n' in r.stdout


def check_error(r, *words):
    assert r.returncode != 0
    assert 'Traceback' not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.mark.parametrize('args, words', [
    (['--start=héllo'], ["'é'", 'vocabulary']),
    (['--start=FILE:missing.txt'], ['missing.txt']),
    (['--start='], ['prompt is empty']),
    (['--max_new_tokens=0'], ['max_new_tokens']),
    (['--num_samples=-1'], ['num_samples']),
    (['--max_batch=-1'], ['max_batch=-1']),
    (['--temperature=-1'], ['temperature']),
    (['--top_k=-1'], ['top_k=-1']),
    (['--top_p=0'], ['top_p=0']),
    (['--top_p=abc'], ["top_p='abc'"]),
], ids=['char-not-in-vocab', 'missing-prompt-file', 'empty-prompt', 'max-new-tokens', 'num-samples',
        'max-batch', 'temperature', 'top-k', 'top-p-zero', 'top-p-text'])
def test_bad_input(char_run, tmp_path, args, words):
    check_error(sample(f'--out_dir={char_run[0]}', '--max_new_tokens=5', *args, cwd=tmp_path),
                *words)


def test_unreadable_prompt_file(char_run, tmp_path):
    (tmp_path / 'binary.txt').write_bytes(b'\xff\xfe\x00bad')
    check_error(sample(f'--out_dir={char_run[0]}', '--start=FILE:binary.txt', cwd=tmp_path),
                'binary.txt')
    (tmp_path / 'a_folder').mkdir()
    check_error(sample(f'--out_dir={char_run[0]}', '--start=FILE:a_folder', cwd=tmp_path),
                'a_folder')


def test_missing_checkpoint(tmp_path):
    check_error(sample('--out_dir=nowhere', cwd=tmp_path), 'nowhere', 'ckpt.pt')
    (tmp_path / 'empty').mkdir()
    check_error(sample('--out_dir=empty', cwd=tmp_path), 'empty', 'ckpt.pt')


def test_checkpoint_with_nan_weights(char_run, tmp_path):
    sd = {k: v.clone() for k, v in char_run[1].state_dict().items()}
    sd['transformer.h.0.attn.c_attn.weight'][0, 0] = float('nan')
    (tmp_path / 'out').mkdir()
    save_checkpoint({'model': sd, 'model_args': dict(MODEL_ARGS, vocab_size=len(CHARS)),
                     'config': {}}, str(tmp_path / 'out' / 'ckpt.pt'))
    check_error(sample('--out_dir=out', cwd=tmp_path), 'transformer.h.0.attn.c_attn.weight', 'NaN')


def test_char_checkpoint_without_meta(char_run, tmp_path):
    model_args = dict(MODEL_ARGS, vocab_size=len(CHARS))
    (tmp_path / 'out').mkdir()
    save_checkpoint({'model': char_run[1].state_dict(), 'model_args': model_args,
                     'config': {'dataset': str(tmp_path / 'gone')}},
                    str(tmp_path / 'out' / 'ckpt.pt'))
    check_error(sample('--out_dir=out', cwd=tmp_path), 'meta.pkl', 'gone')


def test_char_checkpoint_with_a_different_meta(char_run, tmp_path):
    dataset = tmp_path / 'reprepared'
    dataset.mkdir()
    with open(dataset / 'meta.pkl', 'wb') as f:
        pickle.dump({'vocab_size': len(CHARS) + 3, 'itos': {}, 'stoi': {}}, f)
    (tmp_path / 'out').mkdir()
    save_checkpoint({'model': char_run[1].state_dict(),
                     'model_args': dict(MODEL_ARGS, vocab_size=len(CHARS)),
                     'config': {'dataset': str(dataset)}}, str(tmp_path / 'out' / 'ckpt.pt'))
    check_error(sample('--out_dir=out', cwd=tmp_path), 'meta.pkl', f'{len(CHARS) + 3} characters')


def test_small_vocab_transformers_directory_without_meta(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel
    config = GPT2Config(vocab_size=70, n_positions=16, n_embd=16, n_layer=1, n_head=2,
                        bos_token_id=None, eos_token_id=None)
    GPT2LMHeadModel(config).save_pretrained(tmp_path / 'small')
    r = sample('--init_from=small', '--max_new_tokens=5', cwd=tmp_path)
    # transformers may print its own progress bar while loading; the error is the last line
    assert r.returncode != 0 and 'Traceback' not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith('error: the model has a vocabulary of 70 tokens')
