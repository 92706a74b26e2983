"""
Conversations as a dataset for finetuning a chat model: rows of `messages` (an optional system
message, then user and assistant turns alternating) from local .jsonl or .parquet files, a folder
of them, or a Hugging Face hub dataset. Each conversation is rendered with one template,

    <|im_start|>system\\n{content}<|im_end|>\\n<|im_start|>user\\n{content}<|im_end|>\\n
    <|im_start|>assistant\\n{content}<|im_end|>\\n ...

where the two markers are special tokens that no text encodes to (message text is encoded as
ordinary text). Writes data/<name>/ (a path when the name has a slash):

    train.bin, val.bin              the conversations' uint16 tokens, one after another
    train_mask.bin, val_mask.bin    one byte per token: 1 where the token is a target (each
                                    assistant turn's content and its <|im_end|>), 0 for context
    train_starts.bin, ...           the token offset of each conversation (int64)
    chat.json                       the template's markers and their ids
    tokenizer.json                  with --tokenizer=bpe: the BPE trained here, markers included

Whole conversations go to train or val. One too long for max_tokens is cut after its last whole
assistant turn that fits, or dropped when not even the first answer fits. A tiny CPU example:

    python data/chat/prepare.py --source=my_chats.jsonl --name=mychat --tokenizer=bpe
    python train.py config/finetune_chat_cpu.py --dataset=mychat --out_dir=out-mychat
"""

import json
import os
import shlex
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))

# -----------------------------------------------------------------------------
source = ''  # a .jsonl/.parquet file, a folder of them, or a hub dataset id
split = 'train'  # the hub dataset's split to read
name = ''  # writes data/<name>/; a path if it has a slash
tokenizer = 'gpt2'  # gpt2 (GPT-2's BPE, to finetune GPT-2) or bpe (trained here)
vocab_size = 8192  # tokenizer=bpe: tokens of the trained BPE, markers included
max_tokens = 1024  # longest conversation kept whole (a model's block_size)
val_fraction = 0.05  # share of the conversations held out for validation
seed = 1337  # for the choice of validation conversations
# -----------------------------------------------------------------------------
import data  # noqa: E402
from configurator import configure  # noqa: E402
from errors import InputError  # noqa: E402

configure(globals())

LOCAL = ('.jsonl', '.parquet')


def read_rows(path):
    """(where, row) of every row of a local .jsonl or .parquet file: where names the file and
    line (or row) for messages."""
    if path.endswith('.jsonl'):
        with open(path, encoding='utf-8') as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield f"{path}, line {number}", json.loads(line)
                except json.JSONDecodeError as e:
                    raise InputError(f"{path}, line {number} is not JSON ({e.msg}); each line "
                                     "must be one object with 'messages'")
    else:
        import pyarrow.parquet as pq  # (comes with datasets)
        try:
            table = pq.read_table(path)
        except Exception as e:
            raise InputError(f"cannot read {path} as parquet ({type(e).__name__}); give a "
                             ".parquet or .jsonl file")
        for number, row in enumerate(table.to_pylist(), 1):
            yield f"{path}, row {number}", row


def conversations(source):
    """Every conversation of the source, checked: [(where, messages), ...]."""
    if not source:
        raise InputError("say which conversations to prepare: --source=chats.jsonl (or .parquet, "
                         "a folder of them, or a hub dataset id such as HuggingFaceH4/no_robots)")
    source = os.path.expanduser(source)
    if os.path.isdir(source):
        files = sorted(os.path.join(folder, f) for folder, _, names in os.walk(source)
                       for f in names if f.endswith(LOCAL))
        if not files:
            raise InputError(f"no .jsonl or .parquet files in the folder {source}")
        rows = (row for path in files for row in read_rows(path))
    elif os.path.isfile(source):
        if not source.endswith(LOCAL):
            raise InputError(f"cannot read {source}: --source takes a .jsonl or .parquet file, a "
                             "folder of them, or a hub dataset id")
        rows = read_rows(source)
    elif source.startswith(('/', '.', '~')) or source.endswith(LOCAL):
        raise InputError(f"no file or folder {source}; check the path given to --source")
    else:
        # slow to import, and only a hub dataset needs it
        from datasets import load_dataset
        print(f"loading {source} ({split}) from the Hugging Face hub")
        try:
            rows = ((f"{source}, row {i + 1}", row)
                    for i, row in enumerate(load_dataset(source, split=split)))
        except Exception as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise InputError(f"cannot load {source!r} from the Hugging Face hub ({reason}); check "
                             "the name, the network and HF_TOKEN, or give local files")
    found = [(where, data.check_conversation(row, where))
             for where, row in data.progress(rows, f"reading {source}", unit=' rows')]
    if not found:
        raise InputError(f"{source} holds no conversations; give rows with 'messages'")
    return found


if tokenizer not in ('gpt2', 'bpe'):
    raise InputError(f"unknown tokenizer {tokenizer!r}: use --tokenizer=gpt2 (GPT-2's BPE) or bpe "
                     "(a character-level vocabulary cannot hold the chat markers)")
if not 0 < val_fraction < 1:
    raise InputError(f"--val_fraction={val_fraction} must lie between 0 and 1 (e.g. 0.05)")
found = conversations(source)
print(f"read {len(found):,} conversations")

outputs = {}
if tokenizer == 'gpt2':
    chat = data.ChatTokenizer.gpt2(data.gpt2_encoding())
else:
    # the BPE learns from every message's text; the markers are added as special tokens
    texts = (m['content'] for _, messages in found for m in messages)
    chat = data.ChatTokenizer.trained(data.train_bpe(texts, vocab_size, chat_markers=True))
    outputs['tokenizer.json'] = chat.base.tok.to_str().encode('utf-8')
    print(f"trained a BPE of {chat.vocab_size:,} tokens")

# Render each conversation; cut one too long after its last whole assistant turn that fits.
rendered, cut, dropped = [], 0, 0
for where, messages in data.progress(found, f"rendering {len(found):,} conversations",
                                     len(found)):
    ids, mask = chat.render(messages)
    if len(ids) > max_tokens:
        ends = [i + 1 for i, m in enumerate(messages) if m['role'] == 'assistant']
        fits = [end for end in ends if len(chat.render(messages[:end])[0]) <= max_tokens]
        if not fits:
            dropped += 1
            continue
        ids, mask = chat.render(messages[:fits[-1]])
        cut += 1
    rendered.append((ids, mask))
print(f"kept {len(rendered) - cut:,} conversations whole, cut {cut:,} after their last answer "
      f"that fits in max_tokens={max_tokens}, dropped {dropped:,} whose first answer does not fit")
if len(rendered) < 2:
    raise InputError(f"only {len(rendered)} conversation(s) left: train and val need one each; "
                     "give more conversations, or a larger --max_tokens")

# Whole conversations to val: a seeded choice, at least one, never all.
order = np.random.default_rng(seed).permutation(len(rendered))
n_val = min(max(1, round(val_fraction * len(rendered))), len(rendered) - 1)
parts = {'val': sorted(order[:n_val]), 'train': sorted(order[n_val:])}
for part, indices in parts.items():
    ids = [rendered[i][0] for i in indices]
    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    tokens = np.concatenate([np.array(x, dtype=np.uint16) for x in ids])
    mask = np.concatenate([np.array(rendered[i][1], dtype=np.uint8) for i in indices])
    outputs[f'{part}.bin'] = tokens.tobytes()
    outputs[f'{part}_mask.bin'] = mask.tobytes()
    outputs[f'{part}_starts.bin'] = starts.tobytes()
    print(f"{part}: {len(indices):,} conversations, {len(tokens):,} tokens, "
          f"{int(mask.sum()):,} of them targets")
outputs['chat.json'] = json.dumps(chat.spec(), indent=2).encode('utf-8')

name = name or os.path.splitext(os.path.basename(os.path.normpath(source)))[0]
out_dir = data.dataset_dir(name)
data.write_files(out_dir, outputs)
print(f"wrote {', '.join(outputs)} to {out_dir}")
run = shlex.quote('out-' + os.path.basename(os.path.normpath(name)))
if tokenizer == 'gpt2':
    print("finetune GPT-2 (124M) on it, on a GPU: python train.py config/finetune_chat_gpt2.py "
          f"--dataset={shlex.quote(name)} --out_dir={run}")
else:
    print("train a small chat model on it (minutes on a CPU): python train.py "
          f"config/finetune_chat_cpu.py --dataset={shlex.quote(name)} --out_dir={run}")
