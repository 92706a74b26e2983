"""
Benchmark one training step (forward, backward, optimizer), or generation with and without the
KV cache, on any device. The last line printed is one JSON object, for scripts to read.

    python bench.py --device=cpu --n_layer=2 --n_head=2 --n_embd=64 --block_size=64 --batch_size=4 --num_iters=5
    python bench.py --mode=generate --device=cpu

Training mode times num_iters steps after warmup_iters untimed ones (which also absorb
torch.compile), with the device synchronised before the clock starts and before it stops. It
reports ms/iter, tokens/s and MFU on a GPU whose peak is known; elsewhere (CPU, MPS, other GPUs)
achieved TFLOP/s instead. Data is random tokens unless --dataset names a prepared dataset.
profile=True runs the same steps under the PyTorch profiler and writes a trace for
chrome://tracing or ui.perfetto.dev (timings then include the profiler's overhead).

Generate mode builds the model with random weights, then samples max_new_tokens tokens with the
cache and with plain recomputation of the whole context from the same seed, num_runs times each,
and reports the median tokens/s of both and whether they produced identical tokens.
"""

import json
import os
import statistics
import time

import torch

import data
from model import GPT, GPTConfig, setup_device

# what to time
mode = 'train'  # 'train': one optimizer step per iteration; 'generate': cached vs plain sampling
# model: the defaults are the Shakespeare character model's shape
n_layer = 6
n_head = 6
n_embd = 384
block_size = 256  # tokens per sequence (train), context length (both)
vocab_size = 65  # with --dataset, the dataset's meta.pkl decides when it has one
bias = False
dropout = 0.0  # used by training steps; generation runs in eval mode, without it
# training step
dataset = ''  # '' = random tokens; else a prepared data/<name> (or a folder path), read like train.py
batch_size = 12  # sequences per step
learning_rate = 6e-4
warmup_iters = 3  # untimed steps first
num_iters = 10  # timed steps
profile = False  # write a PyTorch profiler trace of the timed steps
trace_file = 'bench_trace.json'
# generation
max_new_tokens = 250
prompt_length = 1  # random prompt tokens per sequence
num_sequences = 1  # sequences generated at once (the batch)
temperature = 1.0
top_k = 0  # 0 = off
num_runs = 5  # runs of each kind; the median is reported
# system
device = 'auto'  # auto, cpu, cuda, cuda:N or mps
dtype = 'auto'  # auto (bfloat16 or float16 on CUDA, float32 elsewhere), float32, bfloat16, float16
compile = False  # torch.compile the model (train mode)
seed = 1337

from configurator import configure  # noqa: E402
configure(globals())

if mode not in ('train', 'generate'):
    raise SystemExit(f"error: unknown mode {mode!r}: use --mode=train or --mode=generate")
for name in ('batch_size', 'block_size', 'vocab_size', 'num_iters', 'max_new_tokens', 'prompt_length', 'num_sequences', 'num_runs'):
    if globals()[name] < 1:
        raise SystemExit(f"error: --{name}={globals()[name]} must be at least 1")
if warmup_iters < 0 or top_k < 0 or temperature < 0:
    raise SystemExit("error: warmup_iters, top_k and temperature must not be negative")
device, device_type, ptdtype, ctx = setup_device(device, dtype)
torch.manual_seed(seed)


def synchronize():
    """Wait for the device to finish queued work, so the clock measures the work itself."""
    if device_type == 'cuda':
        torch.cuda.synchronize(device)
    elif device_type == 'mps':
        torch.mps.synchronize()


def build_model(vocab):
    return GPT(GPTConfig(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size,
                         vocab_size=vocab, bias=bias, dropout=dropout)).to(device)


def bench_train():
    vocab = vocab_size
    if dataset:
        meta = data.load_meta(dataset)
        if meta:
            vocab = meta['vocab_size']
        splits = data.open_dataset(dataset, block_size)
        splits['train'].vocab_size = vocab  # each batch is checked as it is read
        generator = torch.Generator().manual_seed(seed)
        get_batch = lambda: splits['train'].batch(batch_size, block_size, generator, device)  # noqa: E731
    else:
        x = torch.randint(vocab, (batch_size, block_size + 1), device=device)
        get_batch = lambda: (x[:, :-1], x[:, 1:])  # noqa: E731
    model = build_model(vocab)
    optimizer = model.configure_optimizers(0.1, learning_rate, (0.9, 0.95), device_type)
    scaler = torch.amp.GradScaler(device_type, enabled=ptdtype == torch.float16)
    raw_model = model
    if compile:
        model = torch.compile(model)
    print(f"{raw_model.get_num_params() / 1e6:.2f}M parameters, {batch_size} x {block_size} tokens per step "
          f"on {device} in {str(ptdtype).removeprefix('torch.')}")

    def step():
        X, Y = get_batch()
        with ctx:
            _, loss = model(X, Y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return loss

    for _ in range(warmup_iters):
        step()
    profiler = None
    if profile:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if device_type == 'cuda':
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        profiler = torch.profiler.profile(activities=activities, record_shapes=True)
        profiler.start()
    synchronize()
    t0 = time.perf_counter()
    for _ in range(num_iters):
        loss = step()
    synchronize()
    dt = (time.perf_counter() - t0) / num_iters
    if profiler:
        profiler.stop()
        profiler.export_chrome_trace(trace_file)
        if not os.path.isfile(trace_file):
            raise SystemExit(f"error: the profiler could not write {trace_file}; choose another --trace_file")
        print(f"profiler trace written to {trace_file}")
    tokens_per_s = batch_size * block_size / dt
    tflops = raw_model.flops_per_iter(batch_size) / dt / 1e12
    mfu = raw_model.estimate_mfu(batch_size, dt, ptdtype)
    speed = f"MFU {mfu * 100:.1f}%" if mfu is not None else f"{tflops:.3f} TFLOP/s achieved (no known peak for MFU)"
    print(f"loss {loss.item():.4f}, {dt * 1000:.2f} ms/iter, {tokens_per_s:,.0f} tokens/s, {speed}")
    return dict(params=raw_model.get_num_params(), batch_size=batch_size, block_size=block_size,
                num_iters=num_iters, ms_per_iter=dt * 1000, tokens_per_s=tokens_per_s, tflops=tflops,
                mfu=mfu, loss=loss.item(), profile=trace_file if profile else None)


def bench_generate():
    model = build_model(vocab_size).eval()
    prompt = torch.randint(vocab_size, (num_sequences, prompt_length), device=device)
    print(f"{model.get_num_params() / 1e6:.2f}M parameters, {num_sequences} x ({prompt_length} prompt + "
          f"{max_new_tokens} new) tokens on {device} in {str(ptdtype).removeprefix('torch.')}")
    if prompt_length + max_new_tokens > block_size:
        print(f"note: {prompt_length + max_new_tokens} tokens run past block_size {block_size}; "
              "from there on both ways recompute the whole window")

    def run(use_cache):
        generator = torch.Generator(device).manual_seed(seed)
        synchronize()
        t0 = time.perf_counter()
        with ctx:
            out = model.generate(prompt, max_new_tokens, temperature=temperature, top_k=top_k or None,
                                 use_cache=use_cache, generator=generator)
        synchronize()
        return out, num_sequences * max_new_tokens / (time.perf_counter() - t0)

    run(True), run(False)  # warm-up
    speeds, outputs = {True: [], False: []}, {True: [], False: []}
    for _ in range(num_runs):
        for use_cache in (True, False):
            out, tokens_per_s = run(use_cache)
            speeds[use_cache].append(tokens_per_s)
            outputs[use_cache].append(out)
    identical = all(torch.equal(out, outputs[True][0]) for out in outputs[True] + outputs[False])
    cached, plain = statistics.median(speeds[True]), statistics.median(speeds[False])
    print(f"cached: {cached:,.1f} tokens/s, plain: {plain:,.1f} tokens/s (medians of {num_runs}), "
          f"{cached / plain:.2f}x, identical tokens: {identical}")
    return dict(params=model.get_num_params(), num_sequences=num_sequences, prompt_length=prompt_length,
                max_new_tokens=max_new_tokens, num_runs=num_runs, cached_tokens_per_s=cached,
                plain_tokens_per_s=plain, speedup=cached / plain, identical=identical)


result = bench_train() if mode == 'train' else bench_generate()
print(json.dumps(dict(mode=mode, device=device, dtype=str(ptdtype).removeprefix('torch.'), **result)))
