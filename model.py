"""
The whole GPT-2 language model in one file: LayerNorm -> attention -> MLP -> Block -> GPT, read
top to bottom. One forward serves training, evaluation and generation: with a KVCache, each
attention layer stores the new tokens' keys and values and attends over all the cached ones. On a CPU:

    python -c "import torch, model; m = model.GPT(model.GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=32)); print(m.generate(torch.zeros(1, 1, dtype=torch.long), 8))"

References: OpenAI's GPT-2 code (github.com/openai/gpt-2) and Hugging Face's GPT2LMHeadModel.
Errors a user can cause (an unknown model name, a bad shape, broken weights) raise
common.InputError with one line saying what is wrong and what to do.
"""

import inspect
import json
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass, fields

import torch
import torch.nn as nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from common import InputError, MuonAdamW, device_peak_flops

# OpenAI's GPT-2 models on the Hugging Face hub (from_pretrained downloads them).
GPT2_NAMES = ('gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl')
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
        for name in ('block_size', 'vocab_size', 'n_layer', 'n_head', 'n_embd'):
            if getattr(self, name) < 1:
                raise InputError(f"{name}={getattr(self, name)} must be at least 1")
        if not 0 <= self.dropout < 1:
            raise InputError(f"dropout={self.dropout} must lie in [0, 1): the share of activations "
                             "zeroed in training (0 to pretrain, ~0.1 to finetune)")
        if self.n_embd % self.n_head != 0:
            raise InputError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}; "
                             "pick n_embd as a multiple of n_head (e.g. n_head=6, n_embd=384)")


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (PyTorch's has no bias=False before 2.1)."""

    eps = 1e-5  # GPT-2's

    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):  # (_parameters: nn.Module's attribute lookup costs more than a small model's token, see Linear)
        p = self._parameters
        return F.layer_norm(x, p['weight'].shape, p['weight'], p.get('bias'), self.eps)


def dropout(x, p, training):  # F.dropout, skipped outright where it does nothing (generation: every layer, every token)
    return F.dropout(x, p) if training and p > 0 else x


class Linear(nn.Linear):
    """nn.Linear with two options. LoRA (Hu et al., 2021; GPT.add_lora): W (out, in) frozen beside a trained update
    W + (alpha / r) B @ A, A (r, in), B (out, r) starting at zero, so the model starts exactly as it was. And W
    repacked for oneDNN (GPT.pack, generation on a CPU in bfloat16): a token's step reads it at about memory speed."""

    lora_scale = 0.0  # alpha / r once GPT.add_lora has added the parameters lora_A and lora_B; 0: no update
    packed = None  # the repacked weight while GPT.pack holds it; None: the ordinary weight

    def forward(self, x):  # (the weights from _parameters: nn.Module's attribute lookup cost ~4% of generation's speed)
        p = self._parameters
        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, p['bias'], 'none', [], '')
        y = F.linear(x, p['weight'], p['bias'])
        if self.lora_scale:  # + scale B (A x), added in place: no (out, in) update, no second (B, T, out) output
            y.add_(F.linear(F.linear(x, p['lora_A']), p['lora_B']), alpha=self.lora_scale)
        return y


def can_pack(weight):
    """Whether GPT.pack repacks weights like this one: bfloat16 on a CPU that oneDNN computes
    bfloat16 on, with torch's (private) oneDNN linear ops present."""
    ops, names = torch.ops.mkldnn, ('_reorder_linear_weight', '_linear_pointwise', '_is_mkldnn_bf16_supported')
    return (weight.device.type == 'cpu' and weight.dtype == torch.bfloat16 and torch.backends.mkldnn.is_available()
            and all(hasattr(ops, name) for name in names) and ops._is_mkldnn_bf16_supported())


class CausalSelfAttention(nn.Module):
    use_sdpa = True  # CausalSelfAttention.use_sdpa = False: every layer uses the plain attention below (slower, easier to read)

    def __init__(self, config, layer):
        super().__init__()
        self.n_head, self.dropout, self.layer = config.n_head, config.dropout, layer
        self.c_attn = Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v at once
        self.c_proj = Linear(config.n_embd, config.n_embd, bias=config.bias)

    def forward(self, x, cache=None):
        B, T, C = x.size()
        # (B, T, 3C) -> (B, T, 3, nh, hs) -> (3, B, nh, T, hs) -> q, k, v each (B, nh, T, hs)
        q, k, v = self.c_attn(x).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4).unbind(0)
        if cache is not None:  # the keys and values of the tokens before these come from the cache
            k, v = cache.update(self.layer, k, v)  # (B, nh, Tk, hs), Tk = cached + T, in the cache's dtype
        y = self.attend(q.to(k.dtype), k, v, self.dropout if self.training else 0.0).to(q.dtype)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C): heads side by side
        return dropout(self.c_proj(y), self.dropout, self.training)

    @classmethod
    def attend(cls, q, k, v, dropout_p=0.0):
        """q (B, nh, T, hs) are the last T of the Tk positions of k, v (B, nh, Tk, hs); each sees
        itself and what came before."""
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
        self.dropout = config.dropout
        self.c_fc = Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = Linear(4 * config.n_embd, config.n_embd, bias=config.bias)

    def forward(self, x):
        x = F.gelu(self.c_fc(x), approximate='tanh')  # GPT-2's GELU, so OpenAI's weights give OpenAI's outputs
        return dropout(self.c_proj(x), self.dropout, self.training)


class Block(nn.Module):

    def __init__(self, config, layer):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, cache=None):
        x = x + self.attn(self.ln_1(x), cache)
        x = x + self.mlp(self.ln_2(x))
        return x


class KVCache:
    """Keys and values of the tokens read so far, for every layer, so that each new token attends
    to them instead of recomputing the whole context. Room for block_size tokens. On a CPU they are
    kept in float32 even for a bfloat16 or float16 model: attention over them is then 3-6x faster."""

    def __init__(self, config):
        self.n_layer, self.block_size = config.n_layer, config.block_size
        self.k = self.v = None  # per layer, (B, nh, block_size, hs) each, allocated on first use
        self.length = 0  # tokens stored so far in every layer (GPT.forward advances it)

    def update(self, layer, k, v):
        """Store the new tokens' k, v (B, nh, T, hs) of one layer; return that layer's k, v so far."""
        if self.k is None:
            B, nh, _, hs = k.shape
            dtype = torch.promote_types(k.dtype, torch.float32) if k.device.type == 'cpu' else k.dtype
            self.k = [k.new_empty(B, nh, self.block_size, hs, dtype=dtype) for _ in range(self.n_layer)]
            self.v = [v.new_empty(B, nh, self.block_size, hs, dtype=dtype) for _ in range(self.n_layer)]
        K, V, T = self.k[layer], self.v[layer], k.size(2)
        K.narrow(2, self.length, T).copy_(k)  # (narrow, not K[:, :, a:b]: fewer Python steps per token)
        V.narrow(2, self.length, T).copy_(v)
        return K.narrow(2, 0, self.length + T), V.narrow(2, 0, self.length + T)


class GPT(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.config, self.recompute = config, False  # recompute: see forward (train.py's setting)
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),  # token embeddings
            wpe=nn.Embedding(config.block_size, config.n_embd),  # position embeddings
            h=nn.ModuleList([Block(config, layer) for layer in range(config.n_layer)]),
            ln_f=LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying: tokens are read out with the matrix that embeds them
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

    def add_lora(self, rank, alpha, frozen_dtype=None):
        """Freeze every weight and give each block's four weight matrices a LoRA update, the only weights
        that train. frozen_dtype: keep those matrices in the dtype autocast multiplies in: half the memory."""
        self.requires_grad_(False)
        for block in self.transformer.h:
            for m in (block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj):
                m.weight.data = m.weight.data.to(frozen_dtype or m.weight.dtype)
                m.lora_A = nn.Parameter(nn.init.kaiming_uniform_(m.weight.new_empty(rank, m.in_features, dtype=torch.float32), a=math.sqrt(5)))
                m.lora_B = nn.Parameter(m.weight.new_zeros(m.out_features, rank, dtype=torch.float32))
                m.lora_scale = alpha / rank

    @torch.no_grad()
    def merged_state_dict(self):
        """state_dict() as a plain GPT's, under GPT-2's names: each LoRA update added into its weight."""
        merged = {f'{name}.weight': m.weight.float() + m.lora_B @ m.lora_A * m.lora_scale
                  for name, m in self.named_modules() if isinstance(m, Linear) and m.lora_scale}
        return {k: merged.get(k, v) for k, v in self.state_dict().items() if '.lora_' not in k}

    def get_num_params(self, non_embedding=True):
        """Number of parameters. The position embeddings are left out by default: they do no
        multiplications. The token embeddings stay in: they are also the output layer."""
        return sum(p.numel() for p in self.parameters()) - (self.transformer.wpe.weight.numel() if non_embedding else 0)

    def forward(self, idx, targets=None, cache=None):
        """idx (B, T) token ids -> (logits, loss). With targets (B, T): logits for every position
        and the mean cross-entropy (targets of -1 are ignored). Without: logits of the last
        position only, (B, 1, vocab). With a KVCache, idx are the tokens after the cache.length
        ones it holds: their positions start there, and the cache keeps their keys and values."""
        B, T = idx.size()
        start = cache.length if cache is not None else 0
        if start + T > self.config.block_size:
            raise InputError(f"sequence of {start + T} tokens is longer than block_size {self.config.block_size}: "
                             f"crop it to the last {self.config.block_size} tokens")
        x = self.transformer.wte(idx) + self.transformer.wpe.weight[start:start + T]  # (B, T, C): tokens + positions
        x = dropout(x, self.config.dropout, self.training)
        for block in self.transformer.h:  # recompute: keep each block's input only; backward computes its insides again
            x = checkpoint(block, x, use_reentrant=False) if self.recompute and torch.is_grad_enabled() and cache is None else block(x, cache)
        if cache is not None:
            cache.length += T
        if targets is None:  # inference-time mini-optimization: only the last position's logits
            return self.lm_head(self.transformer.ln_f(x[:, -1:, :])), None  # (B, 1, vocab)
        logits = self.lm_head(self.transformer.ln_f(x))  # (B, T, vocab)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def crop_block_size(self, block_size):
        """Shrink the context length, e.g. to finetune GPT-2 (1024) with a shorter block_size."""
        if block_size > self.config.block_size:
            raise InputError(f"cannot grow block_size from {self.config.block_size} to {block_size}: "
                             "learned positions beyond the model's context do not exist")
        self.config.block_size = block_size
        self.transformer.wpe.weight = nn.Parameter(self.transformer.wpe.weight[:block_size])

    @classmethod
    def from_pretrained(cls, name_or_path, override_args=None):
        """OpenAI's GPT-2 ('gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl') from the Hugging Face
        hub, or any GPT-2 directory written by transformers' save_pretrained."""
        override_args = override_args or {}
        if set(override_args) - {'dropout'}:
            raise InputError(f"from_pretrained can only override dropout, not {sorted(set(override_args) - {'dropout'})}")
        names = GPT2_NAMES
        if os.path.isdir(name_or_path):
            config_file = os.path.join(name_or_path, 'config.json')
            model_type = json.loads(open(config_file).read()).get('model_type') if os.path.isfile(config_file) else None
            if model_type != 'gpt2':
                raise InputError(f"{name_or_path} is not a GPT-2 checkpoint (its config.json has "
                                 f"model_type={model_type!r}); pass a directory saved by GPT2LMHeadModel.save_pretrained")
        elif name_or_path not in names:
            raise InputError(f"unknown model {name_or_path!r}: use one of {', '.join(names)} "
                             "or a local directory saved with transformers' save_pretrained")
        from transformers import GPT2LMHeadModel  # lazy: only needed here
        try:
            hf = GPT2LMHeadModel.from_pretrained(name_or_path)
        except OSError as e:
            raise InputError(f"could not load {name_or_path!r} ({str(e).splitlines()[0]}); without internet, "
                             "pass a directory saved with save_pretrained instead")
        c = hf.config
        # What this GPT implements: GPT-2's activation, MLP width, LayerNorm epsilon and tied embeddings.
        ok = dict(activation_function=c.activation_function in ('gelu_new', 'gelu_pytorch_tanh'), n_inner=c.n_inner in (None, 4 * c.n_embd),
                  layer_norm_epsilon=c.layer_norm_epsilon == 1e-5, tie_word_embeddings=c.tie_word_embeddings,
                  scale_attn_by_inverse_layer_idx=not c.scale_attn_by_inverse_layer_idx,
                  scale_attn_weights=c.scale_attn_weights)  # (attention scores divided by sqrt(head size))
        unsupported = {k: getattr(c, k) for k, good in ok.items() if not good}
        if unsupported:
            raise InputError(f"{name_or_path} is a GPT-2 variant this model does not implement ({unsupported}); "
                             "only GPT-2's own architecture loads")
        sd_hf = {k: v for k, v in hf.state_dict().items() if not k.endswith(('.attn.bias', '.attn.masked_bias'))}  # (masks)
        # transformers' GPT-2 always has biases: all zero, they are those of a model trained with bias=False
        bias = any(v.any() for k, v in sd_hf.items() if k.endswith('.bias'))
        if not bias:
            sd_hf = {k: v for k, v in sd_hf.items() if not k.endswith('.bias')}
        print(f"loading weights of {name_or_path}: {c.n_layer} layers, {c.n_head} heads, {c.n_embd} wide, "
              f"context {c.n_positions}, vocab {c.vocab_size}{'' if bias else ', every bias zero (bias=False)'}")
        model = GPT(GPTConfig(block_size=c.n_positions, vocab_size=c.vocab_size, n_layer=c.n_layer, n_head=c.n_head,
                              n_embd=c.n_embd, bias=bias, dropout=override_args.get('dropout', 0.0)))
        sd = model.state_dict()
        if set(sd_hf) != set(sd):
            raise InputError(f"{name_or_path} does not have GPT-2's weights (unexpected: "
                             f"{sorted(set(sd_hf) - set(sd))[:3]}, missing: {sorted(set(sd) - set(sd_hf))[:3]})")
        with torch.no_grad():
            for k, v in sd_hf.items():
                sd[k].copy_(v.t() if k.endswith(HF_TRANSPOSED) else v)
        return model

    def save_pretrained(self, path, dtype=torch.float32, tokenizer=None):
        """The inverse of from_pretrained: write a transformers GPT-2's config.json, generation_config.json
        and model.safetensors into the directory path, the vocabulary cut back to the tokenizer's where it is
        padded (GPT-2's 50257 to 50304: never targets). common.save_hf_directory adds the tokenizer's files."""
        from safetensors.torch import save_file  # lazy: transformers' dependencies, only needed here
        from transformers import GenerationConfig, GPT2Config
        c = self.config
        vocab_size = len(tokenizer) if tokenizer is not None else c.vocab_size
        if vocab_size > c.vocab_size:
            raise InputError(f"the tokenizer has {vocab_size} tokens but the model only {c.vocab_size}: "
                             "export the model with the tokenizer it was trained with")
        if self.lm_head.weight is not self.transformer.wte.weight:
            raise InputError("lm_head is not tied to the token embeddings, which GPT-2's format requires")
        # In transformers' layout: Conv1D matrices transposed, lm_head tied to wte, vocab cut, zero biases where we have none.
        sd = {k: v.detach().to('cpu', dtype) for k, v in self.merged_state_dict().items() if k != 'lm_head.weight'}
        sd = {k: (v.t() if k.endswith(HF_TRANSPOSED) else v[:vocab_size] if k == 'transformer.wte.weight' else v).contiguous() for k, v in sd.items()}
        for name, module in self.transformer.named_modules():
            if isinstance(module, (nn.Linear, LayerNorm)) and module.bias is None:
                sd[f'transformer.{name}.bias'] = torch.zeros(module.weight.size(0), dtype=dtype)
        eos = tokenizer.eos_token_id if tokenizer is not None else 50256 if vocab_size > 50256 else None  # (GPT-2's)
        # Exactly the architecture from_pretrained accepts: GPT-2's tanh GELU, MLP width and epsilon.
        config = GPT2Config(vocab_size=vocab_size, n_positions=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer,
                            n_head=c.n_head, n_inner=None, activation_function='gelu_new', layer_norm_epsilon=LayerNorm.eps,
                            resid_pdrop=c.dropout, embd_pdrop=c.dropout, attn_pdrop=c.dropout, tie_word_embeddings=True,
                            dtype=str(dtype).removeprefix('torch.'), bos_token_id=eos, eos_token_id=eos)
        os.makedirs(path, exist_ok=True)
        save_file(sd, os.path.join(path, 'model.safetensors'), metadata={'format': 'pt'})
        config.save_pretrained(path)
        GenerationConfig.from_model_config(config).save_pretrained(path)

    @classmethod
    def from_checkpoint(cls, checkpoint, override_args=None):
        """Rebuild the model saved in a checkpoint dict (ours or nanoGPT's; see load_checkpoint)."""
        known = {f.name for f in fields(GPTConfig)}
        model_args = {**{k: v for k, v in checkpoint['model_args'].items() if k in known}, **(override_args or {})}
        model = GPT(GPTConfig(**model_args))
        # nanoGPT saves the torch.compile wrapper's state dict, whose keys start with '_orig_mod.'.
        state_dict = {k.removeprefix('_orig_mod.'): v for k, v in checkpoint['model'].items()}
        try:
            model.load_state_dict(state_dict)
        except RuntimeError as e:
            raise InputError(f"checkpoint weights do not match its model_args ({str(e).splitlines()[1].strip()})")
        for name, p in model.named_parameters():
            if not torch.isfinite(p).all():
                raise InputError(f"the checkpoint's {name} holds NaN or inf values (the run diverged, or "
                                 "the file is damaged): resume from another checkpoint or train again")
        return model

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type, muon=None):
        """AdamW for every parameter (nanoGPT's optimizer), or with muon=dict(lr=, momentum=,
        weight_decay=): Muon for the blocks' 2-D weight matrices, whose updates it orthogonalises, and
        AdamW for the rest (embeddings are lookup tables, not linear maps), as modded-nanogpt splits them."""
        named = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        to_muon = [p for n, p in named if muon is not None and n.startswith('transformer.h.') and p.dim() == 2]
        in_muon = set(map(id, to_muon))
        rest = [p for n, p in named if id(p) not in in_muon]
        # Decay matrices (weights, embeddings); leave biases and LayerNorm gains alone.
        groups = [{'params': [p for p in rest if p.dim() >= 2], 'weight_decay': weight_decay},
                  {'params': [p for p in rest if p.dim() < 2], 'weight_decay': 0.0}]
        fused = device_type == 'cuda' and 'fused' in inspect.signature(torch.optim.AdamW).parameters  # one launch per step
        adamw = torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **({'fused': True} if fused else {}))
        if muon is None:
            return adamw
        return MuonAdamW(to_muon, adamw, **muon)

    def flops_per_iter(self, fwdbwd_per_iter):
        """Floating-point operations of fwdbwd_per_iter forward+backward passes of block_size tokens
        (PaLM paper, appendix B): per weight and token, 2 forward, 2 backward to the inputs and 2 for
        its gradient if it trains (6 in all; 4 for LoRA's frozen weights), plus attention."""
        N, L, H, Q, T = self.get_num_params(), self.config.n_layer, self.config.n_head, self.config.n_embd // self.config.n_head, self.config.block_size
        trained = sum(p.numel() for n, p in self.named_parameters() if p.requires_grad and n != 'transformer.wpe.weight')
        return (4 * N + 2 * trained + 12 * L * H * Q * T) * T * fwdbwd_per_iter

    def estimate_mfu(self, fwdbwd_per_iter, dt, dtype=torch.bfloat16):
        """Model FLOPs utilisation: achieved FLOP/s over the peak of the GPU in use, as a fraction.
        Returns None on a CPU, MPS or a GPU missing from common.PEAK_TFLOPS: there is no honest
        peak to divide by, so report achieved FLOP/s (flops_per_iter / dt) instead."""
        peak = device_peak_flops(next(self.parameters()).device, dtype)
        return None if peak is None else self.flops_per_iter(fwdbwd_per_iter) / dt / peak

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, use_cache=True, generator=None):
        """Continue idx (B, T) by max_new_tokens tokens, each conditioned on the last block_size tokens.
        temperature 0 is greedy; top_k keeps the k most likely tokens, top_p the smallest set whose
        probability reaches p (both off when None). use_cache=False recomputes the whole context for
        every token (the simple reference), as a model in training mode does (call model.eval())."""
        block_size = self.config.block_size
        cache = KVCache(self.config) if use_cache and not self.training else None
        finite = True  # whether every step's logits were finite; read once at the end, not per token
        # The cached steps come first (the prompt, then one token at a time after the cached ones),
        # while the context fits: there the weights may be repacked. Past block_size the window
        # slides and every learned position with it: each token recomputes it all, with the
        # ordinary weights (the path a compiled model takes).
        cached_steps = max(0, min(max_new_tokens, block_size + 1 - idx.size(1))) if cache is not None else 0
        with self.pack(cached_steps > 0 and can_pack(self.lm_head.weight)):
            for _ in range(cached_steps):
                with torch.inference_mode():  # no_grad, and no version counters either; only the new token leaves it
                    logits, _ = self.forward(idx[:, cache.length:], cache=cache)  # (eager under compile: no recompiles)
                    finite = torch.isfinite(logits[:, -1, :]).all() & finite
                    next_token = sample_next_token(logits[:, -1, :], temperature, top_k, top_p, generator)
                idx = torch.cat((idx, next_token), dim=1)
        for _ in range(max_new_tokens - cached_steps):
            with torch.inference_mode():
                logits, _ = self(idx[:, -block_size:])
                finite = torch.isfinite(logits[:, -1, :]).all() & finite
                next_token = sample_next_token(logits[:, -1, :], temperature, top_k, top_p, generator)
            idx = torch.cat((idx, next_token), dim=1)
        if not finite:  # NaN or inf logits sample garbage tokens
            raise InputError("the model's logits held NaN or inf values: its weights are broken, or "
                             "the dtype overflowed (float16?): try --dtype=float32 or bfloat16")
        return idx

    @contextmanager
    def pack(self, on=True):
        """with model.pack(): every Linear multiplies by a copy of its weight repacked for oneDNN
        (see Linear), dropped when the block ends: no stale copy outlives a change of the weights."""
        linears = [m for m in self.modules() if isinstance(m, Linear) and not m.lora_scale] if on else []  # (LoRA: unpacked)
        try:
            for m in linears:
                m.packed = torch.ops.mkldnn._reorder_linear_weight(m.weight.detach(), 1)  # laid out for one row at a time
            yield self
        finally:
            for m in linears:
                m.packed = None


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
    # An exponential race: token i wins with probability probs[i], as torch.multinomial draws it (same
    # generator, same tokens: tested) minus its input checks, which wait for the device each token.
    probs = logits.softmax(dim=-1)
    return (probs / torch.empty_like(probs).exponential_(generator=generator)).argmax(dim=-1, keepdim=True)
