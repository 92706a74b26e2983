# Goal: the CPU quick start's model and batch (train_shakespeare_char_cpu.py, nanoGPT's README CPU
# recipe) trained with Muon: its validation loss (~1.89 at 2000 AdamW iterations) in fewer steps.
# Hardware: any CPU (2 cores are enough).
# Expected: val 1.868 at iter 600 judged on 200 batches (AdamW: 1.888 at 2000; BENCHMARKS.md), then
#   python sample.py --out_dir=out-shakespeare-char-muon
# Prepare the data first: python data/shakespeare_char/prepare.py
# Batch: 12 batch x 64 block x 1 accum = 768 tokens/iter.

out_dir = 'out-shakespeare-char-muon'
eval_interval = 250
eval_iters = 20  # a rough estimate, as the AdamW recipe; judge the result with 200 (BENCHMARKS.md)
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
dropout = 0.0

optimizer = 'muon'  # Muon for the blocks' matrices, AdamW for the embeddings, gains and biases
muon_lr = 0.02
learning_rate = 1e-3  # AdamW's, as the AdamW recipe
max_iters = 600
lr_decay_iters = 600
min_lr = 1e-4
beta2 = 0.99
warmup_iters = 50

compile = False  # no speed-up for a model this small on a CPU (BENCHMARKS.md)
