"""
Train a GPT, or finetune one, from a laptop CPU to many GPU nodes. Defaults: GPT-2 124M on
OpenWebText. Settings below; change them with config files and --key=value (see --help).

A small model on a CPU, in a few minutes: python data/shakespeare_char/prepare.py, then
    python train.py config/train_shakespeare_char_cpu.py

One GPU:
    python train.py config/train_shakespeare_char.py
8 GPUs on one node:
    torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2.py
2 processes on a CPU:
    torchrun --standalone --nproc_per_node=2 train.py config/train_shakespeare_char_cpu.py \\
        --device=cpu --gradient_accumulation_steps=2
GPT-2 XL over 4 GPUs, sharded (FSDP):
    torchrun --standalone --nproc_per_node=4 train.py config/finetune_shakespeare.py --fsdp=True
Several nodes, SLURM, preemption: README, Clusters.

The checkpoint out_dir/ckpt.pt holds nanoGPT's keys plus what an exact resume needs. It is
written atomically, and SIGTERM or Ctrl-C finishes the current step, saves and exits.
"""

import json
import math
import os
import shlex
import signal
import sys
import time
from contextlib import nullcontext

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from checkpoint import (
    check_out_dir,
    check_resume,
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_aside,
    set_rng_state,
    trim_metrics,
)
from configurator import configure
from data import (
    ChatTokens,
    bytes_per_token,
    check_vocab,
    load_tokenizer,
    open_dataset,
    same_tokenizer,
    tokenizer_state,
)
from data.hellaswag import GPT2_VOCAB_SIZE, hellaswag_counts, load_hellaswag
from devices import device_peak_flops, setup_device
from distributed import (
    check_fsdp_support,
    end_distributed_run,
    gather_state,
    shard_model,
    shard_optimizer_state,
)
from errors import InputError
from lora import add_lora, load_lora, lora_state, merged_state_dict
from model import GPT, GPT2_NAMES, GPTConfig
from muon import configure_muon

# -----------------------------------------------------------------------------
# I/O
out_dir = 'out'  # where ckpt.pt (and last.pt, metrics.jsonl) are written and read
eval_interval = 2000  # iterations between evaluations (and checkpoints)
log_interval = 1  # iterations between log lines
eval_iters = 200  # batches per split to estimate the loss
eval_only = False  # evaluate once, then exit
# False: ckpt.pt is the best model, saved when val loss improves; then a stop saves last.pt
always_save_checkpoint = True  # save at every evaluation; False: the best only (ckpt.pt)
# HellaSwag (GPT-2 BPE models; run data/hellaswag/prepare.py first)
eval_hellaswag = False  # also score HellaSwag at every evaluation (hellaswag_acc, _acc_norm)
hellaswag_data = 'hellaswag'  # the folder of val.npz: data/<name>, or a path if it has a slash
hellaswag_limit = 0  # score only the first N examples, a quick partial look; 0: all
# 'scratch', 'resume' (from out_dir), 'gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl', or a
# directory saved by transformers' save_pretrained
init_from = 'scratch'  # scratch, resume, gpt2 ... gpt2-xl, or a directory
# wandb logging
wandb_log = False  # log to Weights & Biases (WANDB_MODE=offline works)
wandb_project = 'owt'
wandb_run_name = 'gpt2'
# data
dataset = 'openwebtext'  # data/<dataset>/{train,val}.bin, made by its prepare.py
gradient_accumulation_steps = 5 * 8  # micro-steps per optimizer step, all processes together
batch_size = 12  # sequences per micro-step and process
block_size = 1024  # tokens per sequence
# model
n_layer = 12
n_head = 12
n_embd = 768
dropout = 0.0  # 0 for pretraining, 0.1+ for finetuning
bias = False  # biases in Linear and LayerNorm layers
# LoRA, for finetuning: every weight frozen, a low-rank update trained beside each of the
# blocks' weight matrices
lora_rank = 0  # the rank r of each update; 0: no LoRA, every weight trains (nanoGPT's)
lora_alpha = 16.0  # the updates are scaled by lora_alpha / lora_rank
# AdamW
learning_rate = 6e-4  # peak learning rate
max_iters = 600000  # optimizer steps in total
weight_decay = 1e-1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0  # clip gradients to this global norm; 0.0 turns clipping off
# Muon, optional: optimizer='muon' trains the blocks' 2-D weight matrices with Muon and the rest
# (embeddings, LayerNorm gains, biases) with the AdamW settings above
optimizer = 'adamw'  # 'adamw' (nanoGPT's) or 'muon'
muon_lr = 0.02  # Muon's peak learning rate, scheduled as learning_rate is
muon_momentum = 0.95  # Nesterov momentum of Muon's updates
muon_weight_decay = 0.0  # decoupled: each step multiplies the matrices by 1 - lr * this
# learning rate schedule: linear warmup, then cosine decay to min_lr
decay_lr = True  # False: constant learning_rate
warmup_iters = 2000
lr_decay_iters = 600000  # ~ max_iters, as in the Chinchilla paper
min_lr = 6e-5  # ~ learning_rate / 10
# system
backend = 'auto'  # torch.distributed: 'auto' (nccl on GPUs, gloo on CPUs), 'nccl' or 'gloo'
device = 'auto'  # 'auto' (cuda, then mps, then cpu), 'cpu', 'cuda', 'cuda:N' or 'mps'
# 'auto': bfloat16 on GPUs that have it, else float16; float32 on CPUs and MPS
dtype = 'auto'  # 'auto', 'float32', 'bfloat16' or 'float16'
compile = None  # torch.compile the model; None: on for CUDA, off elsewhere
# keep only each block's input in training and compute the rest again in the backward pass
recompute = False  # less activation memory, a third more compute
# under torchrun: shard weights, gradients and optimizer state over the processes (FSDP)
fsdp = False  # instead of a whole copy in each (DDP)
seed = 1337  # for weights, dropout and data order
# -----------------------------------------------------------------------------
config = configure(globals())
# each log line shows up when printed, also in a log file (python train.py > log) or a pipe
sys.stdout.reconfigure(line_buffering=True)


def check_settings():
    """Refuse settings that cannot work, before anything runs: one line that says why."""
    for name in ('batch_size', 'block_size', 'gradient_accumulation_steps', 'eval_interval',
                 'log_interval', 'eval_iters'):
        if globals()[name] < 1:
            raise InputError(f"{name}={globals()[name]} must be at least 1")
    if hellaswag_limit < 0:
        raise InputError(f"hellaswag_limit={hellaswag_limit} must be 0 (all examples) or more")
    if decay_lr and lr_decay_iters <= warmup_iters:
        raise InputError(f"lr_decay_iters={lr_decay_iters} must be larger than "
                         f"warmup_iters={warmup_iters} (or --decay_lr=False)")
    if backend not in ('auto', 'nccl', 'gloo'):
        raise InputError(f"unknown backend {backend!r}: use auto, nccl or gloo")
    if optimizer not in ('adamw', 'muon'):
        raise InputError(f"unknown optimizer {optimizer!r}: use adamw or muon")
    if optimizer == 'muon' and learning_rate <= 0:
        raise InputError(f"learning_rate={learning_rate} must be above 0 with optimizer='muon' "
                         "(Muon's lr follows it)")
    if compile not in (None, True, False):
        raise InputError(f"compile={compile!r}: use True, False or None (on for CUDA only)")
    if lora_rank < 0 or lora_alpha <= 0:
        raise InputError(f"lora_rank={lora_rank}, lora_alpha={lora_alpha}: lora_rank must be 0 "
                         "(no LoRA) or more, lora_alpha above 0")
    if lora_rank > 0 and init_from == 'scratch':
        raise InputError("LoRA adapts a trained model: set --init_from (gpt2, ..., gpt2-xl, a "
                         "directory or resume), or drop --lora_rank")
    if lora_rank > 0 and (fsdp or optimizer == 'muon'):
        other = 'fsdp=True' if fsdp else 'optimizer=muon'
        raise InputError(f"lora_rank={lora_rank} with {other}: LoRA trains with AdamW, under DDP: "
                         "use --optimizer=adamw, drop --fsdp")
    srun_tasks = int(os.environ.get('SLURM_STEP_NUM_TASKS', 1))
    if not ddp and srun_tasks > 1:
        raise InputError(f"srun started {srun_tasks} copies of train.py without torchrun: each "
                         "would train alone into the same out_dir. Run torchrun under srun "
                         "(README: Clusters)")
    if fsdp and not ddp:
        raise InputError("fsdp=True shards the model over the processes that torchrun starts: "
                         "launch with torchrun --nproc_per_node=N train.py ..., or drop --fsdp")
    if fsdp and device_type not in ('cuda', 'cpu'):
        raise InputError(f"fsdp=True runs on CUDA GPUs or CPUs, not {device_type}: drop --fsdp")
    if fsdp:
        check_fsdp_support()
    if gradient_accumulation_steps % world_size != 0:
        raise InputError(f"gradient_accumulation_steps={gradient_accumulation_steps} does not "
                         f"divide by the {world_size} processes: make it a multiple of "
                         f"{world_size}")
    # a folder that can take the checkpoint, checked now rather than at the first save
    check_out_dir(out_dir)


# Processes: one, or one per GPU (or CPU share) under torchrun. What can fail on one process
# alone (settings, data, checkpoint) is checked before they join the process group, so that a
# failure stops all at once.
ddp = 'RANK' in os.environ
rank, local_rank, world_size = 0, 0, 1
if ddp:
    rank, local_rank = int(os.environ['RANK']), int(os.environ['LOCAL_RANK'])
    world_size = int(os.environ['WORLD_SIZE'])
master = rank == 0
# torchrun's processes on this node: each needs a GPU of its own
local_world_size = int(os.environ['LOCAL_WORLD_SIZE']) if 'LOCAL_WORLD_SIZE' in os.environ else None
device, device_type, ptdtype, ctx = setup_device(device, dtype, local_rank if ddp else None,
                                                 local_world_size)
check_settings()
micro_steps = gradient_accumulation_steps // world_size  # per process
tokens_per_iter = gradient_accumulation_steps * batch_size * block_size
if master and eval_only:
    eval_tokens = world_size * eval_iters * batch_size * block_size
    print(f"{world_size} process(es) on {device}, {str(ptdtype).removeprefix('torch.')}; "
          f"evaluating {world_size} x {eval_iters} batches x {batch_size} x {block_size} = "
          f"{eval_tokens:,} tokens of each split")
elif master:
    print(f"{world_size} process(es) on {device}, {str(ptdtype).removeprefix('torch.')}; "
          f"tokens per iteration: {gradient_accumulation_steps} micro-steps x {batch_size} x "
          f"{block_size} = {tokens_per_iter:,}")
# the same initial weights in every process (FSDP, unlike DDP, does not copy rank 0's)
torch.manual_seed(seed)

# Data: uint16 token files, checked to exist and to be long enough; each batch's token ids are
# checked against the model's vocabulary as it is read (not the whole files: OpenWebText is big).
splits = open_dataset(dataset, block_size)
# characters (meta.pkl), a trained BPE (tokenizer.json) or GPT-2's
tokenizer = load_tokenizer(dataset)
# for val_bpb; None if the text is unknown
val_bytes_per_token = bytes_per_token(splits['val'], tokenizer)
hellaswag = load_hellaswag(hellaswag_data) if eval_hellaswag else None
# a chat dataset (data/chat/prepare.py): the loss is taken over the answers' tokens alone
chat = isinstance(splits['train'], ChatTokens)

def get_batch(split, iter_num, micro_step):
    # Each micro-batch has its own seed (seed, iteration, micro-step over all processes): a resumed
    # run needs no data state, and 2 processes x 1 micro-step see the data of 1 process x 2.
    step = iter_num * gradient_accumulation_steps + rank * micro_steps + micro_step
    generator = torch.Generator().manual_seed(seed * 2**40 + step)
    return splits[split].batch(batch_size, block_size, generator, device)


# Model.
# out_dir/ckpt.pt is the latest state, or with always_save_checkpoint=False the best one; then a
# stop (Ctrl-C, preemption) saves its state to out_dir/last.pt, so that the best survives it.
ckpt_path, last_path = os.path.join(out_dir, 'ckpt.pt'), os.path.join(out_dir, 'last.pt')
iter_num, best_val_loss, checkpoint, resume_rng, lora = 0, float('inf'), None, None, None
model_args = dict(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size, bias=bias,
                  dropout=dropout)
if init_from == 'scratch':
    # a dataset's own vocabulary, or GPT-2's 50257 tokens padded for speed
    model_args['vocab_size'] = tokenizer.vocab_size if tokenizer.own else 50304
    model = GPT(GPTConfig(**model_args))
elif init_from == 'resume':
    # The later of ckpt.pt and last.pt; an evaluation alone reads the one sample.py reads. To
    # the CPU: the model and the optimizer move their parts to the device below.
    if eval_only:
        resume_path, checkpoint = ckpt_path, load_checkpoint(ckpt_path)
    else:
        resume_path, checkpoint = latest_checkpoint(out_dir)
    check_resume(checkpoint, resume_path, block_size=block_size, optimizer=optimizer,
                 lora_rank=lora_rank, lora_alpha=lora_alpha)
    # a LoRA run's checkpoint: its frozen base is loaded again from where it came from
    lora = checkpoint.get('lora')
    if lora and not (lora['base'] in GPT2_NAMES or os.path.isdir(lora['base'])):
        raise InputError(f"this LoRA checkpoint's base model {lora['base']} is missing (the "
                         "checkpoint's update is trained on top of it): put the base model back "
                         "there to resume")
    if lora:
        model = GPT.from_pretrained(lora['base'], dict(dropout=dropout))
    else:
        model = GPT.from_checkpoint(checkpoint, dict(dropout=dropout))
    iter_num, best_val_loss = checkpoint['iter_num'], float(checkpoint['best_val_loss'])
    if master:
        print(f"resuming from {resume_path} at iter {iter_num} (best val loss {best_val_loss:.4f})")
    # (absent in nanoGPT's checkpoints)
    resume_rng = checkpoint.get('rng')
elif init_from.startswith('gpt2') or os.path.isdir(init_from):
    model = GPT.from_pretrained(init_from, dict(dropout=dropout))
else:
    raise InputError(f"unknown init_from {init_from!r}: use scratch, resume, gpt2, gpt2-medium, "
                     "gpt2-large, gpt2-xl or a directory saved with transformers' save_pretrained")
# the first embedding row added here for new tokens (with LoRA, those rows train too)
new_rows_from = None
if chat and model.config.vocab_size < tokenizer.vocab_size:
    # GPT-2 from the hub has exactly 50257 rows: the chat markers get new ones
    new_rows_from = model.config.vocab_size
    model.grow_vocab(tokenizer.vocab_size)
if block_size < model.config.block_size:
    model.crop_block_size(block_size)
elif block_size > model.config.block_size:
    raise InputError(f"block_size={block_size} is longer than the model's context "
                     f"({model.config.block_size}); use --block_size={model.config.block_size} "
                     "or less")
model_args = {k: getattr(model.config, k) for k in
              ('n_layer', 'n_head', 'n_embd', 'block_size', 'bias', 'vocab_size', 'dropout')}

# The dataset's tokens must mean to the model what they meant in its training: the same
# vocabulary, and for a resume the same tokenizer.
vocab_fix = None
if checkpoint is not None:
    trained_on = checkpoint.get('config', {}).get('dataset', '?')
    vocab_fix = (f"resume on the dataset the run trained on ({trained_on}), or start a new run "
                 "with another --out_dir")
elif init_from != 'scratch':
    vocab_fix = (f"prepare the data with {init_from}'s tokenizer (GPT-2's BPE: "
                 "data/text/prepare.py --tokenizer=gpt2), or train from scratch")
saved_tokenizer = checkpoint.get('tokenizer') if checkpoint is not None else None
if saved_tokenizer is not None and (saved_tokenizer.get('kind') == 'chat') != chat:
    kind, other = ('a chat model', 'a plain') if chat is False else ('a plain model', 'a chat')
    raise InputError(f"{resume_path} holds {kind}, and {dataset!r} is {other} dataset: {vocab_fix}")
check_vocab(tokenizer, dataset, model.config.vocab_size, vocab_fix)
if saved_tokenizer is not None and not same_tokenizer(saved_tokenizer, tokenizer_state(tokenizer)):
    raise InputError(f"dataset {dataset!r} was prepared again, with another tokenizer, since "
                     f"{resume_path} was saved: {vocab_fix}")
# (each batch is checked as it is read)
splits['train'].vocab_size = splits['val'].vocab_size = model.config.vocab_size
if eval_hellaswag and model.config.vocab_size < GPT2_VOCAB_SIZE:
    raise InputError(f"eval_hellaswag needs a model with GPT-2's vocabulary (HellaSwag is "
                     f"prepared in GPT-2 tokens), but this one has "
                     f"vocab_size={model.config.vocab_size}; use --eval_hellaswag=False")

if lora_rank:
    if lora:
        lora_base = lora['base']
    elif os.path.isdir(init_from):
        lora_base = os.path.abspath(init_from)
    else:
        lora_base = init_from
    # in bfloat16 or float16 the frozen matrices are kept in autocast's dtype: half the memory
    add_lora(model, lora_rank, lora_alpha, ptdtype if ptdtype != torch.float32 else None,
             new_rows_from)
    if checkpoint is not None:
        load_lora(model, checkpoint, lora_base)
    # the updates' gradients are kept from here on: see opt.zero_grad in the loop
    for p in model.parameters():
        p.grad = torch.zeros_like(p) if p.requires_grad else None
model.recompute = recompute
# (FSDP moves the model to the device shard by shard, below)
if not fsdp:
    model.to(device)
# a different dropout in each process
torch.manual_seed(seed + rank)
if master:
    # (with LoRA: its updates alone)
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    trained = '' if eval_only else f", {trained:,} of them trained"
    print(f"model: {model.get_num_params() / 1e6:.2f}M parameters{trained}, {model_args}")

# fp16 needs loss scaling
scaler = torch.amp.GradScaler(device_type, enabled=(ptdtype == torch.float16))

# out_dir/metrics.jsonl: one JSON object per log line and per evaluation (written by rank 0).
# A new run into an out_dir that holds an earlier run leaves it untouched until the new run's
# first evaluation: then the earlier checkpoints and metrics are set aside as NAME.prev (.prev2,
# ...), and the metrics logged so far, kept here meanwhile, start the new file. A stop before
# that saves nothing.
metrics_path = os.path.join(out_dir, 'metrics.jsonl')
new_run = init_from != 'resume' and not eval_only
earlier_run = new_run and any(os.path.exists(p) for p in (ckpt_path, last_path))
pending_metrics = None
if new_run and (earlier_run or os.path.exists(metrics_path)):
    pending_metrics = []
# whether this run has evaluated since it started (the moment it sets the earlier run aside)
evaluated = False


def log_metrics(record):
    if pending_metrics is not None:
        pending_metrics.append(record)
        return
    # a whole line at a time, so a run that dies leaves whole lines
    with open(metrics_path, 'a') as f:
        f.write(json.dumps(record) + '\n')


def set_earlier_run_aside():
    """Rank 0, once: move the earlier run's files aside and start this run's metrics file."""
    global pending_metrics
    if not master or pending_metrics is None:
        return
    moved = set_aside([ckpt_path, last_path, metrics_path])
    if moved:
        names = ', '.join(os.path.basename(m) for m in moved)
        print(f"kept the earlier run in {out_dir} as {names}")
    records, pending_metrics = pending_metrics, None
    for record in records:
        log_metrics(record)


if master:
    os.makedirs(out_dir, exist_ok=True)
if master and init_from == 'resume' and os.path.exists(metrics_path) and not eval_only:
    trim_metrics(metrics_path, iter_num, iter_num % eval_interval == 0 or iter_num >= max_iters)
if wandb_log and master:
    # lazy: only needed here
    import wandb
    wandb.init(project=wandb_project, name=wandb_run_name, config=config)

if ddp:
    if backend == 'auto':
        backend = 'nccl' if device_type == 'cuda' else 'gloo'
    dist.init_process_group(backend=backend)
    # every process acts on rank 0's view of out_dir (they meet in collectives at a stop)
    shared = [earlier_run]
    dist.broadcast_object_list(shared, src=0)
    earlier_run = shared[0]


def parallelize(model):
    """The model as the loop runs it: sharded over the processes in place (FSDP) or copied to
    each (DDP), and compiled. The raw model, with no wrapper, is what is saved."""
    if fsdp:
        shard_model(model, device_type, ptdtype, world_size)
        if master:
            whole = model.get_num_params(False)
            local = sum(p.to_local().numel() for p in model.parameters())
            print(f"fsdp: each process holds {local / whole:.1%} of the weights, gradients and "
                  f"optimizer state ({local * 4 / 1e6:,.1f} MB of weights)")
    if compile or (compile is None and device_type == 'cuda'):
        if master:
            print("compiling the model...")
        if fsdp:
            # FSDP's gathers between the blocks would break a whole-model graph: each block alone
            for block in model.transformer.h:
                block.compile()
        else:
            model = torch.compile(model)
    if ddp and not fsdp:
        gpu = [torch.device(device).index] if device_type == 'cuda' else None
        model = DDP(model, device_ids=gpu)
    return model


raw_model = model
model = parallelize(raw_model)
if optimizer == 'muon':
    muon_settings = dict(lr=muon_lr, momentum=muon_momentum, weight_decay=muon_weight_decay)
    opt = configure_muon(raw_model, weight_decay, learning_rate, (beta1, beta2), device_type,
                         muon_settings)
elif lora_rank and new_rows_from is not None:
    # the embedding's new rows train without weight decay: it would shrink the frozen rows too
    wte = raw_model.transformer.wte.weight
    params = [p for p in raw_model.parameters() if p.requires_grad and p is not wte]
    opt = raw_model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type,
                                         params)
    opt.add_param_group({'params': [wte], 'weight_decay': 0.0})
else:
    opt = raw_model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type)
if checkpoint is not None:
    # a whole state dict, whatever wrote it; FSDP keeps its own shard of each tensor
    optimizer_state = checkpoint['optimizer']
    if fsdp:
        optimizer_state = shard_optimizer_state(optimizer_state, opt)
    opt.load_state_dict(optimizer_state)
    # ({} when the run saving it was not in float16)
    if scaler.is_enabled() and checkpoint.get('scaler'):
        scaler.load_state_dict(checkpoint['scaler'])
    # free the memory
    checkpoint = None


@torch.no_grad()
def estimate_loss():
    """Mean loss on eval_iters batches of each split, averaged over processes. The batches come
    from their own generator and dropout is off, so evaluating never moves the training RNG."""
    model.eval()
    losses = torch.zeros(2, device=device)
    # chat: [target tokens of train, of val], for the mean over every target token
    counts = torch.zeros(2, device=device)
    for i, split in enumerate(('train', 'val')):
        generator = torch.Generator().manual_seed(seed + 1 + rank)
        for _ in range(eval_iters):
            X, Y = splits[split].batch(batch_size, block_size, generator, device)
            with ctx:
                loss = model(X, Y)[1]
            if chat:
                n = (Y != -1).sum()
                losses[i] += torch.nan_to_num(loss.float()) * n
                counts[i] += n
            else:
                losses[i] += loss.float() / eval_iters
    if ddp:
        dist.all_reduce(losses)
        dist.all_reduce(counts)
    if chat:
        losses /= counts
    elif ddp:
        losses /= world_size
    model.train()
    return {'train': losses[0].item(), 'val': losses[1].item()}


@torch.no_grad()
def evaluate_hellaswag():
    """[examples, right by summed loss, right by mean loss] over all processes. On raw_model:
    the lengths vary from batch to batch."""
    raw_model.eval()
    with ctx:
        # batch_size rows (4 per example) per forward
        counts = hellaswag_counts(raw_model, hellaswag, hellaswag_limit, block_size,
                                  max(1, batch_size // 4), device, rank, world_size)
    raw_model.train()
    return counts.tolist()


def get_lr(it):
    # linear warmup, above zero from the first step
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (learning_rate - min_lr)


last_saved = f"{resume_path} (iter {iter_num})" if init_from == 'resume' else "none"


def save(path, val_loss=None):
    """Write the run's state to path (ckpt.pt or last.pt); every process calls it. val_loss: the
    state's, when it was just evaluated."""
    global last_saved
    # every process's RNG state, so that a resumed run continues each one's dropout
    states = [rng_state(device)] * world_size
    if ddp:
        dist.all_gather_object(states, rng_state(device))
    # (with LoRA: its updates added into the weights)
    model_state, optimizer_state = merged_state_dict(raw_model), opt.state_dict()
    # a LoRA run's updates and base, for an exact resume
    extra = {}
    if lora_rank:
        extra['lora'] = lora_state(raw_model, lora_rank, lora_alpha, lora_base, new_rows_from)
    if fsdp:
        # Gathered whole, so that the checkpoint is the same as DDP's: any number of processes
        # resume from it. From the parameters themselves, not state_dict()'s copies: the tied
        # embedding and output layer stay one tensor.
        params = dict(raw_model.named_parameters(remove_duplicate=False))
        model_state = gather_state({**model_state, **params}, master)
        optimizer_state = gather_state(optimizer_state, master)
    if master:
        set_earlier_run_aside()
        save_checkpoint({'model': model_state, 'optimizer': optimizer_state,
                         'model_args': model_args, 'iter_num': iter_num,
                         'best_val_loss': best_val_loss, 'config': config,
                         'scaler': scaler.state_dict(), 'rng': states,
                         'tokenizer': tokenizer_state(tokenizer), **extra}, path)
        # a stop's state from before this one: superseded
        if path == ckpt_path and os.path.exists(last_path):
            os.remove(last_path)
        print(f"saved {path} at iter {iter_num}")
    last_saved = f"{path} (iter {iter_num})"
    saved_at[path] = (iter_num, val_loss)


# what each checkpoint file written by this run holds: path -> (iteration, val loss or None)
saved_at = {}


def duration(seconds):
    """seconds as the log shows a time left: 42s, 3m05s, 2h07m."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def stop_not_finite(what):
    """Stop the run before anything non-finite reaches a checkpoint."""
    raise InputError(f"{what}; stopped without saving. Last good checkpoint: {last_saved}. "
                     "Try a lower learning_rate, bfloat16 instead of float16, or grad_clip")


# What a step leaves on the device. Reading a value from the device makes Python wait until the
# device has finished all it was given, and then the device idles until Python gives it the next
# step. So the loop reads these only at log steps, after the first step, on a stop request and
# before saves (read_step); in between, Python runs ahead, loading the next batches meanwhile.
# The last step's micro-step losses, summed; its gradient norm before clipping; and the number
# of steps so far whose [loss, gradient norm] was nan or inf.
loss_sum = torch.zeros((), device=device)
grad_norm = torch.zeros((), device=device)
nonfinite = torch.zeros(2, device=device)


def read_step():
    """(the last step's mean loss over all processes, its gradient norm, whether any process was
    asked to stop). Stops the run, saving nothing, if a step so far was not finite."""
    asked = torch.tensor([float(stop_requested is not None)], device=device)
    stats = torch.cat([loss_sum.view(1), nonfinite, asked])
    # every process sees the same values, so they stop together
    if ddp:
        dist.all_reduce(stats)
    loss_total, bad_losses, bad_norms, stops = stats.tolist()
    loss, norm = loss_total / gradient_accumulation_steps, grad_norm.item()
    for what, value, bad in (('loss', loss, bad_losses), ('gradient norm', norm, bad_norms)):
        if bad and not math.isfinite(value):
            stop_not_finite(f"{what} is {value} at iter {iter_num}")
        if bad:
            stop_not_finite(f"{what} was not finite in a step before iter {iter_num}")
    return loss, norm, stops > 0


# Preemption and Ctrl-C: note the request; the loop finishes its step, saves and exits. Later
# SIGTERMs (scancel signals every process, torchrun forwards it again) never quit early; a second
# Ctrl-C quits at once. No printing here: it could interrupt the loop's own print.
stop_requested = None  # the name of the first signal received


def request_stop(signum, frame):
    global stop_requested
    if stop_requested and signum == signal.SIGINT:
        raise KeyboardInterrupt
    stop_requested = stop_requested or signal.Signals(signum).name
    if signum == signal.SIGTERM:
        # Ignored from now on: a Python handler would be reset to the default (death) while the
        # interpreter shuts down after the save.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


signal.signal(signal.SIGTERM, request_stop)
signal.signal(signal.SIGINT, request_stop)

if resume_rng is not None and len(resume_rng) == world_size:
    set_rng_state(resume_rng[rank], device)
elif init_from == 'resume' and master:
    print("note: the checkpoint has no RNG state for this number of processes; dropout will "
          "differ from an unbroken run")

# -----------------------------------------------------------------------------
# The loop: lr -> evaluate and save -> micro-steps -> clip -> step -> log -> stop.
t0, iters_since_log, first_iter, stop = time.time(), 0, iter_num, False
while True:
    # --- learning rate (Muon's groups: the same schedule, relative to its own peak)
    lr = get_lr(iter_num) if decay_lr else learning_rate
    for group in opt.param_groups:
        group['lr'] = lr * muon_lr / learning_rate if group.get('muon') else lr

    # --- evaluate, and save
    last = iter_num >= max_iters
    if iter_num % eval_interval == 0 or last or eval_only:
        losses = estimate_loss()
        if not math.isfinite(losses['val']):
            stop_not_finite(f"val loss is {losses['val']} at iter {iter_num}")
        improved = losses['val'] < best_val_loss
        best_val_loss = min(best_val_loss, losses['val'])
        val_bpb = None
        if val_bytes_per_token:
            val_bpb = losses['val'] / math.log(2) / val_bytes_per_token
        record = {'iter': iter_num, 'train_loss': losses['train'], 'val_loss': losses['val'],
                  'val_bpb': val_bpb, **({'eval_only': True} if eval_only else {})}
        if eval_hellaswag:
            examples, right, right_norm = evaluate_hellaswag()
            record.update(hellaswag_acc=right / examples, hellaswag_acc_norm=right_norm / examples,
                          hellaswag_examples=examples)
        if iter_num > first_iter and not eval_only:
            # this run has results of its own: the earlier run in out_dir makes room
            evaluated = True
            set_earlier_run_aside()
        if master:
            bpb = f", val bpb {val_bpb:.4f}" if val_bpb is not None else ""
            print(f"eval iter {iter_num}: train loss {losses['train']:.4f}, "
                  f"val loss {losses['val']:.4f}{bpb}, best val {best_val_loss:.4f}")
            if eval_hellaswag:
                partial = ""
                if examples < len(hellaswag):
                    partial = f" (partial: the first {examples:,} of {len(hellaswag):,})"
                print(f"hellaswag iter {iter_num}: acc {right / examples:.4f}, "
                      f"acc_norm {right_norm / examples:.4f} on {examples:,} examples{partial}")
            log_metrics(record)
            if wandb_log:
                extra = {k: v for k, v in record.items()
                         if k.startswith(('val_bpb', 'hellaswag')) and v is not None}
                wandb.log({'iter': iter_num, 'train/loss': losses['train'],
                           'val/loss': losses['val'], 'lr': lr, **extra})
        if iter_num > 0 and not eval_only and (improved or always_save_checkpoint):
            # (the check that every step since the last read was finite)
            read_step()
            save(ckpt_path, losses['val'])
        # evaluation time is not training time
        t0, iters_since_log = time.time(), 0
    if last or eval_only:
        break

    # --- forward and backward, over micro-steps
    loss_sum = torch.zeros((), device=device)
    batches = [get_batch('train', iter_num, micro_step) for micro_step in range(micro_steps)]
    if chat:
        # The step's loss is the mean over all its target tokens, in every micro-batch of every
        # process: each micro-batch's mean counts by its share of them (DDP then averages over
        # the processes). A micro-batch without targets gets one, weighted 0, so that its loss
        # is finite and its gradient zero.
        counts = torch.stack([(Y != -1).sum() for _, Y in batches]).float()
        total = counts.sum()
        if ddp:
            dist.all_reduce(total)
        weights = counts * world_size / total.clamp(min=1)
        # (on the device, without waiting for it)
        for (X, Y), n in zip(batches, counts):
            Y[0, 0] = torch.where(n == 0, X[0, 0], Y[0, 0])
    for micro_step, (X, Y) in enumerate(batches):
        # gradients are reduced over the processes on the last micro-step only
        reduce_now = micro_step == micro_steps - 1
        if fsdp:
            raw_model.set_requires_gradient_sync(reduce_now)
        with model.no_sync() if ddp and not fsdp and not reduce_now else nullcontext():
            with ctx:
                # (the logits are not kept: at GPT-2's vocabulary, the largest activation)
                loss = model(X, Y)[1]
            if chat:
                loss = loss * weights[micro_step]
                # (read_step divides the sum by gradient_accumulation_steps)
                loss_sum += loss.detach().float() * micro_steps
            else:
                loss_sum += loss.detach().float()
                loss = loss / micro_steps
            scaler.scale(loss).backward()

    # --- clip the gradients, step the optimizer
    scaler.unscale_(opt)
    max_norm = grad_clip if grad_clip > 0 else float('inf')
    grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), max_norm)
    if fsdp:
        # the norm over all shards, held by every process
        grad_norm = grad_norm.full_tensor()
    nonfinite[0] += ~torch.isfinite(loss_sum)
    # (with float16 the scaler skips steps with inf gradients itself)
    if not scaler.is_enabled():
        nonfinite[1] += ~torch.isfinite(grad_norm)
    scaler.step(opt)
    scaler.update()
    # LoRA keeps its few gradients: made anew in each backward pass, they pinned freed memory
    opt.zero_grad(set_to_none=not lora_rank)
    iter_num += 1
    iters_since_log += 1

    # --- log
    if iter_num % log_interval == 0 or iter_num == first_iter + 1 or (stop_requested and not ddp):
        lossf, grad_normf, stop = read_step()
    # the first step compiles and warms up: it is not timed
    if iter_num == first_iter + 1:
        t0, iters_since_log = time.time(), 0
    if iter_num % log_interval == 0 and master:
        stats = {'iter': iter_num, 'loss': lossf, 'lr': lr, 'grad_norm': grad_normf, 'ms': None}
        speed = "first step (compile and warm-up): not timed"
        if iters_since_log > 0:
            # (read_step() waited for the device)
            dt = (time.time() - t0) / iters_since_log
            fwdbwd = batch_size * micro_steps
            mfu = raw_model.estimate_mfu(fwdbwd, dt, device_peak_flops(device, ptdtype))
            # per process, as MFU
            flops = f"{raw_model.flops_per_iter(fwdbwd) / dt / 1e12:.2f} TFLOP/s"
            if mfu is not None:
                flops = f"mfu {mfu * 100:.1f}%"
            speed = f"{dt * 1000:.1f} ms, {tokens_per_iter / dt:,.0f} tok/s, {flops}"
            stats.update(ms=dt * 1000, tokens_per_s=tokens_per_iter / dt, mfu=mfu)
        speed += f", {iter_num}/{max_iters}"
        if iters_since_log > 0:
            # (from the measured step time; evaluations come on top)
            speed += f", {duration((max_iters - iter_num) * dt)} left"
        print(f"iter {iter_num}: loss {lossf:.4f}, lr {lr:.2e}, norm {grad_normf:.2f}, {speed}")
        log_metrics(stats)
        if wandb_log:
            wandb.log(stats)
        t0, iters_since_log = time.time(), 0

    # --- stop (a signal): save what a resume needs, then exit
    if stop:
        why = "another process was asked to stop"
        if stop_requested:
            why = f"{stop_requested} received"
        if earlier_run and not evaluated:
            # the folder stays as this run found it
            if master:
                print(f"{why} at iter {iter_num}, before this run's first evaluation: nothing "
                      f"saved, {out_dir} still holds the earlier run", flush=True)
            break
        if master:
            print(f"{why}: saving at iter {iter_num}, then exiting", flush=True)
        # with always_save_checkpoint=False, ckpt.pt is the best model so far: keep it
        keep_best = not always_save_checkpoint and os.path.exists(ckpt_path)
        save(last_path if keep_best else ckpt_path)
        break

# Where the run ends: which iteration ckpt.pt holds, and what to do with it.
if master and ckpt_path in saved_at and not eval_only:
    held, val = saved_at[ckpt_path]
    what = "the latest state" if always_save_checkpoint else "the best val loss"
    if val is not None:
        what = f"val loss {val:.4f}, {what}"
    print(f"{ckpt_path} holds iter {held} ({what}); sample from it: "
          f"python sample.py --out_dir={shlex.quote(out_dir)}")
    if last_path in saved_at:
        print(f"{last_path} holds iter {saved_at[last_path][0]}, where the run stopped: "
              "--init_from=resume continues from there")
if ddp:
    # rank 0 may still be writing the checkpoint
    dist.barrier()
    # destroy_process_group(), the exit handlers, then status 0 without the interpreter's teardown
    end_distributed_run()
