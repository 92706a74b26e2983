"""
HellaSwag's validation set (10,042 examples) in GPT-2 tokens, for train.py --eval_hellaswag=True.
Downloads hellaswag_val.jsonl (from the rowanz/hellaswag repository) next to this file if
it is not there yet, or reads a local copy given with --source, checks every row, tokenizes each
context as it is and each ending as " " + ending with tiktoken's GPT-2 BPE, and writes next to
this file:

    val.npz   tokens (uint16, every context and ending one after the other), starts (int64, where
              each of the 5 runs of an example begins: context, then the 4 endings), labels (uint8)

Run it once (a few seconds on a CPU), then evaluate:

    python data/hellaswag/prepare.py
    python train.py config/eval_gpt2.py

Without internet, put hellaswag_val.jsonl at data/hellaswag/hellaswag_val.jsonl by hand first, or
pass --source=path/to/hellaswag_val.jsonl. Every setting below can be overridden with --key=value.
"""

import io
import json
import os
import sys

import numpy as np

# for configurator.py
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))

# -----------------------------------------------------------------------------
source = ''  # a HellaSwag .jsonl; '' = hellaswag_val.jsonl here, fetched from data_url if missing
data_url = 'https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl'
out_dir = os.path.dirname(os.path.abspath(__file__))  # where val.npz goes
# -----------------------------------------------------------------------------
from configurator import configure  # noqa: E402
from data import download, gpt2_encoding, read_text, write_files  # noqa: E402

configure(globals())

if not source:
    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'hellaswag_val.jsonl')
    if not os.path.exists(source):
        download(data_url, source)
elif not os.path.exists(source):
    raise SystemExit(f"error: no file {source}; "
                     "give --source the path of HellaSwag's hellaswag_val.jsonl")


def check_row(row):
    """What is wrong with one parsed row, or None. HellaSwag's fields: ctx, endings (4), label."""
    if not isinstance(row, dict):
        return "not a JSON object"
    for key in ('ctx', 'endings', 'label'):
        if key not in row:
            return f"no '{key}' field"
    if not isinstance(row['ctx'], str) or not row['ctx']:
        return "'ctx' is not a non-empty string"
    endings = row['endings']
    four_strings = (isinstance(endings, list) and len(endings) == 4
                    and all(isinstance(e, str) for e in endings))
    if not four_strings:
        return "'endings' is not a list of 4 strings"
    if type(row['label']) is not int or not 0 <= row['label'] <= 3:
        return f"'label' is {row['label']!r}, not 0, 1, 2 or 3"
    return None


# every row is checked before anything is written: a bad row stops the script with the old file
# intact
rows = []
for number, line in enumerate(read_text(source).splitlines(), start=1):
    if not line.strip():
        continue
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise SystemExit(f"error: {source} line {number} is not JSON ({e.msg}); "
                         f"is this HellaSwag's .jsonl? Fetch it again from {data_url}")
    problem = check_row(row)
    if problem:
        raise SystemExit(f"error: {source} line {number}: {problem}; "
                         f"HellaSwag rows have 'ctx', 'endings' (4 strings) and 'label' (0-3). "
                         f"Fetch the file again from {data_url}")
    rows.append(row)
if not rows:
    raise SystemExit(f"error: {source} holds no examples; "
                     "give --source HellaSwag's hellaswag_val.jsonl")

enc = gpt2_encoding()
runs = []  # 5 token runs per example: the context, then each ending
for row in rows:
    runs.append(enc.encode_ordinary(row['ctx']))
    # the space joins it to the context
    runs.extend(enc.encode_ordinary(" " + ending) for ending in row['endings'])
tokens = np.array([t for run in runs for t in run], dtype=np.uint16)  # GPT-2's ids are all < 50,257
starts = np.concatenate([[0], np.cumsum([len(run) for run in runs])]).astype(np.int64)
labels = np.array([row['label'] for row in rows], dtype=np.uint8)
longest = max(len(runs[i]) + len(runs[i + j]) for i in range(0, len(runs), 5) for j in range(1, 5))
print(f"{len(rows):,} examples, {len(tokens):,} tokens; "
      f"the longest context + ending has {longest} tokens")

buffer = io.BytesIO()
np.savez(buffer, tokens=tokens, starts=starts, labels=labels)
write_files(out_dir, {'val.npz': buffer.getvalue()})
print(f"wrote val.npz to {out_dir}")

# python data/hellaswag/prepare.py
# downloading https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl
# 10,042 examples, ... tokens; the longest context + ending has ... tokens
# wrote val.npz to .../data/hellaswag
# (the token counts of the real file are not filled in: it has not been run on it yet)
