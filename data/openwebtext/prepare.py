"""
OpenWebText (an open copy of GPT-2's WebText: about 8M web pages) in GPT-2 tokens, for
pretraining GPT-2 124M. Loads the corpus with Hugging Face `datasets`, holds out a small
validation split, tokenizes every document in parallel with tiktoken's GPT-2 BPE (each document
followed by one <|endoftext|> token, id 50256) and writes next to this file:

    train.bin, val.bin   flat uint16 GPT-2 token ids (~9B tokens, ~17 GB, and ~4M tokens)

Run it once: a ~54 GB download into datasets' cache, then ~9B tokens to make, about an hour of
CPU time at the rates in BENCHMARKS.md, shared out over num_proc processes. Run it again and
datasets reuses its cached download and tokens:

    python data/openwebtext/prepare.py
    python train.py config/train_gpt2.py

Any other corpus goes through the same pipeline: another hub dataset id, or local files with one
document per row of a `text` field (.parquet, .jsonl) or per .txt file, or a folder of them.
A tiny CPU example, on a 1 MB corpus of Shakespeare passages that the benchmark script writes
(from the text that data/shakespeare_char/prepare.py fetches):

    python data/openwebtext/bench_prepare.py --make_corpus_only=True --corpus_mb=1
    python data/openwebtext/prepare.py --source=/tmp/owt_bench/corpus.jsonl \
        --out_dir=/tmp/owt_bench --val_fraction=0.01

Every setting below can be overridden with --key=value.
"""

import contextlib
import math
import os
import shutil
import sys
import time

import numpy as np
import tiktoken
from tqdm import tqdm

# for configurator.py
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))

# -----------------------------------------------------------------------------
# nanoGPT's load_dataset("openwebtext") relied on a dataset script, which datasets 4+ refuses to
# run; Skylion007/openwebtext is the same corpus under its full hub id. If the hub refuses that
# too, the error says what to try: another --source, e.g. a local copy of the corpus's parquet
# files.
source = 'Skylion007/openwebtext'  # hub dataset id, or a local .parquet/.jsonl/.txt file or folder
subset = ''  # hub dataset configuration, e.g. FineWeb-Edu's sample-10BT; '' = its default
out_dir = os.path.dirname(os.path.abspath(__file__))  # where train.bin and val.bin go
val_fraction = 0.0005  # share of documents held out for validation (~4,000 of OpenWebText's 8M)
seed = 2357  # fixes which documents land in val
num_proc = os.cpu_count() or 1  # processes for downloading and tokenizing (default: one per core)
min_split_tokens = 256  # stop if train or val would be shorter: too short to train or evaluate on
# -----------------------------------------------------------------------------
from checkpoint import atomic_write  # noqa: E402
from configurator import configure  # noqa: E402
from data import gpt2_encoding, remove_stale_vocabulary  # noqa: E402

configure(globals())

# file suffix -> datasets builder
LOCAL_FORMATS = {'.parquet': 'parquet', '.jsonl': 'json', '.txt': 'text'}


def local_files(path):
    """The files that make up a local source, and the one suffix they share."""
    if os.path.isdir(path):
        files = sorted(os.path.join(folder, name)
                       for folder, _, names in os.walk(path) for name in names
                       if os.path.splitext(name)[1] in LOCAL_FORMATS)
    else:
        files = [path]
    suffixes = sorted({os.path.splitext(f)[1] for f in files})
    if not files:
        raise SystemExit(f"error: no .parquet, .jsonl or .txt files in the folder {path}")
    if len(suffixes) > 1:
        raise SystemExit(f"error: {path} mixes {' and '.join(suffixes)} files; "
                         f"give --source a folder of one kind")
    if suffixes[0] not in LOCAL_FORMATS:
        raise SystemExit(f"error: cannot read {path}: "
                         f"--source takes a .parquet, .jsonl or .txt file, "
                         f"a folder of them, or a Hugging Face hub dataset id")
    if all(os.path.getsize(f) == 0 for f in files):
        raise SystemExit(f"error: {path} is empty; point --source at a corpus with text in it")
    return files, suffixes[0]


def not_utf8(error):
    """The UnicodeDecodeError behind an error raised by datasets, if that is what went wrong."""
    while error is not None and not isinstance(error, UnicodeDecodeError):
        error = error.__cause__ or error.__context__
    return error


def load_documents(source):
    """The corpus as one datasets.Dataset with a column 'text' of documents."""
    from datasets import load_dataset  # slow to import, and only this script needs it
    source = os.path.expanduser(source)
    if os.path.exists(source):
        files, suffix = local_files(source)
        print(f"reading {len(files):,} {suffix} file(s) from {source}")
        # a whole .txt file is one document
        options = {'sample_by': 'document'} if suffix == '.txt' else {}
        try:
            return load_dataset(LOCAL_FORMATS[suffix], data_files=files, split='train', **options)
        except Exception as e:
            if not_utf8(e):
                raise SystemExit(f"error: {source} is not UTF-8 text ({not_utf8(e).reason}); "
                                 f"convert it first, e.g. iconv -f latin1 -t utf-8")
            first_line = str(e).splitlines()[0] if str(e) else ''
            raise SystemExit(f"error: cannot read {source} ({type(e).__name__}: {first_line}); "
                             f"check that it is a valid {suffix} file with a 'text' field")
    if source.startswith(('/', '.', '~')) or os.path.splitext(source)[1] in LOCAL_FORMATS:
        raise SystemExit(f"error: no file or folder {source}; check the path given to --source")
    print(f"loading {source}{' (' + subset + ')' if subset else ''} from the Hugging Face hub")
    try:
        return load_dataset(source, subset or None, split='train', num_proc=num_proc)
    except Exception as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SystemExit(f"error: cannot load {source!r} from the Hugging Face hub ({reason}); "
                         f"try another --source (a hub dataset with data files, "
                         f"or a local copy of its parquet files: --source=path/to/folder), "
                         f"or check the network and HF_TOKEN")


def tokenize(document):
    enc = tiktoken.get_encoding("gpt2")  # loaded once per process, then cached by tiktoken
    # ordinary: a "<|endoftext|>" in the text is just text
    ids = enc.encode_ordinary(document['text'] or '')
    ids.append(enc.eot_token)  # 50256, after every document
    return {'ids': np.array(ids, dtype=np.uint16), 'len': len(ids)}  # GPT-2's ids all fit in uint16


def write_tokens(dset, path, name):
    """Concatenate every document's ids into a flat uint16 file, about 1024 batches at a time."""
    total = int(np.sum(dset.with_format('numpy')['len'][:], dtype=np.uint64))
    arr = np.memmap(path, dtype=np.uint16, mode='w+', shape=(total,))
    batch_size = math.ceil(len(dset) / 1024)
    start = 0
    with tqdm(total=total, unit='tok', unit_scale=True, desc=f"writing {name}") as bar:
        for batch in dset.with_format('numpy').iter(batch_size=batch_size):
            ids = np.concatenate(batch['ids'])  # (tokens in this batch,)
            arr[start:start + len(ids)] = ids
            start += len(ids)
            bar.update(len(ids))
    arr.flush()
    del arr  # closes the file before it is renamed


if not 0 < val_fraction < 1:
    raise SystemExit(f"error: --val_fraction={val_fraction} must lie between 0 and 1 (e.g. 0.0005)")
gpt2_encoding()  # fail now, not after the download, if the BPE cannot be had
dataset = load_documents(source)
if 'text' not in dataset.column_names:
    raise SystemExit(f"error: {source} has no 'text' field "
                     f"(its fields: {', '.join(dataset.column_names)}); "
                     f"documents must be in a field named text")
if getattr(dataset.features['text'], 'dtype', None) not in ('string', 'large_string'):
    raise SystemExit(f"error: the 'text' field of {source} holds {dataset.features['text']}, "
                     f"not strings")
if len(dataset) < 2:
    raise SystemExit(f"error: {source} holds {len(dataset)} document(s); "
                     f"it takes at least two, one each for train and val")

# hold out val_fraction of the documents, chosen at random with a fixed seed
split_dataset = dataset.train_test_split(test_size=val_fraction, seed=seed, shuffle=True)
split_dataset['val'] = split_dataset.pop('test')
print(f"documents: train {len(split_dataset['train']):,}, val {len(split_dataset['val']):,}")

t0 = time.time()
try:
    tokenized = split_dataset.map(tokenize, remove_columns=dataset.column_names, desc="tokenizing",
                                  num_proc=num_proc)
except Exception as e:
    # .jsonl and .parquet readers let bad bytes through; reading a document finds them
    if not_utf8(e):
        raise SystemExit(f"error: {source} holds text that is not UTF-8 ({not_utf8(e).reason}); "
                         f"convert it first, e.g. iconv -f latin1 -t utf-8")
    raise
seconds = time.time() - t0
num_tokens = {split: int(np.sum(dset.with_format('numpy')['len'][:], dtype=np.uint64))
              for split, dset in tokenized.items()}
# next to nothing when datasets reuses its cache
print(f"tokenizing took {seconds:.2f} s with num_proc={num_proc}")
for split, count in num_tokens.items():
    if count < min_split_tokens:
        raise SystemExit(f"error: the {split} split would hold only {count:,} tokens "
                         f"(min_split_tokens={min_split_tokens}): "
                         f"use a larger corpus, or change --val_fraction (now {val_fraction})")

# Write both files under temporary names and rename them only once both are complete, so a run
# that stops part-way (an error, Ctrl-C, a full disk) leaves the files of the previous run whole.
try:
    os.makedirs(out_dir, exist_ok=True)
    need, free = 2 * sum(num_tokens.values()), shutil.disk_usage(out_dir).free
except OSError as e:
    raise SystemExit(f"error: cannot write {e.filename or out_dir} ({e.strerror}); "
                     f"check the free disk space, or write elsewhere with --out_dir=DIR")
if need > free:  # a memmap on a full disk dies with a bus error, not a message
    raise SystemExit(f"error: the two .bin files need {need / 1e9:.1f} GB "
                     f"and {out_dir} has {free / 1e9:.1f} GB free; "
                     f"free some space or write elsewhere with --out_dir=DIR")
with contextlib.ExitStack() as files:
    for split, dset in tokenized.items():
        path = files.enter_context(atomic_write(os.path.join(out_dir, f'{split}.bin')))
        write_tokens(dset, path, f'{split}.bin')
# GPT-2's tokens: an earlier dataset's meta.pkl would misread them
remove_stale_vocabulary(out_dir, ())
for split, count in num_tokens.items():
    print(f"{split}.bin has {count:,} tokens")
print(f"wrote train.bin and val.bin to {out_dir}")

# On OpenWebText (8,013,769 documents): the figures nanoGPT reported for this val_fraction and seed
# (not re-run here: this machine has no route to the hub)
# documents: train 8,009,762, val 4,007
# train.bin has 9,035,582,198 tokens (~17 GB)
# val.bin has 4,434,897 tokens (~8.5 MB)
#
# The tiny example from the docstring (the timing varies):
# reading 1 .jsonl file(s) from /tmp/owt_bench/corpus.jsonl
# documents: train 257, val 3
# tokenizing took 0.28 s with num_proc=2
# train.bin has 332,676 tokens
# val.bin has 3,829 tokens
# wrote train.bin and val.bin to /tmp/owt_bench
