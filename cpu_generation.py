"""
Generation on a CPU in bfloat16, with weights laid out for it: while a with-block generates,
each nn.Linear of the model is swapped for a PackedLinear, whose copy of the weight oneDNN has
reordered for multiplying one row at a time; after the block the original layers are back.
sample.py and bench.py use it where the CPU computes bfloat16 natively (AVX512-BF16) and the
model is not compiled (torch.compile cannot trace these private oneDNN ops).

    python sample.py --out_dir=out-shakespeare-char --device=cpu --dtype=bfloat16
"""

from contextlib import contextmanager

import torch
import torch.nn as nn

# torch's private oneDNN ops that this module needs
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


@contextmanager
def packed(model):
    """with packed(model): every nn.Linear of model computes with a repacked weight, and is put
    back when the block ends, so no stale copy outlives a change of the weights."""
    swapped = [(parent, name, child) for parent in model.modules()
               for name, child in parent.named_children() if type(child) is nn.Linear]
    try:
        for parent, name, child in swapped:
            setattr(parent, name, PackedLinear(child))
        yield model
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)
