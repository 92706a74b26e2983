# Goal: GPT-2 (124M) finetuned into an assistant on HuggingFaceTB/smol-smoltalk, every weight
# trained, then
# python sample.py --out_dir=out-chat-gpt2 --chat=True
# Hardware: one GPU with 24 GB or more (not run yet: no GPU was at hand; gpt2-medium and larger
# need more memory, or FSDP over several GPUs).
# Prepare the data first (a download of the dataset through Hugging Face datasets):
#   python data/chat/prepare.py --source=HuggingFaceTB/smol-smoltalk --name=smoltalk \
#       --tokenizer=gpt2 --max_tokens=1024
# Batch: 8 batch x 1024 block x 8 accum = 65,536 tokens/iter, of which the answers' tokens are
# the targets.

out_dir = 'out-chat-gpt2'
init_from = 'gpt2'
dataset = 'smoltalk'
eval_interval = 250
eval_iters = 50
log_interval = 10
always_save_checkpoint = False

gradient_accumulation_steps = 8
batch_size = 8
block_size = 1024
dropout = 0.0

learning_rate = 5e-5
max_iters = 3000
lr_decay_iters = 3000
min_lr = 5e-6
warmup_iters = 100
