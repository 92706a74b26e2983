"""
Reading prepared datasets. Each data/<name>/prepare.py writes train.bin and val.bin (flat uint16
token streams, np.memmap-readable) and, for character-level data, meta.pkl (vocab_size, itos,
stoi). train.py, sample.py, bench.py and the tests read them through the functions here:

    python -c "import data; s = data.open_dataset('shakespeare_char', block_size=64); print(len(s['train']))"
"""

import os
import pickle

import numpy as np
import torch

DATA_DIR = os.path.dirname(os.path.abspath(__file__))


def dataset_dir(name):
    """data/<name>, or name itself when it is a path (contains a slash)."""
    return name if os.sep in name or '/' in name else os.path.join(DATA_DIR, name)


class _PlainUnpickler(pickle.Unpickler):
    # A pickle can name any function to call while loading; meta.pkl needs none (dicts, strings,
    # numbers), so refusing every name makes a crafted file harmless.
    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"it refers to {module}.{name}, and meta.pkl may hold only "
                                     "dicts, lists, strings and numbers")


def load_meta(name):
    """The dataset's meta.pkl as a dict, or None when it has none (GPT-2 BPE datasets)."""
    path = os.path.join(dataset_dir(name), 'meta.pkl')
    if not os.path.isfile(path):
        return None
    try:
        with open(path, 'rb') as f:
            meta = _PlainUnpickler(f).load()
    except Exception as e:
        raise SystemExit(f"error: cannot load {path} ({e}); run the dataset's prepare.py again to rewrite it")
    if not isinstance(meta, dict) or not isinstance(meta.get('vocab_size'), int):
        raise SystemExit(f"error: {path} has no integer vocab_size; run the dataset's prepare.py again")
    return meta


class Tokens:
    """One split of a dataset. Reads each sample with a plain file read instead of a memmap: a
    memmap's pages pile up in the process's memory over a long run (nanoGPT#287), while the
    file is opened once and the operating system's cache still makes reads cheap."""

    def __init__(self, path):
        self.path = path
        self.file = open(path, 'rb')
        self.num_tokens = os.path.getsize(path) // 2

    def __len__(self):
        return self.num_tokens

    def read(self, start, length):
        self.file.seek(2 * start)
        return np.frombuffer(self.file.read(2 * length), dtype=np.uint16)

    def max_token(self, chunk=1 << 26):
        data = np.memmap(self.path, dtype=np.uint16, mode='r')
        return max(int(data[i:i + chunk].max()) for i in range(0, len(data), chunk))

    def batch(self, batch_size, block_size, generator, device='cpu'):
        """batch_size random windows: inputs x (B, T) and targets y = x shifted by one (B, T)."""
        ix = torch.randint(len(self) - block_size, (batch_size,), generator=generator)
        rows = torch.from_numpy(np.stack([self.read(int(i), block_size + 1) for i in ix]).astype(np.int64))
        x, y = rows[:, :-1].contiguous(), rows[:, 1:].contiguous()  # (B, T) each
        if torch.device(device).type == 'cuda':  # pinned memory lets the copy overlap compute
            return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
        return x.to(device), y.to(device)


def open_dataset(name, block_size):
    """{'train': Tokens, 'val': Tokens} of data/<name>, checked to be long enough for block_size."""
    path = dataset_dir(name)
    if not os.path.isdir(path):
        present = sorted(d for d in os.listdir(DATA_DIR) if os.path.isdir(os.path.join(DATA_DIR, d)) and not d.startswith('_'))
        raise SystemExit(f"error: no dataset {name!r} (no folder {path}); datasets in data/: {', '.join(present)}")
    splits = {}
    for split in ('train', 'val'):
        file = os.path.join(path, f'{split}.bin')
        if not os.path.isfile(file):
            raise SystemExit(f"error: {file} is missing: run python {os.path.join(path, 'prepare.py')} first")
        splits[split] = Tokens(file)
        if len(splits[split]) <= block_size:
            raise SystemExit(f"error: {file} holds {len(splits[split])} tokens, not more than block_size={block_size}: "
                             f"use a smaller --block_size or more data")
    return splits


def check_vocab(splits, vocab_size):
    """Stop if a token id in the data is too large for the model's vocabulary."""
    for split, tokens in splits.items():
        largest = tokens.max_token()
        if largest >= vocab_size:
            raise SystemExit(f"error: {tokens.path} holds token id {largest}, but the model's vocab_size is "
                             f"{vocab_size}: prepare the data with the model's tokenizer, or set vocab_size > {largest}")
