"""
Tiny Shakespeare in GPT-2 tokens, for finetuning GPT-2 on it. Downloads the text (1.1 MB) to
input.txt next to this file if it is not there yet, splits it 90/10 by characters, encodes each
part with tiktoken's GPT-2 BPE, and writes next to this file:

    train.bin, val.bin   flat uint16 GPT-2 token ids (no meta.pkl: the vocabulary is GPT-2's)

Run it once before finetuning (a few seconds on a CPU):

    python data/shakespeare/prepare.py
    python train.py config/finetune_shakespeare.py

Without internet, put the text at data/shakespeare/input.txt by hand first (or pass
--input_file=path/to/input.txt); tiktoken also downloads the GPT-2 BPE files once, into
TIKTOKEN_CACHE_DIR when that is set. Every setting below can be overridden with --key=value.
"""

import os
import sys
import urllib.request

import numpy as np
import tiktoken

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))  # for configurator.py

# -----------------------------------------------------------------------------
input_file = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'input.txt')  # the text; downloaded from data_url if missing
data_url = 'https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt'
out_dir = os.path.dirname(os.path.abspath(__file__))  # where train.bin and val.bin go
val_fraction = 0.1  # the last 10% of the characters are the validation split
min_split_tokens = 256  # stop if train or val would be shorter: too short to train or evaluate on
# -----------------------------------------------------------------------------
from configurator import configure  # noqa: E402
configure(globals())


def download(url, path):
    """Fetch url to path, through a temporary file so that a broken download leaves nothing behind."""
    print(f"downloading {url}")
    tmp = path + '.tmp'
    try:
        with urllib.request.urlopen(url, timeout=30) as response, open(tmp, 'wb') as f:
            f.write(response.read())
    except Exception as e:  # no network, a bad URL, a server error, a broken connection
        if os.path.exists(tmp):
            os.remove(tmp)
        raise SystemExit(f"error: could not download {url} ({getattr(e, 'reason', None) or e}); "
                         f"fetch the file by hand and put it at {os.path.abspath(path)}")
    os.replace(tmp, path)


def read_text(path):
    with open(path, 'rb') as f:
        raw = f.read()
    if not raw:
        raise SystemExit(f"error: {path} is empty; delete it so that it is downloaded again, or put the text there")
    try:
        return raw.decode('utf-8')
    except UnicodeDecodeError as e:
        raise SystemExit(f"error: {path} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); "
                         f"convert it first, e.g. iconv -f latin1 -t utf-8")


def gpt2_encoding():
    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as e:  # its two files are downloaded on first use
        raise SystemExit(f"error: cannot load tiktoken's GPT-2 BPE ({type(e).__name__}); it is downloaded once, "
                         f"so connect to the internet, or set TIKTOKEN_CACHE_DIR to a folder that already holds it")


def save(outputs):
    """Write {filename: bytes} into out_dir. Each file goes to a temporary name first and all are
    renamed only once every one is complete, so a run that stops part-way (an error, Ctrl-C, a
    full disk) leaves the files of the previous run as they were."""
    written = []
    try:
        os.makedirs(out_dir, exist_ok=True)
        for filename, data in outputs.items():
            tmp = os.path.join(out_dir, filename + '.tmp')
            with open(tmp, 'wb') as f:
                written.append(tmp)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
    except BaseException as e:
        for tmp in written:
            os.remove(tmp)
        if isinstance(e, OSError):
            raise SystemExit(f"error: cannot write {e.filename or out_dir} ({e.strerror}); "
                             f"check the free disk space, or write elsewhere with --out_dir=DIR")
        raise
    for filename in outputs:
        os.replace(os.path.join(out_dir, filename + '.tmp'), os.path.join(out_dir, filename))


if not os.path.exists(input_file):
    download(data_url, input_file)
data = read_text(input_file)
print(f"length of dataset in characters: {len(data):,}")

# split by characters first, then encode each part (so no token straddles the split)
n = len(data)
split = int(n * (1 - val_fraction))
enc = gpt2_encoding()
train_ids = np.array(enc.encode_ordinary(data[:split]), dtype=np.uint16)  # GPT-2's ids are all < 50,257
val_ids = np.array(enc.encode_ordinary(data[split:]), dtype=np.uint16)
print(f"train has {len(train_ids):,} tokens")
print(f"val has {len(val_ids):,} tokens")
for name, ids in (('train', train_ids), ('val', val_ids)):
    if len(ids) < min_split_tokens:
        raise SystemExit(f"error: the {name} split would hold only {len(ids):,} tokens (min_split_tokens={min_split_tokens}): "
                         f"use a longer text, or change --val_fraction (now {val_fraction})")

save({'train.bin': train_ids.tobytes(), 'val.bin': val_ids.tobytes()})
print(f"wrote train.bin and val.bin to {out_dir}")

# length of dataset in characters: 1,115,394
# train has 301,966 tokens
# val has 36,059 tokens
# wrote train.bin and val.bin to .../data/shakespeare
