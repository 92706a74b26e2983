"""
GPT-2 in one file, read top to bottom: the config, attention, the MLP, the Block that joins them,
and the GPT: one forward for training, evaluation and generation (with a KV cache), sampling,
OpenAI's weights in and out through transformers' format, the optimizer and MFU. On a CPU:

    python -c "import torch, model; m = model.GPT(model.GPTConfig(n_layer=2, n_head=2, \
n_embd=64, block_size=32)); print(m.generate(torch.zeros(1, 1, dtype=torch.long), 8))"

References: OpenAI's GPT-2 code (github.com/openai/gpt-2) and Hugging Face's GPT2LMHeadModel.
Options attach from outside, as swapped layers: LoRA (lora.py), repacked weights for generation
on a CPU (cpu_generation.py). Errors a user can cause (an unknown model name, a
bad shape, broken weights) raise errors.InputError with one line saying what to do.
"""

import inspect
import json
import math
import os
from dataclasses import dataclass, fields

import torch
import torch.nn as nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from errors import InputError


@dataclass
class GPTConfig:
    # the longest sequence the model can read (its learned positions)
    block_size: int = 1024
    # GPT-2's 50257 tokens, padded up to a multiple of 64 for speed
    vocab_size: int = 50304
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    # biases in Linear and LayerNorm layers, as GPT-2; False is a bit faster
    bias: bool = True

    def __post_init__(self):
        for name in ('block_size', 'vocab_size', 'n_layer', 'n_head', 'n_embd'):
            if getattr(self, name) < 1:
                raise InputError(f"{name}={getattr(self, name)} must be at least 1")
        if not 0 <= self.dropout < 1:
            raise InputError(f"dropout={self.dropout} must lie in [0, 1): the share of activations "
                             "zeroed in training (0 to pretrain, ~0.1 to finetune)")
        if self.n_embd % self.n_head != 0:
            raise InputError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}; "
                             "pick n_embd as a multiple of n_head (e.g. n_head=6, n_embd=384)")


class CausalSelfAttention(nn.Module):
    # False: every layer uses the plain attention written out below (slower, easier to read)
    use_sdpa = True

    def __init__(self, config, layer):
        super().__init__()
        self.n_head, self.dropout, self.layer = config.n_head, config.dropout, layer
        # the queries, keys and values of all heads at once
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, cache=None):
        B, T, C = x.size()
        hs = C // self.n_head
        # (B, T, 3C) -> (B, T, 3, nh, hs) -> (3, B, nh, T, hs): q, k, v each (B, nh, T, hs)
        qkv = self.c_attn(x).view(B, T, 3, self.n_head, hs).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if cache is not None:
            # the keys and values of the tokens before these come from the cache:
            # (B, nh, Tk, hs) with Tk = cached + T, in the cache's dtype
            k, v = cache.update(self.layer, k, v)
        dropout = self.dropout if self.training else 0.0
        y = self.attend(q.to(k.dtype), k, v, dropout).to(q.dtype)  # (B, nh, T, hs)
        # the heads side by side again: (B, T, C)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.resid_dropout(self.c_proj(y))

    @classmethod
    def attend(cls, q, k, v, dropout_p=0.0):
        """q (B, nh, T, hs) are the last T of the Tk positions of k, v (B, nh, Tk, hs); each sees
        itself and what came before."""
        # Two common cases need no mask tensor: the whole sequence at once (T == Tk, causal), and
        # one new token after the cached ones (T == 1, it sees them all: the decoding step).
        T, Tk = q.size(2), k.size(2)
        is_causal = T == Tk
        mask = None
        if not is_causal and T > 1:
            mask = torch.ones(T, Tk, dtype=torch.bool, device=q.device).tril(Tk - T)
        if cls.use_sdpa:
            # fused kernels (flash attention on GPUs)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p,
                                                  is_causal=is_causal)
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
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        # GPT-2's GELU (the tanh approximation), so OpenAI's weights give OpenAI's outputs
        x = F.gelu(self.c_fc(x), approximate='tanh')
        return self.dropout(self.c_proj(x))


class Block(nn.Module):

    def __init__(self, config, layer):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, cache=None):
        x = x + self.attn(self.ln_1(x), cache)
        x = x + self.mlp(self.ln_2(x))
        return x


class KVCache:
    """Keys and values of the tokens read so far, for every layer, so that each new token attends
    to them instead of recomputing the whole context. Room for block_size tokens. On a CPU they are
    kept in float32 even for a bfloat16 or float16 model: CPU attention is faster in float32."""

    def __init__(self, config):
        self.n_layer, self.block_size = config.n_layer, config.block_size
        # per layer, (B, nh, block_size, hs) each, allocated on first use
        self.k = self.v = None
        # tokens stored so far in every layer (GPT.forward advances it)
        self.length = 0

    def update(self, layer, k, v):
        """Store the new tokens' k, v (B, nh, T, hs) of one layer; return its k, v so far."""
        if self.k is None:
            B, nh, _, hs = k.shape
            dtype = k.dtype
            if k.device.type == 'cpu':
                dtype = torch.promote_types(k.dtype, torch.float32)
            shape = (B, nh, self.block_size, hs)
            self.k = [k.new_empty(shape, dtype=dtype) for _ in range(self.n_layer)]
            self.v = [v.new_empty(shape, dtype=dtype) for _ in range(self.n_layer)]
        K, V, T = self.k[layer], self.v[layer], k.size(2)
        K.narrow(2, self.length, T).copy_(k)
        V.narrow(2, self.length, T).copy_(v)
        return K.narrow(2, 0, self.length + T), V.narrow(2, 0, self.length + T)


class GPT(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.config = config
        # activation recompute (train.py's recompute setting): see forward
        self.recompute = False
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),  # token embeddings
            wpe=nn.Embedding(config.block_size, config.n_embd),  # position embeddings
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config, layer) for layer in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # weight tying: tokens are read out with the matrix that embeds them
        self.transformer.wte.weight = self.lm_head.weight
        self.apply(self._init_weights)
        # GPT-2 scales the residual projections by 1/sqrt(number of residual additions).
        for name, p in self.named_parameters():
            if name.endswith('c_proj.weight'):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            torch.nn.init.zeros_(module.bias)

    def get_num_params(self, non_embedding=True):
        """Number of parameters. The position embeddings are left out by default: they do no
        multiplications. The token embeddings stay in: they are also the output layer."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    def forward(self, idx, targets=None, cache=None):
        """idx (B, T) token ids -> (logits, loss). With targets (B, T): logits for every position
        and the mean cross-entropy (targets of -1 are ignored). Without: logits of the last
        position only, (B, 1, vocab). With a KVCache, idx are the tokens after the cache.length
        ones it holds: their positions start there, and the cache keeps their keys and values."""
        B, T = idx.size()
        start = cache.length if cache is not None else 0
        if start + T > self.config.block_size:
            limit = self.config.block_size
            raise InputError(f"sequence of {start + T} tokens is longer than block_size {limit}: "
                             f"crop it to the last {limit}")
        # (B, T, C): each token's embedding plus its position's
        x = self.transformer.wte(idx) + self.transformer.wpe.weight[start:start + T]
        x = self.transformer.drop(x)
        for block in self.transformer.h:
            if self.recompute and torch.is_grad_enabled():
                # keep only the block's input: the backward pass computes its insides again
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x, cache)
        if cache is not None:
            cache.length += T
        if targets is None:
            # inference-time mini-optimization: only forward the lm_head on the very last position
            return self.lm_head(self.transformer.ln_f(x[:, -1:, :])), None  # (B, 1, vocab)
        logits = self.lm_head(self.transformer.ln_f(x))  # (B, T, vocab)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1),
                               ignore_index=-1)
        return logits, loss

    def grow_vocab(self, vocab_size):
        """Add rows to the token embedding, and so to the tied output layer, for new tokens (a
        chat template's markers after GPT-2's 50257): each starts as the mean of the others."""
        old = self.transformer.wte.weight.detach()
        mean = old.mean(dim=0, keepdim=True).expand(vocab_size - old.size(0), -1)
        self.lm_head.weight = nn.Parameter(torch.cat([old, mean]))
        self.transformer.wte.weight = self.lm_head.weight
        self.lm_head.out_features = self.transformer.wte.num_embeddings = vocab_size
        self.config.vocab_size = vocab_size

    def crop_block_size(self, block_size):
        """Shrink the context length, e.g. to finetune GPT-2 (1024) with a shorter block_size."""
        if block_size > self.config.block_size:
            raise InputError(f"cannot grow block_size from {self.config.block_size} to "
                             f"{block_size}: learned positions beyond the model's context do not "
                             "exist")
        self.config.block_size = block_size
        self.transformer.wpe.weight = nn.Parameter(self.transformer.wpe.weight[:block_size])

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type, params=None):
        """AdamW (nanoGPT's optimizer) over params, by default every trained parameter: weight
        decay for the matrices (weights, embeddings), none for biases and LayerNorm gains."""
        if params is None:
            params = [p for p in self.parameters() if p.requires_grad]
        groups = [{'params': [p for p in params if p.dim() >= 2], 'weight_decay': weight_decay},
                  {'params': [p for p in params if p.dim() < 2], 'weight_decay': 0.0}]
        # fused: one kernel launch per step on CUDA
        fused = device_type == 'cuda' and 'fused' in inspect.signature(torch.optim.AdamW).parameters
        extra = {'fused': True} if fused else {}
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **extra)

    def flops_per_iter(self, fwdbwd_per_iter):
        """Floating-point operations of fwdbwd_per_iter forward+backward passes of block_size
        tokens (PaLM paper, appendix B): per weight and token, 2 forward, 2 backward to the inputs
        and 2 for its gradient if it trains (6 in all; 4 for a frozen weight), plus attention."""
        cfg = self.config
        N, L, H, T = self.get_num_params(), cfg.n_layer, cfg.n_head, cfg.block_size
        Q = cfg.n_embd // cfg.n_head
        trained = sum(p.numel() for n, p in self.named_parameters()
                      if p.requires_grad and n != 'transformer.wpe.weight')
        return (4 * N + 2 * trained + 12 * L * H * Q * T) * T * fwdbwd_per_iter

    def estimate_mfu(self, fwdbwd_per_iter, dt, peak_flops=None):
        """Model FLOPs utilisation: achieved FLOP/s over the device's peak_flops, as a fraction
        (devices.device_peak_flops gives a GPU's). None without a peak (a CPU, MPS, an unknown
        GPU): there is no honest number to divide by, so report flops_per_iter / dt instead."""
        if peak_flops is None:
            return None
        return self.flops_per_iter(fwdbwd_per_iter) / dt / peak_flops

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, use_cache=True,
                 generator=None):
        """Continue idx (B, T) by max_new_tokens tokens, each conditioned on the last block_size
        tokens. temperature 0 is greedy; top_k keeps the k most likely tokens, top_p the smallest
        set whose probability reaches p (both off when None). use_cache=False recomputes the whole
        context for every token (the simple reference), as a model in training mode does."""
        block_size = self.config.block_size
        cache = KVCache(self.config) if use_cache and not self.training else None
        # whether every step's logits were finite; read once at the end, not per token
        finite = True
        for _ in range(max_new_tokens):
            # inference_mode: no_grad, and no version counters either; only the new token leaves it
            with torch.inference_mode():
                if cache is not None and idx.size(1) <= block_size:
                    # the prompt, then one token at a time after the cached ones (forward, not
                    # self(...): the cached steps run eagerly under torch.compile, no recompiles)
                    logits, _ = self.forward(idx[:, cache.length:], cache=cache)
                else:
                    # past block_size the window slides, and every learned position with it:
                    # recompute it all
                    logits, _ = self(idx[:, -block_size:])
                logits = logits[:, -1, :]  # (B, vocab)
                finite = torch.isfinite(logits).all() & finite
                next_token = sample_next_token(logits, temperature, top_k, top_p, generator)
            idx = torch.cat((idx, next_token), dim=1)
        if not finite:
            raise InputError("the model's logits held NaN or inf values: its weights are broken, "
                             "or the dtype overflowed (float16?): try --dtype=float32 or bfloat16")
        return idx

    # -------------------------------------------------------------------------------------------
    # Weights in and out: nanoGPT's checkpoints, and transformers' GPT-2 format (OpenAI's weights
    # on the Hugging Face hub, exports). transformers' GPT-2 differs from this one in two ways
    # only: its Linear weights are stored transposed (OpenAI's Conv1D), and it always has biases.

    @classmethod
    def from_checkpoint(cls, checkpoint, override_args=None):
        """Rebuild the model saved in a checkpoint dict (ours or nanoGPT's; see
        checkpoint.load_checkpoint)."""
        known = {f.name for f in fields(GPTConfig)}
        model_args = {k: v for k, v in checkpoint['model_args'].items() if k in known}
        model = GPT(GPTConfig(**{**model_args, **(override_args or {})}))
        # nanoGPT saves the torch.compile wrapper's state dict, whose keys start with '_orig_mod.'.
        state_dict = {k.removeprefix('_orig_mod.'): v for k, v in checkpoint['model'].items()}
        try:
            model.load_state_dict(state_dict)
        except RuntimeError as e:
            raise InputError(f"checkpoint weights do not match its model_args "
                             f"({str(e).splitlines()[1].strip()})")
        for name, p in model.named_parameters():
            if not torch.isfinite(p).all():
                raise InputError(f"the checkpoint's {name} holds NaN or inf values (the run "
                                 "diverged, or the file is damaged): resume from another "
                                 "checkpoint or train again")
        return model

    @classmethod
    def from_pretrained(cls, name_or_path, override_args=None):
        """OpenAI's GPT-2 ('gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl') from the Hugging Face
        hub, or any GPT-2 directory written by transformers' save_pretrained."""
        override_args = override_args or {}
        if set(override_args) - {'dropout'}:
            raise InputError(f"from_pretrained can only override dropout, not "
                             f"{sorted(set(override_args) - {'dropout'})}")
        check_gpt2_name(name_or_path)
        # lazy: only needed here
        from transformers import GPT2LMHeadModel
        from transformers.utils import logging
        # (its "Loading weights" bar would sit in the middle of a training log)
        logging.disable_progress_bar()
        try:
            hf = GPT2LMHeadModel.from_pretrained(name_or_path)
        except OSError as e:
            raise InputError(f"could not load {name_or_path!r} ({str(e).splitlines()[0]}); without "
                             "internet, pass a directory saved with save_pretrained instead")
        c = hf.config
        check_gpt2_arithmetic(c, name_or_path)
        # (the attention masks are buffers, not weights)
        sd_hf = {k: v for k, v in hf.state_dict().items()
                 if not k.endswith(('.attn.bias', '.attn.masked_bias'))}
        # biases that are all zero are those of a model trained with bias=False
        bias = any(v.any() for k, v in sd_hf.items() if k.endswith('.bias'))
        if not bias:
            sd_hf = {k: v for k, v in sd_hf.items() if not k.endswith('.bias')}
        config = GPTConfig(block_size=c.n_positions, vocab_size=c.vocab_size, n_layer=c.n_layer,
                           n_head=c.n_head, n_embd=c.n_embd, bias=bias,
                           dropout=override_args.get('dropout', 0.0))
        model = GPT(config)
        sd = model.state_dict()
        if set(sd_hf) != set(sd):
            raise InputError(f"{name_or_path} does not have GPT-2's weights (unexpected: "
                             f"{sorted(set(sd_hf) - set(sd))[:3]}, missing: "
                             f"{sorted(set(sd) - set(sd_hf))[:3]})")
        with torch.no_grad():
            for k, v in sd_hf.items():
                sd[k].copy_(v.t() if k.endswith(HF_TRANSPOSED) else v)
        return model

    def save_pretrained(self, path, dtype=torch.float32, tokenizer=None):
        """The inverse of from_pretrained: write a transformers GPT-2's config.json,
        generation_config.json and model.safetensors into the directory path, the vocabulary cut
        back to the tokenizer's where it is padded (GPT-2's 50257 to 50304: never targets).
        checkpoint.save_hf_directory adds the tokenizer's files."""
        # lazy: transformers and its dependencies, only needed here
        from safetensors.torch import save_file
        from transformers import GenerationConfig, GPT2Config
        c = self.config
        vocab_size = len(tokenizer) if tokenizer is not None else c.vocab_size
        if vocab_size > c.vocab_size:
            raise InputError(f"the tokenizer has {vocab_size} tokens but the model only "
                             f"{c.vocab_size}: export the model with the tokenizer it was "
                             "trained with")
        if self.lm_head.weight is not self.transformer.wte.weight:
            raise InputError("lm_head is not tied to the token embeddings, which GPT-2's format "
                             "requires")
        sd = {}
        for k, v in self.state_dict().items():
            if k == 'lm_head.weight':
                continue  # (tied to wte)
            v = v.detach().to('cpu', dtype)
            if k.endswith(HF_TRANSPOSED):
                v = v.t()
            if k == 'transformer.wte.weight':
                v = v[:vocab_size]
            sd[k] = v.contiguous()
        # zero biases where this model has none
        for name, module in self.transformer.named_modules():
            if isinstance(module, (nn.Linear, nn.LayerNorm)) and module.bias is None:
                sd[f'transformer.{name}.bias'] = torch.zeros(module.weight.size(0), dtype=dtype)
        if tokenizer is not None:
            eos = tokenizer.eos_token_id
        else:
            # GPT-2's <|endoftext|>, where the vocabulary has it
            eos = 50256 if vocab_size > 50256 else None
        # exactly the architecture from_pretrained accepts
        config = GPT2Config(vocab_size=vocab_size, n_positions=c.block_size, n_embd=c.n_embd,
                            n_layer=c.n_layer, n_head=c.n_head, n_inner=None,
                            activation_function='gelu_new', layer_norm_epsilon=1e-5,
                            resid_pdrop=c.dropout, embd_pdrop=c.dropout, attn_pdrop=c.dropout,
                            tie_word_embeddings=True, dtype=str(dtype).removeprefix('torch.'),
                            bos_token_id=eos, eos_token_id=eos)
        os.makedirs(path, exist_ok=True)
        save_file(sd, os.path.join(path, 'model.safetensors'), metadata={'format': 'pt'})
        config.save_pretrained(path)
        GenerationConfig.from_model_config(config).save_pretrained(path)


def sample_next_token(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """Draw one token per row of logits (B, vocab) -> (B, 1)."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)  # greedy
    logits = logits.float() / temperature
    if top_k:
        # exactly the k most likely tokens, ties at the k-th value included or not by index
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
    # An exponential race: token i wins with probability probs[i], as torch.multinomial draws it
    # (same generator, same tokens), without multinomial's input checks, which wait for the device.
    probs = logits.softmax(dim=-1)
    race = torch.empty_like(probs).exponential_(generator=generator)
    return (probs / race).argmax(dim=-1, keepdim=True)


# OpenAI's GPT-2 models on the Hugging Face hub (from_pretrained downloads them).
GPT2_NAMES = ('gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl')
# transformers' GPT-2 stores these Linear weights transposed (OpenAI's Conv1D module).
HF_TRANSPOSED = ('attn.c_attn.weight', 'attn.c_proj.weight', 'mlp.c_fc.weight', 'mlp.c_proj.weight')


def check_gpt2_name(name_or_path):
    """Refuse what from_pretrained cannot load: not a GPT-2 name, nor a GPT-2 directory."""
    if os.path.isdir(name_or_path):
        config_file = os.path.join(name_or_path, 'config.json')
        model_type = None
        if os.path.isfile(config_file):
            with open(config_file) as f:
                model_type = json.load(f).get('model_type')
        if model_type != 'gpt2':
            raise InputError(f"{name_or_path} is not a GPT-2 checkpoint (its config.json has "
                             f"model_type={model_type!r}); pass a directory saved by "
                             "GPT2LMHeadModel.save_pretrained")
    elif name_or_path not in GPT2_NAMES:
        raise InputError(f"unknown model {name_or_path!r}: use one of {', '.join(GPT2_NAMES)} "
                         "or a local directory saved with transformers' save_pretrained")


def check_gpt2_arithmetic(c, name):
    """Refuse a transformers GPT2Config whose settings change what this model computes."""
    computes_ours = dict(
        activation_function=c.activation_function in ('gelu_new', 'gelu_pytorch_tanh'),
        n_inner=c.n_inner in (None, 4 * c.n_embd),
        layer_norm_epsilon=c.layer_norm_epsilon == 1e-5,
        tie_word_embeddings=c.tie_word_embeddings,
        scale_attn_by_inverse_layer_idx=not c.scale_attn_by_inverse_layer_idx,
        # attention scores divided by sqrt(head size)
        scale_attn_weights=c.scale_attn_weights,
    )
    unsupported = {k: getattr(c, k) for k, same in computes_ours.items() if not same}
    if unsupported:
        raise InputError(f"{name} is a GPT-2 variant this model does not implement "
                         f"({unsupported}); only GPT-2's own architecture loads")
