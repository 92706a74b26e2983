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

import numpy as np

_here = os.path.dirname(os.path.abspath(__file__))
# for configurator.py
sys.path.insert(0, os.path.join(_here, '..', '..'))

# -----------------------------------------------------------------------------
input_file = os.path.join(_here, 'input.txt')  # the text; downloaded from data_url if missing
data_url = ('https://raw.githubusercontent.com/karpathy/char-rnn/master/data/'
            'tinyshakespeare/input.txt')
out_dir = os.path.dirname(os.path.abspath(__file__))  # where train.bin, val.bin and meta.pkl go
val_fraction = 0.1  # the last 10% of the characters are the validation split
min_split_tokens = 256  # stop if train or val would be shorter: too short to train or evaluate on
# -----------------------------------------------------------------------------
from configurator import configure  # noqa: E402
from data import check_splits, download_text, write_files  # noqa: E402

configure(globals())
if not 0 < val_fraction < 1:
    raise SystemExit(f"error: --val_fraction={val_fraction} must lie between 0 and 1 (e.g. 0.1)")

data = download_text(data_url, input_file)
print(f"length of dataset in characters: {len(data):,}")

# the vocabulary: every character that occurs in the text, in sorted order
chars = sorted(set(data))
vocab_size = len(chars)
print("all the unique characters:", ''.join(chars))
print(f"vocab size: {vocab_size:,}")
if vocab_size > 65536:
    raise SystemExit(f"error: the text has {vocab_size:,} distinct characters, "
                     f"more than the 65,536 ids a uint16 .bin can hold; "
                     f"use data/text/prepare.py --tokenizer=gpt2 for such a text")
stoi = {ch: i for i, ch in enumerate(chars)}
itos = {i: ch for i, ch in enumerate(chars)}

# the first 90% of the characters for training, the rest for validation
n = len(data)
split = int(n * (1 - val_fraction))
train_ids = np.array([stoi[c] for c in data[:split]], dtype=np.uint16)
val_ids = np.array([stoi[c] for c in data[split:]], dtype=np.uint16)
check_splits(train_ids, val_ids, min_split_tokens, val_fraction)

# plain dicts: data.load_meta reads it safely
meta = {'vocab_size': vocab_size, 'itos': itos, 'stoi': stoi}
write_files(out_dir, {'train.bin': train_ids.tobytes(), 'val.bin': val_ids.tobytes(),
                      'meta.pkl': pickle.dumps(meta)})
print(f"wrote train.bin, val.bin and meta.pkl to {out_dir}")

# length of dataset in characters: 1,115,394
# all the unique characters:
#  !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz
# vocab size: 65
# train has 1,003,854 tokens
# val has 111,540 tokens
# wrote train.bin, val.bin and meta.pkl to .../data/shakespeare_char
