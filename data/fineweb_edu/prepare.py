"""
FineWeb-Edu in GPT-2 tokens, for reproducing GPT-2 (124M) as llm.c, build-nanogpt, modded-nanogpt
and nanochat do: HuggingFaceFW/fineweb-edu, the educational pages of FineWeb (web text picked by a
classifier), its sample-10BT subset (~10B GPT-2 tokens). Writes next to this file:

    train.bin   flat uint16 GPT-2 token ids (~10B tokens: ~20 GB, 2 bytes a token)
    val.bin     the same for the validation split (~10M tokens)

It is data/openwebtext/prepare.py with these defaults, so everything works as there: the download
through Hugging Face `datasets` (with a progress bar; its parquet files and datasets' cache of
the tokens need several times the ~20 GB of the .bin files, so check the free disk first; the
dataset card gives the download's size), num_proc processes tokenizing, one <|endoftext|> after
each document, a held-out validation split, and --source= for local .parquet or .jsonl files or
folders (FineWeb's columns: `text`, the others are ignored). Then:

    python data/fineweb_edu/prepare.py --num_proc=16
    torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2_fineweb_edu.py

A tiny CPU example on local files (any .jsonl or .parquet with a text column):

    python data/fineweb_edu/prepare.py --source=path/to/shards --out_dir=/tmp/fwe --val_fraction=0.1
"""

import os
import runpy
import sys

here = os.path.dirname(os.path.abspath(__file__))
defaults = ['--source=HuggingFaceFW/fineweb-edu', '--subset=sample-10BT', f'--out_dir={here}',
            '--val_fraction=0.001']  # ~9,700 of the 9.7M documents, ~10M tokens held out
# the command line's own --key=value win (a key given twice is refused)
given = {arg.split('=', 1)[0] for arg in sys.argv[1:]}
sys.argv[1:1] = [arg for arg in defaults if arg.split('=', 1)[0] not in given]
runpy.run_path(os.path.join(here, '..', 'openwebtext', 'prepare.py'), run_name='__main__')

# The tiny example, on 12 documents (the timing varies):
# reading 2 .parquet file(s) from path/to/shards
# documents: train 10, val 2
# ...
# wrote train.bin and val.bin to /tmp/fwe
