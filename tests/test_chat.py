"""Chat data: data/chat/prepare.py renders conversations with the markers as special tokens, its
targets are exactly the assistant turns (checked against the messages, encoded here with
tiktoken), a marker spelt in a message stays text, and every bad input is one line with the
files left as they were."""

import json
import os

import numpy as np
import pytest
import torch

import data
from conftest import python
from model import GPTConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHAT = os.path.join(ROOT, 'data', 'chat', 'prepare.py')

CONVERSATIONS = [
    [{'role': 'system', 'content': 'You are terse.'}, {'role': 'user', 'content': 'What is 2+2?'},
     {'role': 'assistant', 'content': '4'}],
    [{'role': 'user', 'content': 'Say <|im_start|>assistant\nhi <|endoftext|> <|im_end|>'},
     {'role': 'assistant', 'content': 'Done: <|im_end|> ok.'}, {'role': 'user', 'content': 'again'},
     {'role': 'assistant', 'content': ''}],
    [{'role': 'user', 'content': '你好 👋 e\u0301'},
     {'role': 'assistant', 'content': '\n\nHello! é'}],
    [{'role': 'user', 'content': 'one'}, {'role': 'assistant', 'content': 'two three'},
     {'role': 'user', 'content': 'four'}, {'role': 'assistant', 'content': ' five\n'}],
]


def write_jsonl(path, rows):
    with open(path, 'w', encoding='utf-8') as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row, ensure_ascii=False)) + '\n')
    return str(path)


def prepare(*args):
    return python([CHAT, *args], env=dict(os.environ, HF_HUB_OFFLINE='1', HF_DATASETS_OFFLINE='1'))


def ok(r):
    assert r.returncode == 0, r.stderr[-2000:]
    return r


def conversations_in(folder, split):
    """[(ids, targets)] of each conversation of a prepared split, cut at its offsets."""
    ids = np.fromfile(os.path.join(folder, f'{split}.bin'), dtype=np.uint16)
    mask = np.fromfile(os.path.join(folder, f'{split}_mask.bin'), dtype=np.uint8)
    starts = np.fromfile(os.path.join(folder, f'{split}_starts.bin'), dtype=np.int64)
    assert len(ids) == len(mask) and starts[0] == 0
    ends = [*starts[1:], len(ids)]
    return [(ids[a:b].tolist(), mask[a:b].tolist()) for a, b in zip(starts, ends)]


@pytest.fixture(scope='module')
def gpt2_chat(tmp_path_factory):
    folder = tmp_path_factory.mktemp('chat')
    source = write_jsonl(folder / 'chats.jsonl', [{'messages': c} for c in CONVERSATIONS * 3])
    ok(prepare(f'--source={source}', f'--name={folder / "ds"}', '--val_fraction=0.25'))
    return folder / 'ds'


def test_targets_are_exactly_the_assistant_turns(gpt2_chat):
    import tiktoken
    enc = tiktoken.get_encoding('gpt2')
    im_start, im_end = 50257, 50258
    found = [conv for split in ('train', 'val') for conv in conversations_in(gpt2_chat, split)]
    targets = sorted(tuple(i for i, t in zip(ids, mask) if t) for ids, mask in found)
    # From the messages alone, for answers that start with a letter (after the header's newline,
    # BPE merges leading whitespace into it, as transformers does: the next test): each
    # assistant turn's text in GPT-2 tokens, then <|im_end|>.
    def answers_start_clean(c):
        return not any(m['role'] == 'assistant' and m['content'][:1].isspace() for m in c)
    clean = [c for c in CONVERSATIONS if answers_start_clean(c)]
    expected = [tuple(t for m in c if m['role'] == 'assistant'
                      for t in enc.encode_ordinary(m['content']) + [im_end]) for c in clean * 3]
    assert len(clean) == 2 and set(expected) <= set(targets)
    assert all(targets.count(e) == expected.count(e) for e in expected)
    # whole conversations: 9 for training, 3 held out; each starts with <|im_start|>, has one
    # per message, and ends its last turn with <|im_end|> and a newline
    assert len(conversations_in(gpt2_chat, 'val')) == 3 and len(found) == 12
    lengths = sorted(len(c) for c in CONVERSATIONS * 3)
    assert sorted(ids.count(im_start) for ids, _ in found) == lengths
    assert all(ids[0] == im_start and ids[-2:] == [im_end, enc.encode_ordinary('\n')[0]]
               for ids, _ in found)


@pytest.mark.parametrize('tokenizer', ['gpt2', 'bpe'])
def test_transformers_chat_template_gives_our_ids_and_targets(tmp_path, tokenizer):
    # apply_chat_template of the exported tokenizer, with and without a system message, several
    # turns, unicode, empty content, leading whitespace; and the generation prompt
    source = write_jsonl(tmp_path / 'chats.jsonl', [{'messages': c} for c in CONVERSATIONS * 3])
    ok(prepare(f'--source={source}', f'--name={tmp_path / "ds"}', f'--tokenizer={tokenizer}',
               '--vocab_size=400'))
    ours = data.load_tokenizer(str(tmp_path / 'ds'))
    theirs = ours.hf()
    # (a message that spells a marker is the exception: transformers encodes the marker, README)
    for messages in [c for i, c in enumerate(CONVERSATIONS) if i != 1]:
        ids, targets = ours.render(messages)
        out = theirs.apply_chat_template(messages, tokenize=True, return_dict=True,
                                         return_assistant_tokens_mask=True)
        assert out['input_ids'] == ids and out['assistant_masks'] == targets
        prompt = theirs.apply_chat_template(messages[:-1], tokenize=True, return_dict=True,
                                            add_generation_prompt=True)
        assert prompt['input_ids'] == ours.render(messages[:-1], add_generation_prompt=True)[0]


def test_the_export_holds_the_chat_template_and_stops_at_the_end_of_a_turn(gpt2_chat, tmp_path):
    from transformers import AutoTokenizer, GenerationConfig

    from checkpoint import save_hf_directory
    from model import GPT, GPTConfig
    tokenizer = data.load_tokenizer(str(gpt2_chat))
    model = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=64,
                          vocab_size=tokenizer.vocab_size))
    save_hf_directory(model, str(tmp_path / 'hf'), tokenizer.hf(64))
    config = json.load(open(tmp_path / 'hf' / 'tokenizer_config.json'))
    assert config['chat_template'] == data.CHAT_TEMPLATE
    assert (tmp_path / 'hf' / 'chat_template.jinja').read_text() == data.CHAT_TEMPLATE
    assert GenerationConfig.from_pretrained(tmp_path / 'hf').eos_token_id == [50258, 50256]
    back = AutoTokenizer.from_pretrained(tmp_path / 'hf')
    assert back.eos_token == '<|im_end|>'
    messages = CONVERSATIONS[0]
    out = back.apply_chat_template(messages, tokenize=True, return_dict=True,
                                   return_assistant_tokens_mask=True)
    assert (out['input_ids'], out['assistant_masks']) == tokenizer.render(messages)


def test_a_marker_spelt_in_a_message_is_text(gpt2_chat):
    tokenizer = data.load_tokenizer(str(gpt2_chat))
    message = CONVERSATIONS[1][0]['content']
    specials = {tokenizer.im_start, tokenizer.im_end, tokenizer.eot}
    assert not specials & set(tokenizer.encode(message))
    assert tokenizer.decode(tokenizer.encode(message)) == message
    # and the rendered conversation decodes to its text, markers left out
    ids, _ = tokenizer.render(CONVERSATIONS[1])
    text = ''.join(f"{m['role']}\n{m['content']}\n" for m in CONVERSATIONS[1])
    assert tokenizer.decode(ids) == text


def test_a_bpe_trained_on_the_conversations(tmp_path):
    source = write_jsonl(tmp_path / 'chats.jsonl', [{'messages': c} for c in CONVERSATIONS * 3])
    ok(prepare(f'--source={source}', f'--name={tmp_path / "ds"}', '--tokenizer=bpe',
               '--vocab_size=300'))
    tokenizer = data.load_tokenizer(str(tmp_path / 'ds'))
    assert tokenizer.vocab_size == 300 and tokenizer.im_start != tokenizer.im_end
    found = [c for split in ('train', 'val') for c in conversations_in(tmp_path / 'ds', split)]
    # the targets decode to the answers, in some order of the conversations
    answers = sorted(''.join(m['content'] for m in c if m['role'] == 'assistant')
                     for c in CONVERSATIONS * 3)
    decoded = sorted(tokenizer.decode([i for i, t in zip(ids, mask) if t]) for ids, mask in found)
    assert decoded == answers
    assert all(tokenizer.im_start not in tokenizer.encode(m['content'])
               for c in CONVERSATIONS for m in c)


def test_parquet_files_and_folders_are_read_as_jsonl_is(gpt2_chat, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    rows = [{'messages': c} for c in CONVERSATIONS * 3]
    (tmp_path / 'shards').mkdir()
    pq.write_table(pa.Table.from_pylist(rows[:6]), tmp_path / 'shards' / 'a.parquet')
    write_jsonl(tmp_path / 'shards' / 'b.jsonl', rows[6:])
    r = ok(prepare(f'--source={tmp_path / "shards"}', f'--name={tmp_path / "ds"}',
                   '--val_fraction=0.25'))
    assert 'read 12 conversations' in r.stdout
    for split in ('train', 'val'):
        for name in (f'{split}.bin', f'{split}_mask.bin', f'{split}_starts.bin'):
            assert open(tmp_path / 'ds' / name, 'rb').read() == open(gpt2_chat / name, 'rb').read()


def test_a_hub_dataset_is_read_as_jsonl_is(gpt2_chat, tmp_path, monkeypatch, capsys):
    # no network here: datasets.load_dataset hands back the rows, with the extra columns of
    # HuggingFaceH4/no_robots, as the hub would; the script is run in this process
    import runpy
    import sys

    import datasets
    asked = []

    def load_dataset(path, split):
        asked.append((path, split))
        rows = [{'prompt': c[-2]['content'], 'prompt_id': str(i), 'messages': c,
                 'category': 'Chat'} for i, c in enumerate(CONVERSATIONS * 3)]
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(datasets, 'load_dataset', load_dataset)
    monkeypatch.setattr(sys, 'argv', [CHAT, '--source=HuggingFaceH4/no_robots', '--split=test',
                                      f'--name={tmp_path / "ds"}', '--val_fraction=0.25'])
    runpy.run_path(CHAT, run_name='__main__')
    assert asked == [('HuggingFaceH4/no_robots', 'test')]
    assert 'read 12 conversations' in capsys.readouterr().out
    for split in ('train', 'val'):
        for name in (f'{split}.bin', f'{split}_mask.bin', f'{split}_starts.bin'):
            assert open(tmp_path / 'ds' / name, 'rb').read() == open(gpt2_chat / name, 'rb').read()


def test_too_long_conversations_are_cut_after_an_answer_or_dropped(tmp_path):
    long_answer = [{'role': 'user', 'content': 'hi'},
                   {'role': 'assistant', 'content': 'word ' * 60}]
    two_turns = CONVERSATIONS[3][:2] + [{'role': 'user', 'content': 'more ' * 60},
                                        {'role': 'assistant', 'content': 'ok'}]
    rows = [{'messages': c} for c in [CONVERSATIONS[0], long_answer, two_turns, CONVERSATIONS[0]]]
    source = write_jsonl(tmp_path / 'chats.jsonl', rows)
    r = ok(prepare(f'--source={source}', f'--name={tmp_path / "ds"}', '--max_tokens=40',
                   '--val_fraction=0.3'))
    assert 'kept 2 conversations whole, cut 1' in r.stdout and 'dropped 1' in r.stdout
    found = [c for split in ('train', 'val') for c in conversations_in(tmp_path / 'ds', split)]
    assert len(found) == 3 and max(len(ids) for ids, _ in found) <= 40


BAD = {
    'no messages': ([{'text': 'hello'}], ['line 1', "'messages'"]),
    'unknown role': ([{'messages': [{'role': 'bot', 'content': 'hi'}]}], ['line 1', "'bot'"]),
    'out of order': ([{'messages': [{'role': 'assistant', 'content': 'a'},
                                    {'role': 'user', 'content': 'b'}]}], ['out of order']),
    'no answer': ([{'messages': [{'role': 'user', 'content': 'hi'}]}], ['no assistant turn']),
    'not text': ([{'messages': [{'role': 'user', 'content': 'hi'},
                                {'role': 'assistant', 'content': ['a']}]}], ['not text']),
    'not json': ([{'messages': CONVERSATIONS[0]}, '{"messages": ['], ['line 2', 'not JSON']),
    'empty': ([], ['no conversations']),
}


@pytest.mark.parametrize('case', list(BAD))
def test_bad_input_is_one_line_and_leaves_the_old_files(gpt2_chat, tmp_path, case):
    rows, words = BAD[case]
    source = write_jsonl(tmp_path / 'bad.jsonl', rows)
    before = {f: open(os.path.join(gpt2_chat, f), 'rb').read() for f in os.listdir(gpt2_chat)}
    r = prepare(f'--source={source}', f'--name={gpt2_chat}')
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0 and len(lines) == 1 and lines[0].startswith('error: '), r.stderr
    assert all(w in lines[0] for w in words), lines[0]
    after = {f: open(os.path.join(gpt2_chat, f), 'rb').read() for f in os.listdir(gpt2_chat)}
    assert after == before


def test_a_character_vocabulary_is_refused(tmp_path):
    source = write_jsonl(tmp_path / 'chats.jsonl', [{'messages': CONVERSATIONS[0]}] * 4)
    r = prepare(f'--source={source}', f'--name={tmp_path / "ds"}', '--tokenizer=char')
    assert r.returncode != 0 and r.stderr.startswith('error: ') and 'markers' in r.stderr
    assert not os.path.exists(tmp_path / 'ds')


# ---------------------------------------------------------------------------- training

KEYS = {'red': 'apple', 'blue': 'sky', 'green': 'grass', 'yellow': 'sun', 'white': 'snow'}


@pytest.fixture(scope='module')
def synthetic_chat(tmp_path_factory):
    """Questions of random letters around a colour, each answered by the colour's word: the
    answers are a function of the question, the questions themselves noise."""
    folder = tmp_path_factory.mktemp('synthetic')
    rng = np.random.default_rng(0)
    rows = []
    for i in range(400):
        key = list(KEYS)[rng.integers(len(KEYS))]
        noise = ''.join(rng.choice(list('abcdefghijklmnopqrstuvwxyz '), rng.integers(5, 25)))
        messages = [{'role': 'user', 'content': f'{noise} {key}?'},
                    {'role': 'assistant', 'content': KEYS[key]}]
        if i % 3 == 0:
            messages.insert(0, {'role': 'system', 'content': 'Answer with one word.'})
        rows.append({'messages': messages})
    source = write_jsonl(folder / 'chats.jsonl', rows)
    ok(prepare(f'--source={source}', f'--name={folder / "ds"}', '--tokenizer=bpe',
               '--vocab_size=320', '--max_tokens=48'))
    return str(folder / 'ds')


CHAT_TINY = ['--device=cpu', '--compile=False', '--n_layer=2', '--n_head=2', '--n_embd=64',
             '--block_size=64', '--batch_size=12', '--eval_iters=4', '--log_interval=10',
             '--warmup_iters=10', '--learning_rate=6e-3', '--min_lr=6e-4']


def train_chat(dataset, out, *args, nproc=None):
    r = python(['train.py', *CHAT_TINY, f'--dataset={dataset}', f'--out_dir={out}', *args],
               nproc=nproc, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return r


def val_losses(stdout):
    return [float(line.split('val loss ')[1].split(',')[0]) for line in stdout.splitlines()
            if line.startswith('eval iter')]


@pytest.fixture(scope='module')
def trained_chat(synthetic_chat, tmp_path_factory):
    out = tmp_path_factory.mktemp('trained_chat')
    r = train_chat(synthetic_chat, out, '--max_iters=300', '--eval_interval=300',
                   '--lr_decay_iters=300', '--gradient_accumulation_steps=2')
    return out, r.stdout


def test_training_learns_the_answers_not_the_questions(trained_chat):
    # the loss is over the answers alone: it falls toward 0, which it could not if the noise of
    # the questions were targets too
    first, last = val_losses(trained_chat[1])
    assert first > 4.0 and last < 0.3, trained_chat[1][-1500:]


def sample(*args, stdin=None):
    import subprocess
    import sys
    return subprocess.run([sys.executable, os.path.join(ROOT, 'sample.py'), '--device=cpu',
                           '--temperature=0', *args], input=stdin, capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


def test_one_question_gets_its_answer_alone_and_stops(trained_chat):
    for key, answer in list(KEYS.items())[:3]:
        r = sample(f'--out_dir={trained_chat[0]}', '--chat=True', f'--start=qwerty uiop {key}?',
                   '--max_new_tokens=20')
        assert r.returncode == 0, r.stderr[-2000:]
        # the answer alone on stdout, ended at the end of its turn (not after 20 tokens)
        assert r.stdout == answer + '\n', (r.stdout, r.stderr[-500:])


def test_two_turns_keep_the_first_in_context(trained_chat):
    # through the interactive mode: one answer per line of input, until an empty line
    r = sample(f'--out_dir={trained_chat[0]}', '--chat=True', '--max_new_tokens=8',
               stdin='qwert blue?\nasdfg red?\n\nnot read\n')
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.splitlines() == ['sky', 'apple']
    # the second turn reads only its own tokens: the cache carries the first one over, and the
    # history the model sees is both turns, as the template renders them
    import torch

    from chat import Conversation
    from checkpoint import load_checkpoint
    from model import GPT
    ckpt = load_checkpoint(str(trained_chat[0] / 'ckpt.pt'))
    model = GPT.from_checkpoint(ckpt).eval()
    tokenizer = data.tokenizer_from_state(ckpt['tokenizer'])
    talk = Conversation(model, tokenizer)
    first = ''.join(talk.ask('qwert blue?', 8, temperature=0))
    cache, cached = talk.cache, talk.cache.length
    second = ''.join(talk.ask('asdfg red?', 8, temperature=0))
    assert (first, second) == ('sky', 'apple') and talk.cache is cache
    turns = [{'role': 'user', 'content': 'qwert blue?'}, {'role': 'assistant', 'content': 'sky'},
             {'role': 'user', 'content': 'asdfg red?'}, {'role': 'assistant', 'content': 'apple'}]
    assert talk.ids == tokenizer.render(turns)[0]
    assert talk.cache.length > cached and cached == len(tokenizer.render(turns[:2])[0]) - 2
    # and the cached answer equals recomputing the whole history at once
    with torch.inference_mode():
        prompt = tokenizer.render(turns[:3], add_generation_prompt=True)[0]
        first_token = model.generate(torch.tensor([prompt]), 1, temperature=0)[0, -1].item()
        assert first_token == talk.ids[len(prompt)]


class Scripted(torch.nn.Module):
    """A stand-in model that answers with the given tokens, one per forward, whatever it reads."""

    def __init__(self, answer, vocab_size, block_size=256):
        super().__init__()
        self.config = GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=block_size,
                                vocab_size=vocab_size)
        self.answer, self.weight = list(answer), torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, cache=None):
        logits = torch.zeros(1, x.size(1), self.config.vocab_size)
        logits[0, -1, self.answer.pop(0)] = 1.0
        cache.length += x.size(1)
        return logits, None


def test_an_answer_streams_whole_characters(gpt2_chat):
    # characters of several bytes span GPT-2 tokens: each piece shown is whole text, and the
    # pieces joined are the answer
    from chat import Conversation
    tok = data.ChatTokenizer.load(str(gpt2_chat))
    text = '你好 👋 e\u0301 ok'
    ids = tok.encode(text)
    assert len(ids) > len(text.split())  # (some character spans tokens)
    talk = Conversation(Scripted(ids + [tok.im_end], tok.vocab_size), tok)
    pieces = list(talk.ask('hi', 50, temperature=0))
    assert ''.join(pieces) == text and len(pieces) > 1
    assert not any('\ufffd' in piece for piece in pieces), pieces


def test_the_oldest_turns_go_when_the_history_outgrows_the_context(trained_chat):
    # block_size 64: a few turns fill it; the oldest question and answer go, the system stays,
    # and the answers stay right
    questions = [f'qwert {key}?' for key in [*KEYS, *KEYS]]
    r = sample(f'--out_dir={trained_chat[0]}', '--chat=True', '--max_new_tokens=8',
               '--system=Answer with one word.', stdin='\n'.join(questions) + '\n')
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.splitlines() == [*KEYS.values(), *KEYS.values()]
    assert "dropped the oldest turn" in r.stderr
    from chat import Conversation
    from checkpoint import load_checkpoint
    from model import GPT
    ckpt = load_checkpoint(str(trained_chat[0] / 'ckpt.pt'))
    model = GPT.from_checkpoint(ckpt).eval()
    tokenizer = data.tokenizer_from_state(ckpt['tokenizer'])
    talk = Conversation(model, tokenizer, system='Answer with one word.')
    for question in questions:
        list(talk.ask(question, 8, temperature=0))
        assert len(talk.ids) <= model.config.block_size
    system = [{'role': 'system', 'content': 'Answer with one word.'}]
    assert len(talk.turns) < 2 * len(questions) and talk.turns[-2]['content'] == questions[-1]
    assert talk.ids == tokenizer.render(system + talk.turns)[0]


def test_chat_needs_a_chat_model(tmp_path):
    from conftest import char_dataset
    from test_train import TINY
    char_dataset(tmp_path, 'hello world, the chat. ' * 200)
    ok(python(['train.py', *TINY, f'--dataset={tmp_path}', f'--out_dir={tmp_path / "out"}',
               '--max_iters=1', '--eval_interval=1']))
    r = sample(f'--out_dir={tmp_path / "out"}', '--chat=True', '--start=hi')
    # (in chat, sample.py's settings go to stderr first)
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode != 0 and last.startswith('error: ') and 'chat model' in last
    assert 'Traceback' not in r.stderr


def test_transformers_answers_as_sample_py_does(trained_chat, tmp_path):
    from transformers import pipeline
    r = sample(f'--out_dir={trained_chat[0]}', f'--export_hf={tmp_path / "hf"}')
    assert r.returncode == 0, r.stderr[-2000:]
    generate = pipeline('text-generation', model=str(tmp_path / 'hf'))
    for key in list(KEYS)[:3]:
        question = f'qwerty uiop {key}?'
        ours = sample(f'--out_dir={trained_chat[0]}', '--chat=True', f'--start={question}',
                      '--max_new_tokens=20').stdout
        theirs = generate([{'role': 'user', 'content': question}], max_new_tokens=20,
                          do_sample=False)[0]['generated_text'][-1]
        assert theirs['role'] == 'assistant' and theirs['content'] + '\n' == ours


def test_two_processes_train_as_one_with_uneven_targets(synthetic_chat, tmp_path):
    # 2 processes x 1 micro-step and 1 process x 2 micro-steps see the same micro-batches, whose
    # target counts differ: the step's loss, the mean over all targets, is the same
    args = ['--max_iters=4', '--eval_interval=4', '--lr_decay_iters=20', '--log_interval=1']
    one = train_chat(synthetic_chat, tmp_path / 'one', *args, '--gradient_accumulation_steps=2')
    two = train_chat(synthetic_chat, tmp_path / 'two', *args, '--gradient_accumulation_steps=2',
                     nproc=2)
    from checkpoint import load_checkpoint
    a, b = (load_checkpoint(str(tmp_path / name / 'ckpt.pt'))['model'] for name in ('one', 'two'))
    for k in a:
        assert np.allclose(a[k].numpy(), b[k].numpy(), atol=1e-5), k
    # (and the training loss logged, the mean over the step's targets in both)
    first_loss = [line for line in one.stdout.splitlines() if line.startswith('iter 1:')]
    assert first_loss and first_loss[0].split(',')[0] in two.stdout


def test_new_rows_start_as_the_mean_and_stay_tied():
    import torch

    from model import GPT, GPTConfig
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=8, vocab_size=10))
    old = model.transformer.wte.weight.detach().clone()
    model.grow_vocab(12)
    wte = model.transformer.wte.weight
    assert wte is model.lm_head.weight and wte.shape == (12, 8)
    assert torch.equal(wte[:10], old) and torch.allclose(wte[10:], old.mean(0).expand(2, -1))
    assert model(torch.tensor([[11, 3]]))[0].shape == (1, 1, 12)


def test_a_gpt2_model_grows_rows_for_the_markers(gpt2_chat, tmp_path):
    # GPT-2 as transformers saves it has exactly its vocabulary: the markers get new rows
    from transformers import GPT2Config, GPT2LMHeadModel
    GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_positions=64, n_embd=16, n_layer=1,
                               n_head=2)).save_pretrained(tmp_path / 'gpt2')
    r = python(['train.py', '--device=cpu', '--compile=False', f'--dataset={gpt2_chat}',
                f'--init_from={tmp_path / "gpt2"}', f'--out_dir={tmp_path / "out"}',
                '--block_size=32', '--batch_size=4', '--gradient_accumulation_steps=1',
                '--max_iters=2', '--eval_interval=2', '--eval_iters=1', '--warmup_iters=1',
                '--lr_decay_iters=4'], timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    from checkpoint import load_checkpoint
    ckpt = load_checkpoint(str(tmp_path / 'out' / 'ckpt.pt'))
    assert ckpt['model_args']['vocab_size'] == 50259
    assert ckpt['model']['transformer.wte.weight'].shape[0] == 50259


def test_lora_trains_the_marker_rows_and_resumes_bit_for_bit(gpt2_chat, tmp_path):
    # LoRA freezes the embedding, but the markers' new rows must learn to be markers: they train
    # (without weight decay), every other row stays GPT-2's; and a resume continues exactly
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from checkpoint import load_checkpoint
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_positions=64, n_embd=16, n_layer=1,
                               n_head=2)).save_pretrained(tmp_path / 'gpt2')
    base = GPT2LMHeadModel.from_pretrained(tmp_path / 'gpt2').transformer.wte.weight.detach()
    args = ['train.py', '--device=cpu', '--compile=False', f'--dataset={gpt2_chat}',
            f'--init_from={tmp_path / "gpt2"}', '--block_size=32', '--batch_size=4',
            '--gradient_accumulation_steps=1', '--eval_iters=1', '--warmup_iters=1',
            '--lr_decay_iters=10', '--lora_rank=4', '--lora_alpha=8', '--learning_rate=1e-2',
            '--dropout=0.1', '--always_save_checkpoint=True']
    for out, steps in (('straight', [4]), ('split', [2, 4])):
        for i, max_iters in enumerate(steps):
            resume = ['--init_from=resume'] if i else []
            r = python([*args, f'--out_dir={tmp_path / out}', f'--max_iters={max_iters}',
                        '--eval_interval=2', *resume], timeout=300)
            assert r.returncode == 0, r.stderr[-2000:]
    a, b = (load_checkpoint(str(tmp_path / out / 'ckpt.pt')) for out in ('straight', 'split'))
    for k in a['model']:
        assert torch.equal(a['model'][k], b['model'][k]), k
    wte = a['model']['transformer.wte.weight']
    assert wte.shape[0] == 50259 and torch.equal(wte[:50257], base)
    grown = base.mean(dim=0)
    assert all((wte[row] - grown).abs().max() > 1e-4 for row in (50257, 50258))


def test_transformers_serve_answers_through_the_openai_client(trained_chat, tmp_path):
    # the export served by `transformers serve` (OpenAI's API, on 127.0.0.1 only) and asked
    # through the openai client: the answer, and a turn that ended by itself
    import socket
    import subprocess
    import sys
    import time
    import urllib.request
    pytest.importorskip('fastapi')  # (transformers[serving], in requirements-test.txt)
    from openai import OpenAI
    r = sample(f'--out_dir={trained_chat[0]}', f'--export_hf={tmp_path / "hf"}')
    assert r.returncode == 0, r.stderr[-2000:]
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    cli = os.path.join(os.path.dirname(sys.executable), 'transformers')
    server = subprocess.Popen([cli, 'serve', str(tmp_path / 'hf'), '--host', '127.0.0.1',
                               '--port', str(port), '--device', 'cpu'], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ, HF_HUB_OFFLINE='1'))
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f'http://127.0.0.1:{port}/v1/models', timeout=2)
                break
            except OSError:
                assert server.poll() is None and time.time() < deadline, server.stderr.read()
                time.sleep(0.5)
        client = OpenAI(base_url=f'http://127.0.0.1:{port}/v1', api_key='unused')
        reply = client.chat.completions.create(
            model=str(tmp_path / 'hf'), max_tokens=10,
            messages=[{'role': 'user', 'content': 'qwerty uiop blue?'}]).choices[0]
        assert (reply.message.content, reply.finish_reason) == ('sky', 'stop')
    finally:
        server.kill()
        server.wait()


def test_a_chat_checkpoint_and_a_plain_dataset_do_not_mix(trained_chat, synthetic_chat, tmp_path):
    import shutil

    from conftest import char_dataset
    from test_train import TINY
    char_dataset(tmp_path, 'hello world, the chat. ' * 200)
    shutil.copytree(trained_chat[0], tmp_path / 'chat_run')
    for dataset, out, words in ((tmp_path, tmp_path / 'chat_run', 'a chat model'),
                                (synthetic_chat, tmp_path / 'plain_run', 'a plain model')):
        if out.name == 'plain_run':
            ok(python(['train.py', *TINY, f'--dataset={tmp_path}', f'--out_dir={out}',
                       '--max_iters=1', '--eval_interval=1', '--block_size=64']))
        before = open(out / 'ckpt.pt', 'rb').read()
        r = python(['train.py', *CHAT_TINY, f'--dataset={dataset}', f'--out_dir={out}',
                    '--init_from=resume', '--max_iters=400'])
        last = r.stderr.strip().splitlines()[-1]
        assert r.returncode != 0 and last.startswith('error: ') and words in last, r.stderr
        assert open(out / 'ckpt.pt', 'rb').read() == before
