"""
Benchmark one training step (forward, backward, optimizer), or generation with and without the
KV cache, on any device. The last line printed is one JSON object, for scripts to read.

    python bench.py --device=cpu --n_layer=2 --n_head=2 --n_embd=64 --block_size=64 \
        --batch_size=4 --num_iters=5
    python bench.py --mode=generate --device=cpu

Training mode times num_iters steps after warmup_iters untimed ones (which also absorb
torch.compile), with the device synchronised before the clock starts and before it stops. It
reports ms/iter, tokens/s and MFU on a GPU whose peak is known; elsewhere (CPU, MPS, other GPUs)
achieved TFLOP/s instead. Data is random tokens unless --dataset names a prepared dataset.
profile=True runs the same steps under the PyTorch profiler and writes a trace for
chrome://tracing or ui.perfetto.dev (timings then include the profiler's overhead).

Generate mode builds the model with random weights cast to the inference dtype (as sample.py
does), then samples max_new_tokens tokens with the cache and with plain recomputation of the whole
context from the same seed, num_runs times each, and reports the median tokens/s of both and
whether they produced identical tokens. Beside them, the memory-bandwidth floor it measures: the
bytes of weights one cached step reads, and the tokens/s if reading them once were all a step did.
hf=True also times transformers' GPT-2 generate on the same weights, in float32, bfloat16 and
float16, in the same run. GPT-2 124M's shape, greedy, as in BENCHMARKS.md:

    python bench.py --mode=generate --device=cpu --gpt2_shape=True --temperature=0 \
        --max_new_tokens=200 --hf=True --plain=False
"""

import copy
import json
import os
import statistics
import time
from contextlib import nullcontext

import torch

import data
from cpu_generation import generation_layers
from devices import device_peak_flops, inference_dtype, setup_device
from model import GPT, GPTConfig

# what to time
mode = 'train'  # 'train': one optimizer step per iteration; 'generate': cached vs plain sampling
# model: the defaults are the Shakespeare character model's shape
n_layer = 6
n_head = 6
n_embd = 384
block_size = 256  # tokens per sequence (train), context length (both)
vocab_size = 65  # with --dataset, the dataset's meta.pkl or tokenizer.json decides when it has one
bias = False
dropout = 0.0  # used by training steps; generation runs in eval mode, without it
gpt2_shape = False  # True: GPT-2 124M: 12 layers, 12 heads, 768 wide, block 1024, vocab 50257, bias
# training step
dataset = ''  # '' = random tokens; else a prepared data/<name> (or a folder), read like train.py
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
plain = True  # also time the plain recompute (False skips it: slow for a large model)
hf = False  # also time transformers' GPT-2 generate on our weights (float32, bfloat16, float16)
# system
device = 'auto'  # auto, cpu, cuda, cuda:N or mps
dtype = 'auto'  # train: autocast dtype, auto = bfloat16 or float16 on CUDA, float32 elsewhere;
#                 generate: the weights' dtype, auto = per device as sample.py (README);
#                 or float32, bfloat16, float16
compile = False  # torch.compile the model (train mode)
seed = 1337

from configurator import configure  # noqa: E402

configure(globals())
if gpt2_shape:
    n_layer, n_head, n_embd, block_size, vocab_size, bias = 12, 12, 768, 1024, 50257, True

if mode not in ('train', 'generate'):
    raise SystemExit(f"error: unknown mode {mode!r}: use --mode=train or --mode=generate")
for name in ('batch_size', 'block_size', 'vocab_size', 'num_iters', 'max_new_tokens',
             'prompt_length', 'num_sequences', 'num_runs'):
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
        tokenizer = data.load_tokenizer(dataset)
        if tokenizer.own:  # meta.pkl or tokenizer.json
            vocab = tokenizer.vocab_size
        splits = data.open_dataset(dataset, block_size)
        splits['train'].vocab_size = vocab  # each batch is checked as it is read
        generator = torch.Generator().manual_seed(seed)

        def get_batch():
            return splits['train'].batch(batch_size, block_size, generator, device)
    else:
        x = torch.randint(vocab, (batch_size, block_size + 1), device=device)

        def get_batch():
            return x[:, :-1], x[:, 1:]
    model = build_model(vocab)
    optimizer = model.configure_optimizers(0.1, learning_rate, (0.9, 0.95), device_type)
    scaler = torch.amp.GradScaler(device_type, enabled=ptdtype == torch.float16)
    raw_model = model
    if compile:
        model = torch.compile(model)
    print(f"{raw_model.get_num_params() / 1e6:.2f}M parameters, "
          f"{batch_size} x {block_size} tokens per step "
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
            raise SystemExit(f"error: the profiler could not write {trace_file}; "
                             "choose another --trace_file")
        print(f"profiler trace written to {trace_file}")
    tokens_per_s = batch_size * block_size / dt
    tflops = raw_model.flops_per_iter(batch_size) / dt / 1e12
    mfu = raw_model.estimate_mfu(batch_size, dt, device_peak_flops(device, ptdtype))
    if mfu is not None:
        speed = f"MFU {mfu * 100:.1f}%"
    else:
        speed = f"{tflops:.3f} TFLOP/s achieved (no known peak for MFU)"
    print(f"loss {loss.item():.4f}, {dt * 1000:.2f} ms/iter, {tokens_per_s:,.0f} tokens/s, {speed}")
    return dict(dtype=str(ptdtype).removeprefix('torch.'), params=raw_model.get_num_params(),
                batch_size=batch_size, block_size=block_size, num_iters=num_iters,
                ms_per_iter=dt * 1000, tokens_per_s=tokens_per_s, tflops=tflops,
                mfu=mfu, loss=loss.item(), profile=trace_file if profile else None)


def weights_floor(model):
    """The memory-bandwidth floor of a cached generation step: the bytes of weights it reads (every
    parameter once, of the position embeddings one row) and the median time to read them once."""
    tensors = [p.detach() for name, p in model.named_parameters()
               if name != 'transformer.wpe.weight']
    tensors.append(model.transformer.wpe.weight.detach()[0])  # one position's row per step
    nbytes = sum(p.numel() * p.element_size() for p in tensors)

    def read_once():
        for p in tensors:
            # Summed as float32 whatever the dtype: a bfloat16 or float16 sum converts every
            # element and can run slower than the memory; this runs at the same speed per byte
            # for all three.
            b = p.reshape(-1).view(torch.uint8)
            b[:b.numel() // 4 * 4].view(torch.float32).sum()

    read_once()  # warm-up
    times = []
    for _ in range(max(num_runs, 5)):
        synchronize()
        t0 = time.perf_counter()
        read_once()
        synchronize()
        times.append(time.perf_counter() - t0)
    return nbytes, statistics.median(times)


def hf_runners(model, prompt):
    """transformers' GPT-2 generate on the same weights (ours, exported with save_pretrained, whose
    export is tested against transformers' outputs; no download), greedy or sampled like ours, one
    model per dtype. Returns {name: run}, each run() -> (tokens, tokens/s), to be timed alongside
    ours."""
    import tempfile  # lazy, as transformers: only needed here

    from transformers import GPT2LMHeadModel
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        hf_model = GPT2LMHeadModel.from_pretrained(tmp)
    kw = dict(max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, pad_token_id=0,
              attention_mask=torch.ones_like(prompt))
    if temperature == 0:
        kw.update(do_sample=False)
    else:
        kw.update(do_sample=True, temperature=temperature, top_k=top_k)  # top_k=0: off, as ours

    def runner(m):
        def run():
            synchronize()
            t0 = time.perf_counter()
            with torch.no_grad():
                out = m.generate(prompt, **kw)
            synchronize()
            return out, num_sequences * max_new_tokens / (time.perf_counter() - t0)
        return run

    dtypes = (('float32', torch.float32), ('bfloat16', torch.bfloat16), ('float16', torch.float16))
    return {name: runner(copy.deepcopy(hf_model).to(device=device, dtype=dt).eval())
            for name, dt in dtypes}


def bench_generate():
    model = build_model(vocab_size).eval()
    prompt = torch.randint(vocab_size, (num_sequences, prompt_length), device=device)
    hf_runs = hf_runners(model, prompt) if hf else {}
    # float32 greedy tokens first, to count how many the inference dtype keeps
    reference = model.generate(prompt, max_new_tokens, temperature=0) if temperature == 0 else None
    ptdtype = inference_dtype(device_type, dtype)
    model.to(ptdtype)  # generation casts the weights, as sample.py does; no autocast
    print(f"{model.get_num_params() / 1e6:.2f}M parameters, "
          f"{num_sequences} x ({prompt_length} prompt + {max_new_tokens} new) tokens "
          f"on {device} with {str(ptdtype).removeprefix('torch.')} weights")
    if prompt_length + max_new_tokens > block_size:
        print(f"note: {prompt_length + max_new_tokens} tokens run past block_size {block_size}; "
              "from there on both ways recompute the whole window")

    def ours(use_cache):
        def run():
            generator = torch.Generator(device).manual_seed(seed)
            synchronize()
            t0 = time.perf_counter()
            # the cached path on a CPU with layers made for generation, as sample.py generates
            swap = use_cache and device_type == 'cpu'
            with generation_layers(model) if swap else nullcontext():
                out = model.generate(prompt, max_new_tokens, temperature=temperature,
                                     top_k=top_k or None, use_cache=use_cache, generator=generator)
            synchronize()
            return out, num_sequences * max_new_tokens / (time.perf_counter() - t0)
        return run

    runs = {'cached': ours(True), **({'plain': ours(False)} if plain else {}),
            **{'transformers ' + k: r for k, r in hf_runs.items()}}
    for run in runs.values():  # warm-up
        run()
    speeds, outputs = {k: [] for k in runs}, {k: [] for k in runs}
    for _ in range(num_runs):  # interleaved: each round runs every kind once
        for name, run in runs.items():
            out, tokens_per_s = run()
            speeds[name].append(tokens_per_s)
            outputs[name].append(out)
    medians = {name: statistics.median(s) for name, s in speeds.items()}
    identical = all(torch.equal(out, outputs['cached'][0])
                    for out in outputs['cached'] + outputs.get('plain', []))
    cached, plain_speed = medians['cached'], medians.get('plain')
    if plain:
        print(f"cached: {cached:,.1f} tokens/s, plain: {plain_speed:,.1f} tokens/s "
              f"(medians of {num_runs}), {cached / plain_speed:.2f}x, "
              f"identical tokens: {identical}")
    else:
        print(f"cached: {cached:,.1f} tokens/s (median of {num_runs}), "
              f"identical tokens in every run: {identical}")
    # One cached step reads every weight once, for the whole batch: the floor is per step.
    nbytes, read_s = weights_floor(model)
    floor = num_sequences / read_s
    print(f"memory-bandwidth floor: {nbytes / 1e6:,.1f} MB of weights per step, "
          f"read once in {read_s * 1000:.2f} ms ({nbytes / read_s / 1e9:.1f} GB/s): "
          f"{floor:,.1f} tokens/s; cached runs at 1/{floor / cached:.2f} of it")
    agree = None
    if reference is not None:
        agree = (outputs['cached'][0] == reference)[:, prompt_length:].float().mean().item()
        print(f"greedy tokens equal to float32's: {agree * 100:.1f}%")
    for name in hf_runs:
        same = ""
        if reference is not None:
            equal = torch.equal(outputs['transformers ' + name][0], reference)
            same = f", tokens equal to ours in float32: {equal}"
        print(f"transformers {name}: {medians['transformers ' + name]:,.1f} tokens/s; "
              f"ours (cached) is {cached / medians['transformers ' + name]:.2f}x that{same}")
    return dict(params=model.get_num_params(), num_sequences=num_sequences,
                prompt_length=prompt_length, max_new_tokens=max_new_tokens, num_runs=num_runs,
                dtype=str(ptdtype).removeprefix('torch.'),
                cached_tokens_per_s=cached, plain_tokens_per_s=plain_speed,
                speedup=cached / plain_speed if plain else None, identical=identical,
                weight_bytes=nbytes, floor_tokens_per_s=floor, floor_ratio=floor / cached,
                greedy_agreement_with_float32=agree,
                hf_tokens_per_s={name: medians['transformers ' + name] for name in hf_runs} or None)


result = bench_train() if mode == 'train' else bench_generate()
print(json.dumps(dict(mode=mode, device=device, **result)))
