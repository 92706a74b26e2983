"""
Settings from the command line, for train.py, sample.py and bench.py. A script keeps its settings
as plain, commented module-level globals and calls, once they are all defined:

    from configurator import configure
    configure(globals())

Then `python train.py config/train_shakespeare_char.py --batch_size=32 --compile=False` runs
the config files in order (plain Python that assigns settings), then applies each --key=value
(the value read as a Python literal, else taken as a string). A key given twice is an error, but
for a setting that holds a list (a default of []): each --key=value adds one item, as in
`--input=a.txt --input=b.txt`. `python train.py --help` lists every setting with its default, and
`python train.py config/FILE.py --help` with the values that config file gives.

A misspelt key, a value of the wrong type or a missing config file stops the script with one line
that says what is wrong, before anything runs. The checks live in parse(), which raises
ConfigError and can be tested without running a script. configure() also makes every
errors.InputError that the script does not catch end it the same way: `error: ...`, status 1.
"""

import ast
import difflib
import os
import re
import sys
import typing

from errors import InputError, report_errors


class ConfigError(InputError):
    pass


def settings_of(namespace):
    """The settings of a script: its module-level globals of a plain type (None included) or
    lists, but for constants, named in capitals (GPT2_VOCAB_SIZE, EOT: imported, not settings)."""
    return {k: v for k, v in namespace.items()
            if not k.startswith('_') and not k.isupper()
            and (v is None or isinstance(v, (bool, int, float, str, list)))}


def nullable(namespace):
    """The settings that also take None, annotated so in the script: `top_k: int | None = 200`."""
    annotations = namespace.get('__annotations__', {})
    return {k for k, kind in annotations.items() if type(None) in typing.get_args(kind)}


def check_type(key, value, default, takes_none=False):
    """Return value, checked against the type of the setting's default (or None if takes_none)."""
    takes_word = default is None or takes_none or type(default) is bool
    if takes_word and isinstance(value, str) and value.lower() in ('true', 'false', 'none'):
        # --compile=false is meant as a bool
        value = {'true': True, 'false': False, 'none': None}[value.lower()]
    if default is None or (value is None and takes_none):
        return value  # settings that default to None take any literal; the script checks them
    if type(default) is list:
        # a list of strings: one (a config file's input = 'a.txt') is a list of one
        items = [value] if isinstance(value, str) else value
        if not (isinstance(items, (list, tuple)) and all(isinstance(i, str) for i in items)):
            raise ConfigError(f"--{key} expects text, one item per --{key}=..., got {value!r}")
        return list(items)
    expected = type(default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # 1 where 1.0 is meant is fine
    if type(value) is not expected:
        raise ConfigError(f"--{key} expects {expected.__name__} (default {default!r}), "
                          f"got {value!r}")
    return value


def parse(settings, argv, takes_none=()):
    """Apply config files and --key=value overrides in argv to a copy of settings; return it.
    takes_none: the settings that may also be None (see nullable)."""
    defaults, settings = settings, dict(settings)  # types are checked against the script's defaults
    given = {}  # --key=value given so far: key -> the argument
    for arg in argv:
        if not arg.startswith('--'):  # a config file
            try:
                with open(arg) as f:
                    source = f.read()
            except OSError as e:
                raise ConfigError(f"cannot read config file {arg} ({e.strerror}); "
                                  f"settings go as --key=value, config files as config/NAME.py")
            scope = dict(settings, __file__=arg)  # a config file may read the settings so far
            try:
                exec(compile(source, arg, 'exec'), scope)
            except Exception as e:
                line = e.lineno if isinstance(e, SyntaxError) else e.__traceback__.tb_next.tb_lineno
                raise ConfigError(f"{arg}, line {line}: {type(e).__name__}: {e}")
            for key, value in settings_of(scope).items():
                if key not in settings or value is not settings[key]:
                    _known(key, settings, arg)
                    settings[key] = check_type(key, value, defaults[key], key in takes_none)
        else:
            key, sep, text = arg[2:].partition('=')
            if not sep:
                raise ConfigError(f"{arg} has no value: write --{key}=VALUE")
            _known(key, settings, arg)
            if type(defaults[key]) is list:
                # each --key=value adds one item, taken as it is written (a path, a name)
                items = settings[key] if key in given else []
                settings[key] = items + [text]
                given[key] = arg
                continue
            if key in given:
                raise ConfigError(f"{given[key]} and {arg}: --{key} given twice; give it once")
            given[key] = arg
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                value = text  # plain words, paths, names: strings
            settings[key] = check_type(key, value, defaults[key], key in takes_none)
    return settings


def _known(key, settings, where):
    if key not in settings:
        close = difflib.get_close_matches(key, settings, n=3)
        hint = f"; did you mean {' or '.join(close)}?" if close else "; see --help for the list"
        raise ConfigError(f"unknown setting {key!r} in {where}{hint}")
    return key


def help_text(namespace, settings, defaults=None):
    """One line per setting: name, value and the comment that follows it in the script; where
    config files changed the value (settings differ from defaults), the default too."""
    comments = {}
    try:
        with open(namespace['__file__']) as f:
            for line in f:
                m = re.match(r'^(\w+)\s*(?::[^=]*)?=.*?#\s*(.*)$', line)
                if m:
                    comments.setdefault(m.group(1), m.group(2))
    except (KeyError, OSError):
        pass
    width = max(len(k) for k in settings)
    script = namespace.get('__file__', 'script.py')
    lines = [f"usage: python {script} [config/FILE.py ...] [--key=value ...]", ""]
    for k, v in settings.items():
        comment = comments.get(k, '')
        if defaults is not None and (v != defaults[k] or type(v) is not type(defaults[k])):
            comment = f"(default {defaults[k]!r}) {comment}"
        lines.append(f"  --{k:<{width}} = {v!r:<20} {comment}".rstrip())
    return "\n".join(lines)


def configure(namespace, argv=None, log=None):
    """Update a script's globals from sys.argv; print one line and exit on a bad argument. The
    settings changed from their defaults are printed to stdout, or to log(new settings) when
    given (sample.py's chat: stderr, so that stdout holds the answers alone)."""
    report_errors()
    argv = sys.argv[1:] if argv is None else argv
    settings = settings_of(namespace)
    asks_help = '-h' in argv or '--help' in argv
    try:
        # (with --help: the values that the config files and flags before it give)
        new = parse(settings, [a for a in argv if a not in ('-h', '--help')],
                    nullable(namespace))
    except ConfigError as e:
        sys.exit(f"error: {e}")
    if asks_help:
        print(help_text(namespace, new, settings))
        sys.exit(0)
    if os.environ.get('RANK', '0') == '0':  # under torchrun, one process says it
        for key, value in new.items():
            if value != settings[key] or type(value) is not type(settings[key]):
                print(f"  {key} = {value!r}", file=log(new) if log else sys.stdout)
    namespace.update(new)
    return new
