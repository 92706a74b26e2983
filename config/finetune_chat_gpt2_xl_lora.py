# Goal: GPT-2 XL (1.5B) finetuned into an assistant on HuggingFaceTB/smol-smoltalk with LoRA
# (a rank-8 update of each block's matrices, plus the chat markers' two embedding rows) and
# activation recompute, then python sample.py --out_dir=out-chat-xl --chat=True
# Hardware: one GPU with 24 GB (not run yet: no GPU was at hand).
# Prepare the data first (README, Chat):
#   python data/chat/prepare.py --source=HuggingFaceTB/smol-smoltalk --name=smoltalk \
#       --tokenizer=gpt2 --max_tokens=1024
# Batch: 4 batch x 1024 block x 16 accum = 65,536 tokens/iter.
#
# GPU memory (bf16; computed as in config/finetune_shakespeare_lora.py, not measured):
#   frozen weights and LoRA updates, as there                                      ~ 3.4 GB
#   the embedding, trained on its two new rows: its gradient and AdamW's two
#   moments kept whole, 50,259 x 1,600 x 12 bytes                                   ~ 1.0 GB
#   activations with recompute, 4 sequences of 1024 at ~0.9 GB each                ~ 3.6 GB
#   in all ~8 GB, plus ~1 GB of CUDA context.

out_dir = 'out-chat-xl'
init_from = 'gpt2-xl'
dataset = 'smoltalk'
eval_interval = 250
eval_iters = 40
log_interval = 10
always_save_checkpoint = False

gradient_accumulation_steps = 16
batch_size = 4
block_size = 1024
dropout = 0.0

lora_rank = 8
lora_alpha = 16.0
recompute = True

learning_rate = 2e-4
max_iters = 2000
lr_decay_iters = 2000
min_lr = 2e-5
warmup_iters = 100
