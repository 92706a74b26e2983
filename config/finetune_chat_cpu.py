# Goal: the chat demo on a CPU: a small GPT trained from scratch on data/chat/demo.py's
# conversations (capitals of 40 countries, asked in several ways), then talked to with
# python sample.py --out_dir=out-chat-demo --chat=True
# Hardware: a laptop CPU, a few minutes (BENCHMARKS.md, Chat).
# Expected: val loss over the answers' tokens well under 0.5; answers naming the right capital.
# Prepare the data first (README, Chat):
#   python data/chat/demo.py
#   python data/chat/prepare.py --source=data/chat/demo.jsonl --name=chat_demo --tokenizer=bpe \
#       --vocab_size=1024 --max_tokens=128
# Batch: 16 batch x 128 block x 1 accum = 2,048 tokens/iter.

out_dir = 'out-chat-demo'
dataset = 'chat_demo'
eval_interval = 250
eval_iters = 20
log_interval = 50
always_save_checkpoint = False

gradient_accumulation_steps = 1
batch_size = 16
block_size = 128

n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0

learning_rate = 2e-3
max_iters = 1500
lr_decay_iters = 1500
min_lr = 2e-4
beta2 = 0.99
warmup_iters = 100

device = 'cpu'
compile = False
