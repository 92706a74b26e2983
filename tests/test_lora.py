"""LoRA (--lora_rank): the model starts as its base, only the updates train, the merged weights
are a plain GPT-2 checkpoint, a resume continues bit for bit, 2 processes train as 1, and bad
settings get one line. Tiny models on a CPU; the memory figures are in BENCHMARKS.md."""

import copy
import os
import pickle

import pytest
import torch

from checkpoint import load_checkpoint
from conftest import python
from lora import LoRALinear, add_lora, merged_state_dict
from model import GPT, GPTConfig

# (char_data: a fixture)
from test_train import assert_same_weights, char_data, ok, tiny, torchrun, train  # noqa: F401

LORA = ['--lora_rank=4', '--lora_alpha=8', '--learning_rate=1e-2']
MATRICES = ('attn.c_attn', 'attn.c_proj', 'mlp.c_fc', 'mlp.c_proj')


@pytest.fixture(scope='module')
def base(tmp_path_factory, char_data):  # noqa: F811
    """A tiny random GPT-2 saved by transformers, with the characters' vocabulary and biases not
    zero."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    vocab_size = pickle.load(open(os.path.join(char_data, 'meta.pkl'), 'rb'))['vocab_size']
    hf = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=vocab_size,
            n_positions=64,
            n_embd=32,
            n_layer=2,
            n_head=2,
            bos_token_id=vocab_size - 1,
            eos_token_id=vocab_size - 1,
        )
    )
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith('.bias'):
                p.normal_(0, 0.02)
    path = tmp_path_factory.mktemp('base')
    hf.save_pretrained(path)
    return str(path)


def lora(char_data, base, out, *args):
    return tiny(char_data, out, f'--init_from={base}', *LORA, *args)


def losses(stdout):
    return [
        line.split('loss ')[1].split(',')[0]
        for line in stdout.splitlines()
        if line.startswith('iter ')
    ]


def test_starts_as_the_base_trains_only_its_updates_and_merges():
    torch.manual_seed(0)
    config = GPTConfig(
        n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=50, bias=True, dropout=0.1
    )
    model = GPT(config)
    base_state = copy.deepcopy(model.state_dict())
    x = torch.randint(50, (4, 16))
    model.eval()
    before = model(x, x)[0]
    add_lora(model, 4, 8)
    assert torch.equal(model(x, x)[0], before)  # B = 0: exactly the base model
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained == {
        f'transformer.h.{i}.{m}.lora_{ab}' for i in range(2) for m in MATRICES for ab in 'AB'
    }
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith('lora_B'):
                p.normal_(0, 0.1)
    adapted = model(x, x)[0]
    # merged: a plain GPT's weights under its own names; only the blocks' four matrices differ
    # from the base
    merged = merged_state_dict(model)
    assert list(merged) == list(base_state)
    changed = {k for k in merged if not torch.equal(merged[k], base_state[k])}
    assert changed == {f'transformer.h.{i}.{m}.weight' for i in range(2) for m in MATRICES}
    plain = GPT(config).eval()
    plain.load_state_dict(merged)
    assert (plain(x, x)[0] - adapted).abs().max().item() < 1e-5
    assert (adapted - before).abs().max().item() > 1e-2  # (and the updates did change the model)
    # per token, 4 FLOPs per frozen weight instead of 6, and 6 per weight of the updates
    updates = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert (
        plain.flops_per_iter(1) - model.flops_per_iter(1)
        == (2 * plain.get_num_params() - 6 * updates) * 16
    )
    # the frozen matrices in bfloat16 under autocast: the same products, so the same loss and
    # gradients
    model.train()
    half = copy.deepcopy(model)
    for m in half.modules():
        if isinstance(m, LoRALinear):
            m.weight.data = m.weight.data.to(torch.bfloat16)
    assert half.transformer.h[0].mlp.c_fc.weight.dtype == torch.bfloat16

    def loss_and_grads(m, recompute=False):
        m.recompute = recompute
        torch.manual_seed(1)  # the same dropout
        with torch.autocast('cpu', torch.bfloat16):
            loss = m(x, x)[1]
        loss.backward()
        grads = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
        m.zero_grad()
        return loss, grads

    loss, grads = loss_and_grads(model)
    half_loss, half_grads = loss_and_grads(half)
    assert torch.equal(loss, half_loss) and grads.keys() == half_grads.keys() == trained
    assert all(torch.equal(grads[n], half_grads[n]) for n in grads)
    # recompute: the same gradients, dropout included
    again_loss, again = loss_and_grads(model, recompute=True)
    assert torch.equal(loss, again_loss) and all(torch.equal(grads[n], again[n]) for n in grads)


def test_resumes_bit_for_bit_into_a_plain_gpt2_checkpoint_that_samples_and_exports(
    char_data, base, tmp_path
):  # noqa: F811
    args = ['--max_iters=6', '--eval_interval=3', '--dropout=0.1']
    whole = ok(train(*lora(char_data, base, tmp_path / 'whole', *args)))
    assert (
        f'{2 * 4 * (32 + 96 + 32 + 32 + 32 + 128 + 128 + 32):,} of them trained' in whole.stdout
    )  # 2 layers x r (in + out) of 4 matrices
    ok(
        train(
            *lora(
                char_data,
                base,
                tmp_path / 'broken',
                '--max_iters=3',
                '--eval_interval=3',
                '--dropout=0.1',
            )
        )
    )
    resumed = ok(
        train(
            *lora(
                char_data,
                base,
                tmp_path / 'broken',
                *args,
                '--init_from=resume',
                '--recompute=True',
            )
        )
    )
    assert losses(resumed.stdout) == losses(whole.stdout)[3:]
    a = load_checkpoint(str(tmp_path / 'whole' / 'ckpt.pt'))
    b = load_checkpoint(str(tmp_path / 'broken' / 'ckpt.pt'))
    assert_same_weights(a['model'], b['model'])
    assert_same_weights(a['lora']['adapters'], b['lora']['adapters'])
    assert a['lora']['base'] == b['lora']['base'] == base and (
        a['lora']['rank'],
        a['lora']['alpha'],
    ) == (4, 8.0)
    # the checkpoint's model: GPT-2's keys exactly; only the blocks' weight matrices moved from
    # the base
    reference = GPT.from_pretrained(base)
    reference.crop_block_size(32)
    reference = reference.state_dict()
    assert list(a['model']) == list(reference)
    changed = {k for k in reference if not torch.equal(a['model'][k], reference[k])}
    assert changed == {f'transformer.h.{i}.{m}.weight' for i in range(2) for m in MATRICES}
    # it learned
    evals = [line for line in whole.stdout.splitlines() if line.startswith('eval iter')]
    val = [float(line.split('val loss ')[1].split(',')[0]) for line in evals]
    assert len(val) == 3 and val[-1] < val[0] - 0.1, evals
    # sample.py reads it as any checkpoint, and its export gives transformers our logits
    r = ok(
        python(
            [
                'sample.py',
                f'--out_dir={tmp_path / "whole"}',
                '--num_samples=1',
                '--max_new_tokens=20',
            ]
        )
    )
    assert sum(c.isalpha() for c in r.stdout) > 5
    ok(python(['sample.py', f'--out_dir={tmp_path / "whole"}', f'--export_hf={tmp_path / "hf"}']))
    from transformers import GPT2LMHeadModel

    theirs = GPT2LMHeadModel.from_pretrained(tmp_path / 'hf').eval()
    ours = GPT.from_checkpoint(a).eval()
    idx = torch.randint(ours.config.vocab_size, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (theirs(idx).logits - ours(idx, idx)[0]).abs().max().item() < 1e-4


def test_two_processes_train_as_one(char_data, base, tmp_path):  # noqa: F811
    args = ['--max_iters=3', '--eval_interval=3', '--gradient_accumulation_steps=4']
    single = ok(train(*lora(char_data, base, tmp_path / 'single', *args)))
    ddp = ok(torchrun('train.py', *lora(char_data, base, tmp_path / 'ddp', *args)))
    assert '2 process(es)' in ddp.stdout and losses(single.stdout) == losses(ddp.stdout)
    a, b = (load_checkpoint(str(tmp_path / out / 'ckpt.pt')) for out in ('single', 'ddp'))
    for k in a['lora']['adapters']:
        torch.testing.assert_close(
            a['lora']['adapters'][k], b['lora']['adapters'][k], atol=2e-5, rtol=1e-4
        )


def one_line_error(r, *parts):
    assert r.returncode != 0 and r.stderr.startswith('error: ') and r.stderr.count('\n') == 1, (
        r.stderr[-2000:]
    )
    assert all(p in r.stderr for p in parts), r.stderr


def test_bad_settings_get_one_line(char_data, base, tmp_path):  # noqa: F811
    out = tmp_path / 'out'
    one_line_error(
        train(*lora(char_data, base, out, '--lora_rank=-1')), 'lora_rank=-1', 'must be 0'
    )
    one_line_error(train(*lora(char_data, base, out, '--lora_alpha=0')), 'lora_alpha above 0')
    one_line_error(
        train(*lora(char_data, base, out, '--init_from=scratch')),
        'LoRA adapts a trained model',
        '--init_from',
    )
    one_line_error(
        train(*lora(char_data, base, out, '--optimizer=muon')),
        'optimizer=muon',
        '--optimizer=adamw',
    )
    one_line_error(train(*lora(char_data, base, out, '--fsdp=True')), 'fsdp=True', 'drop --fsdp')
    assert not os.path.exists(out)
    # a resume with other LoRA settings than the run's, either way
    ok(train(*lora(char_data, base, out, '--max_iters=2', '--eval_interval=2')))
    one_line_error(
        train(*lora(char_data, base, out, '--max_iters=4', '--init_from=resume', '--lora_rank=8')),
        'trained with lora_rank=4',
        '--lora_rank=4',
    )
    one_line_error(
        train(*tiny(char_data, out, '--max_iters=4', '--init_from=resume')),
        'trained with lora_rank=4',
    )
    # its base changed on disk: the run cannot continue from it
    moved = tmp_path / 'moved'
    ok(
        train(
            *tiny(
                char_data,
                moved / 'full',
                '--max_iters=2',
                '--eval_interval=2',
                f'--init_from={base}',
            )
        )
    )
    one_line_error(
        train(*tiny(char_data, moved / 'full', '--max_iters=4', '--init_from=resume', *LORA)),
        'trained with lora_rank=0',
    )
    from transformers import GPT2LMHeadModel

    changed = GPT2LMHeadModel.from_pretrained(base)
    with torch.no_grad():
        changed.transformer.ln_f.bias += 0.5
    changed.save_pretrained(moved / 'base')
    ok(
        train(
            *lora(
                char_data, str(moved / 'base'), moved / 'lora', '--max_iters=2', '--eval_interval=2'
            )
        )
    )
    GPT2LMHeadModel.from_pretrained(base).save_pretrained(moved / 'base')
    one_line_error(
        train(
            *lora(
                char_data,
                str(moved / 'base'),
                moved / 'lora',
                '--max_iters=4',
                '--init_from=resume',
            )
        ),
        'is not the model this LoRA run started from',
        'transformer.ln_f.bias',
    )
