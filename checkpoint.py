"""
The files a run writes and reads, each written atomically: out_dir/ckpt.pt (and last.pt, the
.prev copies of an earlier run), out_dir/metrics.jsonl, and the transformers directory that
sample.py --export_hf writes. A checkpoint holds nanoGPT's keys (model, optimizer, model_args,
iter_num, best_val_loss, config) plus what an exact resume needs (rng, scaler, tokenizer).

    python -c "import checkpoint; print(checkpoint.load_checkpoint('out/ckpt.pt')['iter_num'])"
"""

import json
import os
import random
import shutil
import uuid
import warnings
from contextlib import contextmanager

import numpy as np
import torch

from errors import InputError

# -----------------------------------------------------------------------------
# Writing files so that a crash at any moment leaves the old file or the new one, never half of
# one.


def temporary_name(path):
    """A name beside path for writing it before an atomic rename, unique to this run: two runs at
    once (two nodes on a shared filesystem) must not write into each other's temporary file."""
    return f"{path}.{uuid.uuid4().hex[:12]}.tmp"


@contextmanager
def atomic_write(path, unique=True):
    """with atomic_write(path) as tmp: write a file, or make a directory, at tmp. When the block
    ends, tmp is flushed to disk and renamed over path (a directory replaces the old one and its
    files); if the block fails, tmp is removed and path is left as it was. Several of these
    nested (contextlib.ExitStack) rename only once every one of them is complete. A write that the
    operating system refuses (a full disk, no permission) raises InputError. unique=False names
    tmp path.tmp, so that a writer killed mid-write leaves one stale file, which the next
    replaces."""
    tmp, old = temporary_name(path) if unique else path + '.tmp', None
    # (a folder already there is not ours to remove)
    in_the_way = os.path.isdir(tmp)
    try:
        yield tmp
        if os.path.isfile(tmp):
            # (opened writable: Windows syncs only such handles)
            with open(tmp, 'rb+') as f:
                os.fsync(f.fileno())
        # a directory that is not empty cannot be renamed over
        if os.path.isdir(tmp) and os.path.isdir(path) and os.listdir(path):
            old = temporary_name(path)
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException as e:
        if old is not None and not os.path.exists(path):
            os.replace(old, path)
        if os.path.isfile(tmp):
            os.remove(tmp)
        elif os.path.isdir(tmp) and not in_the_way:
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise InputError(f"cannot write {e.filename or path} ({e.strerror}); check the free "
                             "disk space, or write elsewhere") from e
        raise
    if old is not None:
        shutil.rmtree(old)


# -----------------------------------------------------------------------------
# Checkpoints: out_dir/ckpt.pt, nanoGPT's keys (model, optimizer, model_args, iter_num,
# best_val_loss, config) plus what an exact resume needs (rng, scaler, tokenizer); and
# out_dir/metrics.jsonl.


def check_out_dir(out_dir):
    """Refuse an out_dir that cannot take a checkpoint (empty, a file, not writable) before any
    work is done. A missing one is not made here: its nearest existing parent must be writable."""
    if not out_dir:
        raise InputError("out_dir is empty: name the folder for the checkpoint, e.g. --out_dir=out")
    folder = os.path.abspath(out_dir)
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if folder != os.path.abspath(out_dir) and not os.path.isdir(folder):
        raise InputError(f"out_dir {out_dir} lies under {folder}, which is a file: choose another "
                         "--out_dir")
    if not os.path.isdir(folder):
        raise InputError(f"out_dir {out_dir} is a file, not a folder: choose another --out_dir")
    probe = temporary_name(os.path.join(folder, 'write-test'))
    try:
        with open(probe, 'wb'):
            pass
        os.remove(probe)
    except OSError as e:
        raise InputError(f"cannot write in {folder} ({e.strerror}): choose another --out_dir, "
                         "or make it writable") from e


def save_checkpoint(checkpoint, path):
    # (a checkpoint has one writer, rank 0: one temporary name)
    with atomic_write(path, unique=False) as tmp, open(tmp, 'wb') as f:
        torch.save(checkpoint, f)


def load_checkpoint(path):
    """Load a checkpoint dict written by save_checkpoint (or by nanoGPT) without unpickling code.
    Everything lands in CPU memory: the caller moves the model (and the optimizer's load_state_dict
    its state) to the device, RNG states must stay CPU tensors, and a GPU never holds two copies."""
    if not os.path.isfile(path):
        raise InputError(f"no checkpoint at {path}: check --out_dir, or train one first with "
                         "train.py")
    try:
        # a damaged file also makes torch warn; the one line below says it all
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            # mmap: the file's pages are read as needed and shared by the processes of a node
            checkpoint = torch.load(path, map_location='cpu', weights_only=True, mmap=True)
    except Exception as e:
        raise InputError(f"{path} is not a readable checkpoint ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:120]}); restore a good copy or start again")
    missing = [k for k in ('model', 'model_args')
               if not isinstance(checkpoint, dict) or k not in checkpoint]
    if missing:
        raise InputError(f"{path} is not a training checkpoint (no {', '.join(missing)})")
    return checkpoint


def latest_checkpoint(out_dir):
    """(path, checkpoint) of what --init_from=resume continues: out_dir/ckpt.pt, or
    out_dir/last.pt where a run that keeps only its best model (always_save_checkpoint=False) was
    stopped later than its best evaluation. load_checkpoint's one line when neither is there."""
    ckpt_path, last_path = os.path.join(out_dir, 'ckpt.pt'), os.path.join(out_dir, 'last.pt')
    if not os.path.isfile(last_path):
        return ckpt_path, load_checkpoint(ckpt_path)
    last = load_checkpoint(last_path)
    if not os.path.isfile(ckpt_path):
        return last_path, last
    best = load_checkpoint(ckpt_path)
    if last.get('iter_num', 0) > best.get('iter_num', 0):
        return last_path, last
    return ckpt_path, best


def set_aside(paths):
    """Rename each existing file of paths to NAME.prev (NAME.prev2, NAME.prev3, ... where that is
    taken), one suffix for all of them, so that a new run never destroys an earlier one. Returns
    the new names."""
    present = [path for path in paths if os.path.exists(path)]
    n = 1
    while any(os.path.exists(f"{path}.prev{n if n > 1 else ''}") for path in present):
        n += 1
    moved = []
    for path in present:
        new = f"{path}.prev{n if n > 1 else ''}"
        os.replace(path, new)
        moved.append(new)
    return moved


def check_resume(checkpoint, path, **settings):
    """Refuse a resume that cannot continue the run: no optimizer state, or settings
    (block_size, optimizer, lora_rank, lora_alpha) other than the run's own. One line naming the
    setting to pass."""
    if not {'optimizer', 'iter_num', 'best_val_loss'} <= set(checkpoint):
        raise InputError(f"{path} has no optimizer state or iteration count to resume from; start "
                         "a new run with another --out_dir")
    # (lora_alpha means nothing without LoRA)
    lora = checkpoint.get('lora') or dict(rank=0, alpha=settings['lora_alpha'])
    saved = dict(block_size=checkpoint['model_args']['block_size'],
                 optimizer='muon' if 'muon' in checkpoint['optimizer'] else 'adamw',
                 lora_rank=lora['rank'], lora_alpha=lora['alpha'])
    for name, value in saved.items():
        if settings[name] != value:
            raise InputError(f"the checkpoint was trained with {name}={value!r}; resume with "
                             f"--{name}={value}, or start a new run with another --out_dir")


def rng_state(device):
    """Every random number generator's state, as plain types and CPU tensors (which
    torch.load(weights_only=True) reads)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {'torch': torch.get_rng_state(), 'numpy': (kind, keys.tolist(), pos, has_gauss, gauss),
             'python': random.getstate()}
    if torch.device(device).type == 'cuda':
        state['cuda'] = torch.cuda.get_rng_state(device)
    elif torch.device(device).type == 'mps':
        state['mps'] = torch.mps.get_rng_state()
    return state


def set_rng_state(state, device):
    torch.set_rng_state(state['torch'])
    kind, keys, pos, has_gauss, gauss = state['numpy']
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    random.setstate(state['python'])
    if 'cuda' in state and torch.device(device).type == 'cuda':
        torch.cuda.set_rng_state(state['cuda'], device)
    elif 'mps' in state and torch.device(device).type == 'mps':
        torch.mps.set_rng_state(state['mps'])


def trim_metrics(path, iter_num, evaluates_now):
    """For a run resumed at iter_num: drop from out_dir/metrics.jsonl what the run that died
    logged past its checkpoint, and the evaluation at iter_num if the resumed run evaluates there
    again, so that each step and evaluation appears once. Lines cut short by the crash go too."""
    kept = []
    for line in open(path):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict) or not isinstance(record.get('iter'), int):
            continue
        evaluated_again = 'val_loss' in record and evaluates_now
        if record['iter'] < iter_num or (record['iter'] == iter_num and not evaluated_again):
            kept.append(line)
    with atomic_write(path) as tmp, open(tmp, 'w') as f:
        f.writelines(kept)


# -----------------------------------------------------------------------------
# Export (sample.py --export_hf).

def stop_at_end_of_turn(path, tokenizer):
    """A chat model's generation_config.json in path: generation stops at the end of a turn
    (<|im_end|>, the tokenizer's eos) and at <|endoftext|>."""
    from transformers import GenerationConfig
    config = GenerationConfig.from_pretrained(path)
    stops = [tokenizer.eos_token_id]
    if '<|endoftext|>' in tokenizer.get_vocab():
        stops.append(tokenizer.convert_tokens_to_ids('<|endoftext|>'))
    config.eos_token_id = stops
    config.save_pretrained(path)


# The files an export writes, in transformers' names: --overwrite=True replaces these in a folder
# and keeps everything else there (a checkpoint, metrics, notes).
EXPORT_FILES = ('config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json',
                'tokenizer_config.json', 'special_tokens_map.json', 'chat_template.jinja')


def save_hf_directory(model, path, tokenizer=None, dtype=torch.float32, overwrite=False):
    """Write path as a transformers GPT-2 directory: the model's weights and configs
    (GPT.save_pretrained) and, when given, its tokenizer (a transformers tokenizer,
    tokenizer.hf() of data.load_tokenizer), which GPT2LMHeadModel.from_pretrained,
    pipeline('text-generation') and GPT.from_pretrained read. All of it goes to a temporary
    directory first, so a failure while writing leaves path as it was. A folder that is not empty
    takes the export only with overwrite=True, which replaces the export's own files there
    (EXPORT_FILES), one by one, and nothing else."""
    path = os.path.normpath(path)  # no trailing slash
    if os.path.exists(path) and not os.path.isdir(path):
        raise InputError(f"{path} is a file, not a directory: choose another --export_hf")
    present = os.listdir(path) if os.path.isdir(path) else []
    if present and not overwrite:
        raise InputError(f"{path} exists and is not empty: choose another directory, or "
                         "--overwrite=True to replace the export's own files there (config.json, "
                         "model.safetensors, ...; other files are kept)")
    tmp = temporary_name(path)
    try:
        os.makedirs(tmp)
        # the weights and configs, for this tokenizer
        model.save_pretrained(tmp, dtype, tokenizer)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
            # transformers 5 names the class TokenizersBackend, which transformers 4 (still
            # pinned by other tools) does not know; both versions load PreTrainedTokenizerFast.
            with open(os.path.join(tmp, 'tokenizer_config.json')) as f:
                tokenizer_config = json.load(f)
            if tokenizer_config.get('tokenizer_class') == 'TokenizersBackend':
                tokenizer_config['tokenizer_class'] = 'PreTrainedTokenizerFast'
            # transformers 5 lists extra special tokens where transformers 4 expects a dict
            if isinstance(tokenizer_config.get('extra_special_tokens'), list):
                extra = tokenizer_config.pop('extra_special_tokens')
                tokenizer_config['additional_special_tokens'] = extra
            if tokenizer.chat_template:
                # in chat_template.jinja for transformers 5, here for transformers 4
                tokenizer_config['chat_template'] = tokenizer.chat_template
                stop_at_end_of_turn(tmp, tokenizer)
            with open(os.path.join(tmp, 'tokenizer_config.json'), 'w') as f:
                json.dump(tokenizer_config, f, indent=2, ensure_ascii=False)
        # safetensors writes its file private (0o600): give every file the permissions of a file
        # made as usual, for sharing or uploading
        umask = os.umask(0)
        os.umask(umask)
        written = os.listdir(tmp)
        for name in written:
            os.chmod(os.path.join(tmp, name), 0o666 & ~umask)
        if not present:  # the whole folder at once
            os.replace(tmp, path)
        else:  # the export's files replace their namesakes; an earlier export's others go
            for name in written:
                os.replace(os.path.join(tmp, name), os.path.join(path, name))
            for name in set(EXPORT_FILES) & set(present) - set(written):
                os.remove(os.path.join(path, name))
    except OSError as e:
        raise InputError(f"cannot write {e.filename or path} ({e.strerror}); check the free disk "
                         "space, or export elsewhere") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    c, size = model.config, os.path.getsize(os.path.join(path, 'model.safetensors'))
    vocab = len(tokenizer) if tokenizer is not None else c.vocab_size
    no_tokenizer = '' if tokenizer is not None else ', no tokenizer'
    print(f"wrote {path}: GPT-2 format, {c.n_layer} layers, {c.n_head} heads, {c.n_embd} wide, "
          f"context {c.block_size} tokens (a prompt and its new tokens together), vocab {vocab}, "
          f"{str(dtype).removeprefix('torch.')} weights ({size / 1e6:.1f} MB){no_tokenizer}")
