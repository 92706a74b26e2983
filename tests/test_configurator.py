"""configurator.py: config files, --key=value overrides and every way they can go wrong."""

import os

import pytest

from configurator import ConfigError, configure, parse
from conftest import python

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = dict(batch_size=12, learning_rate=6e-4, compile=True, dataset='openwebtext', top_k=None,
                max_iters=5000)


def test_overrides_and_literals():
    s = parse(SETTINGS, ['--batch_size=32', '--learning_rate=1e-3', '--compile=False',
                         '--dataset=shakespeare_char'])
    assert s['batch_size'] == 32 and s['learning_rate'] == 1e-3 and s['compile'] is False
    assert s['dataset'] == 'shakespeare_char'
    assert SETTINGS['batch_size'] == 12  # the input is not modified


def test_int_is_accepted_for_float():
    s = parse(SETTINGS, ['--learning_rate=1'])
    assert s['learning_rate'] == 1.0 and type(s['learning_rate']) is float


def test_lowercase_booleans():
    assert parse(SETTINGS, ['--compile=false'])['compile'] is False
    assert parse(SETTINGS, ['--compile=True'])['compile'] is True


def test_none_default_takes_any_literal():
    assert parse(SETTINGS, ['--top_k=50'])['top_k'] == 50
    assert parse(SETTINGS, ['--top_k=false'])['top_k'] is False  # lowercase booleans are booleans
    assert parse(SETTINGS, ['--top_k=none'])['top_k'] is None


def test_a_setting_annotated_to_take_none():
    namespace = {'top_k': 200, 'batch_size': 12, '__annotations__': {'top_k': int | None}}
    configure(namespace, ['--top_k=None'])
    assert namespace['top_k'] is None
    configure(namespace, ['--top_k=none'])
    assert namespace['top_k'] is None
    configure(namespace, ['--top_k=5'])
    assert namespace['top_k'] == 5
    with pytest.raises(SystemExit, match='--top_k expects int'):
        configure(namespace, ['--top_k=0.5'])
    # not annotated: None is refused
    with pytest.raises(SystemExit, match='--batch_size expects int'):
        configure(namespace, ['--batch_size=None'])


def test_mistakes_inside_a_config_file(tmp_path):
    f = tmp_path / 'c.py'
    f.write_text('batch_size = \n')
    with pytest.raises(ConfigError, match=r'c.py, line 1: SyntaxError'):
        parse(SETTINGS, [str(f)])
    f.write_text('max_iters = 10\nbatch_size = bach_size * 2\n')
    message = r"c.py, line 2: NameError: name 'bach_size' is not defined"
    with pytest.raises(ConfigError, match=message):
        parse(SETTINGS, [str(f)])


def test_value_may_contain_equals():
    assert parse(SETTINGS, ['--dataset=a=b'])['dataset'] == 'a=b'


def test_unknown_key_suggests_close_ones():
    with pytest.raises(ConfigError, match=r"unknown setting 'bach_size'.*did you mean batch_size"):
        parse(SETTINGS, ['--bach_size=3'])
    with pytest.raises(ConfigError, match="unknown setting 'zzz'"):
        parse(SETTINGS, ['--zzz=3'])


@pytest.mark.parametrize('arg, message', [
    ('--batch_size=abc', "--batch_size expects int (default 12), got 'abc'"),
    ('--max_iters=1.5', "--max_iters expects int (default 5000), got 1.5"),
    ('--compile=1', "--compile expects bool (default True), got 1"),
    ('--learning_rate=fast', "--learning_rate expects float"),
    ('--dataset=3', "--dataset expects str"),
    ('--batch_size=True', "--batch_size expects int"),
])
def test_wrong_types(arg, message):
    with pytest.raises(ConfigError, match=message.replace('(', r'\(').replace(')', r'\)')):
        parse(SETTINGS, [arg])


def test_flag_without_value():
    with pytest.raises(ConfigError, match='has no value'):
        parse(SETTINGS, ['--compile'])


def test_config_files_run_in_order_then_overrides(tmp_path):
    a = tmp_path / 'a.py'
    a.write_text('batch_size = 4\nmax_iters = 10  # short\nimport math\n_helper = 3\n')
    b = tmp_path / 'b.py'
    b.write_text('max_iters = max_iters * 2\nlearning_rate = 1\n')
    s = parse(SETTINGS, [str(a), str(b), '--batch_size=8'])
    assert s['batch_size'] == 8 and s['max_iters'] == 20 and s['learning_rate'] == 1.0


def test_config_file_typo_and_type(tmp_path):
    f = tmp_path / 'c.py'
    f.write_text('max_iter = 10\n')
    message = r"unknown setting 'max_iter' in .*c.py; did you mean max_iters"
    with pytest.raises(ConfigError, match=message):
        parse(SETTINGS, [str(f)])
    f.write_text('max_iters = 1e3\n')
    with pytest.raises(ConfigError, match='--max_iters expects int'):
        parse(SETTINGS, [str(f)])


def test_missing_config_file():
    with pytest.raises(ConfigError, match='cannot read config file config/nope.py'):
        parse(SETTINGS, ['config/nope.py'])


def test_configure_exits_with_one_line(capsys):
    namespace = dict(SETTINGS)
    with pytest.raises(SystemExit) as e:
        configure(namespace, ['--bach_size=3'])
    assert e.value.code == ("error: unknown setting 'bach_size' in --bach_size=3; "
                            "did you mean batch_size?")
    assert namespace['batch_size'] == 12
    configure(namespace, ['--batch_size=3'])
    assert namespace['batch_size'] == 3


SCRIPT = '''
batch_size = 12  # sequences per micro-step
top_k: int | None = 200  # TOP-K COMMENT
learning_rate = 6e-4  # peak learning rate
from configurator import configure
configure(globals())
print("RESULT", batch_size, learning_rate)
'''


@pytest.fixture
def script(tmp_path):
    path = tmp_path / 'script.py'
    path.write_text(SCRIPT)
    return path


def run(script, *args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return python([script, *args], env=env, timeout=60)


def test_script_help_lists_settings_with_defaults_and_comments(script):
    r = run(script, '--help')
    assert r.returncode == 0
    assert '--batch_size' in r.stdout and '12' in r.stdout
    assert 'sequences per micro-step' in r.stdout
    assert '--learning_rate' in r.stdout and '0.0006' in r.stdout and 'RESULT' not in r.stdout
    assert 'TOP-K COMMENT' in r.stdout  # an annotated setting's comment too


@pytest.mark.parametrize('args', [['--no_such_key=1'], ['--batch_size=abc'], ['--batch_size=1.5'],
                                  ['config/missing.py']])
def test_script_errors_are_one_line_without_traceback(script, args):
    r = run(script, *args)
    assert r.returncode != 0
    assert r.stderr.startswith('error: ') and r.stderr.count('\n') == 1
    assert 'Traceback' not in r.stderr
    assert 'RESULT' not in r.stdout


def test_script_override(script):
    r = run(script, '--learning_rate=1')
    assert r.returncode == 0 and 'RESULT 12 1.0' in r.stdout


def test_a_key_given_twice_is_refused_and_a_list_setting_takes_each():
    with pytest.raises(ConfigError, match='--batch_size given twice'):
        parse(SETTINGS, ['--batch_size=32', '--batch_size=64'])
    settings = dict(SETTINGS, input=[])
    s = parse(settings, ['--input=a.txt', '--batch_size=8', '--input=1.txt', '--input=b c.txt'])
    # each item as written (1.txt and a name with a space stay text)
    assert s['input'] == ['a.txt', '1.txt', 'b c.txt'] and settings['input'] == []
    # a config file may give one path or a list; the command line then starts a list of its own
    s = parse(settings, ['--input=x.txt'])
    assert s['input'] == ['x.txt']
    from configurator import check_type
    assert check_type('input', 'one.txt', []) == ['one.txt']
    with pytest.raises(ConfigError, match='--input expects text'):
        check_type('input', [1], [])


def test_help_after_a_config_file_shows_its_values(tmp_path):
    config = tmp_path / 'c.py'
    config.write_text('batch_size = 4\n')
    r = python([os.path.join(ROOT, 'train.py'), str(config), '--max_iters=7', '--help'])
    assert r.returncode == 0, r.stderr
    lines = {line.split()[0]: line for line in r.stdout.splitlines() if line.startswith('  --')}
    assert lines['--batch_size'].split()[2] == '4' and '(default 12)' in lines['--batch_size']
    assert lines['--max_iters'].split()[2] == '7'
    assert lines['--learning_rate'].split()[2] == '0.0006'
    assert '(default' not in lines['--learning_rate']
