# Goal: the loss of OpenAI's GPT-2 1558M (gpt2-xl) on OpenWebText, without training.
# Hardware: one GPU (or slowly, a CPU); run with
#   python train.py config/eval_gpt2_xl.py
# Expected: train loss ~2.56, val loss ~2.54.
# Prepare the data first: python data/openwebtext/prepare.py
# Batch: 8 batch x 1024 block x 500 eval_iters = 4,096,000 tokens per split.

batch_size = 8
eval_iters = 500  # use more iterations to get a good estimate
eval_only = True
wandb_log = False
init_from = 'gpt2-xl'
