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
    end = r.stdout.strip().splitlines()[-1]
    assert f"{tmp_path}/ckpt.pt holds iter " in end
    assert f"python sample.py --out_dir={tmp_path}" in end
    # the iteration it names is the one in the file
    from checkpoint import load_checkpoint
    held = load_checkpoint(str(tmp_path / 'ckpt.pt'))['iter_num']
    assert f"holds iter {held} (" in end


def test_help_lists_settings_not_constants():
    for script, constant in (('train.py', 'GPT2_VOCAB_SIZE'), ('data/text/prepare.py', 'EOT')):
        r = python([os.path.join(ROOT, script), '--help'])
        assert r.returncode == 0 and ('--out_dir' in r.stdout or '--input' in r.stdout)
        assert f'--{constant}' not in r.stdout
