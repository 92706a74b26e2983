# Goal: the loss of OpenAI's GPT-2 124M (gpt2) on OpenWebText, without training.
# Hardware: one GPU (or slowly, a CPU); run with
#   python train.py config/eval_gpt2.py
# Expected: train loss ~3.11, val loss ~3.12.
# Prepare the data first: python data/openwebtext/prepare.py
# Batch: 8 batch x 1024 block x 500 eval_iters = 4,096,000 tokens per split.

batch_size = 8
eval_iters = 500  # use more iterations to get a good estimate
eval_only = True
wandb_log = False
init_from = 'gpt2'
