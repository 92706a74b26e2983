"""
Reading prepared datasets. Each data/<name>/prepare.py writes train.bin and val.bin (flat uint16
token streams, np.memmap-readable) and, for character-level data, meta.pkl (vocab_size, itos,
stoi). train.py, sample.py, bench.py and the tests read them through the functions here:

    python -c "import data; s = data.open_dataset('shakespeare_char', block_size=64); \
print(len(s['train']))"
"""

import contextlib
import json
import math
import os
import pickle
import sys

import numpy as np
import torch

from checkpoint import atomic_write
from errors import InputError

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
        raise InputError(f"cannot load {path} ({e}); "
                         "run the dataset's prepare.py again to rewrite it")
    if not isinstance(meta, dict) or not isinstance(meta.get('vocab_size'), int):
        raise InputError(f"{path} has no integer vocab_size; run the dataset's prepare.py again")
    return meta


class Tokens:
    """One split of a dataset. Reads each sample with a plain file read instead of a memmap: a
    memmap's pages pile up in the process's memory over a long run (nanoGPT#287), while the
    file is opened once and the operating system's cache still makes reads cheap. Nothing reads
    the whole file: start-up costs the same for a small text as for all of OpenWebText."""

    def __init__(self, path):
        self.path = path
        self.file = open(path, 'rb')
        self.num_tokens = os.path.getsize(path) // 2
        self.vocab_size = None  # when set, every batch is checked to hold only smaller token ids

    def __len__(self):
        return self.num_tokens

    def read(self, start, length):
        self.file.seek(2 * start)
        return np.frombuffer(self.file.read(2 * length), dtype=np.uint16)

    def batch(self, batch_size, block_size, generator, device='cpu'):
        """batch_size random windows: inputs x (B, T) and targets y = x shifted by one (B, T)."""
        ix = torch.randint(len(self) - block_size, (batch_size,), generator=generator)
        rows = np.stack([self.read(int(i), block_size + 1) for i in ix])  # (B, T + 1) uint16
        if self.vocab_size is not None and rows.max() >= self.vocab_size:
            # on the CPU, before the ids reach an embedding (on a GPU: a device-side assert)
            row, col = np.unravel_index(rows.argmax(), rows.shape)
            raise InputError(f"{self.path} holds token id {rows[row, col]} "
                             f"(token {int(ix[row]) + col:,}), "
                             f"but the model's vocab_size is {self.vocab_size}: "
                             "prepare the data again with the model's tokenizer, "
                             "or train a new model on it (--init_from=scratch)")
        rows = torch.from_numpy(rows.astype(np.int64))
        x, y = rows[:, :-1].contiguous(), rows[:, 1:].contiguous()  # (B, T) each
        # pinned memory lets the copy overlap compute
        if torch.device(device).type == 'cuda':
            return (x.pin_memory().to(device, non_blocking=True),
                    y.pin_memory().to(device, non_blocking=True))
        return x.to(device), y.to(device)


def open_dataset(name, block_size):
    """{'train': Tokens, 'val': Tokens} of data/<name>, checked to be long enough for block_size."""
    path = dataset_dir(name)
    if not os.path.isdir(path):
        present = sorted(d for d in os.listdir(DATA_DIR)
                         if os.path.isdir(os.path.join(DATA_DIR, d)) and not d.startswith('_'))
        raise InputError(f"no dataset {name!r} (no folder {path}); "
                         f"datasets in data/: {', '.join(present)}")
    splits = {}
    chat = os.path.isfile(os.path.join(path, 'chat.json'))
    for split in ('train', 'val'):
        file = os.path.join(path, f'{split}.bin')
        if not os.path.isfile(file):
            raise InputError(f"{file} is missing: "
                             f"run python {os.path.join(path, 'prepare.py')} first")
        # a chat dataset: windows start at conversations, its targets are the answers alone
        splits[split] = ChatTokens(file) if chat else Tokens(file)
        if not chat and len(splits[split]) <= block_size:
            n = len(splits[split])
            fits = f"--block_size={2 ** int(math.log2(n - 1))}, " if n > 2 else ''
            raise InputError(f"{file} holds {n} tokens, not more than block_size={block_size}: "
                             f"use a smaller block ({fits}under {n}), or prepare more text "
                             f"(or, for val.bin, a larger --val_fraction)")
    return splits


class ChatTokens(Tokens):
    """One split of a chat dataset (data/chat/prepare.py): its tokens, which of them are targets
    (SPLIT_mask.bin) and where each conversation starts (SPLIT_starts.bin)."""

    def __init__(self, path):
        super().__init__(path)
        base = path[:-len('.bin')]
        try:
            self.mask = np.fromfile(base + '_mask.bin', dtype=np.uint8)
            self.starts = np.fromfile(base + '_starts.bin', dtype=np.int64)
        except OSError as e:
            raise InputError(f"cannot read {e.filename} ({e.strerror}): run data/chat/prepare.py "
                             "again")
        if len(self.mask) != len(self) or not len(self.starts) or self.starts[0] != 0:
            raise InputError(f"{base}_mask.bin or _starts.bin does not match {path}: run "
                             "data/chat/prepare.py again")
        self.ends = np.append(self.starts[1:], len(self))

    def batch(self, batch_size, block_size, generator, device='cpu'):
        """batch_size windows of block_size tokens, each starting at a random conversation and
        filled with the ones after it: inputs x (B, T) and targets y (B, T), -1 where a token is
        not a target (context, a conversation cut at the window's end, padding past the file)."""
        ix = torch.randint(len(self.starts), (batch_size,), generator=generator)
        xs, ys = [], []
        for i in ix.tolist():
            start = int(self.starts[i])
            stop = min(start + block_size + 1, len(self))
            rows = np.full(block_size + 1, -1, dtype=np.int64)
            rows[:stop - start] = self.read(start, stop - start)
            target = np.zeros(block_size + 1, dtype=bool)
            target[:stop - start] = self.mask[start:stop].astype(bool)
            # the first conversation's answers count even if the window cuts it; a later one's
            # only if it ends inside the window, so that no answer is learnt without its end
            last = int(np.searchsorted(self.starts, stop)) - 1
            if last > i and self.ends[last] > start + block_size + 1:
                target[self.starts[last] - start:] = False
            x, y = rows[:-1].copy(), np.where(target[1:], rows[1:], -1)
            # (padding past the end of the file reads as token 0 and is never a target)
            x[x < 0] = 0
            xs.append(x)
            ys.append(y)
        x, y = np.stack(xs), np.stack(ys)
        if self.vocab_size is not None and x.max() >= self.vocab_size:
            raise InputError(f"{self.path} holds token id {x.max()}, but the model's vocab_size "
                             f"is {self.vocab_size}: prepare the data again with the model's "
                             "tokenizer")
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        if torch.device(device).type == 'cuda':
            x, y = x.pin_memory(), y.pin_memory()
            return x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        return x.to(device), y.to(device)

    def read_targets(self, start, length):
        """The target tokens among length tokens from start (for bits per byte)."""
        tokens = self.read(start, length)
        return tokens[self.mask[start:start + length].astype(bool)]


def bytes_per_token(tokens, tokenizer, sample_runs=256, run_length=4096):
    """UTF-8 bytes per token of one split, for bits per byte (loss / ln 2 / bytes per token), or
    None when the tokens' text cannot be known. Each token counts its own bytes of text
    (tokenizer.token_bytes(): special tokens such as <|endoftext|> count 0). Start-up never reads a
    whole token file: a split of at most sample_runs x run_length tokens is read whole (exact), a
    longer one as sample_runs evenly spaced runs of run_length tokens (an estimate; exact for
    character vocabularies whose characters all have the same number of bytes, e.g. ASCII)."""
    try:
        token_bytes = tokenizer.token_bytes()
    except InputError:
        # GPT-2's BPE offline, without its cached files:
        # train without val_bpb rather than not at all
        return None
    if token_bytes is None:
        return None
    # a chat split counts the answers' tokens alone, the tokens val_loss is taken over
    read = getattr(tokens, 'read_targets', tokens.read)
    n = len(tokens)
    if n <= sample_runs * run_length:
        sample = read(0, n)
    else:
        starts = np.linspace(0, n - run_length, sample_runs).astype(np.int64)
        sample = np.concatenate([read(int(s), run_length) for s in starts])
    if sample.max() >= len(token_bytes):
        return None  # ids beyond the vocabulary: the batch check stops training on them
    return float(token_bytes[sample].sum()) / len(sample)


# -----------------------------------------------------------------------------
# Helpers for the data/<name>/prepare.py scripts.

def progress(iterable, what, total=None, unit='it'):
    """iterable, shown as it goes: on a terminal a progress bar (tqdm, on stderr), elsewhere (a log
    file, a pipe) one plain line saying what is under way, so that a log holds no carriage
    returns."""
    if sys.stderr.isatty():
        from tqdm import tqdm
        return tqdm(iterable, desc=what, total=total, unit=unit, leave=False)
    print(f"{what} ...", flush=True)
    return iterable


def download_text(url, path):
    """The text of path, fetched from url first if the file is missing; one clear line if it is
    empty."""
    if not os.path.exists(path):
        download(url, path)
    text = read_text(path)
    if not text:
        raise InputError(f"{path} is empty; delete it so that it is downloaded again, "
                         "or put the text there")
    return text


def download(url, path):
    """Fetch url to path, through a temporary file so that a broken download leaves nothing
    behind."""
    import urllib.request
    with atomic_write(path) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=30) as response, open(tmp, 'wb') as f:
                size = int(response.headers.get('Content-Length') or 0)
                chunks = iter(lambda: response.read(1 << 20), b'')
                for chunk in progress(chunks, f"downloading {url}", size / 2**20 or None, 'MB'):
                    f.write(chunk)
        except Exception as e:  # no network, a bad URL, a server error, a broken connection
            raise InputError(f"could not download {url} ({getattr(e, 'reason', None) or e}); "
                             f"fetch the file by hand and put it at {os.path.abspath(path)}")


def read_text(path):
    """The file's text; one clear line if it cannot be read or is not UTF-8."""
    try:
        with open(path, 'rb') as f:
            raw = f.read()
    except OSError as e:
        raise InputError(f"cannot read {path} ({e.strerror}); give the path of a text file")
    try:
        return raw.decode('utf-8')
    except UnicodeDecodeError as e:
        raise InputError(f"{path} is not UTF-8 text "
                         f"(byte 0x{raw[e.start]:02x} at offset {e.start}); "
                         f"convert it first, e.g. iconv -f latin1 -t utf-8")


def gpt2_encoding():
    """tiktoken's GPT-2 BPE, or one clear line if it cannot be had."""
    import tiktoken
    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as e:  # its two files are downloaded on first use
        raise InputError(f"cannot load tiktoken's GPT-2 BPE ({type(e).__name__}); "
                         f"it is downloaded once, so connect to the internet, "
                         f"or set TIKTOKEN_CACHE_DIR to a folder that already holds it")


def check_splits(train_ids, val_ids, min_split_tokens, val_fraction, more_tokens=''):
    """Print the token counts; stop if either split is too short to train or evaluate on, naming
    each way out with numbers that would do. more_tokens: one more way, where the tokenizer has
    one (a smaller BPE gives more tokens from the same text)."""
    print(f"train has {len(train_ids):,} tokens")
    print(f"val has {len(val_ids):,} tokens")
    total, m = len(train_ids) + len(val_ids), min_split_tokens
    for name, ids in (('train', train_ids), ('val', val_ids)):
        if len(ids) >= m:
            continue
        ways = [f"a longer text (at least {math.ceil(m / min(val_fraction, 1 - val_fraction)):,} "
                f"tokens in all, now {total:,})"]
        if total >= 2 * m + 2:
            # the smallest share of val that gives both splits m tokens, in hundredths
            share = math.ceil(100 * (m + 1) / total) / 100
            if total - int(total * (1 - share)) >= m and int(total * (1 - share)) >= m:
                ways.append(f"--val_fraction={share} (now {val_fraction})")
        if more_tokens:
            ways.append(more_tokens)
        if len(ids) > 16:
            ways.append(f"--min_split_tokens={len(ids)} (then train with a --block_size under "
                        f"the val split's length)")
        raise InputError(f"the {name} split would hold only {len(ids):,} tokens "
                         f"(min_split_tokens={m}): use " + ", or ".join(ways))


# A dataset's own vocabulary, beside its .bin files: whichever is there is what the tokens mean.
VOCABULARY_FILES = ('meta.pkl', 'tokenizer.json', 'chat.json', 'train_mask.bin', 'val_mask.bin',
                    'train_starts.bin', 'val_starts.bin')


def remove_stale_vocabulary(out_dir, written):
    """Remove a meta.pkl, tokenizer.json or chat files that an earlier preparation with another
    tokenizer left in out_dir (not among the files written now): train.py and sample.py would
    read the new tokens with them."""
    for name in VOCABULARY_FILES:
        if name not in written and os.path.exists(os.path.join(out_dir, name)):
            os.remove(os.path.join(out_dir, name))


def write_files(out_dir, outputs):
    """Write {filename: bytes} into out_dir, the whole dataset: a vocabulary file not among them
    goes (remove_stale_vocabulary). Each file goes to a temporary name first and all are
    renamed only once every one is complete, so a run that stops part-way (an error, Ctrl-C, a
    full disk) leaves the files of the previous run as they were."""
    with contextlib.ExitStack() as files:
        try:
            os.makedirs(out_dir, exist_ok=True)
        except OSError as e:
            raise InputError(f"cannot write {e.filename or out_dir} ({e.strerror}); "
                             "check the free disk space, or write elsewhere")
        for filename, content in outputs.items():
            tmp = files.enter_context(atomic_write(os.path.join(out_dir, filename)))
            with open(tmp, 'wb') as f:
                f.write(content)
    remove_stale_vocabulary(out_dir, outputs)


# tiktoken's GPT-2 BPE files (tiktoken_ext/openai_public.py): the URL it caches each under, and
# its sha256.
GPT2_BPE_FILES = {
    'vocab.bpe': ('https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe',
                  '1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5'),
    'encoder.json': ('https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json',
                     '196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783'),
}


# -----------------------------------------------------------------------------
# Tokenizers: a dataset's text to token ids and back. Each kind has encode(text) -> ids,
# decode(ids) -> text, vocab_size (the ids it makes), token_bytes() (each id's bytes of text, for
# bits per byte) and hf() (the same tokenizer for transformers, shipped with --export_hf).

EOT = '<|endoftext|>'  # the special token between documents (GPT-2's id 50256)

def load_tokenizer(name=None, model_vocab_size=None):
    """The tokenizer that data/<name> was prepared with: its tokenizer.json (a BPE trained on the
    text, data/text/prepare.py --tokenizer=bpe), else its meta.pkl (characters), else GPT-2's BPE
    (also when name is None). With model_vocab_size, checked to fit the model (check_vocab)."""
    path = dataset_dir(name) if name else None
    meta = load_meta(name) if path else None
    if path and os.path.isfile(os.path.join(path, 'chat.json')):
        tokenizer = ChatTokenizer.load(path)
    elif path and os.path.isfile(os.path.join(path, 'tokenizer.json')):
        tokenizer = TrainedBPE(os.path.join(path, 'tokenizer.json'))
    else:
        tokenizer = Characters(meta, name) if meta is not None else GPT2BPE()
    if model_vocab_size is not None:
        check_vocab(tokenizer, name, model_vocab_size)
    return tokenizer


def check_vocab(tokenizer, name, model_vocab_size, fix=None):
    """Refuse a tokenizer whose ids mean nothing to the model: a dataset's own vocabulary
    (characters, a trained BPE) must be exactly the model's size, GPT-2's BPE needs a model of at
    least its 50257 tokens. fix: what the user should do instead (the default suits sampling)."""
    fix = fix or ("use the tokenizer the model was trained with: "
                  "its dataset's meta.pkl or tokenizer.json "
                  "as they were then (or a tokenizer.json in its directory)")
    if tokenizer.own and tokenizer.vocab_size != model_vocab_size:
        raise InputError(f"{tokenizer.describe(name)} has "
                         f"{tokenizer.vocab_size:,} {tokenizer.unit} "
                         f"but the model has {model_vocab_size:,} tokens: "
                         f"not the vocabulary it was trained on; {fix}")
    if tokenizer.vocab_size > model_vocab_size:
        raise InputError(f"the model has a vocabulary of {model_vocab_size} tokens, too few for "
                         f"{tokenizer.describe(name)}: it was not trained on those tokens; {fix}")


def tokenizer_state(tokenizer):
    """What identifies a tokenizer, for a checkpoint (plain types, small): a character
    vocabulary's meta, a trained BPE's tokenizer.json text, or just 'gpt2'."""
    if isinstance(tokenizer, Characters):
        meta = dict(vocab_size=tokenizer.vocab_size, stoi=tokenizer.stoi, itos=tokenizer.itos)
        return dict(kind='char', meta=meta)
    if isinstance(tokenizer, TrainedBPE):
        return dict(kind='bpe', json=tokenizer.tok.to_str())
    if isinstance(tokenizer, ChatTokenizer):
        return dict(kind='chat', base=tokenizer_state(tokenizer.base), im_start=tokenizer.im_start,
                    im_end=tokenizer.im_end)
    return dict(kind='gpt2')


def same_tokenizer(a, b):
    """Whether two tokenizer_state()s encode and decode alike: the same characters, or the same
    BPE vocabulary, merges and special tokens however a version of tokenizers spelt its JSON."""
    def identity(state):
        if state.get('kind') == 'chat':
            return 'chat', identity(state['base']), state['im_start'], state['im_end']
        if state.get('kind') != 'bpe':
            return state
        spec = json.loads(state['json'])
        merges = [tuple(m.split(' ')) if isinstance(m, str) else tuple(m)
                  for m in spec['model']['merges']]
        special = sorted(t['content'] for t in spec.get('added_tokens') or [])
        return 'bpe', spec['model']['vocab'], merges, special
    return identity(a) == identity(b)


def tokenizer_from_state(state, name=None):
    """The tokenizer a checkpoint saved with tokenizer_state; name: where it came from, for
    messages."""
    kind = state.get('kind') if isinstance(state, dict) else None
    if kind == 'char':
        return Characters(state['meta'], name)
    if kind == 'bpe':
        return TrainedBPE(json_text=state['json'])
    if kind == 'gpt2':
        return GPT2BPE()
    if kind == 'chat':
        return ChatTokenizer(tokenizer_from_state(state['base'], name), state['im_start'],
                             state['im_end'])
    raise InputError(f"the checkpoint's tokenizer entry is not one this code knows ({kind!r}); "
                     "load it with the code that saved it")


class Characters:
    """One token per character: meta.pkl's stoi and itos."""

    own, file, unit = True, 'meta.pkl', 'characters'  # a dataset's own vocabulary, in this file

    def __init__(self, meta, dataset):
        self.stoi, self.itos = meta.get('stoi'), meta.get('itos')
        self.vocab_size, self.dataset = meta['vocab_size'], dataset

    # (training needs only vocab_size: without stoi/itos it trains, without val_bpb)
    def check(self):
        if not isinstance(self.stoi, dict) or not isinstance(self.itos, dict):
            raise InputError(f"{self.dataset!r}'s meta.pkl has no stoi/itos "
                             "to encode and decode characters; run its prepare.py again")

    def describe(self, name):
        return f"{name!r}'s meta.pkl" if name else "the checkpoint's character vocabulary"

    def encode(self, text):
        self.check()
        for ch in text:
            if ch not in self.stoi:
                raise InputError(f"the text has the character {ch!r}, "
                                 f"which is not in the model's vocabulary "
                                 f"({len(self.stoi)} characters of {self.dataset!r}): "
                                 f"remove or replace it")
        return [self.stoi[ch] for ch in text]

    def decode(self, ids):
        self.check()
        return ''.join(self.itos.get(i, '') for i in ids)

    def token_bytes(self):
        if not isinstance(self.itos, dict):
            return None
        if not all(isinstance(self.itos.get(i), str) for i in range(self.vocab_size)):
            return None
        return np.array([len(self.itos[i].encode('utf-8')) for i in range(self.vocab_size)])

    def hf(self, model_max_length=None):
        from tokenizers import Tokenizer, decoders, models  # lazy: with transformers
        from transformers import PreTrainedTokenizerFast
        self.check()
        # A BPE with no merges splits text into single characters, each looked up in stoi; like
        # sample.py it has no end-of-text token. A character outside stoi is dropped.
        tok = Tokenizer(models.BPE(vocab=dict(self.stoi), merges=[]))
        tok.decoder = decoders.Fuse()  # ids back to text with nothing between the characters
        return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=model_max_length,
                                       clean_up_tokenization_spaces=False)


class GPT2BPE:
    """tiktoken's GPT-2 BPE, loaded when first used (its two files are downloaded once)."""

    own, file, unit, vocab_size, eot = False, None, 'tokens', 50257, 50256

    def describe(self, name):
        if name:
            return f"the GPT-2 BPE (dataset {name!r} has no meta.pkl or tokenizer.json)"
        return "the GPT-2 BPE"

    @property
    def enc(self):
        if not hasattr(self, '_enc'):
            self._enc = gpt2_encoding()
        return self._enc

    def encode(self, text):
        return self.enc.encode(text, allowed_special={EOT})

    def decode(self, ids):
        # the model pads its vocabulary to 50304
        return self.enc.decode([i for i in ids if i < self.vocab_size])

    def token_bytes(self):
        token_bytes = np.array([len(self.enc.decode_single_token_bytes(i))
                                for i in range(self.vocab_size)])
        token_bytes[self.eot] = 0  # <|endoftext|> separates texts: it has no bytes of text
        return token_bytes

    def hf(self, model_max_length=None):
        # transformers' GPT-2 tokenizer is the same BPE as tiktoken's: vocab.json is tiktoken's
        # encoder.json and merges.txt its vocab.bpe, which tiktoken keeps in its cache
        # (no download).
        from tiktoken.load import read_file_cached
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
        from transformers import PreTrainedTokenizerFast
        try:
            # checked against the sha256
            encoder = read_file_cached(*GPT2_BPE_FILES['encoder.json'])
            merges = read_file_cached(*GPT2_BPE_FILES['vocab.bpe'])
        except Exception as e:
            raise InputError(f"cannot load tiktoken's GPT-2 BPE files ({type(e).__name__}); "
                             f"they are downloaded once, so connect to the internet, "
                             f"or set TIKTOKEN_CACHE_DIR to a folder that already holds them")
        # line 1: '#version: 0.2'
        merges = [tuple(line.split(' ')) for line in merges.decode().splitlines()[1:] if line]
        tok = Tokenizer(models.BPE(vocab=json.loads(encoder), merges=merges))
        # Bytes as printable characters, split by GPT-2's regex, with no space added in front.
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=model_max_length,
                                       bos_token=EOT, eos_token=EOT, unk_token=EOT,
                                       clean_up_tokenization_spaces=False)


class TrainedBPE:
    """A byte-level BPE trained on the dataset's own text (data/text/prepare.py --tokenizer=bpe),
    read from its tokenizer.json with Hugging Face tokenizers (or an exported model's
    tokenizer.json)."""

    own, file, unit = True, 'tokenizer.json', 'tokens'

    def __init__(self, path=None, json_text=None):
        from tokenizers import Tokenizer  # lazy: with transformers
        try:
            if json_text is None:
                self.tok = Tokenizer.from_file(path)
            else:
                self.tok = Tokenizer.from_str(json_text)
        except Exception as e:
            raise InputError(f"cannot read {path or 'the tokenizer'} "
                             f"({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                             "run the dataset's prepare.py again to rewrite it")
        self.path, self.vocab_size = path, self.tok.get_vocab_size()
        self.eot = self.tok.token_to_id(EOT)

    def describe(self, name):
        return f"{name!r}'s tokenizer.json" if name else "the checkpoint's BPE"

    def encode(self, text):
        return self.tok.encode(text).ids

    def decode(self, ids):
        return self.tok.decode(list(ids), skip_special_tokens=False)

    def token_bytes(self):
        if (json.loads(self.tok.to_str()).get('decoder') or {}).get('type') != 'ByteLevel':
            # a tokenizer.json of another kind: its tokens are not spelled one character per byte
            return None
        # a byte-level token is spelled with one printable character per byte (GPT-2's
        # byte-to-unicode map)
        special = {t.content for t in self.tok.get_added_tokens_decoder().values()}
        tokens = [self.tok.id_to_token(i) for i in range(self.vocab_size)]
        return np.array([0 if t in special else len(t) for t in tokens])

    def hf(self, model_max_length=None):
        from tokenizers import Tokenizer
        from transformers import PreTrainedTokenizerFast
        special = dict(bos_token=EOT, eos_token=EOT, unk_token=EOT) if self.eot is not None else {}
        # a copy, as the file says
        tok = Tokenizer.from_str(self.tok.to_str())
        return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=model_max_length,
                                       clean_up_tokenization_spaces=False, **special)


def train_bpe(texts, vocab_size, chat_markers=False):
    """A GPT-2-style byte-level BPE with vocab_size tokens trained on texts (an iterable of
    strings): the 256 bytes, <|endoftext|> (and with chat_markers <|im_start|> and <|im_end|>),
    and the most useful merges. Any text encodes and decodes exactly. Returns a
    tokenizers.Tokenizer (its .save(path) writes tokenizer.json)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    if not 257 <= vocab_size <= 65536:
        raise InputError(f"--vocab_size={vocab_size} must lie between "
                         "257 (the 256 bytes and <|endoftext|>) and 65536 "
                         "(the ids a uint16 .bin can hold); e.g. 8192")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = [EOT, IM_START, IM_END] if chat_markers else [EOT]
    # (the library's own progress bar, on a terminal only)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special,
                                  show_progress=sys.stderr.isatty(),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return tok


# -----------------------------------------------------------------------------
# Chat: conversations rendered with two special tokens around each message, ChatML's markers:
# <|im_start|>role\n{content}<|im_end|>\n. Message text is encoded as ordinary text, so that no
# text, whatever it spells, encodes to a marker.

IM_START, IM_END = '<|im_start|>', '<|im_end|>'
ROLES = ('system', 'user', 'assistant')
# The same rendering as ChatTokenizer.render, for transformers (Jinja): the {% generation %}
# block marks what apply_chat_template(..., return_assistant_tokens_mask=True) calls the
# assistant's tokens, render's targets.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- generation -%}{{- message['content'] + '<|im_end|>' -}}{%- endgeneration -%}"
    "{{- '\\n' -}}"
    "{%- else -%}{{- message['content'] + '<|im_end|>\\n' -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def check_conversation(row, where):
    """The messages of a row {'messages': [{'role': ..., 'content': ...}, ...]}: an optional
    system message, then user and assistant alternating, at least one answer. One line naming
    where (file and line) and what is wrong, otherwise."""
    messages = row.get('messages') if isinstance(row, dict) else None
    if not isinstance(messages, list) or not messages:
        raise InputError(f"{where}: a row needs 'messages', a list of {{'role': ..., 'content': "
                         "...}}")
    for i, m in enumerate(messages):
        role = m.get('role') if isinstance(m, dict) else None
        if role not in ROLES:
            raise InputError(f"{where}: message {i + 1} has role {role!r}; use system, user or "
                             "assistant")
        if not isinstance(m.get('content'), str):
            raise InputError(f"{where}: message {i + 1} ({role}) has content "
                             f"{type(m.get('content')).__name__}, not text")
    turns = messages[1:] if messages[0]['role'] == 'system' else messages
    for i, m in enumerate(turns):
        expected = 'user' if i % 2 == 0 else 'assistant'
        if m['role'] != expected:
            order = ', '.join(t['role'] for t in messages)
            raise InputError(f"{where}: roles out of order ({order}); an optional system message, "
                             "then user and assistant alternating")
    if not any(m['role'] == 'assistant' for m in turns):
        raise InputError(f"{where}: the conversation has no assistant turn: nothing to learn")
    return [{'role': m['role'], 'content': m['content']} for m in messages]


class ChatTokenizer:
    """A BPE (GPT-2's, or one trained on the conversations) with the chat markers: encode and
    decode as the BPE does (ordinary text only; decode leaves the markers out), render a
    conversation into token ids and its targets."""

    unit, file = 'tokens', 'chat.json'

    def __init__(self, base, im_start, im_end):
        self.base, self.im_start, self.im_end = base, im_start, im_end
        self.own, self.eot = base.own, base.eot
        self.trained = isinstance(base, TrainedBPE)
        if self.trained:
            # text is text: a marker's spelling in a message is not the marker
            base.tok.encode_special_tokens = True
        # GPT-2's markers come after its 50257 tokens; a trained BPE holds its own
        self.vocab_size = max(base.vocab_size, im_start + 1, im_end + 1)

    @classmethod
    def gpt2(cls, encoding=None):
        base = GPT2BPE()
        if encoding is not None:
            base._enc = encoding
        return cls(base, base.vocab_size, base.vocab_size + 1)

    @classmethod
    def trained(cls, tok):
        return cls(TrainedBPE(json_text=tok.to_str()), tok.token_to_id(IM_START),
                   tok.token_to_id(IM_END))

    @classmethod
    def load(cls, path):
        """The tokenizer of the chat dataset in the folder path (its chat.json)."""
        try:
            with open(os.path.join(path, 'chat.json')) as f:
                spec = json.load(f)
            kind, im_start, im_end = spec['tokenizer'], spec[IM_START], spec[IM_END]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(f"cannot read {os.path.join(path, 'chat.json')} ({e}); run "
                             "data/chat/prepare.py again")
        if kind == 'bpe':
            return cls(TrainedBPE(os.path.join(path, 'tokenizer.json')), im_start, im_end)
        return cls(GPT2BPE(), im_start, im_end)

    def spec(self):
        """chat.json: what load() reads back."""
        kind = 'bpe' if self.trained else 'gpt2'
        return {'template': 'chatml', 'tokenizer': kind, IM_START: self.im_start,
                IM_END: self.im_end, 'vocab_size': self.vocab_size}

    def describe(self, name):
        return f"{name!r}'s chat.json" if name else "the checkpoint's chat tokenizer"

    def encode(self, text):
        """text as ordinary text: a marker's spelling is not the marker."""
        if self.trained:
            return self.base.tok.encode(text).ids
        return self.base.enc.encode_ordinary(text)

    def decode(self, ids):
        # never a marker, nor a padded row no tokenizer decodes
        kept = [i for i in ids if i not in (self.im_start, self.im_end) and i < self.vocab_size]
        return self.base.decode(kept)

    def token_bytes(self):
        token_bytes = self.base.token_bytes()
        if token_bytes is None:
            return None
        extra = self.vocab_size - len(token_bytes)
        padding = np.zeros(max(extra, 0), dtype=token_bytes.dtype)
        token_bytes = np.concatenate([token_bytes, padding])
        token_bytes[[self.im_start, self.im_end]] = 0
        return token_bytes

    def hf(self, model_max_length=None):
        """The same tokenizer for transformers: the BPE, the markers as special tokens, eos
        <|im_end|> and the chat template (CHAT_TEMPLATE), for apply_chat_template and
        pipeline('text-generation') on a list of messages."""
        from tokenizers import AddedToken
        tokenizer = self.base.hf(model_max_length)
        markers = [AddedToken(IM_START, special=True), AddedToken(IM_END, special=True)]
        tokenizer.add_special_tokens({'additional_special_tokens': markers})
        ids = tokenizer.convert_tokens_to_ids([IM_START, IM_END])
        if ids != [self.im_start, self.im_end]:
            raise InputError(f"the markers got ids {ids} in transformers' tokenizer, not "
                             f"{[self.im_start, self.im_end]}: prepare the dataset again")
        tokenizer.eos_token = IM_END
        tokenizer.chat_template = CHAT_TEMPLATE
        return tokenizer

    def encode_spans(self, text):
        """text's ids as encode gives them, and each token's (start, end) in text, counted in
        the units of self.length (bytes for GPT-2's BPE, characters for a trained one)."""
        if self.trained:
            encoding = self.base.tok.encode(text)
            return encoding.ids, encoding.offsets
        ids = self.base.enc.encode_ordinary(text)
        ends = np.cumsum([len(self.base.enc.decode_single_token_bytes(i)) for i in ids])
        return ids, list(zip([0, *ends[:-1].tolist()], ends.tolist()))

    def length(self, text):
        return len(text) if self.trained else len(text.encode('utf-8'))

    def render(self, messages, add_generation_prompt=False):
        """(ids, targets) of a conversation: each message as <|im_start|>, role\ncontent encoded
        as one piece of text, <|im_end|>, \n; targets 1 on the tokens of an assistant's content
        (a token that reaches into it counts) and its <|im_end|>, else 0. transformers'
        apply_chat_template with the exported template gives the same ids and assistant mask.
        With add_generation_prompt, <|im_start|>assistant\n after it, for the answer to follow."""
        ids, targets = [], []
        newline = self.encode('\n')
        for m in messages:
            header = m['role'] + '\n'
            piece, spans = self.encode_spans(header + m['content'])
            start, end = self.length(header), self.length(header + m['content'])
            answer = m['role'] == 'assistant'
            ids += [self.im_start] + piece + [self.im_end] + newline
            targets += [0] + [int(answer and a < end and b > start) for a, b in spans]
            targets += [int(answer)] + [0] * len(newline)
        if add_generation_prompt:
            piece = self.encode('assistant\n')
            ids += [self.im_start] + piece
            targets += [0] * (1 + len(piece))
        return ids, targets
