# Goal: finetune OpenAI's GPT-2 XL (1.5B) on Shakespeare in the GPT-2 BPE on one 16 GB GPU, with
# LoRA (only a rank-8 update of each block's weight matrices trains) and activation recompute.
# Hardware: one GPU with 16 GB (or 12 GB with batch_size = 2, gradient_accumulation_steps = 16).
# Expected: the val loss falls below the base model's within 20 iterations (not measured on a GPU
#   yet); then python sample.py --out_dir=out-shakespeare-lora. The checkpoint holds the merged
#   weights under GPT-2's names: any GPT-2 tool reads it.
# Prepare the data first: python data/shakespeare/prepare.py
# Batch: 4 batch x 1024 block x 8 accum = 32,768 tokens/iter, as config/finetune_shakespeare.py.
#
# GPU memory (README: Finetuning on a small GPU; bf16, computed from the sizes below):
#   frozen weights: the blocks' matrices in bf16, 12 x 48 x 1600^2 = 1,475M x 2 bytes  =  2.95 GB
#                   the rest (embeddings, LayerNorms, biases) in fp32, 83M x 4 bytes   =  0.33 GB
#   LoRA updates:   r (in + out) = 8 x 16 x 1600 per block = 9.8M, x 16 bytes (fp32
#                   weight, gradient, AdamW's two moments)                              =  0.16 GB
#   activations, per sequence of 1024: each block's input kept (fp32), 48 x 4 x 1024 x 1600
#                   = 0.31 GB; one block's insides while it is recomputed, 36 x 1024 x 1600
#                   = 0.06 GB; the logits and the loss, ~10 x 1024 x 50304 = 0.52 GB    =  0.89 GB
#   4 sequences: 3.44 + 4 x 0.89 = ~7 GB, plus ~1 GB of CUDA context: room to spare in 16 GB.
#   Full finetuning needs ~18 bytes per parameter (fp32 weights, gradients, two moments and
#   autocast's bf16 copy): 28 GB before any activation.

import time

out_dir = 'out-shakespeare-lora'
eval_interval = 5
eval_iters = 40
wandb_log = False
wandb_project = 'shakespeare'
wandb_run_name = 'ft-lora-' + str(int(time.time()))

dataset = 'shakespeare'
init_from = 'gpt2-xl'  # the largest GPT-2, frozen

# keep only the best checkpoint: it overfits quickly
always_save_checkpoint = False

lora_rank = 8  # 9.8M trained parameters, 0.6% of the model
lora_alpha = 16.0  # updates scaled by alpha / r = 2
recompute = True

batch_size = 4
gradient_accumulation_steps = 8
max_iters = 20

# LoRA's updates start at zero and are few: a larger learning rate than full finetuning's
learning_rate = 2e-4
decay_lr = False
