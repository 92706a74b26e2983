"""
How fast data/openwebtext/prepare.py turns text into GPT-2 tokens on this machine. Writes a local
corpus of Shakespeare passages (about 4 KB per document, like an OpenWebText page) in a .jsonl,
then runs prepare.py on it `runs` times for each num_proc, each time with an empty datasets cache
so that nothing is reused, and prints the median throughput:

    python data/openwebtext/bench_prepare.py  # 8 MB, num_proc 1 and 2, 3 runs each
    python data/openwebtext/bench_prepare.py --corpus_mb=1 --runs=1  # a quick look

Two figures per run: "tokenize" is the tokenizing step alone (prepare.py's own timing of
datasets' map with tiktoken), "end to end" is the whole command, from Python starting to the
renamed .bin files (loading the corpus, tokenizing, writing). Needs the tiny Shakespeare text,
which data/shakespeare_char/prepare.py downloads.
"""

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

_here = os.path.dirname(os.path.abspath(__file__))
# for configurator.py
sys.path.insert(0, os.path.join(_here, '..', '..'))

# -----------------------------------------------------------------------------
text_file = os.path.join(_here, '..', 'shakespeare_char', 'input.txt')  # the text to repeat
work_dir = '/tmp/owt_bench'  # corpus.jsonl, the datasets caches and the .bin files go here
corpus_mb = 8  # size of the corpus in megabytes (the text repeated until it is this long)
doc_chars = 4000  # about this many characters per document (OpenWebText's pages average ~5 KB)
num_procs = '1,2'  # the num_proc values to time, comma-separated
runs = 3  # runs per num_proc; the median is reported
make_corpus_only = False  # write corpus.jsonl and stop (for trying prepare.py by hand)
# -----------------------------------------------------------------------------
from configurator import configure  # noqa: E402

configure(globals())

PREPARE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'prepare.py')


def make_corpus(path):
    """A .jsonl of documents: runs of whole Shakespeare passages, repeated up to corpus_mb."""
    if not os.path.isfile(text_file):
        raise SystemExit(f"error: no text at {text_file}; "
                         f"run python data/shakespeare_char/prepare.py "
                         f"first, or pass --text_file=path/to/input.txt")
    with open(text_file, encoding='utf-8') as f:
        passages = f.read().split('\n\n')
    documents, current = [], []
    for passage in passages:
        current.append(passage)
        if sum(len(p) for p in current) >= doc_chars:
            documents.append('\n\n'.join(current))
            current = []
    written, copy = 0, 0
    with open(path, 'w', encoding='utf-8') as f:
        while written < corpus_mb * 1e6:
            for doc in documents:
                line = json.dumps({'text': doc}) + '\n'
                f.write(line)
                written += len(line.encode('utf-8'))
            copy += 1
    print(f"wrote {path}: {len(documents):,} documents x {copy}, {written / 1e6:.1f} MB")


def run_prepare(corpus, proc, run):
    """One prepare.py run with an empty datasets cache: (total tokens, tokenize seconds,
    end-to-end seconds)."""
    cache = os.path.join(work_dir, f'hf_cache_{proc}_{run}')
    out = os.path.join(work_dir, 'out')
    env = dict(os.environ, HF_DATASETS_CACHE=cache, HF_HUB_OFFLINE='1')
    command = [sys.executable, PREPARE, f'--source={corpus}', f'--out_dir={out}',
               f'--num_proc={proc}']
    t0 = time.time()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.time() - t0
    shutil.rmtree(cache, ignore_errors=True)
    if result.returncode != 0:
        raise SystemExit(f"error: {' '.join(command)} failed:\n"
                         f"{result.stderr.strip().splitlines()[-1]}")
    tokenize_seconds = float(re.search(r"tokenizing took ([\d.]+) s", result.stdout).group(1))
    tokens = sum(os.path.getsize(os.path.join(out, f'{split}.bin')) // 2
                 for split in ('train', 'val'))
    return tokens, tokenize_seconds, seconds


os.makedirs(work_dir, exist_ok=True)
corpus = os.path.join(work_dir, 'corpus.jsonl')
make_corpus(corpus)
if make_corpus_only:
    sys.exit(0)
print(f"tokens/s, median of {runs} runs [slowest, fastest]")
for proc in [int(p) for p in num_procs.split(',')]:
    results = [run_prepare(corpus, proc, run) for run in range(runs)]
    tokens = results[0][0]
    tokenize = sorted(tokens / r[1] for r in results)
    end_to_end = sorted(tokens / r[2] for r in results)
    print(f"num_proc={proc}: {tokens:,} tokens; "
          f"tokenize {statistics.median(tokenize):,.0f} [{tokenize[0]:,.0f}, {tokenize[-1]:,.0f}]; "
          f"end to end {statistics.median(end_to_end):,.0f} "
          f"[{end_to_end[0]:,.0f}, {end_to_end[-1]:,.0f}]")

# The output, with the throughputs left out (they vary with the machine and its load; BENCHMARKS.md,
# Data preparation throughput, has measured ones):
# wrote /tmp/owt_bench/corpus.jsonl: 260 documents x 7, 8.1 MB
# tokens/s, median of 3 runs [slowest, fastest]
# num_proc=1: 2,355,535 tokens; tokenize ... [..., ...]; end to end ... [..., ...]
# num_proc=2: 2,355,535 tokens; tokenize ... [..., ...]; end to end ... [..., ...]
