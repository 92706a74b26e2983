"""A run says where it is: each log line the iteration of max_iters and the time left, the end
which iteration ckpt.pt holds and the command that samples from it; --help lists settings only."""

import os

from conftest import python
from test_train import char_data, ok, tiny, train  # noqa: F401 (char_data: a fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_log_says_how_far_and_the_end_what_ckpt_pt_holds(char_data, tmp_path):
    r = ok(train(*tiny(char_data, tmp_path, '--max_iters=6', '--eval_interval=3',
                       '--log_interval=2', '--always_save_checkpoint=False')))
    steps = [line for line in r.stdout.splitlines() if line.startswith('iter ')]
    assert steps[-1].startswith('iter 6:') and ', 6/6, 0s left' in steps[-1]
    assert ', 4/6, ' in steps[-2] and steps[-2].endswith(' left')
    # the time left is the iterations left at the measured step time (the ms shown, to its
    # rounding), and it falls
    import re
    lefts = []
    for line in steps[1:]:
        m = re.search(r', ([\d.]+) ms, .*, (\d+)/6, (?:(\d+)m)?(\d+)s left$', line)
        assert m, line
        left = 60 * int(m[3] or 0) + int(m[4])
        assert abs(left - (6 - int(m[2])) * float(m[1]) / 1000) <= 1, line
        lefts.append(left)
    assert lefts == sorted(lefts, reverse=True) and lefts[-1] == 0
    end = r.stdout.strip().splitlines()[-1]
    assert f"{tmp_path}/ckpt.pt holds iter " in end
    assert f"python sample.py --out_dir={tmp_path}" in end
    # the iteration it names is the one in the file
    from checkpoint import load_checkpoint
    held = load_checkpoint(str(tmp_path / 'ckpt.pt'))['iter_num']
    assert f"holds iter {held} (" in end
    # and the command runs as printed; sample.py says on stderr what it loaded, stdout holds
    # the samples alone
    import shlex
    command = shlex.split(end.split('sample from it: ')[1])
    assert command[:2] == ['python', 'sample.py']
    r = python(command[1:])
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"loaded {tmp_path}/ckpt.pt: iter {held}, best val loss " in r.stderr
    assert 'loaded' not in r.stdout and r.stdout.count('---------------') == 10
    # a resume says from which file, iteration and val loss
    r = ok(train(*tiny(char_data, tmp_path, '--max_iters=8', '--eval_interval=3',
                       '--log_interval=2', '--always_save_checkpoint=False',
                       '--init_from=resume')))
    best = load_checkpoint(str(tmp_path / 'ckpt.pt'))['best_val_loss']
    assert f"resuming from {tmp_path}/ckpt.pt at iter {held} (best val loss " in r.stdout
    logged = [int(line.split(':')[0][5:]) for line in r.stdout.splitlines()
              if line.startswith('iter ')]
    assert logged[-1] == 8 and min(logged) > held, r.stdout
    assert best <= float(r.stdout.split('(best val loss ')[1].split(')')[0]) + 1e-4


def test_help_lists_settings_not_constants():
    for script, constant in (('train.py', 'GPT2_VOCAB_SIZE'), ('data/text/prepare.py', 'EOT')):
        r = python([os.path.join(ROOT, script), '--help'])
        assert r.returncode == 0 and ('--out_dir' in r.stdout or '--input' in r.stdout)
        assert f'--{constant}' not in r.stdout


# ------------------------------------------------------------- the "next" commands run as printed

def repo_copy(tmp_path):
    """The scripts and configs, copied: a printed command runs in there as a user would run it
    in a checkout (from its root), and whatever it writes stays in tmp_path."""
    import shutil
    root = tmp_path / 'repo'
    shutil.copytree(ROOT, root, ignore=shutil.ignore_patterns(
        '.git', '__pycache__', 'out*', 'tests', '*.bin', '*.npz', '*.pkl', '*.jsonl', '*.txt',
        'tokenizer.json', 'chat.json'))
    return root


def hint(stdout, start):
    """The command of the one line of stdout that starts with start (text, then ': python ...')."""
    import shlex
    lines = [line for line in stdout.splitlines() if line.startswith(start)]
    assert len(lines) == 1, stdout
    return shlex.split(lines[0].split(': ', 1)[1])


def run_as_printed(command, cwd, until=None, env=None):
    """Run command (its first word python) in cwd; with until, stop it (Ctrl-C) once a line of
    its output starts with until. Returns (returncode, output)."""
    import signal
    import subprocess
    import sys
    import threading
    assert command[0] == 'python', command
    p = subprocess.Popen([sys.executable, *command[1:]], cwd=cwd, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, env=dict(os.environ, **(env or {})))
    # (a line held in a buffer would never come: the run is killed, and the test fails)
    watchdog = threading.Timer(90, p.kill)
    watchdog.start()
    lines = []
    for line in p.stdout:
        lines.append(line)
        if until and line.startswith(until):
            p.send_signal(signal.SIGINT)
            break
    output = ''.join(lines) + p.stdout.read()
    p.wait()
    watchdog.cancel()
    assert p.returncode != -signal.SIGKILL, f"{command} never printed {until!r}: {output[-2000:]}"
    return p.returncode, output


def test_prepared_text_trains_with_the_command_printed(tmp_path, shakespeare_txt):
    repo = repo_copy(tmp_path)
    text = open(shakespeare_txt).read()
    (tmp_path / 'a.txt').write_text(text[:3000])
    (tmp_path / 'b.txt').write_text(text[3000:5000])
    prepare = ['python', 'data/text/prepare.py', f'--input={tmp_path / "a.txt"}',
               f'--input={tmp_path / "b.txt"}', '--name=notes']
    rc, out = run_as_printed(prepare, repo)
    # both files read, in the order given
    assert rc == 0 and 'read 2 file(s), 5,000 characters' in out, out
    import numpy as np
    ids = np.concatenate([np.fromfile(repo / 'data' / 'notes' / f'{s}.bin', dtype=np.uint16)
                          for s in ('train', 'val')])
    assert len(ids) == 5002  # the two texts and the blank line between them
    rc, out = run_as_printed(hint(out, 'train a small model'), repo, until='eval iter 0:')
    assert 'eval iter 0:' in out and 'error' not in out, out
    # a val split shorter than the config's block_size: the command says a block that fits
    rc, out = run_as_printed([*prepare[:-1], '--name=short', '--min_split_tokens=40',
                              '--val_fraction=0.01'], repo)
    assert rc == 0 and '--block_size=32' in out, out
    rc, out = run_as_printed(hint(out, 'train a small model'), repo, until='eval iter 0:')
    assert 'eval iter 0:' in out and 'error' not in out, out


def test_a_text_too_short_for_its_bpe_names_a_vocab_size_that_works(tmp_path, shakespeare_txt):
    import re
    repo = repo_copy(tmp_path)
    (tmp_path / 'a.txt').write_text(open(shakespeare_txt).read()[:9000])
    prepare = ['python', 'data/text/prepare.py', f'--input={tmp_path / "a.txt"}', '--name=bpe',
               '--tokenizer=bpe', '--vocab_size=4096']
    rc, out = run_as_printed(prepare, repo)
    assert rc != 0 and 'fewer than --vocab_size=4096 asked' in out, out
    error = out.strip().splitlines()[-1]
    assert error.startswith('error: the val split would hold only'), out
    # each way out it names, with its number, works as written
    ways = re.findall(r'(--(?:vocab_size|val_fraction|min_split_tokens)=[\d.]+)', error)
    assert len(ways) == 3, error
    for way in ways:
        key = way.split('=')[0] + '='
        rc, out = run_as_printed([a for a in prepare if not a.startswith(key)] + [way], repo)
        assert rc == 0 and 'wrote train.bin' in out, (way, out)


def test_the_chat_demo_commands_run_as_printed(tmp_path):
    repo = repo_copy(tmp_path)
    rc, out = run_as_printed(['python', 'data/chat/demo.py'], repo)
    assert rc == 0, out
    rc, out = run_as_printed(hint(out, 'next, make tokens'), repo)
    assert rc == 0, out
    rc, out = run_as_printed(hint(out, 'train a small chat model'), repo, until='eval iter 0:')
    assert 'eval iter 0:' in out and 'error' not in out, out


def test_long_preparation_shows_progress_a_bar_on_a_terminal_a_line_in_a_log(monkeypatch, capsys):
    import io
    import sys

    import data

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    # in a log (stderr not a terminal): one plain line, the items as they were
    monkeypatch.setattr(sys, 'stderr', io.StringIO())
    assert list(data.progress(iter(range(5)), 'tokenizing 5 pieces', 5)) == list(range(5))
    out = capsys.readouterr().out
    assert out == 'tokenizing 5 pieces ...\n' and sys.stderr.getvalue() == ''
    # on a terminal: tqdm's bar on stderr, counting to the end
    monkeypatch.setattr(sys, 'stderr', Terminal())
    assert list(data.progress(iter(range(5)), 'tokenizing 5 pieces', 5)) == list(range(5))
    bar = sys.stderr.getvalue()
    assert 'tokenizing 5 pieces' in bar and '0/5' in bar and '\r' in bar
    assert capsys.readouterr().out == ''


def test_a_prepare_log_holds_plain_lines(tmp_path, shakespeare_txt):
    (tmp_path / 'a.txt').write_text(open(shakespeare_txt).read()[:20000])
    for tokenizer in ('gpt2', 'bpe'):
        r = python([os.path.join(ROOT, 'data', 'text', 'prepare.py'), f'--input={tmp_path}/a.txt',
                    f'--name={tmp_path / tokenizer}', f'--tokenizer={tokenizer}',
                    '--vocab_size=512'])
        assert r.returncode == 0, r.stderr
        assert 'tokenizing 1 piece(s) of up to ~1 MB ...\n' in r.stdout
        assert '\r' not in r.stdout + r.stderr


def test_the_gpt2_chat_command_runs_as_printed(tmp_path):
    # GPT-2 "from the hub": a tiny random GPT-2 in a local hub cache, read offline
    from transformers import GPT2Config, GPT2LMHeadModel

    from test_chat import CONVERSATIONS, write_jsonl
    cache = tmp_path / 'hub' / 'models--gpt2'
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=32)).save_pretrained(
        cache / 'snapshots' / ('0' * 40))
    (cache / 'refs').mkdir()
    (cache / 'refs' / 'main').write_text('0' * 40)
    repo = repo_copy(tmp_path)
    source = write_jsonl(tmp_path / 'chats.jsonl', [{'messages': c} for c in CONVERSATIONS * 3])
    rc, out = run_as_printed(['python', 'data/chat/prepare.py', f'--source={source}',
                              '--name=chats', '--val_fraction=0.25'], repo)
    assert rc == 0, out
    env = {'HF_HUB_CACHE': str(tmp_path / 'hub'), 'HF_HUB_OFFLINE': '1'}
    # (on a CPU, as far as the model: GPT-2 loaded and grown by the two markers; the evaluation
    # of this GPU config alone takes minutes)
    rc, out = run_as_printed(hint(out, 'finetune GPT-2'), repo, until='model:', env=env)
    assert "'vocab_size': 50259" in out and 'error' not in out, out
