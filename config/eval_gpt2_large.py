# Goal: the loss of OpenAI's GPT-2 774M (gpt2-large) on OpenWebText and its HellaSwag accuracy,
# without training.
# Hardware: one GPU (or slowly, a CPU); run with
#   python train.py config/eval_gpt2_large.py
# Expected: train loss ~2.66, val loss ~2.67.
#   HellaSwag: llm.c gives no reference figures for this size.
# Prepare the data first: python data/openwebtext/prepare.py and python data/hellaswag/prepare.py
# Batch: 8 batch x 1024 block x 500 eval_iters = 4,096,000 tokens per split.
# HellaSwag: batch_size / 4 = 2 examples (4 endings each, 8 rows) per forward pass.

batch_size = 8
eval_iters = 500  # use more iterations to get a good estimate
eval_only = True
wandb_log = False
eval_hellaswag = True  # also score the 10,042 HellaSwag validation examples
init_from = 'gpt2-large'
