"""Generation: the KV-cache path against plain recomputation, and the sampling rules of
sample_next_token (temperature, top-k, top-p) against brute-force references."""

import copy
from contextlib import nullcontext

import pytest
import torch
import torch.nn.functional as F

import devices
import model as M
from cpu_generation import PackedLinear, PlainLayerNorm, PlainLinear, can_pack, generation_layers
from errors import InputError
from model import GPT, GPTConfig, sample_next_token

BLOCK = 16


def chaotic_model(dropout=0.1, bias=True):
    """A tiny GPT in eval mode whose weight matrices are large enough that the next token depends
    on the whole context and on every position (at GPT-2's init it mostly repeats the last token).
    Biases and LayerNorm gains are moved off 0 and 1, so that a step that skips one shows."""
    torch.manual_seed(0)
    m = GPT(GPTConfig(block_size=BLOCK, vocab_size=96, n_layer=2, n_head=4, n_embd=32,
                      dropout=dropout, bias=bias))
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:  # embeddings and Linear weights
                p.normal_(0.0, 0.5)
            else:  # biases, LayerNorm gains and biases
                p.add_(torch.randn_like(p) * 0.2)
    return m.eval()


def reference_generate(m, idx, max_new_tokens, pick):
    """The definition: feed the last block_size tokens, pick the next one, repeat."""
    for _ in range(max_new_tokens):
        logits, _ = m(idx[:, -BLOCK:])
        idx = torch.cat((idx, pick(logits[:, -1, :])), dim=1)
    return idx


@pytest.fixture(params=[True, False], ids=['sdpa', 'plain-attention'])
def attention(request):
    saved = M.CausalSelfAttention.use_sdpa
    M.CausalSelfAttention.use_sdpa = request.param
    yield
    M.CausalSelfAttention.use_sdpa = saved


# (batch, prompt length, new tokens): inside the context, across its end, starting at its end,
# and from a prompt already longer than the context.
CASES = [(1, 3, 12), (3, 3, 12), (1, 3, 30), (3, 5, 30), (2, BLOCK, 6), (2, BLOCK + 4, 6)]


@pytest.mark.parametrize('bias', [True, False], ids=['bias', 'no-bias'])
@pytest.mark.parametrize('B, T, new', CASES)
def test_greedy_cached_equals_plain(attention, B, T, new, bias):
    m = chaotic_model(bias=bias)
    idx = torch.randint(96, (B, T), generator=torch.Generator().manual_seed(T))
    cached = m.generate(idx, new, temperature=0)
    plain = m.generate(idx, new, temperature=0, use_cache=False)
    with torch.no_grad():
        expected = reference_generate(m, idx, new,
                                      lambda logits: logits.argmax(dim=-1, keepdim=True))
    assert torch.equal(plain, expected)
    assert torch.equal(cached, expected)
    assert cached.shape == (B, T + new)
    assert len(set(cached[:, T:].flatten().tolist())) > 3  # the model does not just repeat itself


@pytest.mark.parametrize('B, T, new', [(1, 3, 30), (3, 5, 30), (2, BLOCK + 4, 6)])
@pytest.mark.parametrize('top_k, top_p', [(None, None), (30, 0.9)])
def test_seeded_sampling_cached_equals_plain(attention, B, T, new, top_k, top_p):
    m = chaotic_model()
    idx = torch.randint(96, (B, T), generator=torch.Generator().manual_seed(T))
    runs = [m.generate(idx, new, temperature=1.3, top_k=top_k, top_p=top_p, use_cache=use_cache,
                       generator=torch.Generator().manual_seed(7))
            for use_cache in (True, False)]
    assert torch.equal(runs[0], runs[1])
    other_seed = m.generate(idx, new, temperature=1.3, top_k=top_k, top_p=top_p,
                            generator=torch.Generator().manual_seed(8))
    assert not torch.equal(runs[0], other_seed)  # the generator really drives the draws


def draws(logits, n, **kw):
    """n samples from each row of logits (R, V) in one call -> (R, n)."""
    R, V = logits.shape
    rows = logits.repeat_interleave(n, dim=0)  # (R * n, V)
    return sample_next_token(rows, generator=torch.Generator().manual_seed(0), **kw).view(R, n)


def test_temperature_zero_is_greedy():
    logits = torch.randn(5, 40, generator=torch.Generator().manual_seed(0))
    expected = logits.argmax(dim=-1, keepdim=True)
    for kw in [{}, dict(top_k=3), dict(top_p=0.5), dict(top_k=3, top_p=0.5)]:
        assert torch.equal(sample_next_token(logits, temperature=0, **kw), expected)
    m = chaotic_model()
    idx = torch.randint(96, (2, 3))
    one, two = (m.generate(idx, 8, temperature=0, generator=torch.Generator().manual_seed(s))
                for s in (1, 2))
    assert torch.equal(one, two)


def test_draws_are_torch_multinomial_draws():
    # sample_next_token draws with an exponential race; torch.multinomial is the reference, from
    # the same generator state, also where top-k and top-p leave tokens at probability zero.
    logits = torch.randn(8, 50, generator=torch.Generator().manual_seed(0)) * 2
    for kw in [dict(), dict(temperature=0.7), dict(top_k=5), dict(top_p=0.8),
               dict(top_k=20, top_p=0.5)]:
        ours = sample_next_token(logits, generator=torch.Generator().manual_seed(1), **kw)
        t = kw.get('temperature', 1.0)
        masked = logits / t
        if 'top_k' in kw or 'top_p' in kw:  # the same filtering, by the brute force above
            masked = torch.full_like(logits, float('-inf'))
            for r in range(len(logits)):
                keep = list(reference_kept(logits[r], t, kw.get('top_k'), kw.get('top_p')))
                masked[r, keep] = logits[r, keep] / t
        expected = torch.multinomial(masked.softmax(dim=-1), 1,
                                     generator=torch.Generator().manual_seed(1))
        assert torch.equal(ours, expected), kw


def test_top_k_keeps_exactly_k_tokens_when_tied():
    logits = torch.tensor([[0.0, 2.0, 2.0, 2.0, 1.0, -1.0]])  # three tokens tie for the top
    for k, allowed in [(1, {1, 2, 3}), (2, {1, 2, 3}), (4, {1, 2, 3, 4})]:
        seen = set(draws(logits, 2000, top_k=k)[0].tolist())
        assert len(seen) == k and seen <= allowed, (k, seen)
    assert set(draws(logits, 2000, top_k=100)[0].tolist()) == set(range(6))  # k > vocab: all kept


def test_top_p_always_keeps_the_most_likely_token():
    logits = torch.tensor([[0.0, 0.3, 0.1, 0.2],     # flat: the argmax alone is far below top_p
                           [5.0, 0.0, 0.0, 0.0]])    # peaked: the argmax alone is above top_p
    for top_p in [0.0, 1e-9, 0.01]:
        assert draws(logits, 500, top_p=top_p).tolist() == [[1] * 500, [0] * 500]
    assert set(draws(logits, 2000, top_p=0.5)[1].tolist()) == {0}


def reference_kept(logits, temperature, top_k, top_p):
    """Brute force, in float64: the tokens sampling may return, and their probabilities."""
    probs = (logits.double() / temperature).softmax(dim=-1)
    order = sorted(range(len(probs)), key=lambda i: -probs[i].item())
    kept = order[:top_k] if top_k else order
    total = sum(probs[i].item() for i in kept)
    if top_p is not None:
        mass, prefix = 0.0, []
        for i in kept:  # the smallest most-likely-first prefix whose mass reaches top_p
            prefix.append(i)
            mass += probs[i].item() / total
            if mass >= top_p:
                break
        kept = prefix
    total = sum(probs[i].item() for i in kept)
    return {i: probs[i].item() / total for i in kept}


@pytest.mark.parametrize('temperature, top_k', [(1.0, None), (0.7, None), (1.5, 6)])
def test_top_p_set_matches_brute_force(temperature, top_k):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 10, generator=g) * 1.5
    n = 4000
    for row in logits:
        # Aim top_p at the middle of some token's share of the mass, far from any boundary.
        full = reference_kept(row, temperature, top_k, None)
        ordered = sorted(full.values(), reverse=True)
        j = int(torch.randint(len(ordered) - 1, (1,), generator=g))
        top_p = sum(ordered[:j]) + ordered[j] / 2
        expected = reference_kept(row, temperature, top_k, top_p)
        assert len(expected) == j + 1
        samples = draws(row[None], n, temperature=temperature, top_k=top_k, top_p=top_p)[0]
        counts = torch.bincount(samples, minlength=10).double() / n
        assert set(samples.tolist()) == set(expected), (top_p, expected)
        for i, p in expected.items():
            assert abs(counts[i].item() - p) < 0.03, (i, counts[i].item(), p)


@pytest.mark.parametrize('bias', [True, False], ids=['bias', 'no-bias'])
@pytest.mark.parametrize('chunks', [[7], [1, 1, 1, 1, 1, 1, 1], [3, 1, 3], [2, 5]])
def test_cache_fed_in_chunks_matches_one_pass(attention, chunks, bias):
    # forward with a KVCache, as generation runs it, against one pass over the whole sequence, as
    # training runs it: a prompt into an empty cache (causal), single tokens, and several tokens
    # after cached ones (an offset mask) must all give the logits of the one pass.
    m = chaotic_model(bias=bias)
    idx = torch.randint(96, (2, 7))
    with torch.no_grad():
        expected, _ = m(idx, idx)  # logits at every position (B, T, vocab)
        cache, start = M.KVCache(m.config), 0
        for n in chunks:
            logits = m(idx[:, start:start + n], cache=cache)[0][:, -1]  # (B, vocab)
            start += n
            torch.testing.assert_close(logits, expected[:, start - 1], atol=1e-5, rtol=1e-5)
    assert cache.length == 7
    with pytest.raises(InputError, match='block_size'):
        m(torch.zeros(2, BLOCK - 6, dtype=torch.long), cache=cache)  # 7 cached + 10 new > 16


@pytest.mark.skipif(not can_pack(torch.zeros(1, dtype=torch.bfloat16)),
                    reason="oneDNN computes no bfloat16 on this CPU")
@pytest.mark.parametrize('bias', [True, False], ids=['bias', 'no-bias'])
def test_packed_weights_give_f_linear_s_logits(bias):
    # bfloat16 on a CPU: the cached forward with the weights repacked for oneDNN against the same
    # weights as they are (F.linear), fed the same tokens: a prompt of 2 x 5, then one at a time
    m = chaotic_model(dropout=0.0, bias=bias).eval().to(torch.bfloat16)
    idx = torch.randint(96, (2, 12))
    logits = []
    linears = {name: mod for name, mod in m.named_modules() if type(mod) is torch.nn.Linear}
    for packing in (True, False):
        with torch.inference_mode(), generation_layers(m) if packing else nullcontext():
            layers = dict(m.named_modules())
            assert all(isinstance(layers[name], PackedLinear) == packing for name in linears)
            cache = M.KVCache(m.config)
            steps = [(0, 5)] + [(t, t + 1) for t in range(5, 12)]
            logits.append([m(idx[:, start:end], cache=cache)[0] for start, end in steps])
    # the original layers back after the block
    assert all(dict(m.named_modules())[name] is mod for name, mod in linears.items())
    for a, b in zip(*logits):
        torch.testing.assert_close(a.float(), b.float(), atol=2e-2, rtol=2e-2)
    assert a.float().std() > 0.1  # (logits that can differ)


def test_generation_layers_give_the_model_s_tokens_and_go_back():
    # float32 on a CPU: plain-tensor Linear and LayerNorm layers, no dropout, the same arithmetic
    m = chaotic_model(dropout=0.2).eval()
    idx = torch.randint(96, (2, 3))
    expected = m.generate(idx, 30, temperature=0)
    originals = dict(m.named_modules())
    with generation_layers(m):
        layers = dict(m.named_modules())
        assert isinstance(layers['lm_head'], PlainLinear)
        assert isinstance(layers['transformer.h.0.ln_1'], PlainLayerNorm)
        assert isinstance(layers['transformer.drop'], torch.nn.Identity)
        assert torch.equal(m.generate(idx, 30, temperature=0), expected)
    assert dict(m.named_modules()) == originals


def test_training_mode_generates_with_dropout_like_the_plain_path():
    # The cached path has no dropout; in training mode generate recomputes, as the plain path does.
    m = chaotic_model(dropout=0.3).train()
    idx = torch.randint(96, (2, 3), generator=torch.Generator().manual_seed(0))
    runs = []
    for use_cache in (True, False, True):
        torch.manual_seed(5)  # dropout draws from the global generator
        runs.append(m.generate(idx, 10, temperature=0, use_cache=use_cache))
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], m.eval().generate(idx, 10, temperature=0))  # dropout mattered


@pytest.mark.parametrize('use_cache', [True, False])
def test_non_finite_logits_stop_generation(use_cache):
    m = chaotic_model()
    with torch.no_grad():
        m.transformer.h[1].mlp.c_fc.weight[0, 0] = float('nan')
    with pytest.raises(InputError, match='NaN or inf'):
        m.generate(torch.randint(96, (2, 3)), 4, use_cache=use_cache)


def test_generated_tokens_are_ordinary_tensors():
    # generate runs the model under inference_mode; its result must still be usable for training.
    m = chaotic_model()
    out = m.generate(torch.randint(96, (2, 3)), 4)
    assert not out.is_inference()
    _, loss = m.train()(out[:, :-1], out[:, 1:])
    loss.backward()


@pytest.fixture(scope='module')
def trained_char_model(shakespeare_txt):
    """A small character model trained for 200 steps on Shakespeare, and validation
    batches from text it did not train on. Returns (model, X, Y)."""
    text = open(shakespeare_txt).read()
    stoi = {c: i for i, c in enumerate(sorted(set(text)))}
    ids = torch.tensor([stoi[c] for c in text[:120_000]])
    train, val = ids[:100_000], ids[100_000:]
    threads = torch.get_num_threads()
    # ops this small gain nothing from a second thread, and wait for it on a busy machine
    torch.set_num_threads(1)
    torch.manual_seed(0)
    m = GPT(GPTConfig(block_size=64, vocab_size=len(stoi), n_layer=2, n_head=4, n_embd=64,
                      dropout=0.0, bias=False))
    optimizer = torch.optim.AdamW(m.parameters(), lr=3e-3)
    for _ in range(200):
        i = torch.randint(len(train) - 65, (12,))
        x = torch.stack([train[j:j + 65] for j in i.tolist()])  # (12, 65)
        _, loss = m(x[:, :-1], x[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.set_num_threads(threads)
    i = torch.arange(0, len(val) - 65, 65)[:128]
    v = torch.stack([val[j:j + 65] for j in i.tolist()])  # (128, 65)
    return m.eval(), v[:, :-1], v[:, 1:]


@pytest.mark.parametrize('dtype', ['bfloat16', 'float16', 'auto'])
def test_inference_dtype_keeps_the_validation_loss(trained_char_model, dtype):
    """The weights cast to an inference dtype (model.to(dtype), as sample.py does) give the float32
    validation loss within 0.01 on a trained model."""
    m, X, Y = trained_char_model
    with torch.no_grad():
        loss32 = m(X, Y)[1].item()
        assert loss32 < 2.8  # trained: ln(65) = 4.2 at init
        cast = copy.deepcopy(m).to(devices.inference_dtype('cpu', dtype))
        logits, _ = cast(X, Y)
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), Y.reshape(-1)).item()
    assert next(cast.parameters()).dtype == devices.inference_dtype('cpu', dtype)
    assert abs(loss - loss32) < 0.01, (dtype, loss, loss32)


def test_inference_dtype_keeps_greedy_tokens(trained_char_model):
    """generate() with the weights in the CPU's inference dtype (bfloat16 here, through the
    repacked weights where oneDNN has bfloat16) continues "\n" greedily as float32 does: 200
    tokens, at most a few of them different (BENCHMARKS.md reports how many agree)."""
    m = trained_char_model[0]
    # "\n", the first character of the sorted vocabulary
    start = torch.zeros(1, 1, dtype=torch.long)
    expected = m.generate(start, 200, temperature=0)[0, 1:]
    cast = copy.deepcopy(m).to(devices.inference_dtype('cpu'))
    with generation_layers(cast):
        tokens = cast.generate(start, 200, temperature=0)[0, 1:]
    assert (tokens == expected).sum() >= 190, (tokens == expected).sum()
    assert len(set(expected.tolist())) >= 4  # (not one repeated character)


def test_inference_dtype_auto_per_device(monkeypatch):
    assert devices.inference_dtype('cpu', 'float16') == torch.float16  # asked for: kept
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda including_emulation=True: True)
    assert devices.inference_dtype('cuda') == torch.bfloat16
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported',
                        lambda including_emulation=True: including_emulation)
    assert devices.inference_dtype('cuda') == torch.float16  # emulated bfloat16 is slow: float16
    assert devices.inference_dtype('mps') == torch.float32
    for native, expected in [(True, torch.bfloat16), (False, torch.float32)]:
        monkeypatch.setattr(torch.cpu, '_is_avx512_bf16_supported', lambda: native)
        assert devices.inference_dtype('cpu') == expected
