"""
HellaSwag, scored as llm.c and build-nanogpt score it: each example is a context and 4 endings,
one of them right. The model reads context + ending, and the loss of the ending's tokens alone
(given everything before them) says how likely it finds that ending. `acc`: the ending with the
lowest summed loss is the model's answer; `acc_norm`: the lowest mean loss per ending token.
data/hellaswag/prepare.py writes the tokens (val.npz); train.py --eval_hellaswag=True scores them
at every evaluation. From Python, on a model of GPT-2's vocabulary:

    python -c "import data.hellaswag as h; print(len(h.load_hellaswag('hellaswag')))"
"""

import os

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from data import dataset_dir
from errors import InputError

GPT2_VOCAB_SIZE = 50257  # the tokens are GPT-2 BPE ids


class HellaSwag:
    """The examples of val.npz: for example i, its context and its 4 endings are the 5 token runs
    tokens[starts[5*i + j]:starts[5*i + j + 1]], j = 0 (context), 1..4 (endings); labels[i] is
    the index of the right ending."""

    def __init__(self, path, tokens, starts, labels):
        self.path, self.tokens, self.starts, self.labels = path, tokens, starts, labels

    def __len__(self):
        return len(self.labels)

    def example(self, i):
        """(context, [4 endings], label), the token runs as int64 arrays."""
        runs = [self.tokens[self.starts[5 * i + j]:self.starts[5 * i + j + 1]].astype(np.int64)
                for j in range(5)]
        return runs[0], runs[1:], int(self.labels[i])


def load_hellaswag(name):
    """The examples in data/<name>/val.npz (or <name>/val.npz when name is a path)."""
    path = os.path.join(dataset_dir(name), 'val.npz')
    if not os.path.isfile(path):
        raise InputError(f"{path} is missing: run python data/hellaswag/prepare.py first "
                         f"(or point --hellaswag_data at the folder that holds val.npz)")
    try:
        with np.load(path, allow_pickle=False) as f:  # no pickles: the file cannot run code
            tokens, starts, labels = f['tokens'], f['starts'], f['labels']
    except Exception as e:
        raise InputError(f"cannot read {path} ({e}); "
                         f"run python data/hellaswag/prepare.py again to rewrite it")
    if len(starts) != 5 * len(labels) + 1 or len(labels) == 0 or starts[-1] != len(tokens):
        raise InputError(f"{path} is inconsistent (its token runs do not match its examples); "
                         f"run python data/hellaswag/prepare.py again to rewrite it")
    return HellaSwag(path, tokens, starts, labels)


def ending_losses(model, examples, block_size, device):
    """The losses of the ending tokens of a few examples [(context, endings, label)], all 4 x
    len(examples) rows in one forward pass: (summed, mean per token), each (examples, 4).
    A context + ending longer than block_size keeps its last block_size tokens."""
    rows, scored = [], []
    for context, endings, _ in examples:
        for ending in endings:
            row = np.concatenate([context, ending])[-block_size:]
            rows.append(row)
            # the ending's tokens are targets; a row's first token never is (nothing precedes it)
            scored.append(min(len(ending), len(row) - 1))
    R, T = len(rows), max(len(row) for row in rows)
    # padded at the end; causal attention keeps padding out of the rows' own positions
    idx = torch.zeros(R, T, dtype=torch.long)
    targets = torch.full((R, T), -1, dtype=torch.long)  # -1: not scored (context, padding)
    for r, (row, n) in enumerate(zip(rows, scored)):
        idx[r, :len(row)] = torch.from_numpy(row)
        # position t predicts token t + 1
        targets[r, len(row) - 1 - n:len(row) - 1] = idx[r, len(row) - n:len(row)]
    idx, targets = idx.to(device), targets.to(device)
    logits, _ = model(idx, targets)  # (R, T, vocab); targets make the model return every position
    # the scored positions only: (N,) each
    rows_of, positions = (targets != -1).nonzero(as_tuple=True)
    losses = F.cross_entropy(logits[rows_of, positions].float(), targets[rows_of, positions],
                             reduction='none')  # (N,)
    per_token = torch.zeros(R, T, device=device)
    # (R, T), zero where not scored; a plain sum is deterministic on GPUs too
    per_token[rows_of, positions] = losses
    summed = per_token.sum(1)  # (R,)
    mean = summed / torch.tensor(scored, device=device)  # (R,)
    return summed.view(-1, 4), mean.view(-1, 4)  # (examples, 4) each


def hellaswag_counts(model, hellaswag, limit, block_size, batch_examples, device,
                     rank=0, world_size=1):
    """[examples scored, right by summed loss (acc), right by mean loss (acc_norm)] on the first
    `limit` examples (all when limit is 0), each of world_size processes scoring its share. The
    examples are cut into fixed batches of batch_examples and batch b goes to process b %
    world_size, so every batch is computed exactly as in a single process: the counts summed over
    processes equal a single process's counts exactly. Every process runs as many forward passes
    (one that has no batch left repeats its last, uncounted): an FSDP model needs all of them in
    each one."""
    n = min(limit, len(hellaswag)) if limit > 0 else len(hellaswag)
    starts = range(0, n, batch_examples)
    counts = torch.zeros(3, dtype=torch.long, device=device)
    for b in range(rank, -(-len(starts) // world_size) * world_size, world_size):
        start = starts[min(b, len(starts) - 1)]
        examples = [hellaswag.example(i) for i in range(start, min(start + batch_examples, n))]
        summed, mean = ending_losses(model, examples, block_size, device)
        if b >= len(starts):
            continue
        labels = torch.tensor([label for _, _, label in examples], device=device)
        counts[0] += len(examples)
        counts[1] += (summed.argmin(1) == labels).sum()  # argmin: the first of equal losses
        counts[2] += (mean.argmin(1) == labels).sum()
    if world_size > 1:  # every process's counts, summed
        dist.all_reduce(counts)
    return counts
