# Goal: train_shakespeare_char.py's baby GPT trained with Muon (the blocks' matrices) and AdamW
# (embeddings, gains, biases): the AdamW recipe's loss in fewer steps.
# Hardware: one GPU. On a CPU use train_shakespeare_char_cpu_muon.py.
# Expected: not measured yet (no GPU was available); the AdamW recipe reaches val ~1.47 at 5000.
#   Compare with: python train.py config/train_shakespeare_char.py
# Prepare the data first: python data/shakespeare_char/prepare.py
# Batch: 64 batch x 256 block x 1 accum = 16,384 tokens/iter.

out_dir = 'out-shakespeare-char-muon'
eval_interval = 250
eval_iters = 200
log_interval = 10
always_save_checkpoint = False  # keep the best model only

dataset = 'shakespeare_char'
gradient_accumulation_steps = 1
batch_size = 64
block_size = 256

# a baby GPT: 6 layers, 6 heads, 384 wide (10.7M parameters)
n_layer = 6
n_head = 6
n_embd = 384
dropout = 0.2

optimizer = 'muon'  # Muon for the blocks' matrices, AdamW for the rest
muon_lr = 0.02
learning_rate = 1e-3  # AdamW's, as the AdamW recipe
max_iters = 2500  # a guess (half the AdamW recipe's 5000), to be measured on a GPU
lr_decay_iters = 2500
min_lr = 1e-4
beta2 = 0.99
warmup_iters = 100
