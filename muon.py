"""
Muon for the blocks' weight matrices beside AdamW for the rest, stepped as one optimizer
(train.py --optimizer=muon), as modded-nanogpt splits them: embeddings are lookup tables, not
linear maps, so they stay with AdamW.

    python train.py config/train_shakespeare_char_cpu_muon.py
"""

import torch

from errors import InputError


class MuonAdamW:
    """Two optimizers stepped as one: Muon for the blocks' matrices, AdamW for the rest
    (GPT.configure_optimizers). It has what train.py and GradScaler use of an optimizer:
    param_groups (both optimizers' groups, so one loop sets every lr), step, zero_grad,
    state_dict and load_state_dict. The state dict holds both: {'muon': ..., 'adamw': ...}."""

    def __init__(self, matrices, adamw, lr, momentum, weight_decay):
        if not hasattr(torch.optim, 'Muon'):
            raise InputError(f"optimizer='muon' needs torch.optim.Muon, new in torch 2.9 (this is "
                             f"torch {torch.__version__}): upgrade torch, or use --optimizer=adamw")
        # torch.optim.Muon: SGD with Nesterov momentum whose update of each matrix is orthogonalised
        # (Newton-Schulz), its lr scaled by sqrt(max(1, rows / cols)), decoupled weight decay.
        # 'muon': True marks its group for train.py's schedule, which scales it to Muon's peak lr.
        groups = [{'params': matrices, 'muon': True}]
        self.muon = torch.optim.Muon(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.adamw = adamw
        self.param_groups = self.muon.param_groups + adamw.param_groups

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


def configure_muon(model, weight_decay, learning_rate, betas, device_type, muon):
    """Muon (muon=dict(lr=, momentum=, weight_decay=)) for the blocks' trained 2-D weight
    matrices, whose updates it orthogonalises, and GPT.configure_optimizers' AdamW for the rest."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    matrices = [p for n, p in named if n.startswith('transformer.h.') and p.dim() == 2]
    in_muon = set(map(id, matrices))
    rest = [p for n, p in named if id(p) not in in_muon]
    adamw = model.configure_optimizers(weight_decay, learning_rate, betas, device_type, params=rest)
    return MuonAdamW(matrices, adamw, **muon)
