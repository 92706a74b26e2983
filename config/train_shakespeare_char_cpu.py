# Goal: the quick start. A tiny character-level GPT trained on a laptop CPU in a few minutes.
# Hardware: any CPU (2 cores are enough); also fine on MPS or a GPU, just small.
# Expected: val loss ~1.88 at iter 2000 (nanoGPT's README CPU recipe, which this is), then
#   python sample.py --out_dir=out-shakespeare-char
# Prepare the data first: python data/shakespeare_char/prepare.py
# Batch: 12 batch x 64 block x 1 accum = 768 tokens/iter.

out_dir = 'out-shakespeare-char'
eval_interval = 250
eval_iters = 20  # a rough estimate is enough, and cheap
log_interval = 50
always_save_checkpoint = False

dataset = 'shakespeare_char'
gradient_accumulation_steps = 1
batch_size = 12
block_size = 64

# 4 layers, 4 heads, 128 wide (0.8M parameters)
n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0  # too small to overfit in 2000 steps

learning_rate = 1e-3
max_iters = 2000
lr_decay_iters = 2000
min_lr = 1e-4
beta2 = 0.99
warmup_iters = 100

compile = False  # no speed-up for a model this small on a CPU (BENCHMARKS.md)
