"""
Your own text as a dataset: turns a UTF-8 .txt file, or a folder of them, into
data/<name>/train.bin and val.bin (flat uint16 token ids), plus meta.pkl for a character-level
vocabulary, ready for `python train.py --dataset=<name>`. Two tokenizers:

    char   one token per distinct character of the text (meta.pkl holds the vocabulary); the
           files are joined with a blank line between them
    gpt2   tiktoken's GPT-2 BPE (no meta.pkl); each file is a document followed by one
           <|endoftext|> token (50256), as in data/openwebtext

The first 90% of the tokens are the training split, the last 10% the validation split. A folder
means every .txt file under it, in sorted path order. A tiny CPU example, then training on it:

    python data/text/prepare.py --input=data/shakespeare_char/input.txt --name=mydata --tokenizer=char
    python train.py --dataset=mydata --device=cpu

A name with a slash in it is a folder path (--name=/tmp/mydata), as for train.py's --dataset.
Every setting below can be overridden with --key=value.
"""

import os
import pickle
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))  # for configurator.py

# -----------------------------------------------------------------------------
input = ''  # a .txt file, or a folder of them (UTF-8)
name = ''  # the dataset: writes data/<name>/ (default: the input's name without .txt); a path if it has a slash
tokenizer = 'char'  # char (the text's own characters, with meta.pkl) or gpt2 (GPT-2 BPE, for finetuning GPT-2)
val_fraction = 0.1  # the last 10% of the tokens are the validation split
min_split_tokens = 256  # stop if train or val would be shorter: too short to train or evaluate on
# -----------------------------------------------------------------------------
from configurator import configure  # noqa: E402
from data import check_splits, dataset_dir, gpt2_encoding, read_text, write_files  # noqa: E402
configure(globals())
if not 0 < val_fraction < 1:
    raise SystemExit(f"error: --val_fraction={val_fraction} must lie between 0 and 1 (e.g. 0.1)")

def text_files(path):
    if not path:
        raise SystemExit("error: say which text to prepare: --input=path/to/file.txt (or a folder of .txt files)")
    if os.path.isdir(path):
        files = sorted(os.path.join(folder, f) for folder, _, names in os.walk(path) for f in names if f.lower().endswith('.txt'))
        if not files:
            raise SystemExit(f"error: no .txt files in the folder {path}; --input takes a .txt file or a folder of them")
        return files
    if not os.path.isfile(path):
        raise SystemExit(f"error: no file or folder {path}; check the path given to --input")
    return [path]


if tokenizer not in ('char', 'gpt2'):
    raise SystemExit(f"error: unknown tokenizer {tokenizer!r}: use --tokenizer=char or --tokenizer=gpt2")
files = text_files(input)
documents = [read_text(f) for f in files]
num_chars = sum(len(d) for d in documents)
if num_chars == 0:
    raise SystemExit(f"error: {input} is empty; give --input a file or folder with text in it")
print(f"read {len(files):,} file(s), {num_chars:,} characters")

meta = None
if tokenizer == 'char':
    text = '\n\n'.join(documents)
    chars = sorted(set(text))  # the vocabulary: every character that occurs, in sorted order
    if len(chars) > 65536:
        raise SystemExit(f"error: the text has {len(chars):,} distinct characters, more than the 65,536 ids a uint16 "
                         f".bin can hold; use --tokenizer=gpt2")
    stoi = {ch: i for i, ch in enumerate(chars)}
    ids = np.array([stoi[c] for c in text], dtype=np.uint16)
    meta = {'vocab_size': len(chars), 'itos': {i: ch for i, ch in enumerate(chars)}, 'stoi': stoi}
    print(f"vocab size: {len(chars):,}")
else:
    enc = gpt2_encoding()
    ids = []
    for document in documents:
        ids.extend(enc.encode_ordinary(document))  # ordinary: a "<|endoftext|>" in the text is just text
        ids.append(enc.eot_token)  # 50256, after every document
    ids = np.array(ids, dtype=np.uint16)  # GPT-2's ids all fit in uint16

split = int(len(ids) * (1 - val_fraction))
train_ids, val_ids = ids[:split], ids[split:]
check_splits(train_ids, val_ids, min_split_tokens, val_fraction)

name = name or os.path.splitext(os.path.basename(os.path.normpath(input)))[0]
out_dir = dataset_dir(name)
outputs = {'train.bin': train_ids.tobytes(), 'val.bin': val_ids.tobytes()}
if meta is not None:
    outputs['meta.pkl'] = pickle.dumps(meta)  # plain dicts: data.load_meta reads it safely
write_files(out_dir, outputs)
if meta is None and os.path.exists(os.path.join(out_dir, 'meta.pkl')):
    os.remove(os.path.join(out_dir, 'meta.pkl'))  # left by an earlier char run: it would make train.py decode as char
print(f"wrote {', '.join(outputs)} to {out_dir}")
print(f"train on it with: python train.py --dataset={name}")

# python data/text/prepare.py --input=data/shakespeare_char/input.txt --name=mydata --tokenizer=char
# read 1 file(s), 1,115,394 characters
# vocab size: 65
# train has 1,003,854 tokens
# val has 111,540 tokens
# wrote train.bin, val.bin, meta.pkl to .../data/mydata
# train on it with: python train.py --dataset=mydata
