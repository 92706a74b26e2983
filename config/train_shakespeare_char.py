# Goal: a small character-level GPT that writes Shakespeare-like text, nanoGPT's classic demo.
# Hardware: one GPU (about 3 minutes on an A100). On a CPU use train_shakespeare_char_cpu.py.
# Expected: val loss ~1.47 at iter 5000 (nanoGPT's figure), then sample with
#   python sample.py --out_dir=out-shakespeare-char
# Prepare the data first: python data/shakespeare_char/prepare.py
# Batch: 64 batch x 256 block x 1 accum = 16,384 tokens/iter.

out_dir = 'out-shakespeare-char'
eval_interval = 250  # small data, so evaluate often; it overfits after a while
eval_iters = 200
log_interval = 10
always_save_checkpoint = False  # keep the best model only

wandb_log = False
wandb_project = 'shakespeare-char'
wandb_run_name = 'mini-gpt'

dataset = 'shakespeare_char'
gradient_accumulation_steps = 1
batch_size = 64
block_size = 256  # 256 characters of context

# a baby GPT: 6 layers, 6 heads, 384 wide (10.7M parameters)
n_layer = 6
n_head = 6
n_embd = 384
dropout = 0.2

learning_rate = 1e-3  # a small model can take a larger rate
max_iters = 5000
lr_decay_iters = 5000  # = max_iters
min_lr = 1e-4  # = learning_rate / 10
beta2 = 0.99  # a little larger: few tokens per iteration
warmup_iters = 100
