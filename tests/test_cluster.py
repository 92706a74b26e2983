"""What a cluster does to a run, simulated on a CPU: SIGTERM twice (scancel signals every process,
torchrun forwards it again), Ctrl-C twice, one process failing at start under torchrun, resuming
where the checkpoint's tensors would land on a GPU, and the end of a good distributed run."""

import os
import signal
import subprocess
import sys
import time

from conftest import python
from test_train import (  # noqa: F401 (char_data: a fixture)
    ROOT,
    char_data,
    load_checkpoint,
    ok,
    start,
    tiny,
    train,
    wait_for,
)

# Slow steps (many micro-steps each), so that two signals 0.1 s apart arrive during the same step.
SLOW = ['--gradient_accumulation_steps=200', '--eval_interval=1000', '--eval_iters=1',
        '--max_iters=1000']


def logged_iters(out):
    return [int(line.split(':')[0].split()[1])
            for line in out.splitlines() if line.startswith('iter ')]


def test_sigterms_during_the_step_and_after_the_save_line_exit_0(char_data, tmp_path):  # noqa: F811
    # the second SIGTERM during the step: the step still finishes and saves. Later ones, after the
    # save line: Python gives back the default action (death) to every signal it handled when it
    # shuts down, so they must find the signal ignored, not kill the run that has just saved.
    proc = start(tiny(char_data, tmp_path, *SLOW))
    first = wait_for(proc, 'iter 1:')
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    saving = wait_for(proc, 'SIGTERM received: saving at iter')
    for _ in range(3):
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and 'Traceback' not in err, (proc.returncode, err[-2000:])
    # the step that was running when the signals came
    at = int(saving.split('at iter ')[1].split(',')[0])
    assert at == logged_iters(first)[-1] + 1
    assert out.count('saved') == 1 and f'saved {tmp_path}' in out
    assert load_checkpoint(os.path.join(tmp_path, 'ckpt.pt'))['iter_num'] == at  # the step finished


def test_two_ctrl_c_quit_at_once(char_data, tmp_path):  # noqa: F811
    proc = start(tiny(char_data, tmp_path, *SLOW))
    wait_for(proc, 'iter 1:')
    proc.send_signal(signal.SIGINT)
    time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and 'KeyboardInterrupt' in err
    assert 'saved' not in out and not os.path.exists(tmp_path / 'ckpt.pt')


def children(pid):
    """The processes whose parent is pid (Linux /proc)."""
    found = []
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open(f'/proc/{entry}/stat') as f:
                    ppid = int(f.read().rsplit(')', 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                found.append(int(entry))
    return found


def test_torchrun_agent_and_workers_all_signalled_save_once(char_data, tmp_path):  # noqa: F811
    # as scancel does: SIGTERM to each worker and to torchrun, which then forwards its own to them
    proc = subprocess.Popen([sys.executable, '-u', '-m', 'torch.distributed.run', '--standalone',
                             '--nproc_per_node=2', 'train.py', *tiny(char_data, tmp_path, *SLOW)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = wait_for(proc, 'iter 1:')
    workers = children(proc.pid)
    assert len(workers) == 2
    for pid in workers:
        os.kill(pid, signal.SIGTERM)
    time.sleep(0.3)  # (signals that arrive together count once)
    os.kill(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert 'Traceback' not in out and 'KeyboardInterrupt' not in err, err[-3000:]
    assert '[rank' not in err, err[-3000:]
    # one process prints: each progress line once, the stop and the save once
    logged = logged_iters(first + out)
    assert len(logged) == len(set(logged)) and ', 1/' in first, first + out[-2000:]
    last = logged[-1]
    assert out.count('SIGTERM received: saving at iter') == 1 and out.count('saved') == 1
    assert load_checkpoint(os.path.join(tmp_path, 'ckpt.pt'))['iter_num'] == last


def test_a_process_failing_at_start_stops_the_run_under_torchrun(char_data, tmp_path):  # noqa: F811
    # one node without the data: the others must not wait for it until a timeout
    driver = tmp_path / 'rank1_without_data.py'
    driver.write_text(f"import os, runpy, sys\nsys.path.insert(0, {ROOT!r})\n"
                      "if os.environ['RANK'] == '1':\n"
                      "    sys.argv = [a for a in sys.argv if not a.startswith('--dataset=')]\n"
                      "    sys.argv.append('--dataset=/no/such/folder')\n"
                      f"runpy.run_path({os.path.join(ROOT, 'train.py')!r}, run_name='__main__')\n")
    t0 = time.time()
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone',
                        '--nproc_per_node=2', str(driver),
                        *tiny(char_data, tmp_path / 'out', '--max_iters=5')],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and time.time() - t0 < 30
    assert "error: no dataset '/no/such/folder'" in r.stderr
    # rank 0 did not get as far as a collective with the missing process
    assert '[rank0]' not in r.stderr
    assert not os.path.exists(tmp_path / 'out' / 'ckpt.pt')


# A device the CPU cannot read, standing in for a GPU: tensors that torch.load maps there cannot be
# loaded into a model, be RNG states, or be read at all. The run stops at its first batch.
META_DEVICE = """
import runpy, sys, gc, torch
from contextlib import nullcontext
sys.path.insert(0, {root!r})
import data, devices, model
devices.setup_device = lambda *args, **kwargs: ('meta', 'meta', torch.float32, nullcontext())
to = torch.nn.Module.to  # the model itself stays on the CPU (a meta model has no weights to check)
def to_unless_meta(self, *args, **kwargs):
    return self if 'meta' in (*args[:1], kwargs.get('device')) else to(self, *args, **kwargs)
torch.nn.Module.to = to_unless_meta
def first_batch(*args, **kwargs):
    raise SystemExit('reached the first batch')
def generate(self, *args, **kwargs):
    held = [o for o in gc.get_objects()
            if isinstance(o, dict) and 'optimizer' in o and 'model_args' in o]
    raise SystemExit('reached generation' + (' holding the optimizer state' if held else ''))
data.Tokens.batch = first_batch
model.GPT.generate = generate
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
"""


def test_checkpoints_load_to_the_cpu_whatever_the_device(char_data, tmp_path):  # noqa: F811
    ok(train(*tiny(char_data, tmp_path, '--max_iters=2', '--eval_interval=2', '--dropout=0.1')))
    driver = tmp_path / 'meta_device.py'
    driver.write_text(META_DEVICE.format(root=ROOT))

    def run(*args):
        return python([driver, *args], timeout=120)

    # the whole resume (weights, optimizer state, RNG states of every process) before the loop
    resume = tiny(char_data, tmp_path, '--max_iters=4', '--init_from=resume', '--dropout=0.1')
    r = run('train.py', *resume)
    assert r.stderr.strip().splitlines()[-1] == 'reached the first batch', r.stderr[-3000:]
    # sample.py: the weights only, the optimizer state dropped
    r = run('sample.py', f'--out_dir={tmp_path}', '--num_samples=1', '--max_new_tokens=5')
    assert r.stderr.strip().splitlines()[-1] == 'reached generation', r.stderr[-3000:]


def test_sigterm_after_the_save_line_under_torchrun_exits_0(char_data, tmp_path):  # noqa: F811
    # the workers signalled again after the save line (scancel's and torchrun's SIGTERMs arriving
    # late): torchrun exits 0 only if every worker did
    proc = subprocess.Popen([sys.executable, '-u', '-m', 'torch.distributed.run', '--standalone',
                             '--nproc_per_node=2', 'train.py', *tiny(char_data, tmp_path, *SLOW)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(proc, 'iter 1:')
    workers = children(proc.pid)
    assert len(workers) == 2
    for pid in workers:
        os.kill(pid, signal.SIGTERM)
    saving = wait_for(proc, 'SIGTERM received: saving at iter')
    for _ in range(3):
        time.sleep(0.2)
        for pid in workers:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:  # already exited
                pass
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and 'Traceback' not in err, (proc.returncode, err[-3000:])
    # the step that was running when the first signal came
    at = int(saving.split('at iter ')[1].split(',')[0])
    assert out.count('saved') == 1 and f'saved {tmp_path}' in out and at >= 1
    assert load_checkpoint(os.path.join(tmp_path, 'ckpt.pt'))['iter_num'] == at


def test_a_distributed_run_ends_without_the_interpreter_teardown(char_data, tmp_path):  # noqa: F811
    # gloo's threads outlive destroy_process_group, and the interpreter's teardown can then abort a
    # good run now and then (SIGABRT, at random): a distributed run ends after its exit handlers,
    # without the teardown. Here the teardown would abort every time (an
    # object whose deletion aborts), and an exit handler leaves a file behind.
    ran = tmp_path / 'exit handler ran'
    code = ("import atexit, os, runpy, sys\n"
            "class Abort:\n    def __del__(self): os.abort()\n"
            "teardown = Abort()\n"
            f"atexit.register(lambda: open({str(ran)!r}, 'w').close())\n"
            "sys.argv = sys.argv[1:]\nrunpy.run_path('train.py', run_name='__main__')\n")
    env = dict(os.environ, RANK='0', LOCAL_RANK='0', WORLD_SIZE='1', MASTER_ADDR='127.0.0.1',
               MASTER_PORT='0')
    args = ['-c', code, 'train.py',
            *tiny(char_data, tmp_path, '--max_iters=2', '--eval_interval=2')]
    r = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=120)
    ended_well = r.returncode == 0 and ran.exists() and f'saved {tmp_path}' in r.stdout
    assert ended_well, (r.returncode, r.stderr[-2000:])
    # and the check can fail: one process (no process group) ends with the teardown, which aborts
    env.pop('RANK')
    ran.unlink()
    r = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == -signal.SIGABRT and ran.exists()
