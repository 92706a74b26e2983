"""
LoRA (Hu et al., 2021) for finetuning: every weight frozen, a low-rank update trained beside each
block's weight matrices (train.py --lora_rank=8). What a LoRA checkpoint holds beside the merged
weights, and how a resume puts it back on its base.

    python train.py config/finetune_shakespeare_lora.py
"""

import math

import torch
import torch.nn as nn
from torch.nn import functional as F

from errors import InputError

# the weight matrices of each block that get an update
ADAPTED = ('attn.c_attn', 'attn.c_proj', 'mlp.c_fc', 'mlp.c_proj')


class LoRALinear(nn.Module):
    """A Linear layer's frozen weight W (out, in) and bias beside a trained low-rank update:
    y = W x + b + (alpha / r) B (A x), with A (r, in) and B (out, r). B starts at zero, so the
    model starts exactly as it was. Its state dict keeps the Linear's names (weight, bias) beside
    lora_A and lora_B."""

    def __init__(self, linear, rank, alpha, frozen_dtype=None):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        # the frozen weight may be kept in the dtype autocast multiplies in: half the memory
        self.weight.data = self.weight.data.to(frozen_dtype or self.weight.dtype)
        A = self.weight.new_empty(rank, self.in_features, dtype=torch.float32)
        self.lora_A = nn.Parameter(nn.init.kaiming_uniform_(A, a=math.sqrt(5)))
        B = self.weight.new_zeros(self.out_features, rank, dtype=torch.float32)
        self.lora_B = nn.Parameter(B)
        self.scale = alpha / rank

    def forward(self, x):
        y = F.linear(x, self.weight, self.bias)
        # + scale B (A x), added in place: no (out, in) update, no second output-sized tensor
        return y.add_(F.linear(F.linear(x, self.lora_A), self.lora_B), alpha=self.scale)


def add_lora(model, rank, alpha, frozen_dtype=None, new_rows_from=None):
    """Freeze every weight of a GPT and swap each block's four weight matrices for LoRALinear
    layers, whose updates are the only weights that train. new_rows_from: the first row of the
    token embedding added for new tokens (a chat template's markers, after GPT-2's 50257): those
    rows train too, the embedding's gradient zero on every other row."""
    model.requires_grad_(False)
    if new_rows_from is not None:
        wte = model.transformer.wte.weight
        wte.requires_grad_(True)
        def zero_frozen_rows(grad):
            grad = grad.clone()
            grad[:new_rows_from] = 0
            return grad
        wte.register_hook(zero_frozen_rows)
    for block in model.transformer.h:
        for path in ADAPTED:
            parent, name = block.get_submodule(path.split('.')[0]), path.split('.')[1]
            setattr(parent, name, LoRALinear(getattr(parent, name), rank, alpha, frozen_dtype))


@torch.no_grad()
def merged_state_dict(model):
    """The state dict of a plain GPT, under GPT-2's names: each LoRA update added into its weight
    (in float32, moved to the CPU one at a time: on a GPU, all of them at once would take a
    float32 copy of every adapted matrix). A model without LoRA gives its own state dict."""
    merged = {f'{name}.weight': (m.weight.float() + m.lora_B @ m.lora_A * m.scale).cpu()
              for name, m in model.named_modules() if isinstance(m, LoRALinear)}
    return {k: merged.get(k, v) for k, v in model.state_dict().items() if '.lora_' not in k}


def lora_state(model, rank, alpha, base, new_rows_from=None):
    """A LoRA run's checkpoint entry 'lora', beside the merged weights: what an exact resume needs
    (the updates, the embedding rows it added and trained, where the frozen base came from and in
    which dtype it was kept)."""
    adapters = {k: v for k, v in model.state_dict().items() if '.lora_' in k}
    frozen = model.transformer.h[0].attn.c_attn.weight.dtype
    state = dict(rank=rank, alpha=alpha, base=base, adapters=adapters, frozen_dtype=str(frozen))
    if new_rows_from is not None:
        rows = model.transformer.wte.weight.detach()[new_rows_from:].clone()
        state.update(new_rows_from=new_rows_from, new_rows=rows)
    return state


def load_lora(model, checkpoint, base):
    """Put a LoRA checkpoint's updates into model: its frozen base, loaded again, with add_lora's.
    The base must be the model the run started from: every weight as saved, and base + update
    equal to the saved merged weights (to float32 rounding; to 16-bit rounding where the run kept
    the base in another dtype than this one)."""
    lora = checkpoint['lora']
    model.load_state_dict(lora['adapters'], strict=False)
    if 'new_rows' in lora:
        with torch.no_grad():
            model.transformer.wte.weight[lora['new_rows_from']:] = lora['new_rows']
    state, merged = model.state_dict(), merged_state_dict(model)
    adapted = {k.rsplit('.', 1)[0] + '.weight' for k in lora['adapters']}
    same_dtype = lora.get('frozen_dtype') == str(model.transformer.h[0].attn.c_attn.weight.dtype)
    # A base kept in another dtype than the run's differs by its rounding (bfloat16: 8 bits); an
    # update multiplied out on a GPU (TF32: 10 bits) by that rounding of the update.
    rtol = 1e-5 if same_dtype else 2 ** -7

    def differs(k, v):
        if k in adapted:
            update = merged[k] - state[k].float()
            atol = 2 ** -8 * update.abs().max().item() + 1e-7
            return not torch.allclose(merged[k], v.float(), rtol=rtol, atol=atol)
        return not (k in state and torch.equal(v, state[k]))
    changed = [k for k, v in checkpoint['model'].items() if differs(k, v)]
    if changed:
        raise InputError(f"{base} is not the model this LoRA run started from (its {changed[0]} "
                         "differs from the checkpoint's): put that model back, or start a new run "
                         "with another --out_dir")
