# Goal: reproduce GPT-2 124M on OpenWebText.
# Hardware: one node of 8 A100 40GB (about 4 days), launched with
#   torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2.py
# Expected: val loss ~2.85 (OpenAI's GPT-2 124M reaches ~3.12 on OpenWebText without finetuning).
# Prepare the data first: python data/openwebtext/prepare.py
# Batch: 12 batch x 1024 block x 40 accum = 491,520 tokens/iter (~0.5M, as GPT-2);
# 600,000 iterations = ~295B tokens.

wandb_log = False  # --wandb_log=True to follow the run online
wandb_project = 'owt'
wandb_run_name = 'gpt2-124M'

batch_size = 12
block_size = 1024
gradient_accumulation_steps = 5 * 8  # over all GPUs together: 5 per GPU on 8 GPUs

max_iters = 600000
lr_decay_iters = 600000

eval_interval = 1000
eval_iters = 200
log_interval = 10

weight_decay = 1e-1
