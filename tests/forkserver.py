"""Runs the tests' `python script.py args` (and `python -c code args`): each in a child forked from
this process, which imported torch and numpy once at start, so that no run pays their import again
(~2.5 s of each run on 2 CPU cores, most of the time of a run that stops at a bad setting). The
child is the script's own process: its own arguments, working directory, environment, stdout,
stderr, exit status and exit handlers. conftest.py's `python()` is the client; runs that must be
real processes (torchrun's own behaviour, signals sent by a test, python -u) do not come here.
With "nproc", a child here does what `torchrun --standalone --nproc_per_node=nproc` does for the
script (the environment it gives each process, one failure stopping all), and the processes are
forked from here too.

Protocol, one JSON line each way: {"argv", "cwd", "env", "out", "err", "nproc"} -> {"pid"}, then
{"status"}.
"""

import atexit
import json
import os
import runpy
import signal
import sys

# tqdm reads TQDM_DISABLE once, when it is imported, and torch imports it: no progress bars in any
# run
os.environ['TQDM_DISABLE'] = '1'

# Imported here once, the point of this server: torch, torch._dynamo (every optimizer imports it
# when it is made), and transformers' GPT-2 (slow to import; every run that reads or writes GPT-2
# weights needs it).
import numpy  # noqa: F401, E402
import torch  # noqa: F401, E402
import torch._dynamo  # noqa: F401, E402
import torch.distributed  # noqa: F401, E402
import torch.nn.parallel  # noqa: F401, E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: F401, E402


def run_child(argv, cwd, env, out, err, own_group=True):
    if own_group:
        os.setpgid(0, 0)  # its own process group: a timeout kills it with whatever it started
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    for fd, path in ((1, out), (2, err)):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
    # what the interpreter and torch read from the environment at start-up, read again here
    if env.get('PYTHONUNBUFFERED'):  # python -u: each line reaches the file as it is printed
        sys.stdout.reconfigure(line_buffering=True)
    if env.get('OMP_NUM_THREADS'):
        torch.set_num_threads(int(env['OMP_NUM_THREADS']))
    status = 0
    try:
        if argv[0] == '-c':
            sys.argv, sys.path[0] = ['-c', *argv[2:]], ''
            exec(compile(argv[1], '<string>', 'exec'), {'__name__': '__main__'})
        else:
            sys.argv, sys.path[0] = list(argv), os.path.dirname(os.path.abspath(argv[0]))
            sys.path[1:1] = [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p]
            runpy.run_path(argv[0], run_name='__main__')
    except SystemExit as e:  # as the interpreter treats it: a number, None, or a message for stderr
        if isinstance(e.code, int) or e.code is None:
            status = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            status = 1
    except BaseException:
        sys.excepthook(*sys.exc_info())
        status = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def launch(nproc, argv, cwd, env, out, err):
    """torchrun --standalone's part for the script: nproc copies of it, each told its RANK,
    LOCAL_RANK, WORLD_SIZE and the store to meet at (and one thread each, unless OMP_NUM_THREADS
    says otherwise); when one fails the others are stopped and the status is 1. Each writes its
    stdout and stderr to out.RANK and err.RANK. As torchrun's agent does, this process holds the
    store and the workers connect to it (TORCHELASTIC_USE_AGENT_STORE): its port is bound before
    anyone learns it, so no other process can take it first, as it can take a port that was found
    free, closed and bound again later. The store is started after the forks (its server is a
    thread, and a forked thread does not exist in the child), and its port sent down a pipe."""
    os.setpgid(0, 0)
    workers = {}
    for rank in range(nproc):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            port = os.read(read_end, 16).decode()
            env = {'OMP_NUM_THREADS': '1', **env, 'RANK': str(rank), 'LOCAL_RANK': str(rank),
                   'WORLD_SIZE': str(nproc), 'LOCAL_WORLD_SIZE': str(nproc), 'GROUP_RANK': '0',
                   'MASTER_ADDR': '127.0.0.1', 'MASTER_PORT': port,
                   'TORCHELASTIC_USE_AGENT_STORE': 'True'}
            run_child(argv, cwd, env, f'{out}.{rank}', f'{err}.{rank}', own_group=False)
        os.close(read_end)
        workers[pid] = write_end
    store = torch.distributed.TCPStore('127.0.0.1', 0, is_master=True, wait_for_workers=False,
                                       multi_tenant=True)
    for write_end in workers.values():
        os.write(write_end, str(store.port).encode())
        os.close(write_end)
    status = 0
    while workers:
        pid, wait_status = os.wait()
        del workers[pid]
        if os.waitstatus_to_exitcode(wait_status) != 0 and status == 0:
            status = 1
            for other in workers:
                os.kill(other, signal.SIGKILL)
    os._exit(status)


def serve():
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            nproc = request.pop('nproc', None)
            launch(nproc, **request) if nproc else run_child(**request)
        # (the child does it too: whichever comes first, a killpg right after this reply finds the
        # group)
        try:
            os.setpgid(pid, pid)
        except OSError:
            pass
        print(json.dumps({'pid': pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({'status': os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == '__main__':
    serve()
