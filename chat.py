"""
Talking to a chat model (one finetuned on data/chat/prepare.py's conversations): a Conversation
keeps the messages and their tokens, renders each new question with the chat template, and
streams the answer token by token until the model ends its turn. The KV cache carries over from
one turn to the next, so a turn reads only its own new tokens; when the history outgrows the
model's context, whole oldest turns are dropped (the system message stays).

    python sample.py --out_dir=out-chat --chat=True
    python sample.py --out_dir=out-chat --chat=True --start="What is the capital of France?"
"""

import sys

import torch

from errors import InputError
from model import KVCache, sample_next_token


class Conversation:

    def __init__(self, model, tokenizer, system=''):
        self.model, self.tokenizer = model, tokenizer
        self.system = [{'role': 'system', 'content': system}] if system else []
        # the turns so far (user, assistant, ...), and every token of the conversation
        self.turns, self.ids = [], []
        # the keys and values of self.ids[:cache.length]
        self.cache = None

    def ask(self, question, max_new_tokens, temperature=1.0, top_k=None, top_p=None,
            generator=None):
        """Yield the answer to question piece by piece, as text; the answer joins the history."""
        tok, block_size = self.tokenizer, self.model.config.block_size
        self.turns.append({'role': 'user', 'content': question})
        if self.ids:
            self.ids += tok.render(self.turns[-1:], add_generation_prompt=True)[0]
        else:
            self.ids = tok.render(self.system + self.turns, add_generation_prompt=True)[0]
        # leave the answer room: max_new_tokens, or half the context if that is less
        room = min(max_new_tokens, block_size // 2)
        while len(self.ids) + room > block_size and len(self.turns) > 1:
            # the oldest question and its answer go; the cache no longer matches the tokens
            self.turns = self.turns[2:]
            self.ids = tok.render(self.system + self.turns, add_generation_prompt=True)[0]
            self.cache = None
            print("note: the conversation outgrew the model's context: dropped the oldest turn",
                  file=sys.stderr)
        if len(self.ids) >= block_size:
            self.turns.pop()
            raise InputError(f"the question is {len(self.ids)} tokens with the history, more "
                             f"than the model's context of {block_size}: ask a shorter one")
        if self.cache is None:
            self.cache = KVCache(self.model.config)
        # answer: the tokens so far; pending: those not shown yet, held back while they end
        # inside a character (a character can span tokens)
        answer, pending = [], []
        stop = {tok.im_end, tok.eot}
        with torch.inference_mode():
            device = next(self.model.parameters()).device
            x = torch.tensor([self.ids[self.cache.length:]], dtype=torch.long, device=device)
            for _ in range(max_new_tokens):
                if self.cache.length + x.size(1) > block_size:
                    print("note: the answer was cut: the model's context is full", file=sys.stderr)
                    break
                logits, _ = self.model(x, cache=self.cache)
                logits = logits[:, -1, :]
                # never a padded row of the embedding, which no tokenizer decodes
                logits[:, tok.vocab_size:] = float('-inf')
                token = sample_next_token(logits, temperature, top_k, top_p, generator)
                self.ids.append(token.item())
                if self.ids[-1] in stop:
                    break
                answer.append(self.ids[-1])
                pending.append(self.ids[-1])
                piece = tok.decode(pending)
                if not piece.endswith('\ufffd'):
                    yield piece
                    pending = []
                x = token
        if pending:
            yield tok.decode(pending)
        text = tok.decode(answer)
        # the turn ends as the template ends it, however the model ended it
        if self.ids[-1] in stop:
            self.ids.pop()
        self.ids += [tok.im_end] + tok.encode('\n')
        self.turns.append({'role': 'assistant', 'content': text})
