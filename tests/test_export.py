"""sample.py --export_hf end to end, offline: tiny models trained a few steps by train.py on
Shakespeare (GPT-2 BPE with the padded vocabulary, and characters), exported, then loaded by
transformers and compared with ours (logits, greedy tokens), read back by GPT.from_pretrained,
their tokenizers checked against tiktoken and meta.pkl, run in pipeline('text-generation'), and
every bad input stopping with one 'error: ' line and nothing written."""

import json
import os
import pickle
import shutil

import numpy as np
import pytest
import torch

from checkpoint import load_checkpoint, save_hf_directory
from conftest import python
from errors import InputError
from model import GPT
from test_sample import check_error

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# bias=False and block_size 64: room for an 8-token prompt and 50 greedy tokens, which
# transformers' GPT-2 cannot slide past n_positions as our generate does.
TINY = ['--device=cpu', '--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=64',
        '--batch_size=4', '--gradient_accumulation_steps=1', '--eval_iters=1', '--eval_interval=8',
        '--max_iters=8', '--warmup_iters=2', '--lr_decay_iters=8', '--learning_rate=1e-2',
        '--min_lr=1e-3', '--compile=False', '--bias=False']


def run(script, *args, cwd=ROOT):
    return python([os.path.join(ROOT, script), *args], cwd=cwd, timeout=180)  # offline: conftest.py


def ok(r):
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r


def trained(tmp_path_factory, name, text, encode, meta=None):
    """A dataset folder (train.bin, val.bin, meta.pkl if given) and out_dir of a run trained on
    it."""
    root = tmp_path_factory.mktemp(name)
    ids = np.array(encode(text), dtype=np.uint16)
    n = int(0.9 * len(ids))
    ids[:n].tofile(root / 'train.bin')
    ids[n:].tofile(root / 'val.bin')
    if meta is not None:
        with open(root / 'meta.pkl', 'wb') as f:
            pickle.dump(meta, f)
    ok(run('train.py', *TINY, f'--dataset={root}', f'--out_dir={root / "out"}'))
    return root


@pytest.fixture(scope='module')
def bpe_run(tmp_path_factory, shakespeare_txt):
    import tiktoken
    enc = tiktoken.get_encoding('gpt2')
    text = open(shakespeare_txt).read()[:100_000]
    root = trained(tmp_path_factory, 'shakespeare_bpe', text, enc.encode_ordinary)
    ok(run('sample.py', f'--out_dir={root / "out"}', f'--export_hf={root / "hf"}'))
    return root, enc


@pytest.fixture(scope='module')
def char_run(tmp_path_factory, shakespeare_txt):
    text = open(shakespeare_txt).read()[:100_000]
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    meta = {'vocab_size': len(chars), 'itos': dict(enumerate(chars)), 'stoi': stoi}
    root = trained(tmp_path_factory, 'shakespeare_char', text, lambda t: [stoi[c] for c in t], meta)
    ok(run('sample.py', f'--out_dir={root / "out"}', f'--export_hf={root / "hf"}'))
    return root, meta


def ours_and_theirs(root):
    from transformers import GPT2LMHeadModel
    ours = GPT.from_checkpoint(load_checkpoint(str(root / 'out' / 'ckpt.pt'))).eval()
    theirs, info = GPT2LMHeadModel.from_pretrained(root / 'hf', output_loading_info=True)
    # every weight read from the file: nothing missing, unexpected or reshaped
    assert not any(info[k] for k in ('missing_keys', 'unexpected_keys', 'mismatched_keys')), info
    return ours, theirs.eval()


@pytest.mark.parametrize('which', ['bpe', 'char'])
def test_transformers_gives_our_logits_and_greedy_tokens(which, bpe_run, char_run):
    root = (bpe_run if which == 'bpe' else char_run)[0]
    ours, theirs = ours_and_theirs(root)
    assert ours.config.bias is False
    vocab = theirs.config.vocab_size
    assert vocab == (50257 if which == 'bpe' else len(char_run[1]['stoi']))
    assert ours.config.vocab_size == (50304 if which == 'bpe' else vocab)
    assert theirs.config.n_positions == ours.config.block_size == 64
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(vocab, (4, 64), generator=g)
    with torch.no_grad():
        expected, _ = ours(idx, idx)
        logits = theirs(idx).logits
    # the padded ids' logits are gone; the others depend only on their own rows of wte
    assert logits.shape == (4, 64, vocab)
    assert (logits - expected[..., :vocab]).abs().max().item() < 1e-4
    prompt = idx[:1, :8]
    ids = ours.generate(prompt, 50, temperature=0)
    with torch.no_grad():
        hf_ids = theirs.generate(prompt, max_new_tokens=50, do_sample=False, pad_token_id=0)
    assert hf_ids.tolist() == ids.tolist()
    # and the comparison can fail: the untrained model (another init) differs
    assert not torch.equal(ids, GPT(ours.config).eval().generate(prompt, 50, temperature=0))


@pytest.mark.parametrize('which', ['bpe', 'char'])
def test_from_pretrained_reads_the_export_back_bit_for_bit(which, bpe_run, char_run):
    root = (bpe_run if which == 'bpe' else char_run)[0]
    ours = GPT.from_checkpoint(load_checkpoint(str(root / 'out' / 'ckpt.pt')))
    back = GPT.from_pretrained(str(root / 'hf'))
    # zero biases load as bias=False: the same parameters as the model that was trained
    assert back.config.bias is False and back.config.block_size == ours.config.block_size
    a, b = ours.state_dict(), back.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        # 50304 -> 50257 rows
        n = b[k].size(0) if k in ('transformer.wte.weight', 'lm_head.weight') else None
        assert torch.equal(a[k][:n], b[k]), k


def test_bpe_tokenizer_is_tiktokens(bpe_run, shakespeare_txt):
    from transformers import AutoTokenizer
    root, enc = bpe_run
    tok = AutoTokenizer.from_pretrained(root / 'hf')
    text = (open(shakespeare_txt).read()[-20_000:]
            + " <|endoftext|> naïve café, 2026  \n\n\t emoji 🤗 it's")
    ids = tok(text)['input_ids']
    assert ids == enc.encode(text, allowed_special={'<|endoftext|>'})
    assert tok.decode(ids) == text
    assert tok.eos_token_id == tok.bos_token_id == 50256 and len(tok) == 50257
    config = json.load(open(root / 'hf' / 'config.json'))
    assert config['eos_token_id'] == config['bos_token_id'] == 50256


def test_char_tokenizer_is_meta_pkls(char_run, shakespeare_txt):
    from transformers import AutoTokenizer
    root, meta = char_run
    tok = AutoTokenizer.from_pretrained(root / 'hf')
    text = open(shakespeare_txt).read()[90_000:100_000]  # the validation text of the run
    ids = tok(text)['input_ids']
    assert ids == [meta['stoi'][c] for c in text]
    assert tok.decode(ids) == text == ''.join(meta['itos'][i] for i in ids)
    assert len(tok) == meta['vocab_size']
    config = json.load(open(root / 'hf' / 'config.json'))
    assert config['eos_token_id'] is None and config['bos_token_id'] is None
    # a class name that transformers 4 knows too (transformers 5 would write TokenizersBackend)
    tokenizer_config = json.load(open(root / 'hf' / 'tokenizer_config.json'))
    assert tokenizer_config['tokenizer_class'] == 'PreTrainedTokenizerFast'


def test_pipeline_runs_offline(char_run, capsys):
    from huggingface_hub import constants
    from transformers import pipeline
    assert constants.HF_HUB_OFFLINE  # conftest.py: everything must come from the directory
    generator = pipeline('text-generation', model=str(char_run[0] / 'hf'), device='cpu')
    text = generator('ROMEO:', max_new_tokens=20, do_sample=False)[0]['generated_text']
    print(text)
    assert capsys.readouterr().out == text + '\n'
    ours = GPT.from_pretrained(str(char_run[0] / 'hf')).eval()
    stoi, itos = char_run[1]['stoi'], char_run[1]['itos']
    ids = ours.generate(torch.tensor([[stoi[c] for c in 'ROMEO:']]), 20, temperature=0)[0].tolist()
    assert text == ''.join(itos[i] for i in ids)


def test_overwrite_in_half_precision(char_run, tmp_path):
    from safetensors import safe_open
    root = char_run[0]
    (tmp_path / 'hf').mkdir()
    (tmp_path / 'hf' / 'old.txt').write_text('replaced')
    ok(run('sample.py', f'--out_dir={root / "out"}', '--export_hf=hf', '--overwrite=True',
           '--dtype=bfloat16', cwd=tmp_path))
    assert sorted(os.listdir(tmp_path)) == ['hf']  # no temporary directory left behind
    # the export's files, and old.txt kept: an export replaces only what an export writes
    assert sorted(os.listdir(tmp_path / 'hf')) == sorted(os.listdir(root / 'hf') + ['old.txt'])
    assert (tmp_path / 'hf' / 'old.txt').read_text() == 'replaced'
    with safe_open(tmp_path / 'hf' / 'model.safetensors', 'pt') as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    size = os.path.getsize(tmp_path / 'hf' / 'model.safetensors')
    # half the size, + the same header
    assert abs(size / os.path.getsize(root / 'hf' / 'model.safetensors') - 0.5) < 0.02
    # the weights are ours rounded to bfloat16
    ours = GPT.from_checkpoint(load_checkpoint(str(root / 'out' / 'ckpt.pt')))
    back = GPT.from_pretrained(str(tmp_path / 'hf'))
    w = ours.transformer.h[0].mlp.c_fc.weight
    assert torch.equal(back.transformer.h[0].mlp.c_fc.weight, w.to(torch.bfloat16).float())


def test_bad_inputs_write_nothing(char_run, tmp_path):
    out = f'--out_dir={char_run[0] / "out"}'
    check_error(run('sample.py', '--out_dir=nowhere', '--export_hf=hf', cwd=tmp_path),
                'nowhere', 'ckpt.pt')
    check_error(run('sample.py', out, '--export_hf=hf', '--dtype=float8', cwd=tmp_path), "'float8'")
    assert os.listdir(tmp_path) == []
    (tmp_path / 'hf').mkdir()
    (tmp_path / 'hf' / 'notes.txt').write_text('keep me')
    check_error(run('sample.py', out, '--export_hf=hf', cwd=tmp_path),
                'hf exists and is not empty', '--overwrite=True')
    assert os.listdir(tmp_path) == ['hf'] and os.listdir(tmp_path / 'hf') == ['notes.txt']


def test_save_pretrained_into_an_empty_directory_not_a_file(char_run, tmp_path):
    ours = GPT.from_checkpoint(load_checkpoint(str(char_run[0] / 'out' / 'ckpt.pt')))
    (tmp_path / 'empty').mkdir()
    save_hf_directory(ours, str(tmp_path / 'empty'))  # no tokenizer: the weights and configs only
    assert sorted(os.listdir(tmp_path / 'empty')) == ['config.json', 'generation_config.json',
                                                      'model.safetensors']
    # the permissions of a directory and a file made as usual, not private like a temporary one
    os.mkdir(tmp_path / 'plain')
    (tmp_path / 'plain' / 'file').write_text('')
    assert (tmp_path / 'empty').stat().st_mode == (tmp_path / 'plain').stat().st_mode
    file_mode = (tmp_path / 'plain' / 'file').stat().st_mode
    assert (tmp_path / 'empty' / 'model.safetensors').stat().st_mode == file_mode
    shutil.rmtree(tmp_path / 'plain')
    with pytest.raises(InputError, match='exists and is not empty'):
        save_hf_directory(ours, str(tmp_path / 'empty'))
    (tmp_path / 'a_file').write_text('keep me')
    with pytest.raises(InputError, match='a_file is a file'):
        save_hf_directory(ours, str(tmp_path / 'a_file'), overwrite=True)
    assert (tmp_path / 'a_file').read_text() == 'keep me'
    assert sorted(os.listdir(tmp_path)) == ['a_file', 'empty']
