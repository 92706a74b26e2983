# Goal: finetune OpenAI's GPT-2 XL (1.5B) on Shakespeare in the GPT-2 BPE.
# Hardware: one GPU with ~30 GB or more (an A100 40GB: a few minutes). Smaller GPUs: pick a smaller
# init_from (roughly gpt2-large ~16 GB, gpt2-medium ~8 GB, gpt2 ~4 GB at this batch size; README),
# or shard it over several:
#   torchrun --standalone --nproc_per_node=4 train.py config/finetune_shakespeare.py --fsdp=True
# Expected: val loss ~3.3 or below within 20 iterations (the best checkpoint is kept), then
#   python sample.py --out_dir=out-shakespeare
# Prepare the data first: python data/shakespeare/prepare.py
# Batch: 1 batch x 1024 block x 32 accum = 32,768 tokens/iter; 301,966 train tokens,
# so one epoch is ~9.2 iterations.

import time

out_dir = 'out-shakespeare'
eval_interval = 5
eval_iters = 40
wandb_log = False
wandb_project = 'shakespeare'
wandb_run_name = 'ft-' + str(int(time.time()))

dataset = 'shakespeare'
init_from = 'gpt2-xl'  # the largest GPT-2

# keep only the best checkpoint: it overfits quickly
always_save_checkpoint = False

batch_size = 1
gradient_accumulation_steps = 32
max_iters = 20

# finetune at a small, constant learning rate
learning_rate = 3e-5
decay_lr = False
