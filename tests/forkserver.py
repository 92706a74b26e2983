"""Runs the tests' `python script.py args` (and `python -c code args`): each in a child forked from
this process, which imported torch and numpy once at start, so that no run pays their import again
(~2.5 s of each run on 2 CPU cores, most of the time of a run that stops at a bad setting). The
child is the script's own process: its own arguments, working directory, environment, stdout,
stderr, exit status and exit handlers. conftest.py's `python()` is the client; runs that must be
real processes (torchrun, signals sent by a test, python -u) do not come here.

Protocol, one JSON line each way: {"argv", "cwd", "env", "out", "err"} -> {"pid"}, then {"status"}.
"""

import atexit
import json
import os
import runpy
import sys

import numpy  # noqa: F401  (imported here once: the point of this server)
import torch  # noqa: F401
import torch.distributed  # noqa: F401
import torch.nn.parallel  # noqa: F401


def run_child(argv, cwd, env, out, err):
    os.setpgid(0, 0)  # its own process group: a timeout kills it with whatever it started
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    for fd, path in ((1, out), (2, err)):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
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


def serve():
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            run_child(**request)
        print(json.dumps({'pid': pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({'status': os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == '__main__':
    serve()
