# Goal: GPT-2 124M on OpenWebText as train_gpt2.py, with Muon for the blocks' matrices and AdamW
# for the embeddings, gains and biases. modded-nanogpt's records reach GPT-2's loss in ~1.5x fewer
# tokens with Muon than with AdamW; this config takes 2/3 of the AdamW iterations accordingly.
# Hardware: one node of 8 A100 40GB, launched with
#   torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2_muon.py
# Expected: not measured yet (no GPU was available); the AdamW run reaches val ~2.85.
# Prepare the data first: python data/openwebtext/prepare.py
# Batch: 12 batch x 1024 block x 40 accum = 491,520 tokens/iter;
# 400,000 iterations = ~197B tokens.

out_dir = 'out-gpt2-muon'
wandb_log = False  # --wandb_log=True to follow the run online
wandb_project = 'owt'
wandb_run_name = 'gpt2-124M-muon'

batch_size = 12
block_size = 1024
gradient_accumulation_steps = 5 * 8  # over all GPUs together: 5 per GPU on 8 GPUs

optimizer = 'muon'
muon_lr = 0.02
max_iters = 400000  # 2/3 of train_gpt2.py's 600,000: to be measured
lr_decay_iters = 400000

eval_interval = 1000
eval_iters = 200
log_interval = 10

weight_decay = 1e-1
