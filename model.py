"""
The whole GPT-2 language model in one file, plus the few helpers that every script shares
(device and precision setup, checkpoint saving and loading).

Read it top to bottom: LayerNorm -> attention -> MLP -> Block -> GPT. Try it on a CPU:

    python -c "import torch, model; m = model.GPT(model.GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=32)); print(m.generate(torch.zeros(1, 1, dtype=torch.long), 8))"

References: OpenAI's GPT-2 code (github.com/openai/gpt-2) and Hugging Face's GPT2LMHeadModel.

Errors a user can cause (an unknown model name, a corrupt checkpoint, a bad shape) raise
SystemExit with one line saying what is wrong and what to do: scripts stop without a
traceback, and tests can still catch them.
"""

import inspect
import json
import math
import os
import shutil
import tempfile
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, fields

import torch
import torch.nn as nn
from torch.nn import functional as F


# transformers' GPT-2 stores these Linear weights transposed (OpenAI's Conv1D module).
HF_TRANSPOSED = ('attn.c_attn.weight', 'attn.c_proj.weight', 'mlp.c_fc.weight', 'mlp.c_proj.weight')


@dataclass
class GPTConfig:
    block_size: int = 1024  # longest sequence the model can read (learned positions)
    vocab_size: int = 50304  # GPT-2's 50257 tokens, padded up to a multiple of 64 for speed
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # biases in Linear and LayerNorm layers, as GPT-2; False is a bit faster

    def __post_init__(self):
        if self.n_embd % self.n_head != 0:
            raise SystemExit(f"error: n_embd={self.n_embd} is not divisible by n_head={self.n_head}; "
                             "pick n_embd as a multiple of n_head (e.g. n_head=6, n_embd=384)")


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (PyTorch's has no bias=False before 2.1)."""

    eps = 1e-5  # GPT-2's

    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class CausalSelfAttention(nn.Module):
    # CausalSelfAttention.use_sdpa = False switches every layer (and forward_cached) to the plain
    # masked-softmax attention below: slower, easier to read.
    use_sdpa = True

    def __init__(self, config):
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        hs = C // self.n_head
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        y = self.attend(q, k, v, self.dropout if self.training else 0.0)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side
        return self.resid_dropout(self.c_proj(y))

    @classmethod
    def attend(cls, q, k, v, dropout_p=0.0):
        """q (B, nh, T, hs) are the last T of the Tk positions of k, v (B, nh, Tk, hs); each sees
        itself and what came before. Tk > T when earlier keys and values come from a KVCache."""
        # Two common cases need no mask tensor: the whole sequence at once (T == Tk, causal), and
        # one new token after the cached ones (T == 1, it sees them all: the decoding step).
        T, Tk = q.size(2), k.size(2)
        is_causal = T == Tk
        mask = None if is_causal or T == 1 else torch.ones(T, Tk, dtype=torch.bool, device=q.device).tril(Tk - T)
        if cls.use_sdpa:  # fused kernels (flash attention on GPUs)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal)
        if is_causal:
            mask = torch.ones(T, Tk, dtype=torch.bool, device=q.device).tril()
        att = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))  # (B, nh, T, Tk)
        if mask is not None:
            att = att.masked_fill(~mask, float('-inf'))
        att = F.dropout(att.softmax(dim=-1), dropout_p)
        return att @ v  # (B, nh, T, hs)


class MLP(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate='tanh')  # GPT-2's GELU, so OpenAI's weights give OpenAI's outputs
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class KVCache:
    """Keys and values of the tokens generated so far, for every layer, so that each new token
    attends to them instead of recomputing the whole context. Room for block_size tokens."""

    def __init__(self, config):
        self.n_layer, self.block_size = config.n_layer, config.block_size
        self.k = self.v = None  # (n_layer, B, nh, block_size, hs), allocated on first use
        self.length = 0  # tokens stored so far (the same for every layer)

    def update(self, layer, k, v):
        """Store the new tokens' k, v (B, nh, T, hs) of one layer; return that layer's k, v so far."""
        if self.k is None:
            B, nh, _, hs = k.shape
            self.k = k.new_empty(self.n_layer, B, nh, self.block_size, hs)
            self.v = v.new_empty(self.n_layer, B, nh, self.block_size, hs)
        end = self.length + k.size(2)
        self.k[layer, :, :, self.length:end] = k
        self.v[layer, :, :, self.length:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]


class GPT(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),  # token embeddings
            wpe=nn.Embedding(config.block_size, config.n_embd),  # position embeddings
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # Weight tying: the output layer reads tokens with the same matrix that embeds them.
        self.transformer.wte.weight = self.lm_head.weight
        self.apply(self._init_weights)
        # GPT-2 scales the residual projections by 1/sqrt(number of residual additions).
        for name, p in self.named_parameters():
            if name.endswith('c_proj.weight'):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def get_num_params(self, non_embedding=True):
        """Number of parameters. The position embeddings are left out by default: they do no
        multiplications. The token embeddings stay in: they are also the output layer."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    def forward(self, idx, targets=None):
        """idx (B, T) token ids -> (logits, loss). With targets (B, T): logits for every position
        and the mean cross-entropy (targets of -1 are ignored). Without: logits of the last
        position only, (B, 1, vocab)."""
        B, T = idx.size()
        if T > self.config.block_size:
            raise ValueError(f"sequence of {T} tokens is longer than block_size {self.config.block_size}: "
                             f"crop it to the last {self.config.block_size} tokens")
        pos = torch.arange(0, T, dtype=torch.long, device=idx.device)  # (T,)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)  # (B, T, C)
        if targets is None:
            return self.lm_head(x[:, -1:, :]), None  # (B, 1, vocab): all that generation needs
        logits = self.lm_head(x)  # (B, T, vocab)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def forward_cached(self, idx, cache, weights=None):
        """forward() for generation with a KVCache: idx (B, T) are the tokens after the
        cache.length ones it holds. Stores their keys and values; returns the logits of the last
        one, (B, vocab). Eval mode only (no dropout). weights: the model's inference_weights(), if
        the caller has them already.

        The arithmetic is forward()'s, step for step (the tests check they agree), written with
        functions of the weights instead of module calls: one token at a time on a CPU, the
        Python cost of ~80 module calls and as many attribute lookups through modules per token
        is as large as the arithmetic of a small model (BENCHMARKS.md, Generation). A change to
        a Block's arithmetic must be made here too: the tests compare the two."""
        B, T = idx.size()
        C, nh = self.config.n_embd, self.config.n_head
        start, end = cache.length, cache.length + T
        if end > self.config.block_size:
            raise ValueError(f"{start} cached + {T} new tokens is longer than block_size {self.config.block_size}: "
                             "start a new KVCache with the last block_size tokens")
        w = weights or self.inference_weights()
        packed = w.get('packed', False)
        x = F.embedding(idx, w['transformer.wte.weight']) + w['transformer.wpe.weight'][start:end]  # (B, T, C)
        for i in range(self.config.n_layer):
            p = f'transformer.h.{i}.'  # the Block's parameter names, as in the state dict
            # x = x + attn(ln_1(x))
            h = F.layer_norm(x, (C,), w[p + 'ln_1.weight'], w.get(p + 'ln_1.bias'), LayerNorm.eps)  # (B, T, C)
            qkv = linear(h, w[p + 'attn.c_attn.weight'], w.get(p + 'attn.c_attn.bias'), packed)  # (B, T, 3C)
            # forward()'s split + 3 views + 3 transposes in 3 operations (~6% of a step here):
            # (B, T, 3C) -> (B, T, 3, nh, hs) -> (3, B, nh, T, hs) -> q, k, v each (B, nh, T, hs)
            q, k, v = qkv.view(B, T, 3, nh, C // nh).permute(2, 0, 3, 1, 4).unbind(0)
            k, v = cache.update(i, k, v)  # (B, nh, end, hs): the cached tokens' and these
            y = CausalSelfAttention.attend(q, k, v)  # (B, nh, T, hs)
            y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
            x = x + linear(y, w[p + 'attn.c_proj.weight'], w.get(p + 'attn.c_proj.bias'), packed)
            # x = x + mlp(ln_2(x))
            h = F.layer_norm(x, (C,), w[p + 'ln_2.weight'], w.get(p + 'ln_2.bias'), LayerNorm.eps)  # (B, T, C)
            h = linear(h, w[p + 'mlp.c_fc.weight'], w.get(p + 'mlp.c_fc.bias'), packed)  # (B, T, 4C)
            h = F.gelu(h, approximate='tanh')
            x = x + linear(h, w[p + 'mlp.c_proj.weight'], w.get(p + 'mlp.c_proj.bias'), packed)
        cache.length = end
        x = x[:, -1, :]  # (B, C): only the last position's logits are needed
        x = F.layer_norm(x, (C,), w['transformer.ln_f.weight'], w.get('transformer.ln_f.bias'), LayerNorm.eps)
        return linear(x, w['lm_head.weight'], None, packed)  # (B, vocab)

    def inference_weights(self):
        """Every parameter by its state dict name (the tied lm_head.weight included), for
        forward_cached. On a CPU in bfloat16, the linear layers' matrices come as copies repacked
        once into oneDNN's blocked layout, with 'packed': True for linear() below: one token's
        step then reads them at about memory speed, 1.4x the tokens/s of F.linear for GPT-2 124M
        (BENCHMARKS.md, Inference dtype), for a second copy of those weights in memory."""
        w = dict(self.named_parameters(remove_duplicate=False))
        if can_pack(w['lm_head.weight']):
            for name, p in w.items():
                if p.dim() == 2 and not name.startswith(('transformer.wte.', 'transformer.wpe.')):  # (embeddings are looked up)
                    w[name] = torch.ops.mkldnn._reorder_linear_weight(p.detach(), 1)  # laid out for one row at a time
            w['packed'] = True
        return w

    def crop_block_size(self, block_size):
        """Shrink the context length, e.g. to finetune GPT-2 (1024) with a shorter block_size."""
        if block_size > self.config.block_size:
            raise SystemExit(f"error: cannot grow block_size from {self.config.block_size} to {block_size}: "
                             "learned positions beyond the model's context do not exist")
        self.config.block_size = block_size
        self.transformer.wpe.weight = nn.Parameter(self.transformer.wpe.weight[:block_size])

    @classmethod
    def from_pretrained(cls, name_or_path, override_args=None):
        """OpenAI's GPT-2 ('gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl') from the Hugging Face
        hub, or any GPT-2 directory written by transformers' save_pretrained."""
        override_args = override_args or {}
        if set(override_args) - {'dropout'}:
            raise SystemExit(f"error: from_pretrained can only override dropout, not {sorted(set(override_args) - {'dropout'})}")
        names = ('gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl')
        if os.path.isdir(name_or_path):
            config_file = os.path.join(name_or_path, 'config.json')
            model_type = None
            if os.path.isfile(config_file):
                with open(config_file) as f:
                    model_type = json.load(f).get('model_type')
            if model_type != 'gpt2':
                raise SystemExit(f"error: {name_or_path} is not a GPT-2 checkpoint (its config.json has "
                                 f"model_type={model_type!r}); pass a directory saved by GPT2LMHeadModel.save_pretrained")
        elif name_or_path not in names:
            raise SystemExit(f"error: unknown model {name_or_path!r}: use one of {', '.join(names)} "
                             "or a local directory saved with transformers' save_pretrained")
        from transformers import GPT2LMHeadModel  # lazy: only needed here
        try:
            hf = GPT2LMHeadModel.from_pretrained(name_or_path)
        except OSError as e:
            raise SystemExit(f"error: could not load {name_or_path!r} ({str(e).splitlines()[0]}); without internet, "
                             "pass a directory saved with save_pretrained instead")
        c = hf.config
        # What this GPT implements: GPT-2's activation, MLP width, LayerNorm epsilon and tied embeddings.
        unsupported = {k: v for k, v, ok in [
            ('activation_function', c.activation_function, c.activation_function in ('gelu_new', 'gelu_pytorch_tanh')),
            ('n_inner', c.n_inner, c.n_inner in (None, 4 * c.n_embd)),
            ('layer_norm_epsilon', c.layer_norm_epsilon, c.layer_norm_epsilon == 1e-5),
            ('tie_word_embeddings', c.tie_word_embeddings, c.tie_word_embeddings),
            ('scale_attn_by_inverse_layer_idx', c.scale_attn_by_inverse_layer_idx, not c.scale_attn_by_inverse_layer_idx),
        ] if not ok}
        if unsupported:
            raise SystemExit(f"error: {name_or_path} is a GPT-2 variant this model does not implement ({unsupported}); "
                             "only GPT-2's own architecture loads")
        # The attention masks are buffers, not weights; ours are built on the fly.
        sd_hf = {k: v for k, v in hf.state_dict().items() if not k.endswith(('.attn.bias', '.attn.masked_bias'))}
        # save_pretrained writes a model trained with bias=False with zero biases (transformers' GPT-2
        # always has them); a zero bias is no bias, so such a directory loads back as bias=False.
        bias = any(v.any() for k, v in sd_hf.items() if k.endswith('.bias'))
        if not bias:
            sd_hf = {k: v for k, v in sd_hf.items() if not k.endswith('.bias')}
        config = GPTConfig(block_size=c.n_positions, vocab_size=c.vocab_size, n_layer=c.n_layer,
                           n_head=c.n_head, n_embd=c.n_embd, bias=bias, dropout=override_args.get('dropout', 0.0))
        print(f"loading weights of {name_or_path}: {c.n_layer} layers, {c.n_head} heads, {c.n_embd} wide, "
              f"context {c.n_positions}, vocab {c.vocab_size}{'' if bias else ', every bias zero (bias=False)'}")
        model = GPT(config)
        sd = model.state_dict()
        if set(sd_hf) != set(sd):
            raise SystemExit(f"error: {name_or_path} does not have GPT-2's weights (unexpected: "
                             f"{sorted(set(sd_hf) - set(sd))[:3]}, missing: {sorted(set(sd) - set(sd_hf))[:3]})")
        with torch.no_grad():
            for k, v in sd_hf.items():
                sd[k].copy_(v.t() if k.endswith(HF_TRANSPOSED) else v)
        return model

    def save_pretrained(self, path, dtype=torch.float32, tokenizer=None, overwrite=False):
        """The inverse of from_pretrained: write path as a transformers GPT-2 directory
        (config.json, generation_config.json, model.safetensors and, when given, the tokenizer's
        files), which GPT2LMHeadModel.from_pretrained, pipeline('text-generation') and
        GPT.from_pretrained read. tokenizer: a transformers tokenizer (data.hf_tokenizer). A
        vocabulary padded past the tokenizer's (GPT-2's 50257 to 50304) is cut back to it: those
        ids are never targets and no other logit depends on them. Everything is written to a
        temporary directory first, so a failure leaves path as it was."""
        path = os.path.normpath(path)  # no trailing slash
        if os.path.exists(path) and not os.path.isdir(path):
            raise SystemExit(f"error: {path} is a file, not a directory: choose another --export_hf")
        if os.path.isdir(path) and os.listdir(path) and not overwrite:
            raise SystemExit(f"error: {path} exists and is not empty: choose another directory, "
                             "or --overwrite=True to replace it")
        from safetensors.torch import save_file  # lazy: transformers' dependencies, only needed here
        from transformers import GenerationConfig, GPT2Config
        c = self.config
        vocab_size = len(tokenizer) if tokenizer is not None else c.vocab_size
        if vocab_size > c.vocab_size:
            raise SystemExit(f"error: the tokenizer has {vocab_size} tokens but the model only {c.vocab_size}: "
                             "export the model with the tokenizer it was trained with")
        if self.lm_head.weight is not self.transformer.wte.weight:
            raise SystemExit("error: lm_head is not tied to the token embeddings, which GPT-2's format requires")
        # Our state dict in transformers' names and layout: Conv1D matrices transposed, no separate
        # lm_head (tied to wte), the padded vocabulary cut, a zero bias wherever we have none.
        sd = {}
        for k, v in self.state_dict().items():
            if k == 'lm_head.weight':
                continue
            v = v.detach().to('cpu', dtype)
            if k.endswith(HF_TRANSPOSED):
                v = v.t()
            if k == 'transformer.wte.weight':
                v = v[:vocab_size]
            sd[k] = v.contiguous()
        for name, module in self.transformer.named_modules():
            if isinstance(module, (nn.Linear, LayerNorm)) and module.bias is None:
                sd[f'transformer.{name}.bias'] = torch.zeros(module.weight.size(0), dtype=dtype)
        if tokenizer is not None:
            bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        else:  # GPT-2's <|endoftext|>, if the vocabulary has it
            bos = eos = 50256 if vocab_size > 50256 else None
        # Exactly the architecture from_pretrained accepts: GPT-2's tanh GELU, MLP width and epsilon.
        config = GPT2Config(vocab_size=vocab_size, n_positions=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer,
                            n_head=c.n_head, n_inner=None, activation_function='gelu_new', layer_norm_epsilon=LayerNorm.eps,
                            resid_pdrop=c.dropout, embd_pdrop=c.dropout, attn_pdrop=c.dropout,
                            tie_word_embeddings=True, dtype=str(dtype).removeprefix('torch.'),
                            bos_token_id=bos, eos_token_id=eos)
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(os.path.abspath(path))}.', dir=parent)
        old = tmp + '.old' if os.path.isdir(path) and os.listdir(path) else None  # replaced (overwrite=True)
        try:
            save_file(sd, os.path.join(tmp, 'model.safetensors'), metadata={'format': 'pt'})
            config.save_pretrained(tmp)
            GenerationConfig.from_model_config(config).save_pretrained(tmp)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
                # transformers 5 names the class TokenizersBackend, which transformers 4 (still pinned by
                # other tools) does not know; both versions load PreTrainedTokenizerFast.
                with open(os.path.join(tmp, 'tokenizer_config.json')) as f:
                    tokenizer_config = json.load(f)
                if tokenizer_config.get('tokenizer_class') == 'TokenizersBackend':
                    tokenizer_config['tokenizer_class'] = 'PreTrainedTokenizerFast'
                    with open(os.path.join(tmp, 'tokenizer_config.json'), 'w') as f:
                        json.dump(tokenizer_config, f, indent=2)
            # mkdtemp's directory and safetensors' file are private (0o700, 0o600): give them the
            # permissions of a directory and files made as usual, for sharing or uploading
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o777 & ~umask)
            for name in os.listdir(tmp):
                os.chmod(os.path.join(tmp, name), 0o666 & ~umask)
            if old is not None:
                os.replace(path, old)
            os.replace(tmp, path)  # an empty directory is replaced as it is
        except BaseException as e:
            if old is not None and os.path.isdir(old):
                os.replace(old, path)
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(e, OSError):
                raise SystemExit(f"error: cannot write {e.filename or path} ({e.strerror}); "
                                 "check the free disk space, or write elsewhere")
            raise
        if old is not None:
            shutil.rmtree(old)
        size = os.path.getsize(os.path.join(path, 'model.safetensors'))
        print(f"wrote {path}: GPT-2 format, {c.n_layer} layers, {c.n_head} heads, {c.n_embd} wide, context "
              f"{c.block_size}, vocab {vocab_size}, {str(dtype).removeprefix('torch.')} weights ({size / 1e6:.1f} MB)"
              f"{'' if tokenizer is not None else ', no tokenizer'}")

    @classmethod
    def from_checkpoint(cls, checkpoint, override_args=None):
        """Rebuild the model saved in a checkpoint dict (ours or nanoGPT's; see load_checkpoint)."""
        known = {f.name for f in fields(GPTConfig)}
        model_args = {k: v for k, v in checkpoint['model_args'].items() if k in known}
        model_args.update(override_args or {})
        model = GPT(GPTConfig(**model_args))
        # nanoGPT saves the torch.compile wrapper's state dict, whose keys start with '_orig_mod.'.
        state_dict = {k.removeprefix('_orig_mod.'): v for k, v in checkpoint['model'].items()}
        try:
            model.load_state_dict(state_dict)
        except RuntimeError as e:
            raise SystemExit(f"error: checkpoint weights do not match its model_args ({str(e).splitlines()[1].strip()})")
        for name, p in model.named_parameters():
            if not torch.isfinite(p).all():
                raise SystemExit(f"error: the checkpoint's {name} holds NaN or inf values (the run diverged, or "
                                 "the file is damaged): resume from another checkpoint or train again")
        return model

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type, muon=None):
        """AdamW for every parameter (nanoGPT's optimizer), or with muon=dict(lr=, momentum=,
        weight_decay=): Muon for the 2-D weight matrices inside the blocks and AdamW for the rest
        (the embeddings, tied with the output layer, LayerNorm gains and biases), as modded-nanogpt
        and nanochat split them. Muon orthogonalises each matrix's update, which suits the blocks'
        matrices; the embeddings are lookup tables, not linear maps, so they stay with AdamW."""
        named = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        to_muon = [p for n, p in named if muon is not None and n.startswith('transformer.h.') and p.dim() == 2]
        in_muon = set(map(id, to_muon))
        rest = [p for n, p in named if id(p) not in in_muon]
        # Decay matrices (weights, embeddings); leave biases and LayerNorm gains alone.
        groups = [{'params': [p for p in rest if p.dim() >= 2], 'weight_decay': weight_decay},
                  {'params': [p for p in rest if p.dim() < 2], 'weight_decay': 0.0}]
        # The fused kernel does the whole update in one launch: faster on CUDA.
        fused = device_type == 'cuda' and 'fused' in inspect.signature(torch.optim.AdamW).parameters
        adamw = torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **({'fused': True} if fused else {}))
        if muon is None:
            return adamw
        if not hasattr(torch.optim, 'Muon'):
            raise SystemExit(f"error: optimizer='muon' needs torch.optim.Muon, new in torch 2.9 (this is torch "
                             f"{torch.__version__}): upgrade torch, or use --optimizer=adamw")
        # 'muon': True marks these groups for train.py's schedule, which scales them to muon['lr'].
        # torch.optim.Muon: SGD with Nesterov momentum whose update of each matrix is orthogonalised
        # (Newton-Schulz), its lr scaled by sqrt(max(1, rows / cols)), decoupled weight decay.
        return MuonAdamW(torch.optim.Muon([{'params': to_muon, 'muon': True}], lr=muon['lr'],
                                          momentum=muon['momentum'], weight_decay=muon['weight_decay']), adamw)

    def flops_per_iter(self, fwdbwd_per_iter):
        """Floating-point operations of fwdbwd_per_iter forward+backward passes of block_size
        tokens (PaLM paper, appendix B): 6 per parameter per token, plus attention."""
        N = self.get_num_params()
        L, H, Q, T = self.config.n_layer, self.config.n_head, self.config.n_embd // self.config.n_head, self.config.block_size
        flops_per_token = 6 * N + 12 * L * H * Q * T
        return flops_per_token * T * fwdbwd_per_iter

    def estimate_mfu(self, fwdbwd_per_iter, dt, dtype=torch.bfloat16):
        """Model FLOPs utilisation: achieved FLOP/s over the peak of the GPU in use, as a fraction.
        Returns None on a CPU, MPS or a GPU missing from PEAK_TFLOPS: there is no honest peak to
        divide by, so report achieved FLOP/s (flops_per_iter / dt) instead."""
        device = next(self.parameters()).device
        if device.type != 'cuda':
            return None
        peak = peak_flops(torch.cuda.get_device_name(device), dtype)
        return None if peak is None else self.flops_per_iter(fwdbwd_per_iter) / dt / peak

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, use_cache=True, generator=None):
        """Continue idx (B, T) by max_new_tokens tokens; each one conditions on the last block_size
        tokens, as the model was trained. temperature 0 is greedy; top_k keeps the k most likely
        tokens, top_p the smallest set whose probability reaches p (both off when None).
        use_cache=False recomputes the whole context for every token (the simple reference), as
        does a model in training mode (the cached path has no dropout: call model.eval() first)."""
        block_size = self.config.block_size
        use_cache = use_cache and not self.training
        cache = weights = None
        finite = True  # whether every step's logits were finite; read once at the end, not per token
        for _ in range(max_new_tokens):
            # inference_mode: no_grad, and no autograd version counters either (~7% faster per token
            # on a CPU). Only the new token leaves it, joining idx as an ordinary tensor.
            with torch.inference_mode():
                T = idx.size(1)
                if use_cache and T <= block_size:
                    if cache is None:  # prefill: read the whole prompt once
                        cache, weights = KVCache(self.config), self.inference_weights()
                        logits = self.forward_cached(idx, cache, weights)
                    else:  # one token, attending to the cached keys and values
                        logits = self.forward_cached(idx[:, -1:], cache, weights)
                else:
                    # Past block_size the window slides: every token would sit at a new position, and
                    # learned absolute position embeddings change every cached key and value. So the
                    # cache cannot slide with it; recompute the window, exactly as the plain path does.
                    logits = self(idx[:, -block_size:])[0][:, -1, :]
                finite = torch.isfinite(logits).all() & finite
                next_token = sample_next_token(logits, temperature, top_k, top_p, generator)
            idx = torch.cat((idx, next_token), dim=1)
        if not finite:  # NaN or inf logits sample garbage tokens
            raise SystemExit("error: the model's logits held NaN or inf values: its weights are broken, or "
                             "the dtype overflowed (float16?): try --dtype=float32 or bfloat16")
        return idx


class MuonAdamW:
    """Two optimizers stepped as one: Muon for the blocks' matrices, AdamW for the rest. It has
    what train.py and GradScaler use of an optimizer: param_groups (both optimizers' groups, so
    one loop sets every lr), step, zero_grad, state_dict and load_state_dict. The state dict holds
    both states, {'muon': ..., 'adamw': ...}."""

    def __init__(self, muon, adamw):
        self.muon, self.adamw = muon, adamw
        self.param_groups = muon.param_groups + adamw.param_groups

    def step(self):
        self.muon.step()
        self.adamw.step()

    def zero_grad(self, set_to_none=True):
        self.muon.zero_grad(set_to_none=set_to_none)
        self.adamw.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return {'muon': self.muon.state_dict(), 'adamw': self.adamw.state_dict()}

    def load_state_dict(self, state_dict):
        self.muon.load_state_dict(state_dict['muon'])
        self.adamw.load_state_dict(state_dict['adamw'])
        # load_state_dict replaces the group dicts: point at the new ones
        self.param_groups = self.muon.param_groups + self.adamw.param_groups


def can_pack(weight):
    """Whether inference_weights repacks weights like this one for oneDNN: bfloat16 on a CPU that
    oneDNN computes bfloat16 on, with torch's (private) oneDNN linear ops present."""
    ops, names = torch.ops.mkldnn, ('_reorder_linear_weight', '_linear_pointwise', '_is_mkldnn_bf16_supported')
    return (weight.device.type == 'cpu' and weight.dtype == torch.bfloat16 and torch.backends.mkldnn.is_available()
            and all(hasattr(ops, name) for name in names) and ops._is_mkldnn_bf16_supported())


def linear(x, weight, bias, packed=False):
    """F.linear(x, weight, bias); with packed, weight is a copy repacked by inference_weights, and
    oneDNN's linear multiplies by it."""
    if packed:
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, 'none', [], '')
    return F.linear(x, weight, bias)


def sample_next_token(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """Draw one token per row of logits (B, vocab) -> (B, 1)."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)  # greedy
    logits = logits.float() / temperature
    if top_k:  # exactly the k most likely tokens, ties at the k-th value included or not by index
        values, indices = torch.topk(logits, min(top_k, logits.size(-1)))
        logits = torch.full_like(logits, float('-inf')).scatter(1, indices, values)
    if top_p is not None and top_p < 1.0:
        sorted_logits, indices = torch.sort(logits, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # Drop a token when the more likely ones already reach top_p; the most likely always stays.
        drop = probs.cumsum(dim=-1) - probs >= top_p
        drop[:, 0] = False
        sorted_logits = sorted_logits.masked_fill(drop, float('-inf'))
        logits = torch.full_like(logits, float('-inf')).scatter(1, indices, sorted_logits)
    # An exponential race: token i wins with probability probs[i]. It is what torch.multinomial
    # computes for one sample (same generator, same tokens: tested), minus its input checks, which
    # wait for the device and cost ~2% of a cached generation step of a small model on a CPU
    # (generate checks that the logits were finite once, at the end).
    probs = logits.softmax(dim=-1)
    return (probs / torch.empty_like(probs).exponential_(generator=generator)).argmax(dim=-1, keepdim=True)


# ---------------------------------------------------------------------------------------------
# Helpers shared by train.py, sample.py, bench.py and the tests.

# Dense peak TFLOP/s from the vendors' datasheets: (bf16/fp16 tensor cores, fp32 as TF32).
# Matched against torch.cuda.get_device_name() word for word (see peak_flops).
PEAK_TFLOPS = [
    ('H100 PCIe', 756, 378), ('H100 NVL', 835, 418), ('H100', 989, 495), ('H200 NVL', 835, 418), ('H200', 989, 495),
    ('GH200', 989, 495), ('B200', 2250, 1100), ('A100', 312, 156), ('L40S', 362, 183),
    ('L40', 181, 90.5), ('L4', 121, 60), ('A10G', 70, 35), ('A10', 125, 62.5), ('RTX 4090', 165, 83),
    ('RTX 3090', 71, 36), ('V100', 125, 15.7), ('T4', 65, 8.1),
]


def peak_flops(device_name, dtype):
    """Peak FLOP/s of a GPU for a compute dtype, or None if the card is not in PEAK_TFLOPS. A
    table entry matches whole words of the name ('NVIDIA A100-SXM4-80GB' is an A100; 'NVIDIA
    L40S' is not an L40 and 'NVIDIA L40' is not an L4), the entry with the most words first
    ('NVIDIA H100 NVL' is not the SXM 'H100')."""
    words = device_name.replace('-', ' ').split()
    if 'MIG' in words:  # a slice of a GPU: its share of the peak is not known here
        return None
    for name, half, fp32 in sorted(PEAK_TFLOPS, key=lambda entry: -len(entry[0].split())):
        n = len(name.split())
        if any(words[i:i + n] == name.split() for i in range(len(words))):
            return (fp32 if dtype == torch.float32 else half) * 1e12
    return None


DTYPES = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}


def setup_device(device='auto', dtype='auto', local_rank=None):
    """Resolve 'auto' and check what was asked for. Returns (device, device_type, ptdtype, ctx):
    ctx is the autocast context for forward passes (a no-op in float32). local_rank: this
    process's index on its node under torchrun; on CUDA it picks (and makes current) GPU
    local_rank, or the only GPU a process sees (srun --gpus-per-task=1)."""
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'mps' if torch.backends.mps.is_available() else 'cpu'
    try:
        device_type = torch.device(device).type
    except RuntimeError:
        raise SystemExit(f"error: unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps")
    if device_type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit(f"error: device {device!r} asked for, but this PyTorch sees no CUDA GPU; use --device=cpu")
    if device_type == 'mps' and not torch.backends.mps.is_available():
        raise SystemExit(f"error: device {device!r} asked for, but MPS is not available here; use --device=cpu")
    if device_type not in ('cpu', 'cuda', 'mps'):
        raise SystemExit(f"error: device {device!r} is not supported: use auto, cpu, cuda, cuda:N or mps")
    if device_type == 'cuda':
        if local_rank is not None:
            count = torch.cuda.device_count()
            if torch.device(device).index is not None:
                raise SystemExit(f"error: --device={device} under torchrun, where each process takes the GPU of its "
                                 "local rank: use --device=cuda, and CUDA_VISIBLE_DEVICES to choose the GPUs")
            if count > 1 and local_rank >= count:
                raise SystemExit(f"error: local rank {local_rank}, but this process sees only {count} GPUs: start "
                                 f"at most {count} processes per node (torchrun --nproc_per_node={count})")
            device = f'cuda:{0 if count == 1 else local_rank}'  # one GPU visible: srun --gpus-per-task=1
        if torch.device(device).index is not None:
            # Before anything touches the GPU: otherwise every process opens a context on GPU 0.
            torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True  # float32 matmuls on tensor cores (the MFU peak
        torch.backends.cudnn.allow_tf32 = True  # for float32 assumes TF32)
    if dtype == 'auto':
        dtype = ('bfloat16' if cuda_has_bf16() else 'float16') if device_type == 'cuda' else 'float32'
    if dtype not in DTYPES:
        raise SystemExit(f"error: unknown dtype {dtype!r}: use auto, float32, bfloat16 or float16")
    if dtype == 'bfloat16' and device_type == 'cuda' and not torch.cuda.is_bf16_supported():
        raise SystemExit("error: this GPU has no bfloat16; use --dtype=float16 (with loss scaling) or float32")
    ptdtype = DTYPES[dtype]
    ctx = nullcontext() if ptdtype == torch.float32 else torch.amp.autocast(device_type=device_type, dtype=ptdtype)
    return device, device_type, ptdtype, ctx


def cuda_has_bf16():
    """Whether the current GPU computes in bfloat16 natively (Ampere and newer). V100 and T4 only
    emulate it, slowly, and torch.cuda.is_bf16_supported() counts that unless told not to."""
    return torch.cuda.is_bf16_supported(including_emulation=False)  # (the argument: torch >= 2.4)


def inference_dtype(device_type, dtype='auto'):
    """The dtype to cast the weights to for generation (model.to(dtype)), instead of autocast,
    which casts every weight again at every step. 'auto' picks, per device, the fastest dtype
    that stays accurate (BENCHMARKS.md, Generation): generating one token reads every weight once,
    so half the bytes can mean up to twice the tokens/s.
    - cuda: bfloat16 (float32's range, so nothing overflows), float16 where bfloat16 is not native.
    - cpu: bfloat16 where the CPU multiplies it natively (AVX512-BF16), else float32: on an Intel
      Xeon with it, bfloat16 was at least as fast as float32 and float16 the slowest.
    - mps: float32, not measured."""
    if dtype != 'auto':
        return DTYPES[dtype]  # setup_device has checked the name
    if device_type == 'cuda':
        return torch.bfloat16 if cuda_has_bf16() else torch.float16
    if device_type == 'cpu' and getattr(torch.cpu, '_is_avx512_bf16_supported', lambda: False)():  # (a private torch function)
        return torch.bfloat16
    return torch.float32


# FSDP (train.py --fsdp=True under torchrun): each process keeps 1/N of every parameter, gradient
# and optimizer state, and gathers one block's whole weights only while it computes that block.

def shard_model(model, device_type, dtype, world_size):
    """Shard the model over the processes with FSDP2, in place: each Block on its own, then the
    rest (the embeddings, tied with the output layer, and the last LayerNorm). The weights move to
    the device shard by shard, so the whole model never needs to fit there. On CUDA in bfloat16,
    the weights are gathered in bfloat16 (half the traffic; the residual stream then runs in
    bfloat16 too, as in torchtitan) and gradients are reduced in float32. In float16 the weights
    are gathered in float32 and autocast casts them, as under DDP: a float16 residual stream
    could overflow."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    mesh = init_device_mesh(device_type, (world_size,))
    bf16 = device_type == 'cuda' and dtype == torch.bfloat16
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else MixedPrecisionPolicy()
    for block in model.transformer.h:
        fully_shard(block, mesh=mesh, mp_policy=mp)
    fully_shard(model, mesh=mesh, mp_policy=mp)


def gather_state(state, keep):
    """A model or optimizer state dict with FSDP's shards (DTensors) gathered whole to the CPU, as
    one process would have saved it. Every process must call it, in step (each gather is a
    collective); those with keep=False get None. Tied weights stay one tensor."""
    from torch.distributed.tensor import DTensor
    gathered = {}  # id of a shard -> its whole tensor

    def gather(value):
        if isinstance(value, DTensor):
            if id(value) not in gathered:
                whole = value.detach().full_tensor()
                gathered[id(value)] = whole.cpu() if keep else None
            return gathered[id(value)]
        if isinstance(value, dict):
            return {k: gather(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(gather(v) for v in value)
        return value
    state = gather(state)
    return state if keep else None


def shard_optimizer_state(state_dict, optimizer):
    """The reverse for an optimizer: a whole state dict (from any checkpoint: FSDP, DDP, one
    process, nanoGPT) cut to this process's shards of the optimizer's FSDP parameters, for
    optimizer.load_state_dict. Every process holds the whole checkpoint, so no communication."""
    from torch.distributed.tensor import DTensor, distribute_tensor
    if isinstance(optimizer, MuonAdamW):
        return {name: shard_optimizer_state(state_dict[name], getattr(optimizer, name)) for name in ('muon', 'adamw')}
    params = [p for group in optimizer.param_groups for p in group['params']]  # in state_dict's numbering
    state = {}
    for i, param_state in state_dict['state'].items():
        p = params[i]
        state[i] = {k: distribute_tensor(v.to(p.dtype), p.device_mesh, p.placements, src_data_rank=None)
                    if isinstance(p, DTensor) and torch.is_tensor(v) and v.shape == p.shape else v
                    for k, v in param_state.items()}
    return {**state_dict, 'state': state}


def save_checkpoint(checkpoint, path):
    """Write atomically: a temporary file, flushed to disk, then renamed over the old one, so a
    crash at any moment leaves either the old checkpoint or the new one, never half of one."""
    tmp = path + '.tmp'
    with open(tmp, 'wb') as f:
        torch.save(checkpoint, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path):
    """Load a checkpoint dict written by save_checkpoint (or by nanoGPT) without unpickling code.
    Everything lands in CPU memory: the caller moves the model (and the optimizer's load_state_dict
    its state) to the device, RNG states must stay CPU tensors, and a GPU never holds two copies."""
    if not os.path.isfile(path):
        raise SystemExit(f"error: no checkpoint at {path}: check --out_dir, or train one first with train.py")
    try:
        with warnings.catch_warnings():  # a damaged file also makes torch warn; the one line below says it all
            warnings.simplefilter('ignore')
            # mmap: the file's pages are read as needed and shared by the processes of a node
            checkpoint = torch.load(path, map_location='cpu', weights_only=True, mmap=True)
    except Exception as e:
        raise SystemExit(f"error: {path} is not a readable checkpoint ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:120]}); restore a good copy or start again")
    missing = [k for k in ('model', 'model_args') if not isinstance(checkpoint, dict) or k not in checkpoint]
    if missing:
        raise SystemExit(f"error: {path} is not a training checkpoint (no {', '.join(missing)})")
    return checkpoint
