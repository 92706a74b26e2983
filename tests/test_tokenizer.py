"""data/text/prepare.py --tokenizer=bpe: a byte-level BPE trained on the text, written to
tokenizer.json, and used by train.py (vocabulary, val_bpb), sample.py (prompts, samples) and
--export_hf (transformers' AutoTokenizer and pipeline). Checked against the text itself: token
files decode back to it exactly, bytes per token are the text's own, and on Chinese it spends far
fewer tokens than GPT-2's BPE."""

import json
import math
import os

import numpy as np
import pytest
import tiktoken

import data
from conftest import python

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT = os.path.join(ROOT, 'data', 'text', 'prepare.py')

# Written for this test: paragraphs about training language models (the tokenizer's text), and one
# more on the same subject that the tokenizer never sees.
CHINESE = [
    "语言模型的训练从数据开始。我们先把大量的文本收集起来，清"
    "洗掉重复的网页和乱码，再把每一篇文章切成词元。词元是模型"
    "能读懂的最小单位，一个词元可以是一个字，也可以是几个字组"
    "成的词。训练的时候，模型读入一段文本，预测下一个词元是什"
    "么，然后根据预测的错误调整自己的参数。这个过程重复几十万"
    "次，模型就慢慢学会了语言的规律。",
    "分词器决定了一段文本会变成多少个词元。英文的分词器在中文"
    "上往往很浪费：一个汉字常常要用两三个词元来表示，于是同样"
    "长度的上下文窗口只能装下更少的内容，同样的计算量只能读到"
    "更少的文字。所以训练中文模型的时候，最好在中文文本上训练"
    "一个自己的分词器，让常用的字和词都只占一个词元。",
    "字节级的分词器先把文本变成字节，再把经常一起出现的字节合"
    "并成新的词元。因为所有的文字都是由字节组成的，所以任何语"
    "言、任何符号、甚至表情符号都可以被准确地编码和解码，不会"
    "出现无法识别的字符。词表的大小需要权衡：词表越大，每个词"
    "元包含的文字越多，但是模型的嵌入层也越大，罕见的词元也越"
    "难学好。",
    "训练的时候，我们把数据分成训练集和验证集。模型只在训练集"
    "上学习，然后在验证集上评估损失。如果训练集上的损失一直下"
    "降，而验证集上的损失开始上升，就说明模型在死记硬背训练数"
    "据，这叫做过拟合。这时候可以增加数据，加入随机丢弃，或者"
    "提前停止训练。学习率也很重要：太大了训练会发散，太小了训"
    "练会很慢。",
    "在一块显卡上训练一个小模型，通常需要几个小时到几天。批量"
    "越大，每一步读到的数据越多，梯度也越稳定，但是需要的显存"
    "也越多。如果显存不够，可以把一个大批量拆成几个小批量，先"
    "累积梯度，再更新一次参数。混合精度训练用半精度的数字做大"
    "部分计算，可以节省显存，也可以让训练更快。",
    "模型训练好以后，我们可以用它来生成文本。给模型一段开头，"
    "它会一个词元一个词元地往下写。温度控制生成的随机性：温度"
    "低的时候，模型总是选择最可能的词元，文字通顺但是单调；温"
    "度高的时候，文字更有变化，但是也更容易出错。为了让生成更"
    "快，模型会把已经读过的词元的键和值保存起来，下一步就不用"
    "重新计算了。",
    "评估一个语言模型，最常用的指标是验证集上的损失，也可以换"
    "算成每个字节的比特数。每个字节的比特数和分词器无关，所以"
    "可以用来比较使用不同分词器的模型。除了损失，我们还会让模"
    "型回答一些常识问题，看看它是否真的理解了语言。",
]
HELD_OUT = (
    "数据的质量比数量更重要。如果训练数据里有很多重复的网页、"
    "广告和乱码，模型就会学到这些没有用的东西。所以在训练之前"
    "，我们要仔细地清洗数据，去掉重复的文章，只保留通顺的文字"
    "。清洗以后的数据虽然变少了，但是模型学得更快，生成的文字"
    "也更好。训练一个好的分词器，也需要干净的数据。"
)


def run(*args, cwd=ROOT):
    return python(args, cwd=cwd, timeout=300)


def ok(result):
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


def one_line_error(result, *words):
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0, result.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith('error: '), result.stderr[-3000:]
    for word in words:
        assert word in lines[0]


def prepared_text(folder):
    """train.bin + val.bin decoded with the dataset's own tokenizer.json."""
    from tokenizers import Tokenizer
    ids = np.concatenate([np.fromfile(folder / f'{split}.bin', dtype=np.uint16)
                          for split in ('train', 'val')])
    tokenizer = Tokenizer.from_file(str(folder / 'tokenizer.json'))
    return tokenizer.decode(ids.tolist(), skip_special_tokens=False)


def test_chinese_takes_at_most_0_7x_gpt2s_tokens(tmp_path):
    (tmp_path / 'zh.txt').write_text('\n'.join(CHINESE) + '\n', encoding='utf-8')
    out = ok(run(TEXT, f'--input={tmp_path / "zh.txt"}', f'--name={tmp_path / "zh"}',
                 '--tokenizer=bpe', '--vocab_size=2048', '--min_split_tokens=8'))
    assert 'trained a BPE of' in out
    assert sorted(os.listdir(tmp_path / 'zh')) == ['tokenizer.json', 'train.bin', 'val.bin']
    tokenizer = data.load_tokenizer(str(tmp_path / 'zh'))
    assert isinstance(tokenizer, data.TrainedBPE) and 257 < tokenizer.vocab_size <= 2048
    ours = len(tokenizer.encode(HELD_OUT))
    gpt2 = len(tiktoken.get_encoding('gpt2').encode_ordinary(HELD_OUT))
    assert ours <= 0.7 * gpt2, (ours, gpt2)
    assert tokenizer.decode(tokenizer.encode(HELD_OUT)) == HELD_OUT
    # the token files hold the text, then <|endoftext|>
    assert prepared_text(tmp_path / 'zh') == '\n'.join(CHINESE) + '\n<|endoftext|>'


def test_english_file_and_any_characters_decode_back_exactly(tmp_path, shakespeare_txt):
    text = (open(shakespeare_txt, encoding='utf-8').read()[:60_000]
            + '\r\nemoji 🙂🚀, combining é (e\u0301), tabs\t\tand 日本語\n')
    with open(tmp_path / 'en.txt', 'w', encoding='utf-8', newline='') as f:
        f.write(text)
    ok(run(TEXT, f'--input={tmp_path / "en.txt"}', f'--name={tmp_path / "en"}', '--tokenizer=bpe',
           '--vocab_size=512'))
    assert prepared_text(tmp_path / 'en') == text + '<|endoftext|>'
    tokenizer = data.load_tokenizer(str(tmp_path / 'en'))
    assert tokenizer.vocab_size == 512 and tokenizer.eot == tokenizer.encode('<|endoftext|>')[0]
    # each token's bytes of text: the whole file's bytes over its tokens, <|endoftext|> counting
    # none
    splits = data.open_dataset(str(tmp_path / 'en'), block_size=16)
    ids = np.concatenate([np.fromfile(tmp_path / 'en' / f'{s}.bin', dtype=np.uint16)
                          for s in ('train', 'val')])
    val = np.fromfile(tmp_path / 'en' / 'val.bin', dtype=np.uint16)
    val_text = tokenizer.decode(val.tolist()).replace('<|endoftext|>', '')
    expected = len(val_text.encode('utf-8')) / len(val)
    assert data.bytes_per_token(splits['val'], tokenizer) == pytest.approx(expected, rel=1e-12)
    assert len(ids) < len(text) / 2  # merges learned: well under one token per character


def test_switching_tokenizers_leaves_no_stale_vocabulary(tmp_path, shakespeare_txt):
    (tmp_path / 'a.txt').write_text(open(shakespeare_txt).read()[:20_000], encoding='utf-8')
    common = [TEXT, f'--input={tmp_path / "a.txt"}', f'--name={tmp_path / "ds"}']
    ok(run(*common, '--tokenizer=char'))
    ok(run(*common, '--tokenizer=bpe', '--vocab_size=300'))
    assert sorted(os.listdir(tmp_path / 'ds')) == ['tokenizer.json', 'train.bin', 'val.bin']
    ok(run(*common, '--tokenizer=char'))
    assert sorted(os.listdir(tmp_path / 'ds')) == ['meta.pkl', 'train.bin', 'val.bin']
    assert isinstance(data.load_tokenizer(str(tmp_path / 'ds')), data.Characters)


@pytest.mark.parametrize('vocab_size', [256, 65537, 0])
def test_vocab_size_out_of_range_is_one_line(tmp_path, vocab_size):
    (tmp_path / 'a.txt').write_text('some text ' * 200, encoding='utf-8')
    r = run(TEXT, f'--input={tmp_path / "a.txt"}', f'--name={tmp_path / "ds"}', '--tokenizer=bpe',
            f'--vocab_size={vocab_size}')
    one_line_error(r, f'--vocab_size={vocab_size}', '257', '65536')
    assert not os.path.exists(tmp_path / 'ds')


def test_a_broken_tokenizer_json_is_one_line(tmp_path):
    (tmp_path / 'tokenizer.json').write_text('{"not": "a tokenizer"')
    with pytest.raises(data.InputError, match='cannot read .*tokenizer.json.*prepare.py again'):
        data.load_tokenizer(str(tmp_path))


def test_train_sample_and_export_with_a_trained_tokenizer(tmp_path):
    (tmp_path / 'zh.txt').write_text('\n'.join(CHINESE) + '\n', encoding='utf-8')
    ok(run(TEXT, f'--input={tmp_path / "zh.txt"}', f'--name={tmp_path / "zh"}', '--tokenizer=bpe',
           '--vocab_size=320', '--val_fraction=0.2', '--min_split_tokens=64'))
    tokenizer = data.load_tokenizer(str(tmp_path / 'zh'))
    out = tmp_path / 'out'
    ok(run('train.py', '--device=cpu', '--n_layer=2', '--n_head=2', '--n_embd=32',
           '--block_size=16', '--batch_size=8', '--eval_iters=2', '--eval_interval=4',
           '--max_iters=4', '--compile=False', f'--dataset={tmp_path / "zh"}', f'--out_dir={out}'))
    from checkpoint import load_checkpoint
    assert load_checkpoint(str(out / 'ckpt.pt'))['model_args']['vocab_size'] == tokenizer.vocab_size
    record = [json.loads(line) for line in open(out / 'metrics.jsonl')][-1]
    val = np.fromfile(tmp_path / 'zh' / 'val.bin', dtype=np.uint16)
    val_bytes = len(tokenizer.decode(val.tolist()).replace('<|endoftext|>', '').encode('utf-8'))
    bpb = record['val_loss'] / math.log(2) / (val_bytes / len(val))
    assert record['val_bpb'] == pytest.approx(bpb, rel=1e-9)
    # sample.py: a Chinese prompt, encoded and decoded with tokenizer.json
    r = ok(run('sample.py', f'--out_dir={out}', '--start=模型训练', '--num_samples=1',
               '--max_new_tokens=8', '--temperature=0', '--device=cpu'))
    assert '\n模型训练' in r  # the prompt, then what the model wrote
    # the export: transformers' tokenizer encodes as tokenizer.json does, and the pipeline runs
    # offline
    ok(run('sample.py', f'--out_dir={out}', f'--export_hf={tmp_path / "hf"}', '--device=cpu'))
    # sampled from the export, sample.py reads the directory's tokenizer.json: the same greedy
    # continuation
    again = ok(run('sample.py', f'--init_from={tmp_path / "hf"}', '--start=模型训练',
                   '--num_samples=1', '--max_new_tokens=8', '--temperature=0', '--device=cpu'))
    def continuation(out):
        return [line for line in out.splitlines() if line.startswith('模型训练')]
    assert continuation(again) == continuation(r) and len(continuation(r)) == 1
    from transformers import AutoTokenizer, pipeline
    hf = AutoTokenizer.from_pretrained(tmp_path / 'hf')
    for text in (HELD_OUT, 'mixed English 和中文 🙂 <|endoftext|> end'):
        assert hf(text)['input_ids'] == tokenizer.encode(text)
        assert hf.decode(tokenizer.encode(text)) == text
    generator = pipeline('text-generation', model=str(tmp_path / 'hf'), device='cpu')
    generated = generator('模型训练', max_new_tokens=5, do_sample=False)
    assert generated[0]['generated_text'].startswith('模型训练')
