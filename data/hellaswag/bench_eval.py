"""
How fast HellaSwag is scored on this machine: examples/s of data.hellaswag.hellaswag_counts (what
train.py --eval_hellaswag=True runs) for a model of a given shape with random weights: the speed,
not the score. Reads data/hellaswag/val.npz if data/hellaswag/prepare.py has written it; without
it, synthetic examples of random tokens, contexts of 32-64 tokens and endings of 12-36 (drawn
uniformly, seeded), so the padding in a batch is like the real set's. Each setting of
examples_per_batch is timed `runs` times, the settings interleaved, and the median printed. GPT-2
124M's shape, then a quick look at a small model:

    python data/hellaswag/bench_eval.py
    python data/hellaswag/bench_eval.py --n_layer=2 --n_head=2 --n_embd=64 --examples=16 --runs=1
"""

import os
import statistics
import sys
import time

import numpy as np
import torch

# for configurator.py
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))

# -----------------------------------------------------------------------------
hellaswag_data = 'hellaswag'  # val.npz's folder (data/<name> or a path); synthetic examples if none
examples = 32  # examples scored per timed run (the first ones of the file)
examples_per_batch = '1,2,4'  # comma-separated settings to compare; train.py uses batch_size // 4
runs = 3  # timed runs per setting, interleaved; the median is printed
n_layer = 12  # the model's shape: GPT-2 124M by default
n_head = 12
n_embd = 768
block_size = 1024
vocab_size = 50257
device = 'cpu'
seed = 1337
# -----------------------------------------------------------------------------
from configurator import configure  # noqa: E402
from data import dataset_dir  # noqa: E402
from data.hellaswag import HellaSwag, hellaswag_counts, load_hellaswag  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402

configure(globals())

if os.path.isfile(os.path.join(dataset_dir(hellaswag_data), 'val.npz')):
    hellaswag = load_hellaswag(hellaswag_data)
    print(f"{hellaswag.path}: {len(hellaswag):,} examples")
else:
    rng = np.random.default_rng(seed)
    lengths = [int(rng.integers(32, 65)) if j % 5 == 0 else int(rng.integers(12, 37))
               for j in range(5 * examples)]
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tokens = rng.integers(0, 50257, starts[-1]).astype(np.uint16)
    labels = rng.integers(0, 4, examples).astype(np.uint8)
    hellaswag = HellaSwag('synthetic', tokens, starts, labels)
    print(f"no val.npz in {dataset_dir(hellaswag_data)}: {examples} synthetic examples")
examples = min(examples, len(hellaswag))

torch.manual_seed(seed)
model = GPT(GPTConfig(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size,
                      vocab_size=vocab_size, bias=True)).to(device).eval()
print(f"model: {model.get_num_params() / 1e6:.1f}M parameters on {device}, "
      f"{torch.get_num_threads()} threads")

settings = [int(k) for k in examples_per_batch.split(',')]
times = {k: [] for k in settings}
with torch.no_grad():
    # warm-up
    hellaswag_counts(model, hellaswag, min(examples, max(settings)), block_size, max(settings),
                     device)
    for _ in range(runs):
        # interleaved, so that a change in the machine's load touches every setting alike
        for k in settings:
            t0 = time.perf_counter()
            counts = hellaswag_counts(model, hellaswag, examples, block_size, k, device)
            if device.startswith('cuda'):
                torch.cuda.synchronize()
            times[k].append(time.perf_counter() - t0)
for k in settings:
    t = statistics.median(times[k])
    all_runs = ', '.join(f'{x:.2f}' for x in times[k])
    print(f"{k} example(s) per forward ({4 * k} rows): {examples / t:.2f} examples/s "
          f"(median of {runs}: {t:.2f} s for {examples}; all runs {all_runs} s)")
