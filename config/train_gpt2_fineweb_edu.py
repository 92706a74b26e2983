# Goal: reproduce GPT-2 124M on 10B tokens of FineWeb-Edu, the recipe of llm.c and build-nanogpt
# (the GPT-3 paper's settings for a model of this size).
# Hardware: one node of 8 A100/H100 GPUs, launched with
#   torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2_fineweb_edu.py
# Expected (published, not reproduced here): llm.c's run of this recipe on FineWeb 10B (8x A100
# 80GB, ~90 minutes; github.com/karpathy/llm.c/discussions/481) reached HellaSwag 29.9% against
# OpenAI's GPT-2 124M's 29.4%, and a FineWeb validation loss of ~3.28. FineWeb-Edu, the educational
# part of FineWeb, is what build-nanogpt then trained the same settings on.
# Prepare the data first: python data/fineweb_edu/prepare.py, and python data/hellaswag/prepare.py
# Batch: 16 batch x 1024 block x 32 accum = 524,288 tokens/iter (2^19, ~0.5M, as GPT-3 124M);
# 19,073 iterations = 10.0B tokens, one pass over sample-10BT.

wandb_log = False  # --wandb_log=True to follow the run online
wandb_project = 'fineweb-edu'
wandb_run_name = 'gpt2-124M-10B'

dataset = 'fineweb_edu'
batch_size = 16  # per process; 64 fits an 80 GB GPU (then --gradient_accumulation_steps=8)
block_size = 1024
gradient_accumulation_steps = 4 * 8  # over all GPUs together: 4 per GPU on 8 GPUs

learning_rate = 6e-4  # GPT-3 124M's
min_lr = 6e-5  # build-nanogpt's 10% floor (llm.c decays to 0)
warmup_iters = 715  # build-nanogpt's (llm.c: 700); 375M tokens, as GPT-3
max_iters = 19073
lr_decay_iters = 19073
weight_decay = 0.1
beta2 = 0.95

eval_interval = 250
eval_iters = 40  # 40 x 16 x 1024 x 8 GPUs: ~5M validation tokens per evaluation
log_interval = 10
eval_hellaswag = True  # 10,042 examples at every evaluation, split over the processes
