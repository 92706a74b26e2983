"""
Tiny Shakespeare, one token per character. Downloads the text (1.1 MB) to input.txt next to this
file if it is not there yet, maps each of its 65 distinct characters to an integer, and writes
next to this file:

    train.bin, val.bin   the first 90% and the last 10% of the text as flat uint16 token ids
    meta.pkl             {'vocab_size': 65, 'itos': {id: char}, 'stoi': {char: id}}, for decoding

Run it once before training (a second or two on a CPU):

    python data/shakespeare_char/prepare.py
    python train.py config/train_shakespeare_char.py

Without internet, put the text at data/shakespeare_char/input.txt by hand first (or pass
--input_file=path/to/input.txt). Every setting below can be overridden with --key=value.
"""

import os
import pickle
import sys
import urllib.request

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))  # for configurator.py

# -----------------------------------------------------------------------------
input_file = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'input.txt')  # the text; downloaded from data_url if missing
data_url = 'https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt'
out_dir = os.path.dirname(os.path.abspath(__file__))  # where train.bin, val.bin and meta.pkl go
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

# the vocabulary: every character that occurs in the text, in sorted order
chars = sorted(set(data))
vocab_size = len(chars)
print("all the unique characters:", ''.join(chars))
print(f"vocab size: {vocab_size:,}")
if vocab_size > 65536:
    raise SystemExit(f"error: the text has {vocab_size:,} distinct characters, more than the 65,536 ids a uint16 "
                     f".bin can hold; use data/text/prepare.py --tokenizer=gpt2 for such a text")
stoi = {ch: i for i, ch in enumerate(chars)}
itos = {i: ch for i, ch in enumerate(chars)}

# the first 90% of the characters for training, the rest for validation
n = len(data)
split = int(n * (1 - val_fraction))
train_ids = np.array([stoi[c] for c in data[:split]], dtype=np.uint16)
val_ids = np.array([stoi[c] for c in data[split:]], dtype=np.uint16)
print(f"train has {len(train_ids):,} tokens")
print(f"val has {len(val_ids):,} tokens")
for name, ids in (('train', train_ids), ('val', val_ids)):
    if len(ids) < min_split_tokens:
        raise SystemExit(f"error: the {name} split would hold only {len(ids):,} tokens (min_split_tokens={min_split_tokens}): "
                         f"use a longer text, or change --val_fraction (now {val_fraction})")

meta = {'vocab_size': vocab_size, 'itos': itos, 'stoi': stoi}  # plain dicts: data.load_meta reads it safely
save({'train.bin': train_ids.tobytes(), 'val.bin': val_ids.tobytes(), 'meta.pkl': pickle.dumps(meta)})
print(f"wrote train.bin, val.bin and meta.pkl to {out_dir}")

# length of dataset in characters: 1,115,394
# all the unique characters:
#  !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz
# vocab size: 65
# train has 1,003,854 tokens
# val has 111,540 tokens
# wrote train.bin, val.bin and meta.pkl to .../data/shakespeare_char
