"""
Sample text from a trained model: a checkpoint of train.py (or of nanoGPT), OpenAI's GPT-2, or a
GPT-2 directory written by transformers' save_pretrained. Settings below; see --help.

    python sample.py --out_dir=out-shakespeare-char --device=cpu \
        --num_samples=2 --max_new_tokens=100

A checkpoint decodes with its dataset's tokenizer: meta.pkl (characters) or tokenizer.json (a BPE
trained on the text); anything else uses the GPT-2 BPE (tiktoken). A prompt longer than the
model's block_size is cropped to its last block_size tokens, with a note: that is all the model
can read. The samples are generated together, in one batch (max_batch caps it), with the weights
cast to dtype; after them one line on stderr gives the tokens/s.

--chat=True talks to a chat model (finetuned on data/chat/prepare.py's conversations): each line of
standard input is a question, each answer is printed as it is generated, an empty line or the end
of the input ends it; with --start="question", the one answer alone (chat.py, README: Chat).

--export_hf=DIR writes the model and its tokenizer to DIR in transformers' GPT-2 format instead of
sampling, in float32 or --dtype=bfloat16/float16 (README, Exporting to Hugging Face).
"""

import os
import sys
import time
from contextlib import nullcontext

import torch

import data
from checkpoint import load_checkpoint, save_hf_directory
from cpu_generation import generation_layers
from devices import DTYPES, inference_dtype, setup_device
from errors import InputError
from model import GPT

init_from = 'resume'  # resume (out_dir/ckpt.pt), gpt2, gpt2-medium/-large/-xl or a transformers dir
out_dir = 'out'  # where train.py wrote ckpt.pt (with init_from='resume')
start = "\n"  # the prompt; "FILE:prompt.txt" reads it from a file
num_samples = 10  # samples to draw
max_batch = 0  # samples generated at once, at most (0 = all); lower it if memory runs short
max_new_tokens = 500  # tokens generated per sample
temperature = 0.8  # 1.0 = the model's distribution, lower = more predictable, 0 = greedy
top_k: int | None = 200  # keep only the k most likely tokens (0 or None = all)
top_p = None  # keep the smallest set of most likely tokens whose probability reaches p (None = all)
seed = 1337
device = 'auto'  # auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps
dtype = 'auto'  # the weights' dtype: auto (per device, see README), float32, bfloat16, float16
compile = False  # torch.compile the full forward pass (used past block_size), not the KV-cache step
export_hf = ''  # a directory: write model and tokenizer there in transformers' format and exit
overwrite = False  # with export_hf: replace a directory that is not empty
chat = False  # talk to a chat model: questions from standard input, or --start for one
system = ''  # with chat: the system message that opens the conversation

from configurator import configure  # noqa: E402

# (chat: the settings on stderr, so that stdout holds the answers alone)
configure(globals(), log=lambda settings: sys.stderr if settings['chat'] else sys.stdout)

if num_samples < 1 or max_new_tokens < 1:
    raise InputError(f"num_samples ({num_samples}) and max_new_tokens ({max_new_tokens}) "
                     "must be at least 1")
if not isinstance(max_batch, int) or max_batch < 0:
    raise InputError(f"max_batch={max_batch!r}: use a whole number of samples, "
                     "or 0 for all num_samples at once")
if temperature < 0:
    raise InputError(f"temperature={temperature} is negative: use 0 (greedy) or more")
if top_k is not None and (not isinstance(top_k, int) or top_k < 0):
    raise InputError(f"top_k={top_k!r}: use a whole number of tokens, or 0 or None for all")
if top_p is not None and (not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
    raise InputError(f"top_p={top_p!r}: use a probability in (0, 1], or None for all")
device, device_type, _, _ = setup_device(device, dtype)  # its autocast is for training
# Generation casts the weights themselves: autocast would cast every weight again at every token.
ptdtype = inference_dtype(device_type, dtype)

# the model
saved_tokenizer = None
if init_from == 'resume':
    checkpoint = load_checkpoint(os.path.join(out_dir, 'ckpt.pt'))  # to the CPU
    model = GPT.from_checkpoint(checkpoint)
    dataset = checkpoint.get('config', {}).get('dataset')
    saved_tokenizer = checkpoint.get('tokenizer')  # (absent in nanoGPT's checkpoints)
    loaded = f"loaded {os.path.join(out_dir, 'ckpt.pt')}: iter {checkpoint.get('iter_num', '?')}"
    best = checkpoint.get('best_val_loss')
    if isinstance(best, (float, int, torch.Tensor)):
        loaded += f", best val loss {float(best):.4f}"
    del checkpoint  # the optimizer state (twice the weights with AdamW) is not needed to sample
else:
    model = GPT.from_pretrained(init_from)
    dataset = None
    loaded = f"loaded {init_from} (GPT-2's format)"
# the tokenizer the model was trained with: the one its checkpoint holds, else its dataset's
# meta.pkl or tokenizer.json, an exported directory's tokenizer.json, else GPT-2's BPE
if dataset is None and os.path.isfile(os.path.join(init_from, 'tokenizer.json')):
    dataset = os.path.abspath(init_from)
if saved_tokenizer is not None:
    tokenizer = data.tokenizer_from_state(saved_tokenizer)
    data.check_vocab(tokenizer, None, model.config.vocab_size,
                     "the checkpoint is damaged; train again")
else:
    tokenizer = data.load_tokenizer(dataset, model_vocab_size=model.config.vocab_size)
c = model.config
# said on stderr once the inputs are checked: stdout holds the samples (or answers) alone
loaded += (f", {model.get_num_params() / 1e6:.2f}M parameters ({c.n_layer} layers, "
           f"{c.n_embd} wide, context {c.block_size}); tokens: "
           f"{tokenizer.describe(None if saved_tokenizer is not None else dataset)}")
if export_hf:
    # float32 unless a half precision is asked for explicitly
    # ('auto' picks for sampling, not for a file)
    save_hf_directory(model, export_hf, tokenizer.hf(model_max_length=model.config.block_size),
                      dtype=torch.float32 if dtype == 'auto' else DTYPES[dtype],
                      overwrite=overwrite)
    raise SystemExit(0)
model.eval().to(device=device, dtype=ptdtype)
if compile:
    model.compile()
# On a CPU, layers made for generation stand in while generating (not under compile, which
# cannot trace oneDNN's private ops).
swap = device_type == 'cpu' and not compile

if chat:
    from chat import Conversation
    if not isinstance(tokenizer, data.ChatTokenizer):
        raise InputError("--chat=True needs a chat model, one finetuned on a dataset of "
                         "data/chat/prepare.py (its checkpoint holds the chat markers)")
    conversation = Conversation(model, tokenizer, system)
    print(loaded, file=sys.stderr)
    generator = torch.Generator(device).manual_seed(seed)
    # one question from --start, or one per line of standard input until an empty one
    questions = [start] if start != '\n' else (line.rstrip('\n') for line in sys.stdin)
    with generation_layers(model) if swap else nullcontext():
        for question in questions:
            if not question.strip():
                break
            for piece in conversation.ask(question, max_new_tokens, temperature, top_k, top_p,
                                          generator):
                print(piece, end='', flush=True)
            print(flush=True)
    raise SystemExit(0)

# the prompt
if start.startswith('FILE:'):
    try:
        # as written: '\r\n' stays, as prepare.py keeps it
        with open(start[5:], encoding='utf-8', newline='') as f:
            start = f.read()
    except (OSError, UnicodeDecodeError) as e:
        reason = getattr(e, 'strerror', None) or e
        raise InputError(f"cannot read the prompt file {start[5:]!r} ({reason})")
start_ids = tokenizer.encode(start)
if not start_ids:
    raise InputError("the prompt is empty: give at least one character, e.g. --start='\\n'")
block_size = model.config.block_size
if len(start_ids) > block_size:
    print(f"note: the prompt is {len(start_ids)} tokens, longer than the model's block_size "
          f"{block_size}: keeping its last {block_size}")
    start_ids = start_ids[-block_size:]
x = torch.tensor(start_ids, dtype=torch.long, device=device)[None, ...]  # (1, T)
print(loaded, file=sys.stderr)

# All samples in one batch (or batches of max_batch): one token for each sample reads the weights
# once, as one token for one sample does. Every row draws its own tokens.
torch.manual_seed(seed)
batch = max_batch or num_samples
seconds = 0.0  # generation only, not decoding and printing
with generation_layers(model) if swap else nullcontext():
    for first in range(0, num_samples, batch):
        t0 = time.perf_counter()
        y = model.generate(x.expand(min(batch, num_samples - first), -1), max_new_tokens,
                           temperature=temperature, top_k=top_k, top_p=top_p)
        samples = y.tolist()  # waits for the device
        seconds += time.perf_counter() - t0
        for ids in samples:
            print(tokenizer.decode(ids))
            print('---------------')
n = num_samples * max_new_tokens
print(f"generated {n} tokens in {seconds:.2f} s ({n / seconds:,.1f} tokens/s, "
      f"dtype {str(ptdtype).removeprefix('torch.')}; "
      f"reading the {x.size(1)}-token prompt included)", file=sys.stderr)
