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

import numpy as np

_here = os.path.dirname(os.path.abspath(__file__))
# for configurator.py
sys.path.insert(0, os.path.join(_here, '..', '..'))

# -----------------------------------------------------------------------------
input_file = os.path.join(_here, 'input.txt')  # the text; downloaded from data_url if missing
data_url = ('https://raw.githubusercontent.com/karpathy/char-rnn/master/data/'
            'tinyshakespeare/input.txt')
out_dir = os.path.dirname(os.path.abspath(__file__))  # where train.bin and val.bin go
val_fraction = 0.1  # the last 10% of the characters are the validation split
min_split_tokens = 256  # stop if train or val would be shorter: too short to train or evaluate on
# -----------------------------------------------------------------------------
from configurator import configure  # noqa: E402
from data import check_splits, download_text, gpt2_encoding, write_files  # noqa: E402

configure(globals())
if not 0 < val_fraction < 1:
    raise SystemExit(f"error: --val_fraction={val_fraction} must lie between 0 and 1 (e.g. 0.1)")

data = download_text(data_url, input_file)
print(f"length of dataset in characters: {len(data):,}")

# split by characters first, then encode each part (so no token straddles the split)
n = len(data)
split = int(n * (1 - val_fraction))
enc = gpt2_encoding()
# GPT-2's ids are all < 50,257
train_ids = np.array(enc.encode_ordinary(data[:split]), dtype=np.uint16)
val_ids = np.array(enc.encode_ordinary(data[split:]), dtype=np.uint16)
check_splits(train_ids, val_ids, min_split_tokens, val_fraction)

write_files(out_dir, {'train.bin': train_ids.tobytes(), 'val.bin': val_ids.tobytes()})
print(f"wrote train.bin and val.bin to {out_dir}")

# length of dataset in characters: 1,115,394
# train has 301,966 tokens
# val has 36,059 tokens
# wrote train.bin and val.bin to .../data/shakespeare
