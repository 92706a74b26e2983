"""
Your own text as a dataset: turns a UTF-8 .txt file, or a folder of them, into
data/<name>/train.bin and val.bin (flat uint16 token ids), plus meta.pkl for a character-level
vocabulary or tokenizer.json for a trained one, ready for `python train.py --dataset=<name>`.
Three tokenizers:

    char   one token per distinct character of the text (meta.pkl holds the vocabulary); the
           files are joined with a blank line between them
    gpt2   tiktoken's GPT-2 BPE (no meta.pkl); each file is a document followed by one
           <|endoftext|> token (50256), as in data/openwebtext
    bpe    a byte-level BPE of --vocab_size tokens trained here on the text, GPT-2's kind (bytes
           first, so any language and any emoji encodes and decodes exactly), written to
           tokenizer.json; each file is a document followed by <|endoftext|>. For text that is
           not English, where GPT-2's BPE spends many tokens per character (README)

The first 90% of the tokens are the training split, the last 10% the validation split. A folder
means every .txt file under it, in sorted path order; --input given several times reads each, in
the order given. A tiny CPU example, then training on it:

    python data/text/prepare.py --input=data/shakespeare_char/input.txt --name=mydata \
        --tokenizer=char
    python train.py config/train_shakespeare_char_cpu.py --dataset=mydata --out_dir=out-mydata
    python data/text/prepare.py --input=data/shakespeare_char/input.txt --name=mybpe \
        --tokenizer=bpe --vocab_size=1024

A name with a slash in it is a folder path (--name=/tmp/mydata), as for train.py's --dataset.
Every setting below can be overridden with --key=value.
"""

import itertools
import math
import os
import pickle
import re
import shlex
import sys
import time

import numpy as np

# for configurator.py
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))

# -----------------------------------------------------------------------------
input = []  # a .txt file or a folder of them (UTF-8); several: --input=a.txt --input=b.txt
name = ''  # the dataset: data/<name>/ (default: the input's name without .txt), or a path with a /
tokenizer = 'char'  # char (the text's characters), gpt2 (to finetune GPT-2) or bpe (trained here)
vocab_size = 8192  # with tokenizer=bpe: its tokens, 257 to 65,536 (a multiple of 64 runs fastest)
val_fraction = 0.1  # the last 10% of the tokens are the validation split
min_split_tokens = 256  # stop if train or val would be shorter: too short to train or evaluate on
# -----------------------------------------------------------------------------
from configurator import configure  # noqa: E402
from data import (  # noqa: E402
    EOT,
    check_splits,
    dataset_dir,
    gpt2_encoding,
    progress,
    read_text,
    train_bpe,
    write_files,
)

configure(globals())
if not 0 < val_fraction < 1:
    raise SystemExit(f"error: --val_fraction={val_fraction} must lie between 0 and 1 (e.g. 0.1)")

def text_files(path):
    path = os.path.expanduser(path)
    if os.path.isdir(path):
        files = sorted(os.path.join(folder, f)
                       for folder, _, names in os.walk(path) for f in names
                       if f.lower().endswith('.txt'))
        if not files:
            raise SystemExit(f"error: no .txt files in the folder {path}; "
                             f"--input takes a .txt file or a folder of them")
        return files
    if not os.path.isfile(path):
        raise SystemExit(f"error: no file or folder {path}; check the path given to --input")
    return [path]


if tokenizer not in ('char', 'gpt2', 'bpe'):
    raise SystemExit(f"error: unknown tokenizer {tokenizer!r}: use --tokenizer=char, gpt2 or bpe")
if not input:
    raise SystemExit("error: say which text to prepare: "
                     "--input=path/to/file.txt (or a folder of .txt files)")
files = [f for path in input for f in text_files(path)]
documents = [read_text(f) for f in files]
num_chars = sum(len(d) for d in documents)
if num_chars == 0:
    raise SystemExit(f"error: {' and '.join(input)} {'is' if len(input) == 1 else 'are'} "
                     "empty; give --input a file or folder with text in it")
print(f"read {len(files):,} file(s), {num_chars:,} characters")

LINE_START = re.compile(r'\n(?=\S)')  # a newline, then text


def pieces(text, size=1 << 20):
    """text in pieces of ~1 MB, each cut after a newline that starts a line of text (a cut
    inside a run of whitespace would tokenize it differently): the Rust library works on
    several at once, over every core, progress shows piece by piece, and nothing holds the
    whole text as a list of Python strings."""
    start = 0
    while start < len(text):
        cut = LINE_START.search(text, start + size)
        end = cut.end() if cut else len(text)
        yield text[start:end]
        start = end


def every_piece(show):
    """(piece, last) for each piece of each document, last marking a document's end; with
    show, as progress (a bar on a terminal)."""
    def walk():
        for document in documents:
            previous = ''
            for i, piece in enumerate(pieces(document)):
                if i:
                    yield previous, False
                previous = piece
            yield previous, True
    if not show:
        return walk()
    total = sum(math.ceil(len(d) / (1 << 20)) or 1 for d in documents)
    return progress(walk(), f"tokenizing {total:,} piece(s) of up to ~1 MB", total)


outputs = {}  # besides train.bin and val.bin: meta.pkl or tokenizer.json
if tokenizer == 'char':
    text = '\n\n'.join(documents)
    chars = sorted(set(text))  # the vocabulary: every character that occurs, in sorted order
    if len(chars) > 65536:
        raise SystemExit(f"error: the text has {len(chars):,} distinct characters, "
                         f"more than the 65,536 ids a uint16 .bin can hold; use --tokenizer=gpt2")
    stoi = {ch: i for i, ch in enumerate(chars)}
    ids = np.array([stoi[c] for c in text], dtype=np.uint16)
    meta = {'vocab_size': len(chars), 'itos': {i: ch for i, ch in enumerate(chars)}, 'stoi': stoi}
    outputs['meta.pkl'] = pickle.dumps(meta)  # plain dicts: data.load_meta reads it safely
    print(f"vocab size: {len(chars):,}")
elif tokenizer == 'bpe':
    def tokenize_bpe(size, show=False):
        """(a BPE of size tokens trained on the documents, their ids, <|endoftext|> after each)"""
        if show:
            print(f"training a BPE of {size:,} tokens on {num_chars:,} characters ...", flush=True)
        bpe = train_bpe((piece for document in documents for piece in pieces(document)), size)
        eot = np.array([bpe.token_to_id(EOT)], dtype=np.uint16)
        bpe.encode_special_tokens = True  # text is text: a "<|endoftext|>" in it is not the EOT
        ids, parts = [], every_piece(show)
        while batch := list(itertools.islice(parts, 4)):  # 4 pieces at once, in parallel
            encoded = bpe.encode_batch([piece for piece, _ in batch])
            for (_, last), e in zip(batch, encoded):
                ids.append(np.array(e.ids, dtype=np.uint16))
                if last:
                    ids.append(eot)  # after every document
        return bpe, np.concatenate(ids)

    t0 = time.time()
    bpe, ids = tokenize_bpe(vocab_size, show=True)
    print(f"trained a BPE of {bpe.get_vocab_size():,} tokens and tokenized the text in "
          f"{time.time() - t0:.1f} s: {num_chars / len(ids):.2f} characters per token")
    if bpe.get_vocab_size() < vocab_size:
        print(f"note: fewer than --vocab_size={vocab_size} asked: no pair of tokens in this text "
              f"was left to merge (a small text makes a small BPE, which is fine)")
    outputs['tokenizer.json'] = bpe.to_str().encode('utf-8')
else:
    enc = gpt2_encoding()
    eot = np.array([enc.eot_token], dtype=np.uint16)  # 50256, after every document
    ids = []
    for piece, last in every_piece(show=True):
        # ordinary: a "<|endoftext|>" in the text is just text; GPT-2's ids all fit in uint16
        ids.append(np.array(enc.encode_ordinary(piece), dtype=np.uint16))
        if last:
            ids.append(eot)
    ids = np.concatenate(ids)

split = int(len(ids) * (1 - val_fraction))
train_ids, val_ids = ids[:split], ids[split:]
smaller_bpe = ''
if tokenizer == 'bpe' and min(len(train_ids), len(val_ids)) < min_split_tokens:
    # a BPE with fewer merges makes more, shorter tokens of the same text: find one that is enough
    # (a short text trains in moments)
    size = min(vocab_size, bpe.get_vocab_size())
    while size > 257:
        size = max(257, size // 2)
        n = len(tokenize_bpe(size)[1])
        if min(int(n * (1 - val_fraction)), n - int(n * (1 - val_fraction))) >= min_split_tokens:
            smaller_bpe = f"--vocab_size={size} (now {vocab_size})"
            break
check_splits(train_ids, val_ids, min_split_tokens, val_fraction, smaller_bpe)

name = name or os.path.splitext(os.path.basename(os.path.normpath(input[0])))[0]
out_dir = dataset_dir(name)
outputs = {'train.bin': train_ids.tobytes(), 'val.bin': val_ids.tobytes(), **outputs}
write_files(out_dir, outputs)  # (and removes a meta.pkl or tokenizer.json of an earlier tokenizer)
print(f"wrote {', '.join(outputs)} to {out_dir}")
# a small model, sized for a CPU; its block_size of 64 must be under the val split's length
run = os.path.basename(os.path.normpath(name))
block = '' if len(val_ids) > 64 else f" --block_size={2 ** int(np.log2(len(val_ids) - 1))}"
print("train a small model on it (a few minutes on a CPU): python train.py "
      f"config/train_shakespeare_char_cpu.py --dataset={shlex.quote(name)} "
      f"--out_dir={shlex.quote('out-' + run)}{block}")

# python data/text/prepare.py --input=data/shakespeare_char/input.txt --name=mydata --tokenizer=char
# read 1 file(s), 1,115,394 characters
# vocab size: 65
# train has 1,003,854 tokens
# val has 111,540 tokens
# wrote train.bin, val.bin, meta.pkl to .../data/mydata
# train a small model on it (a few minutes on a CPU): python train.py
#   config/train_shakespeare_char_cpu.py --dataset=mydata --out_dir=out-mydata
