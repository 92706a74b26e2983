# Goal: the README's quick start: a character-level Shakespeare GPT sized for the machine at hand.
# Hardware: with a CUDA GPU, nanoGPT's full config (train_shakespeare_char.py: val loss ~1.47 in
# ~3 minutes on an A100); otherwise (CPU, MPS) the small one (train_shakespeare_char_cpu.py:
# val loss ~1.88 after 2000 iterations, a few minutes on 2 CPU cores).
# Then: python sample.py --out_dir=out-shakespeare-char
# Batch: see the config that is picked.

import os

import torch

_cuda = torch.cuda.is_available()
_name = 'train_shakespeare_char.py' if _cuda else 'train_shakespeare_char_cpu.py'
_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), _name)
print(f"quickstart: {'CUDA GPU' if _cuda else 'no CUDA GPU'} found, using config/{_name}")
exec(open(_path).read())
