"""
A small conversation set for the chat demo on a CPU, made here (no download): questions about
the capitals of 40 countries, asked in several ways, with or without a system message, some of
them two turns long, each answered in one sentence. Writes data/chat/demo.jsonl; then

    python data/chat/prepare.py --source=data/chat/demo.jsonl --name=chat_demo --tokenizer=bpe \\
        --vocab_size=1024 --max_tokens=128
    python train.py config/finetune_chat_cpu.py
    python sample.py --out_dir=out-chat-demo --chat=True --start="What is the capital of Peru?"
"""

import json
import os
import random

CAPITALS = {
    'France': 'Paris', 'Germany': 'Berlin', 'Italy': 'Rome', 'Spain': 'Madrid',
    'Portugal': 'Lisbon', 'Greece': 'Athens', 'Poland': 'Warsaw', 'Austria': 'Vienna',
    'Sweden': 'Stockholm', 'Norway': 'Oslo', 'Finland': 'Helsinki', 'Denmark': 'Copenhagen',
    'Ireland': 'Dublin', 'Hungary': 'Budapest', 'Egypt': 'Cairo', 'Kenya': 'Nairobi',
    'Nigeria': 'Abuja', 'Ghana': 'Accra', 'Morocco': 'Rabat', 'Ethiopia': 'Addis Ababa',
    'Japan': 'Tokyo', 'China': 'Beijing', 'India': 'New Delhi', 'Thailand': 'Bangkok',
    'Vietnam': 'Hanoi', 'Indonesia': 'Jakarta', 'Turkey': 'Ankara', 'Iran': 'Tehran',
    'Canada': 'Ottawa', 'Mexico': 'Mexico City', 'Brazil': 'Brasilia', 'Peru': 'Lima',
    'Chile': 'Santiago', 'Argentina': 'Buenos Aires', 'Colombia': 'Bogota', 'Cuba': 'Havana',
    'Australia': 'Canberra', 'New Zealand': 'Wellington', 'Russia': 'Moscow', 'Ukraine': 'Kyiv',
}
QUESTIONS = ["What is the capital of {}?", "what's the capital of {}", "Which city is the capital "
             "of {}?", "Tell me the capital of {}.", "Capital of {}?", "Do you know the capital of "
             "{}?", "{}: what is its capital?", "I wonder what the capital of {} is."]
ANSWERS = ["The capital of {} is {}.", "{1} is the capital of {0}.", "It is {1}."]
SYSTEMS = ["You are a helpful assistant.", "Answer in one sentence.", "You know geography well."]

random.seed(1337)
rows = []
for _ in range(3000):
    country = random.choice(list(CAPITALS))
    messages = []
    if random.random() < 0.3:
        messages.append({'role': 'system', 'content': random.choice(SYSTEMS)})
    messages += [{'role': 'user', 'content': random.choice(QUESTIONS).format(country)},
                 {'role': 'assistant',
                  'content': random.choice(ANSWERS).format(country, CAPITALS[country])}]
    if random.random() < 0.3:
        other = random.choice(list(CAPITALS))
        messages += [{'role': 'user', 'content': f"And {other}?"},
                     {'role': 'assistant', 'content': f"The capital of {other} is "
                                                      f"{CAPITALS[other]}."}]
    rows.append({'messages': messages})
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'demo.jsonl')
with open(path, 'w', encoding='utf-8') as f:
    for row in rows:
        f.write(json.dumps(row) + '\n')
print(f"wrote {len(rows):,} conversations to {path}")
print("next, make tokens of them: python data/chat/prepare.py --source=data/chat/demo.jsonl "
      "--name=chat_demo --tokenizer=bpe --vocab_size=1024 --max_tokens=128")

# python data/chat/demo.py
# wrote 3,000 conversations to .../data/chat/demo.jsonl
# next, make tokens of them: python data/chat/prepare.py --source=data/chat/demo.jsonl ...
