"""Evaluation: HellaSwag (prepare.py, scoring against transformers' GPT-2 scored by hand, train.py
in one and two processes), bits per byte and out_dir/metrics.jsonl across a resume. HellaSwag rows
are written here; nothing is downloaded."""

import json
import math
import os

import numpy as np
import pytest
import tiktoken
import torch

import data
from conftest import char_dataset, python
from data.hellaswag import ending_losses, hellaswag_counts, load_hellaswag
from model import GPT

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREPARE = os.path.join(ROOT, 'data', 'hellaswag', 'prepare.py')
BLOCK = 24  # the test model's context: the longest examples below are cut to their last 24 tokens

# (ctx, endings, label): endings of very different lengths, so that the summed and the mean loss
# disagree, and contexts long enough that some rows exceed BLOCK (one ending alone does)
EXAMPLES = [
    ("A man is sitting on a roof. He",
     ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
      "is holding a rubik's cube.", "starts pulling up roofing on a roof."], 3),
    ("A woman café owner greets",
     ["the guests.", "a dog that barks at the naïve street vendor.", "nobody",
      "her reflection in the window of the shop across the road, smiling."], 0),
    ("Two boys are playing football in a muddy field behind the old school while their parents "
     "watch from the cars parked along the fence. One of them",
     ["kicks the ball.", "falls", "runs to the goal and scores.", "sits"], 2),
    ("She mixes the flour",
     ["with eggs and milk in a bowl, whisking until the batter is smooth and there are no lumps "
      "left at all in it.", "up", "on the floor", "and sugar."], 3),
    ("How to tie a tie. Drape the tie around your neck.",
     ["Cross the wide end over.", "Eat it.", "Sing.", "Paint the wall blue."], 0),
    ("The cat",
     ["sleeps.", "jumps onto the table and knocks over a glass of water.", "meows", "is a cat"], 1),
    ("A chef slices an onion on a wooden board",
     [", then", "and cries.", "while talking to the camera about knives.", "quickly."], 2),
    ("Kids",
     ["laugh", "run around the playground shouting", "eat ice cream", "swim in the lake"], 3),
    ("A man lifts weights at the gym. He",
     ["drops them.", "lifts them again, counting the repetitions out loud.", "leaves",
      "drinks water from a bottle"], 1),
]


def row(i, ctx, endings, label):
    return {'ind': i, 'ctx': ctx, 'ctx_a': ctx, 'ctx_b': '', 'activity_label': 'test',
            'endings': endings, 'label': label, 'split': 'val', 'split_type': 'indomain',
            'source_id': f'test~{i}'}


def run(script, *args):
    return python([script, *args], timeout=120)


def ok(r):
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r


def one_line_error(r, *parts):
    assert r.returncode != 0 and r.stderr.startswith('error: '), r.stderr[-2000:]
    assert r.stderr.count('\n') == 1 and 'Traceback' not in r.stderr
    for part in parts:
        assert part in r.stderr, r.stderr


@pytest.fixture(scope='module')
def enc():
    return tiktoken.get_encoding('gpt2')


@pytest.fixture(scope='module')
def hellaswag_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp('hellaswag')
    with open(path / 'hellaswag_val.jsonl', 'w') as f:
        for i, example in enumerate(EXAMPLES):
            f.write(json.dumps(row(i, *example)) + '\n')
    ok(run(PREPARE, f'--source={path / "hellaswag_val.jsonl"}', f'--out_dir={path}'))
    return path


@pytest.fixture(scope='module')
def hf(tmp_path_factory):
    """A tiny random GPT-2 with GPT-2's vocabulary, saved by transformers."""
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    # initializer_range large: clear preferences between endings
    cfg = GPT2Config(vocab_size=50257, n_positions=BLOCK, n_embd=32, n_layer=2, n_head=2,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, initializer_range=0.3)
    model = GPT2LMHeadModel(cfg).eval()
    path = tmp_path_factory.mktemp('hf-gpt2')
    model.save_pretrained(path)
    return str(path), model


def reference_losses(hf_model, enc, ctx, endings):
    """Summed and mean loss of each ending's tokens, transformers' GPT-2 on one row at a time."""
    summed, mean = [], []
    for ending in endings:
        c, e = enc.encode_ordinary(ctx), enc.encode_ordinary(' ' + ending)
        ids = (c + e)[-BLOCK:]
        first = len(ids) - len(e)  # where the ending begins in ids (negative when it was cut)
        with torch.no_grad():
            logp = torch.log_softmax(hf_model(torch.tensor([ids])).logits[0].double(), dim=-1)
        losses = [-logp[p - 1, ids[p]].item() for p in range(max(first, 1), len(ids))]
        summed.append(sum(losses))
        mean.append(sum(losses) / len(losses))
    return summed, mean


def test_prepare_writes_the_gpt2_tokens(hellaswag_dir, enc):
    hellaswag = load_hellaswag(str(hellaswag_dir))
    assert len(hellaswag) == len(EXAMPLES)
    for i, (ctx, endings, label) in enumerate(EXAMPLES):
        c, e, y = hellaswag.example(i)
        assert c.tolist() == enc.encode_ordinary(ctx) and y == label
        assert [x.tolist() for x in e] == [enc.encode_ordinary(' ' + ending) for ending in endings]


def test_scores_match_transformers(hellaswag_dir, hf, enc):
    path, hf_model = hf
    ours = GPT.from_pretrained(path).eval()
    hellaswag = load_hellaswag(str(hellaswag_dir))
    ref = [reference_losses(hf_model, enc, ctx, endings) for ctx, endings, _ in EXAMPLES]
    ref_sum = torch.tensor([s for s, _ in ref], dtype=torch.float64)
    ref_mean = torch.tensor([m for _, m in ref], dtype=torch.float64)
    assert any(len(enc.encode_ordinary(ctx + ' ' + e)) > BLOCK
               for ctx, endings, _ in EXAMPLES for e in endings)
    assert (ref_sum.argmin(1) != ref_mean.argmin(1)).any()  # acc and acc_norm are told apart
    labels = torch.tensor([label for _, _, label in EXAMPLES])
    expected = [len(EXAMPLES), (ref_sum.argmin(1) == labels).sum().item(),
                (ref_mean.argmin(1) == labels).sum().item()]
    n = len(EXAMPLES)
    for batch_examples in (1, 4):  # one example per forward, and several padded to the longest
        batches = [[hellaswag.example(i) for i in range(s, min(s + batch_examples, n))]
                   for s in range(0, n, batch_examples)]
        with torch.no_grad():
            parts = [ending_losses(ours, batch, BLOCK, 'cpu') for batch in batches]
            summed = torch.cat([p[0] for p in parts]).double()
            mean = torch.cat([p[1] for p in parts]).double()
            counts = hellaswag_counts(ours, hellaswag, 0, BLOCK, batch_examples, 'cpu').tolist()
        torch.testing.assert_close(summed, ref_sum, atol=1e-3, rtol=1e-5)
        torch.testing.assert_close(mean, ref_mean, atol=1e-4, rtol=1e-5)
        assert summed.argmin(1).tolist() == ref_sum.argmin(1).tolist()
        assert mean.argmin(1).tolist() == ref_mean.argmin(1).tolist()
        assert counts == expected
    def top2(x):
        return x.sort(1).values[:, 1] - x.sort(1).values[:, 0]

    # the losses' differences are far above the tolerance: the choices are not decided by rounding
    assert top2(ref_sum).min() > 1e-2 and top2(ref_mean).min() > 1e-3
    # and a limit scores the first examples only
    with torch.no_grad():
        assert hellaswag_counts(ours, hellaswag, 3, BLOCK, 2, 'cpu')[0].item() == 3


@pytest.mark.parametrize('line, message', [
    ('{"ctx": "A", "endings": ["a", "b"', 'line 2 is not JSON'),
    ('[1, 2]', 'line 2: not a JSON object'),
    ('{"endings": ["a", "b", "c", "d"], "label": 0}', "line 2: no 'ctx' field"),
    ('{"ctx": "A", "endings": ["a", "b", "c"], "label": 0}',
     "line 2: 'endings' is not a list of 4 strings"),
    ('{"ctx": "A", "endings": ["a", "b", "c", "d"], "label": "1"}', "line 2: 'label' is '1'"),
])
def test_prepare_bad_row_is_one_line_and_writes_nothing(tmp_path, line, message):
    (tmp_path / 'val.npz').write_bytes(b'earlier')
    (tmp_path / 'bad.jsonl').write_text(json.dumps(row(0, *EXAMPLES[0])) + '\n' + line + '\n')
    r = run(PREPARE, f'--source={tmp_path / "bad.jsonl"}', f'--out_dir={tmp_path}')
    one_line_error(r, message)
    assert (tmp_path / 'val.npz').read_bytes() == b'earlier'
    assert sorted(os.listdir(tmp_path)) == ['bad.jsonl', 'val.npz']


def test_prepare_missing_empty_and_offline(tmp_path):
    one_line_error(run(PREPARE, f'--source={tmp_path / "nope.jsonl"}', f'--out_dir={tmp_path}'),
                   'no file')
    (tmp_path / 'empty.jsonl').write_text('\n')
    one_line_error(run(PREPARE, f'--source={tmp_path / "empty.jsonl"}', f'--out_dir={tmp_path}'),
                   'holds no examples')
    # no --source and no local copy: the download fails (nothing listens on port 9), and the line
    # says where to put the file
    target = os.path.join(ROOT, 'data', 'hellaswag', 'hellaswag_val.jsonl')
    if os.path.exists(target):
        pytest.skip(f'{target} exists, so nothing would be downloaded')
    r = run(PREPARE, '--data_url=http://127.0.0.1:9/hellaswag_val.jsonl', f'--out_dir={tmp_path}')
    one_line_error(r, 'could not download', f'put it at {target}')
    assert not os.path.exists(target) and not os.path.exists(tmp_path / 'val.npz')


# ---------------------------------------------------------------------------- bits per byte

class Split:
    def __init__(self, ids):
        self.ids = np.asarray(ids, dtype=np.uint16)

    def __len__(self):
        return len(self.ids)

    def read(self, start, length):
        return self.ids[start:start + length]


def test_bytes_per_token(enc):
    text = "Ünïcödé café, naïve — 中文 and plain ASCII. " * 50
    ids = enc.encode_ordinary(text)
    # GPT-2 BPE, read whole: exactly the text's UTF-8 bytes over its tokens
    assert data.bytes_per_token(Split(ids), data.GPT2BPE()) == len(text.encode('utf-8')) / len(ids)
    # read as a sample: 4 runs of 16 tokens at evenly spaced places, each decoded here
    starts = [round(k * (len(ids) - 16) / 3) for k in range(4)]
    sample_bytes = sum(len(enc.decode_bytes(ids[s:s + 16])) for s in starts)
    sampled = data.bytes_per_token(Split(ids), data.GPT2BPE(), sample_runs=4, run_length=16)
    assert sampled == pytest.approx(sample_bytes / 64, rel=1e-12)
    # documents separated by <|endoftext|>: a special token, no bytes of text
    docs = ["Short one.", "Another, with ünïcödé.", "中文 third"] * 20
    ids = [t for d in docs for t in enc.encode_ordinary(d) + [enc.eot_token]]
    text_bytes = sum(len(d.encode('utf-8')) for d in docs)
    assert data.bytes_per_token(Split(ids), data.GPT2BPE()) == text_bytes / len(ids)
    # characters: the bytes of each character in meta.pkl's itos
    chars = sorted(set(text))
    meta = {'vocab_size': len(chars), 'itos': dict(enumerate(chars)),
            'stoi': {c: i for i, c in enumerate(chars)}}
    char_ids = [chars.index(c) for c in text]
    per_char = len(text.encode('utf-8')) / len(text)
    assert data.bytes_per_token(Split(char_ids), data.Characters(meta, 'x')) == per_char
    # unknown text: no itos, or ids beyond the vocabulary
    assert data.bytes_per_token(Split(char_ids), data.Characters({**meta, 'itos': {}}, 'x')) is None
    assert data.bytes_per_token(Split([0, 1, len(chars)]), data.Characters(meta, 'x')) is None


# ---------------------------------------------------------------------------- train.py

TINY = ['--device=cpu', '--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=32',
        '--batch_size=8', '--gradient_accumulation_steps=2', '--eval_iters=2', '--log_interval=1',
        '--warmup_iters=5',
        '--lr_decay_iters=100', '--learning_rate=3e-3', '--compile=False']


def torchrun(*args):  # as torchrun --standalone --nproc_per_node=2 starts them
    return python(list(args), nproc=2, timeout=180)


def train(*args):
    return python(['train.py', *args], timeout=180)


def records(out):
    with open(os.path.join(out, 'metrics.jsonl')) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope='module')
def char_data(tmp_path_factory, shakespeare_txt):
    """Character-level Shakespeare (ASCII: one byte per character), 50k characters."""
    return char_dataset(tmp_path_factory.mktemp('char'), open(shakespeare_txt).read()[:50_000])


@pytest.fixture(scope='module')
def bpe_data(tmp_path_factory, shakespeare_txt, enc):
    """GPT-2 BPE Shakespeare (no meta.pkl) as short documents, each followed by <|endoftext|> as
    prepare.py writes them, with the val documents' text bytes per token (<|endoftext|> has
    none)."""
    path = tmp_path_factory.mktemp('bpe')
    documents = open(shakespeare_txt).read()[:20_000].split('\n\n')  # the speeches, ~25 tokens each

    def tokens(docs):
        return [t for d in docs for t in enc.encode_ordinary(d) + [enc.eot_token]]

    split = len(documents) * 4 // 5
    train_ids, val_ids = tokens(documents[:split]), tokens(documents[split:])
    np.array(train_ids, dtype=np.uint16).tofile(path / 'train.bin')
    np.array(val_ids, dtype=np.uint16).tofile(path / 'val.bin')
    return str(path), sum(len(d.encode('utf-8')) for d in documents[split:]) / len(val_ids)


def test_metrics_jsonl_once_per_iteration_after_resume_and_char_bpb(char_data, tmp_path):
    common = [*TINY, f'--dataset={char_data}', '--eval_interval=3']
    out = tmp_path / 'out'
    ok(train(*common, f'--out_dir={out}', '--max_iters=6'))
    # what a run that died after its checkpoint at 6 leaves: lines past it, the last cut short
    with open(out / 'metrics.jsonl', 'a') as f:
        f.write('{"iter": 7, "loss": 9.0, "lr": 0.1, "ms": 1.0}\n'
                '{"iter": 8, "loss": 9.0, "lr": 0.1, "ms": 1.0}\n[8]\n'
                '{"iter": 9, "train_loss": 9.0, "val_loss": 9.0, "val_bpb": 9.0}\n{"iter": 10, "lo')
    ok(train(*common, f'--out_dir={out}', '--max_iters=9', '--init_from=resume'))
    resumed = records(out)
    steps = [r['iter'] for r in resumed if 'loss' in r]
    evals = [r['iter'] for r in resumed if 'val_loss' in r]
    assert steps == list(range(1, 10)) and evals == [0, 3, 6, 9]
    assert all({'iter', 'loss', 'lr', 'ms'} <= set(r) for r in resumed if 'loss' in r)
    assert all(r['loss'] != 9.0 for r in resumed if 'loss' in r)
    assert all(r['val_loss'] != 9.0 for r in resumed if 'val_loss' in r)
    # ASCII characters are one byte each: bits per byte is the loss in bits
    for r in resumed:
        if 'val_loss' in r:
            assert r['val_bpb'] == pytest.approx(r['val_loss'] / math.log(2), rel=1e-12)
    # a new run into the same out_dir starts a new file and keeps the old one beside it
    ok(train(*common, f'--out_dir={out}', '--max_iters=1'))
    assert [r['iter'] for r in records(out)] == [0, 1, 1]
    assert [json.loads(line) for line in open(out / 'metrics.jsonl.prev')] == resumed


def test_train_hellaswag_one_and_two_processes_and_bpe_bpb(bpe_data, hellaswag_dir, hf, tmp_path):
    dataset, val_bytes_per_token = bpe_data
    path, _ = hf
    args = [*TINY, f'--dataset={dataset}', f'--init_from={path}', '--block_size=24',
            '--eval_only=True', '--eval_hellaswag=True', f'--hellaswag_data={hellaswag_dir}',
            '--hellaswag_limit=7']
    # one process, independently: the scoring functions checked against transformers above, with
    # train.py's batches (batch_size 8 = 2 examples of 4 rows)
    with torch.no_grad():
        examples, right, right_norm = hellaswag_counts(GPT.from_pretrained(path).eval(),
                                                       load_hellaswag(str(hellaswag_dir)),
                                                       7, 24, 2, 'cpu').tolist()
    # two processes: 4 batches split 2 and 2, the counts summed
    r = ok(torchrun('train.py', *args, f'--out_dir={tmp_path}'))
    # rank 0 alone prints
    assert r.stdout.count('hellaswag iter 0: acc ') == 1
    assert '(partial: the first 7 of 9)' in r.stdout
    [record] = records(tmp_path)  # and writes
    assert record['hellaswag_examples'] == examples == 7
    assert (record['hellaswag_acc'], record['hellaswag_acc_norm']) == (right / 7, right_norm / 7)
    bpb = record['val_loss'] / math.log(2) / val_bytes_per_token
    assert record['val_bpb'] == pytest.approx(bpb, rel=1e-12)
    # FSDP, where every forward needs both processes: 3 batches, split 2 and 1 (the second process
    # repeats its batch, uncounted), the same counts
    with torch.no_grad():
        expected = hellaswag_counts(GPT.from_pretrained(path).eval(),
                                    load_hellaswag(str(hellaswag_dir)), 5, 24, 2, 'cpu').tolist()
    ok(torchrun('train.py', *args, '--hellaswag_limit=5', '--fsdp=True',
                f'--out_dir={tmp_path / "fsdp"}'))
    [record] = records(tmp_path / 'fsdp')
    assert record['hellaswag_examples'] == expected[0] == 5
    acc = (expected[1] / 5, expected[2] / 5)
    assert (record['hellaswag_acc'], record['hellaswag_acc_norm']) == acc


def test_train_hellaswag_bad_input(char_data, bpe_data, hellaswag_dir, tmp_path):
    r = train(*TINY, f'--dataset={char_data}', f'--out_dir={tmp_path}', '--eval_hellaswag=True',
              f'--hellaswag_data={hellaswag_dir}')
    one_line_error(r, "eval_hellaswag needs a model with GPT-2's vocabulary", 'vocab_size=')
    r = train(*TINY, f'--dataset={bpe_data[0]}', f'--out_dir={tmp_path}', '--eval_hellaswag=True',
              f'--hellaswag_data={tmp_path / "nowhere"}')
    one_line_error(r, 'val.npz is missing: run python data/hellaswag/prepare.py first')
    r = train(*TINY, f'--dataset={char_data}', f'--out_dir={tmp_path}', '--hellaswag_limit=-1')
    one_line_error(r, 'hellaswag_limit=-1 must be 0')
