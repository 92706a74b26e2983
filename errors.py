"""
The error a bad input raises, and how a script reports it. Library code (model.py, data/, the
other modules) raises InputError with the one line a user needs ("no checkpoint at
out/ckpt.pt: check --out_dir, ..."); a script calls report_errors() once (configurator.configure
does), so that such an error ends it as `error: ...`, exit status 1, no traceback. In a notebook
it stays an ordinary exception.

    python -c "import errors; raise errors.InputError('what is wrong, and what to do')"
"""

import sys


class InputError(ValueError):
    """A bad input: a setting, a file, a model name. Its message says what is wrong, and what
    to do."""


def report_errors():
    """Make an InputError that nothing catches (a bad setting, a missing file, anything the
    library code refuses), or an OSError with the machine's reason (a full disk, no permission),
    end the script as one line, `error: ...`, with exit status 1 and no traceback. Every other
    exception keeps its traceback."""
    def report(kind, error, traceback):
        if issubclass(kind, InputError):
            print(f"error: {error}", file=sys.stderr)
        elif issubclass(kind, OSError) and error.strerror:
            # the machine refused: a full disk, a permission
            print(f"error: {error}", file=sys.stderr)
        else:
            sys.__excepthook__(kind, error, traceback)
    sys.excepthook = report
