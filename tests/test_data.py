"""The data/<name>/prepare.py scripts, run as a user runs them (subprocesses), on local text only:
exact token counts, round trips back to the text, token streams checked against tiktoken called
here directly, and every bad input ending in one line, with the bins of an earlier run untouched.
Nothing is downloaded and nothing is written into the real data/ folders."""

import functools
import http.server
import json
import os
import pickle
import re
import subprocess
import sys
import threading

import numpy as np
import pytest
import tiktoken
import torch

import data
from conftest import python
from errors import InputError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHAR = os.path.join(ROOT, 'data', 'shakespeare_char', 'prepare.py')
BPE = os.path.join(ROOT, 'data', 'shakespeare', 'prepare.py')
OWT = os.path.join(ROOT, 'data', 'openwebtext', 'prepare.py')
FWE = os.path.join(ROOT, 'data', 'fineweb_edu', 'prepare.py')
TEXT = os.path.join(ROOT, 'data', 'text', 'prepare.py')
EOT = 50256


@pytest.fixture(scope='module')
def enc():
    return tiktoken.get_encoding('gpt2')


@pytest.fixture(scope='module')
def text(shakespeare_txt):
    with open(shakespeare_txt, 'rb') as f:
        return f.read().decode('utf-8')


# Runs a prepare script whose temporary files are named FILE.tmp (unique names otherwise), so
# that a test can put a folder in the way of one of them.
FIXED_TEMPORARY_NAMES = (f"import runpy, sys; sys.path.insert(0, {ROOT!r}); import data; "
                         "import checkpoint; "
                         "checkpoint.temporary_name = lambda path: path + '.tmp'; "
                         "sys.argv = sys.argv[1:]; "
                         "runpy.run_path(sys.argv[0], run_name='__main__')")


def run(script, *args, tmp=None, fixed_temporary_names=False):
    """Run a prepare script; the Hugging Face hub is off limits and datasets' cache is per test."""
    # TQDM_DISABLE: no progress bars
    env = dict(os.environ, HF_HUB_OFFLINE='1', HF_DATASETS_OFFLINE='1', TQDM_DISABLE='1')
    if tmp is not None:
        env['HF_DATASETS_CACHE'] = str(tmp / 'hf_cache')
    driver = ['-c', FIXED_TEMPORARY_NAMES] if fixed_temporary_names else []
    return python([*driver, script, *args], env=env, cwd=ROOT)


def ok(result):
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def tokens(path):
    return np.fromfile(path, dtype=np.uint16)


def documents_in(ids):
    """Cut a token stream after each EOT: the documents it holds, each as a tuple ending in EOT."""
    ends = np.flatnonzero(ids == EOT) + 1
    assert len(ids) > 0 and ids[-1] == EOT, "the stream must end with a whole document"
    return [tuple(int(t) for t in part) for part in np.split(ids, ends[:-1])]


# ---------------------------------------------------------------------------- tiny Shakespeare

def test_shakespeare_char_counts_vocab_and_round_trip(tmp_path, shakespeare_txt, text):
    out = ok(run(CHAR, f'--input_file={shakespeare_txt}', f'--out_dir={tmp_path}'))
    assert 'length of dataset in characters: 1,115,394' in out
    train, val = tokens(tmp_path / 'train.bin'), tokens(tmp_path / 'val.bin')
    assert (len(train), len(val)) == (1_003_854, 111_540)
    meta = data.load_meta(str(tmp_path))  # a path: read through the project's safe loader
    assert meta['vocab_size'] == 65
    assert [meta['itos'][i] for i in range(65)] == sorted(set(text))
    assert all(meta['stoi'][c] == i for i, c in meta['itos'].items())

    def decode(ids):
        return ''.join(meta['itos'][int(i)] for i in ids)
    assert decode(train) + decode(val) == text
    assert decode(val[:200]) == text[1_003_854:1_004_054]


def test_shakespeare_bpe_counts_and_round_trip(tmp_path, shakespeare_txt, text, enc):
    ok(run(BPE, f'--input_file={shakespeare_txt}', f'--out_dir={tmp_path}'))
    train, val = tokens(tmp_path / 'train.bin'), tokens(tmp_path / 'val.bin')
    assert (len(train), len(val)) == (301_966, 36_059)
    assert not (tmp_path / 'meta.pkl').exists()  # GPT-2's vocabulary: nothing to store
    split = int(len(text) * 0.9)  # nanoGPT splits the characters 90/10, then encodes each part
    assert enc.decode(train.tolist()) == text[:split]
    assert enc.decode(val.tolist()) == text[split:]
    assert enc.decode(train[1000:1200].tolist()) in text


def test_shakespeare_char_downloads_a_missing_input(tmp_path, shakespeare_txt):
    serve = tmp_path / 'www'
    serve.mkdir()
    (serve / 'shakespeare.txt').write_bytes(open(shakespeare_txt, 'rb').read())

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass
    handler = functools.partial(QuietHandler, directory=str(serve))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f'http://127.0.0.1:{server.server_address[1]}/shakespeare.txt'
        out = ok(run(CHAR, f'--input_file={tmp_path / "input.txt"}', f'--data_url={url}',
                     f'--out_dir={tmp_path}'))
    finally:
        server.shutdown()
    assert f'downloading {url}' in out
    assert (tmp_path / 'input.txt').read_bytes() == open(shakespeare_txt, 'rb').read()
    assert len(tokens(tmp_path / 'train.bin')) == 1_003_854


# ---------------------------------------------------------------------------- OpenWebText pipeline

def corpus(text, n):
    """n distinct documents of a few hundred tokens each, plus the awkward ones."""
    passages = text.split('\n\n')
    docs = ['\n\n'.join(passages[8 * i:8 * i + 8]) for i in range(n - 3)]
    docs += ['', 'a literal <|endoftext|> in a page is text, not a token',
             'café, naïve, 日本語, 🙂\n']
    return docs


def check_owt_output(out_dir, docs, n_val, enc):
    """train.bin + val.bin hold exactly each document's tokens + EOT, n_val documents in val."""
    expected = sorted(tuple(enc.encode_ordinary(d)) + (EOT,) for d in docs)
    train = documents_in(tokens(out_dir / 'train.bin'))
    val = documents_in(tokens(out_dir / 'val.bin'))
    assert len(val) == n_val and len(train) == len(docs) - n_val
    assert sorted(train + val) == expected


def test_openwebtext_jsonl_end_to_end(tmp_path, text, enc):
    docs = corpus(text, 40)
    with open(tmp_path / 'corpus.jsonl', 'w', encoding='utf-8') as f:
        for i, doc in enumerate(docs):
            f.write(json.dumps({'id': i, 'text': doc}) + '\n')
    out = ok(run(OWT, f'--source={tmp_path / "corpus.jsonl"}', f'--out_dir={tmp_path / "out"}',
                 '--val_fraction=0.25', '--num_proc=2', tmp=tmp_path))
    check_owt_output(tmp_path / 'out', docs, 10, enc)
    assert 'documents: train 30, val 10' in out
    assert sorted(os.listdir(tmp_path / 'out')) == ['train.bin', 'val.bin']
    counts = dict(re.findall(r'(\w+)\.bin has ([\d,]+) tokens', out))
    assert int(counts['val'].replace(',', '')) == os.path.getsize(tmp_path / 'out' / 'val.bin') // 2


def test_openwebtext_parquet_source(tmp_path, text, enc):
    import pyarrow as pa
    import pyarrow.parquet as pq
    docs = corpus(text, 12)
    (tmp_path / 'shards').mkdir()
    pq.write_table(pa.table({'text': docs[:6], 'url': ['u'] * 6}),
                   tmp_path / 'shards' / 'a.parquet')
    pq.write_table(pa.table({'text': docs[6:], 'url': ['u'] * 6}),
                   tmp_path / 'shards' / 'b.parquet')
    for num_proc in (1, 2):
        ok(run(OWT, f'--source={tmp_path / "shards"}', f'--out_dir={tmp_path / str(num_proc)}',
               '--val_fraction=0.25', f'--num_proc={num_proc}', tmp=tmp_path))
        check_owt_output(tmp_path / str(num_proc), docs, 3, enc)
    # the same split, in the same order, however many processes
    for name in ('train.bin', 'val.bin'):
        assert (tmp_path / '1' / name).read_bytes() == (tmp_path / '2' / name).read_bytes()


def test_fineweb_edu_parquet_with_fineweb_columns(tmp_path, text, enc):
    # data/fineweb_edu/prepare.py is openwebtext's pipeline with FineWeb-Edu's defaults; local
    # shards with FineWeb's columns, the text alone used
    import pyarrow as pa
    import pyarrow.parquet as pq
    docs = corpus(text, 12)
    (tmp_path / 'shards').mkdir()
    for name, part in (('000_00000', docs[:7]), ('001_00000', docs[7:])):
        n = len(part)
        pq.write_table(pa.table({'text': part, 'id': [f'<urn:{i}>' for i in range(n)],
                                 'dump': ['CC-MAIN-2024-10'] * n,
                                 'url': ['https://example.org'] * n, 'score': [3.1] * n,
                                 'int_score': [3] * n}),
                       tmp_path / 'shards' / f'{name}.parquet')
    out = ok(run(FWE, f'--source={tmp_path / "shards"}', f'--out_dir={tmp_path / "out"}',
                 '--val_fraction=0.25', '--num_proc=1', tmp=tmp_path))
    check_owt_output(tmp_path / 'out', docs, 3, enc)
    assert 'reading 2 .parquet file(s)' in out and 'wrote train.bin and val.bin' in out
    # its defaults: FineWeb-Edu's sample-10BT from the hub, written next to the script (refused
    # offline here)
    r = run(FWE, f'--out_dir={tmp_path / "hub"}', '--num_proc=1', tmp=tmp_path)
    assert r.returncode != 0
    assert "cannot load 'HuggingFaceFW/fineweb-edu' from the Hugging Face hub" in r.stderr
    assert 'loading HuggingFaceFW/fineweb-edu (sample-10BT) from the Hugging Face hub' in r.stdout


def test_openwebtext_folder_of_txt_files(tmp_path, text, enc):
    # no empty files
    docs = corpus(text, 12)[:-3] + ['one more page\nwith two lines\n', 'x', 'last page']
    for i, doc in enumerate(docs):
        folder = tmp_path / 'pages' / f'part{i % 3}'  # nested folders are searched too
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f'{i}.txt').write_text(doc, encoding='utf-8')
    (tmp_path / 'pages' / 'README.md').write_text('not a document')
    ok(run(OWT, f'--source={tmp_path / "pages"}', f'--out_dir={tmp_path}', '--val_fraction=0.25',
           '--num_proc=1', tmp=tmp_path))
    check_owt_output(tmp_path, docs, 3, enc)


def test_openwebtext_imports_datasets_lazily():
    # --val_fraction=0 stops the script before it loads anything; datasets must not be imported yet.
    code = ("import runpy, sys\nsys.argv = ['prepare.py', '--val_fraction=0']\n"
            f"try:\n    runpy.run_path({OWT!r}, run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print('datasets' in sys.modules, 'tiktoken' in sys.modules)")
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT)
    assert result.stdout.strip().splitlines()[-1] == 'False True', result.stderr[-2000:]


# ---------------------------------------------------------------------------- your own text

def write_texts(folder, texts):
    # sorted path order differs from i; the last file's name ends in .TXT, which counts as .txt
    paths = [folder / ('b' if i % 2 else 'a') / f"{i:02d}.{'TXT' if i == len(texts) - 1 else 'txt'}"
             for i in range(len(texts))]
    for path, t in zip(paths, texts):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(t, encoding='utf-8')
    (folder / 'notes.md').write_text('ignored: not .txt')
    return [t for _, t in sorted(zip(map(str, paths), texts))]


def test_own_text_char_from_a_folder(tmp_path, text):
    texts = [text[i * 3000:(i + 1) * 3000] for i in range(5)] + ['ünïcödé ✓ at the end\n']
    in_order = write_texts(tmp_path / 'in', texts)
    out = ok(run(TEXT, f'--input={tmp_path / "in"}', f'--name={tmp_path / "mydata"}',
                 '--tokenizer=char'))
    joined = '\n\n'.join(in_order)
    chars = sorted(set(joined))
    expected = np.array([chars.index(c) for c in joined], dtype=np.uint16)
    split = int(len(expected) * 0.9)
    assert np.array_equal(tokens(tmp_path / 'mydata' / 'train.bin'), expected[:split])
    assert np.array_equal(tokens(tmp_path / 'mydata' / 'val.bin'), expected[split:])
    meta = data.load_meta(str(tmp_path / 'mydata'))
    assert meta['vocab_size'] == len(chars) and meta['itos'] == dict(enumerate(chars))
    assert f'--dataset={tmp_path / "mydata"}' in out
    splits = data.open_dataset(str(tmp_path / 'mydata'), block_size=64)  # what train.py opens
    splits['train'].vocab_size = meta['vocab_size']
    # every id is inside the vocabulary
    splits['train'].batch(4, 64, torch.Generator().manual_seed(0))


def test_own_text_gpt2_from_a_file_replaces_a_char_dataset(tmp_path, text, enc):
    (tmp_path / 'play.txt').write_text(text[:20000], encoding='utf-8')
    ok(run(TEXT, f'--input={tmp_path / "play.txt"}', f'--name={tmp_path / "ds"}',
           '--tokenizer=char'))
    assert (tmp_path / 'ds' / 'meta.pkl').exists()
    ok(run(TEXT, f'--input={tmp_path / "play.txt"}', f'--name={tmp_path / "ds"}',
           '--tokenizer=gpt2'))
    expected = enc.encode_ordinary(text[:20000]) + [EOT]
    split = int(len(expected) * 0.9)
    assert tokens(tmp_path / 'ds' / 'train.bin').tolist() == expected[:split]
    assert tokens(tmp_path / 'ds' / 'val.bin').tolist() == expected[split:]
    # the char vocabulary must not outlive its bins
    assert data.load_meta(str(tmp_path / 'ds')) is None


def test_own_text_gpt2_from_a_folder(tmp_path, text, enc):
    texts = [text[i * 2000:(i + 1) * 2000] for i in range(4)]
    in_order = write_texts(tmp_path / 'in', texts)
    ok(run(TEXT, f'--input={tmp_path / "in"}', f'--name={tmp_path / "ds"}', '--tokenizer=gpt2',
           '--val_fraction=0.2'))
    expected = [t for doc in in_order for t in enc.encode_ordinary(doc) + [EOT]]
    split = int(len(expected) * 0.8)
    train = tokens(tmp_path / 'ds' / 'train.bin').tolist()
    val = tokens(tmp_path / 'ds' / 'val.bin').tolist()
    assert train + val == expected
    assert len(tokens(tmp_path / 'ds' / 'train.bin')) == split


# ---------------------------------------------------------------------------- bad input

GOOD = {'train.bin': np.arange(5000, dtype=np.uint16).tobytes(),
        'val.bin': np.arange(700, dtype=np.uint16).tobytes(),
        'meta.pkl': pickle.dumps({'vocab_size': 65, 'itos': {}, 'stoi': {}})}


def fails_cleanly(result, out_dir, *words):
    """One line on stderr, starting error:, naming the problem; the earlier good files unchanged."""
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), result.stderr[-3000:]
    for word in words:
        assert word in lines[0]
    assert sorted(os.listdir(out_dir)) == sorted(GOOD), "no files added, no .tmp left behind"
    for name, content in GOOD.items():
        assert (out_dir / name).read_bytes() == content


@pytest.fixture
def out_dir(tmp_path):
    """A folder holding the files of an earlier good run."""
    folder = tmp_path / 'out'
    folder.mkdir()
    for name, content in GOOD.items():
        (folder / name).write_bytes(content)
    return folder


@pytest.fixture
def bad_files(tmp_path, text):
    files = tmp_path / 'in'
    files.mkdir()
    (files / 'empty.txt').write_bytes(b'')
    (files / 'latin1.txt').write_bytes(text[:5000].encode('utf-8') + 'café'.encode('latin-1')
                                       + b'\n')
    (files / 'short.txt').write_text(text[:1000], encoding='utf-8')
    huge_vocab = ''.join(chr(0x10000 + i) for i in range(65537)) * 2
    (files / 'huge_vocab.txt').write_text(huge_vocab, encoding='utf-8')
    (files / 'no_txt').mkdir()
    (files / 'no_txt' / 'a.md').write_text('hello')
    return files


@pytest.mark.parametrize('script', [CHAR, BPE])
def test_shakespeare_failed_download_says_where_to_put_the_file(script, tmp_path, out_dir):
    target = tmp_path / 'input.txt'
    result = run(script, f'--input_file={target}', '--data_url=http://127.0.0.1:9/',
                 f'--out_dir={out_dir}')
    fails_cleanly(result, out_dir, 'could not download http://127.0.0.1:9/', str(target))
    assert sorted(os.listdir(tmp_path)) == ['out']  # neither input.txt nor a partial input.txt.tmp


@pytest.mark.parametrize('script', [CHAR, BPE])
@pytest.mark.parametrize('case', ['empty', 'latin1', 'short', 'write', 'folder', 'val_fraction'])
def test_shakespeare_bad_input(script, case, bad_files, out_dir, shakespeare_txt):
    args, words = {
        'folder': ([f'--input_file={bad_files}'], ['cannot read', 'Is a directory']),
        'val_fraction': ([f'--input_file={shakespeare_txt}', '--val_fraction=1.5'],
                         ['--val_fraction=1.5 must lie between 0 and 1']),
        'empty': ([f'--input_file={bad_files / "empty.txt"}'], ['empty.txt is empty']),
        'latin1': ([f'--input_file={bad_files / "latin1.txt"}'], ['not UTF-8', 'byte 0xe9']),
        'short': ([f'--input_file={shakespeare_txt}', '--val_fraction=0.0001'],
                  ['val split would hold only', 'min_split_tokens']),
        'write': ([f'--input_file={shakespeare_txt}'], ['cannot write', 'val.bin.tmp']),
    }[case]
    if case == 'write':
        (out_dir / 'val.bin.tmp').mkdir()  # writing val fails after train.bin.tmp is complete
    result = run(script, *args, f'--out_dir={out_dir}', fixed_temporary_names=case == 'write')
    if case == 'write':
        (out_dir / 'val.bin.tmp').rmdir()
    fails_cleanly(result, out_dir, *words)


def test_char_vocab_too_large_for_uint16(bad_files, out_dir):
    fails_cleanly(run(CHAR, f'--input_file={bad_files / "huge_vocab.txt"}', f'--out_dir={out_dir}'),
                  out_dir, '65,537 distinct characters')
    fails_cleanly(run(TEXT, f'--input={bad_files / "huge_vocab.txt"}', f'--name={out_dir}'),
                  out_dir, '65,537 distinct characters', '--tokenizer=gpt2')


@pytest.mark.parametrize('case', ['no input', 'missing', 'empty', 'no txt', 'latin1', 'short',
                                  'tokenizer', 'write', 'val_fraction'])
def test_own_text_bad_input(case, bad_files, out_dir, text):
    (bad_files / 'good.txt').write_text(text[:20000], encoding='utf-8')
    args, words = {
        'val_fraction': ([f'--input={bad_files / "good.txt"}', '--val_fraction=1.5'],
                         ['must lie between 0 and 1']),
        'no input': ([], ['--input=']),
        'missing': ([f'--input={bad_files / "nope.txt"}'], ['no file or folder', 'nope.txt']),
        'empty': ([f'--input={bad_files / "empty.txt"}'], ['empty.txt is empty']),
        'no txt': ([f'--input={bad_files / "no_txt"}'], ['no .txt files']),
        # one bad file in a folder
        'latin1': ([f'--input={bad_files}'], ['latin1.txt is not UTF-8']),
        'short': ([f'--input={bad_files / "short.txt"}'], ['val split would hold only 100 tokens']),
        'tokenizer': ([f'--input={bad_files / "good.txt"}', '--tokenizer=wordpiece'],
                      ["unknown tokenizer 'wordpiece'", 'char', 'gpt2', 'bpe']),
        'write': ([f'--input={bad_files / "good.txt"}'], ['cannot write', 'meta.pkl.tmp']),
    }[case]
    if case == 'write':
        (out_dir / 'meta.pkl.tmp').mkdir()  # fails after both .bin.tmp files are complete
    result = run(TEXT, *args, f'--name={out_dir}', fixed_temporary_names=case == 'write')
    if case == 'write':
        (out_dir / 'meta.pkl.tmp').rmdir()
    fails_cleanly(result, out_dir, *words)


@pytest.mark.parametrize('case', ['missing', 'empty', 'latin1 txt', 'latin1 jsonl', 'no text field',
                                  'csv', 'one document', 'short', 'val_fraction', 'hub', 'write'])
def test_openwebtext_bad_input(case, tmp_path, out_dir, text):
    src = tmp_path / 'src'
    src.mkdir()
    docs = [json.dumps({'text': p}) for p in text.split('\n\n')[:40]]
    (src / 'good.jsonl').write_text('\n'.join(docs) + '\n', encoding='utf-8')
    (src / 'empty.jsonl').write_bytes(b'')
    (src / 'latin1').mkdir()
    (src / 'latin1' / 'a.txt').write_text('fine', encoding='utf-8')
    (src / 'latin1' / 'b.txt').write_bytes('caf\xe9'.encode('latin-1'))
    (src / 'latin1.jsonl').write_bytes(('\n'.join(docs) + '\n').encode() + b'{"text": "caf\xe9"}\n')
    (src / 'body.jsonl').write_text('{"body": "a"}\n{"body": "b"}\n')
    (src / 'pages.csv').write_text('text\nhello\n')
    (src / 'one.jsonl').write_text(docs[0] + '\n')
    args, words = {
        'missing': ([f'--source={src / "nope.jsonl"}'], ['no file or folder', 'nope.jsonl']),
        'empty': ([f'--source={src / "empty.jsonl"}'], ['empty.jsonl is empty']),
        'latin1 txt': ([f'--source={src / "latin1"}'], ['not UTF-8']),
        'latin1 jsonl': ([f'--source={src / "latin1.jsonl"}'], ['not UTF-8']),
        'no text field': ([f'--source={src / "body.jsonl"}'], ["no 'text' field", 'body']),
        'csv': ([f'--source={src / "pages.csv"}'], ['cannot read', '.parquet, .jsonl or .txt']),
        'one document': ([f'--source={src / "one.jsonl"}'], ['1 document(s)']),
        'short': ([f'--source={src / "good.jsonl"}', '--min_split_tokens=100000'],
                  ['train split would hold only']),
        'val_fraction': ([f'--source={src / "good.jsonl"}', '--val_fraction=0'],
                         ['--val_fraction=0']),
        'hub': ([], ["cannot load 'Skylion007/openwebtext' from the Hugging Face hub", '--source',
                     'HF_TOKEN']),
        'write': ([f'--source={src / "good.jsonl"}', '--min_split_tokens=1'],
                  ['cannot write', 'val.bin.tmp']),
    }[case]
    if case == 'write':
        (out_dir / 'val.bin.tmp').mkdir()  # fails after train.bin.tmp is complete
    result = run(OWT, *args, f'--out_dir={out_dir}', '--num_proc=1', tmp=tmp_path,
                 fixed_temporary_names=case == 'write')
    if case == 'write':
        (out_dir / 'val.bin.tmp').rmdir()
    fails_cleanly(result, out_dir, *words)


# ---------------------------------------------------------------------------- meta.pkl safety

class _Exploit:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))  # runs at unpickling time


def test_crafted_meta_pkl_cannot_run_code(tmp_path):
    marker = tmp_path / 'pwned'
    payload = pickle.dumps({'vocab_size': 65, 'itos': _Exploit(str(marker)), 'stoi': {}})
    pickle.loads(payload)  # a plain unpickler runs it: the payload is real
    assert marker.is_dir()
    marker.rmdir()
    (tmp_path / 'meta.pkl').write_bytes(payload)
    with pytest.raises(InputError) as e:
        data.load_meta(str(tmp_path))
    message = str(e.value)
    assert '\n' not in message and 'meta.pkl' in message
    assert 'prepare.py' in message  # says what to do
    assert not marker.exists()


def test_meta_pkl_is_unpickled_only_by_load_meta():
    pattern = re.compile(r'pickle\.(loads?|Unpickler)\b')
    offenders = []
    for folder, dirs, names in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not d.startswith('.') and d not in ('tests', '__pycache__')]
        for name in names:
            path = os.path.join(folder, name)
            if name.endswith('.py') and path != os.path.join(ROOT, 'data', '__init__.py'):
                with open(path, encoding='utf-8') as f:
                    offenders += [f"{os.path.relpath(path, ROOT)}: {line.strip()}"
                                  for line in f if pattern.search(line)]
    assert not offenders, ("read meta.pkl with data.load_meta (safe), not pickle:\n"
                           + "\n".join(offenders))


def test_two_writers_at_once_do_not_share_temporary_files(tmp_path, monkeypatch):
    # Another run (say, on another node of a shared filesystem) writes the same dataset while this
    # one is renaming its files into place: each must rename only its own complete files.
    rename = os.replace
    first = {'train.bin': b'a' * 100, 'val.bin': b'b' * 10}
    second = {'train.bin': b'c' * 200, 'val.bin': b'd' * 20}

    def replace_after_the_other_run(src, dst):
        monkeypatch.setattr(os, 'replace', rename)
        data.write_files(str(tmp_path), second)  # the other run, all of it, right now
        rename(src, dst)

    monkeypatch.setattr(os, 'replace', replace_after_the_other_run)
    data.write_files(str(tmp_path), first)
    assert (tmp_path / 'train.bin').read_bytes() == first['train.bin']  # renamed last
    assert (tmp_path / 'val.bin').read_bytes() == first['val.bin']
    assert sorted(os.listdir(tmp_path)) == ['train.bin', 'val.bin']  # no temporary file left
