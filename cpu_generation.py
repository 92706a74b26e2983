"""
Generation on a CPU, with layers made for it: while a with-block generates, the model's
nn.Linear, nn.LayerNorm and nn.Dropout layers are swapped for ones that hold their tensors as
plain attributes (a token's step calls them many times, and a module's parameter lookup is slow
next to so little arithmetic), with each Linear's weight reordered by oneDNN for one row at a
time where the CPU computes bfloat16 natively (AVX512-BF16). After the block the original layers
are back. sample.py and bench.py use it on a CPU when the model is not compiled (torch.compile
cannot trace oneDNN's private ops).

    python sample.py --out_dir=out-shakespeare-char --device=cpu
"""

from contextlib import contextmanager

import torch
import torch.nn as nn
from torch.nn import functional as F

# torch's private oneDNN ops that packing needs
OPS = ('_reorder_linear_weight', '_linear_pointwise', '_is_mkldnn_bf16_supported')


def can_pack(weight):
    """Whether weights like this one can be packed: bfloat16 on a CPU that oneDNN computes
    bfloat16 on, with torch's oneDNN linear ops present."""
    ops = torch.ops.mkldnn
    return (weight.device.type == 'cpu' and weight.dtype == torch.bfloat16
            and torch.backends.mkldnn.is_available() and all(hasattr(ops, op) for op in OPS)
            and ops._is_mkldnn_bf16_supported())


class PackedLinear(nn.Module):
    """An nn.Linear's computation with a repacked copy of its weight (and its bias as it is)."""

    def __init__(self, linear):
        super().__init__()
        # laid out for one row at a time: the decoding step's one token per sequence
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), 1)
        self.bias = linear.bias.detach() if linear.bias is not None else None

    def forward(self, x):
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, 'none', [], '')


class PlainLinear(nn.Module):
    """An nn.Linear's computation, its weight and bias plain tensors."""

    def __init__(self, linear):
        super().__init__()
        self.weight = linear.weight.detach()
        self.bias = linear.bias.detach() if linear.bias is not None else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class PlainLayerNorm(nn.Module):
    """An nn.LayerNorm's computation, its weight and bias plain tensors."""

    def __init__(self, norm):
        super().__init__()
        self.shape, self.eps = norm.normalized_shape, norm.eps
        self.weight = norm.weight.detach()
        self.bias = norm.bias.detach() if norm.bias is not None else None

    def forward(self, x):
        return F.layer_norm(x, self.shape, self.weight, self.bias, self.eps)


def generation_layer(module):
    """The layer that stands in for module while generating, or None to keep it."""
    if type(module) is nn.Linear:
        return PackedLinear(module) if can_pack(module.weight) else PlainLinear(module)
    if type(module) is nn.LayerNorm:
        return PlainLayerNorm(module)
    if type(module) is nn.Dropout:
        # (generation runs in eval mode: dropout does nothing)
        return nn.Identity()
    return None


@contextmanager
def generation_layers(model):
    """with generation_layers(model): generate with the layers above swapped in; the original
    layers come back when the block ends, so no stale copy outlives a change of the weights."""
    swaps = []  # (parent, name, original, stand-in)
    for parent in model.modules():
        for name, child in parent.named_children():
            layer = generation_layer(child)
            if layer is not None:
                swaps.append((parent, name, child, layer))
    try:
        for parent, name, _, layer in swaps:
            setattr(parent, name, layer)
        yield model
    finally:
        for parent, name, child, _ in swaps:
            setattr(parent, name, child)
