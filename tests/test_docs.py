"""README.md and DATASETS.md as a user reads them: every command in them names a script of this repository
and only options (and the sub-commands of prepare.py and grid.py) that script accepts; every relative link
points at a file, and at a heading, that exists; the README's test command is the one .ci/run runs.

A script's accepted options are what `python SCRIPT --help` (`python prepare.py SUBCOMMAND --help`, the same for
grid.py) lists.
All of them run in one process, once per test session: each script runs as `__main__` with that argv,
as `python` would run it, so torch is imported once. A script with no argument parser accepts
no arguments at all and is not run.
"""
import json
import os
import re
import shlex

import pytest

from harness import ROOT, run_script

DOCS = ('README.md', 'DATASETS.md')
LAUNCHERS = ('python', 'torchrun', 'bash')
SEPARATORS = {'&&', '||', ';', '|', '&', '(', ')'}
SUBCOMMANDS = ('prepare.py', 'grid.py')  # scripts whose first positional argument is a sub-command
REDIRECTS = {'>', '>>', '<', '<<', '<<-', '>&', '&>'}

HELP_RUNNER = r'''
import contextlib, io, json, runpy, sys, traceback
sys.path.insert(0, '.')
helps = {}
for key in json.loads(sys.argv[1]):
    sys.argv = [*key.split(), '--help']
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(sys.argv[0], run_name='__main__')
        helps[key] = 'no SystemExit: --help did not stop the script\n' + out.getvalue()
    except SystemExit as e:
        helps[key] = out.getvalue() if e.code in (0, None) else f'exit {e.code}\n' + out.getvalue()
    except BaseException:
        helps[key] = traceback.format_exc()
print(json.dumps(helps))
'''


def code_lines(doc):
    """(line number, text) of every shell line in doc's code: fenced blocks other than ```python (settings to
    append), lines indented as code, and inline `python ...`, `torchrun ...`, `bash ...` spans. Lines ending in a
    backslash are joined with the next; the bodies of here-documents are left out."""
    lines = open(os.path.join(ROOT, doc), encoding='utf-8').read().splitlines()
    found, fence, heredoc, pending = [], None, None, None
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped.startswith('```'):
            fence = None if fence is not None else stripped[3:].strip()
            continue
        if heredoc:
            heredoc = None if stripped == heredoc else heredoc
            continue
        if fence is not None and fence != 'python' or fence is None and line.startswith('    ') and stripped:
            text = stripped if pending is None else pending[1] + ' ' + stripped
            start = number if pending is None else pending[0]
            if text.endswith('\\'):
                pending = (start, text[:-1])
                continue
            pending = None
            found.append((start, text))
            marker = re.search(r"<<-?\s*['\"]?(\w+)['\"]?", text)
            heredoc = marker.group(1) if marker else None
        elif fence is None:
            found += [(number, span) for span in re.findall(r'`((?:python|torchrun|bash) [^`]+)`', line)]
    return found


def simple_commands(text):
    """The simple commands of one shell line: token lists split at && ; | ( ), without redirections."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands, current, tokens = [], [], list(lexer)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token in SEPARATORS:
            commands.append(current)
            current = []
        elif token in REDIRECTS:
            i += 1  # the file it redirects to
        else:
            current.append(token)
        i += 1
    return [command for command in commands + [current] if command]


def script_call(command):
    """(script, its arguments) of `python X.py ...`, `torchrun ... X.py ...` or `bash X.sh ...`; None for
    any other command (cd, cp, python -c, python -m pytest, ...)."""
    if command[0] not in LAUNCHERS:
        return None
    if command[0] == 'python' and not (command[1:] and command[1].endswith('.py')):
        return None
    ending = '.sh' if command[0] == 'bash' else '.py'
    for i, token in enumerate(command[1:], 1):
        if token.endswith(ending):
            return token, [arg.strip('[]') for arg in command[i + 1:]]
    return None


def documented_calls():
    """Every script call of the docs, as (doc:line, script, arguments, the line)."""
    calls = []
    for doc in DOCS:
        for number, text in code_lines(doc):
            try:
                commands = simple_commands(text)
            except ValueError as e:
                calls.append((f'{doc}:{number}', None, [str(e)], text))
                continue
            for command in commands:
                call = script_call(command)
                if call:
                    calls.append((f'{doc}:{number}', *call, text))
    return calls


CALLS = documented_calls()


def has_parser(script):
    with open(os.path.join(ROOT, script), encoding='utf-8') as f:
        return 'argparse' in f.read()


def help_keys():
    """`SCRIPT` or `SCRIPT SUBCOMMAND` (SUBCOMMANDS): each --help the documented calls need."""
    keys = set()
    for _, script, args, _ in CALLS:
        name = os.path.basename(script or '')
        if name.endswith('.py') and os.path.exists(os.path.join(ROOT, name)) and has_parser(name):
            keys.add(name)
            positional = [arg for arg in args if not arg.startswith('-')]
            if name in SUBCOMMANDS and positional:
                keys.add(f'{name} {positional[0]}')
    return sorted(keys)


@pytest.fixture(scope='session')
def helps():
    """--help text of every key of help_keys(), from one process."""
    result = run_script(ROOT, '-c', HELP_RUNNER, json.dumps(help_keys()))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def usage(helps, key):
    """The options and sub-commands that the usage lines of `key --help` name."""
    text = helps[key]
    assert text.startswith('usage:'), f'`python {key} --help` printed no usage:\n{text}'
    lines = text.split('\n\n')[0]
    subcommands = re.findall(r'\{([\w,-]+)\}', lines)
    return set(re.findall(r'--[A-Za-z0-9][\w-]*', lines)), set(subcommands[0].split(',') if subcommands else ())


@pytest.mark.parametrize('where, script, args, line', CALLS,
                         ids=[f'{where} {os.path.basename(script or "?")}' for where, script, _, _ in CALLS])
def test_documented_command_names_a_script_and_options_it_accepts(where, script, args, line, helps):
    assert script is not None, f'{where}: `{line}` is not a shell line: {args[0]}'
    name = os.path.basename(script)
    assert os.path.exists(os.path.join(ROOT, name)), f'{where}: `{line}` runs {name}, which is not in the repository'
    if name.endswith('.sh'):
        return
    if not has_parser(name):
        assert not args, f'{where}: `{line}` gives {name} arguments {args}, but it takes none'
        return
    options, subcommands = usage(helps, name)
    used = [arg.split('=')[0] for arg in args if arg.startswith('--')]
    if name in SUBCOMMANDS:
        positional = [arg for arg in args if not arg.startswith('-')]
        assert positional and positional[0] in subcommands, \
            f'{where}: `{line}`: {name} has the sub-commands {sorted(subcommands)}'
        options, _ = usage(helps, f'{name} {positional[0]}')
    unknown = [option for option in used if option not in options]
    assert not unknown, f'{where}: `{line}`: {name} has no option {unknown}; it has {sorted(options)}'


def test_the_docs_show_commands_of_every_entry_script():
    shown = {os.path.basename(script) for _, script, _, _ in CALLS if script}
    assert {'prepare.py', 'train.py', 'eval.py', 'compare.py', 'benchmark.py', 'grid.py', 'demo.sh'} <= shown, shown


def slug(heading):
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')


def anchors(path):
    """The anchors of a Markdown file's headings (a `# comment` in a code block is none)."""
    found, fenced = set(), False
    with open(path, encoding='utf-8') as f:
        for line in f:
            fenced ^= line.startswith('```')
            if not fenced and re.match(r'#{1,6} ', line):
                found.add(slug(line.lstrip('#')))
    return found


@pytest.mark.parametrize('doc', DOCS)
def test_relative_links_point_at_files_and_headings_that_exist(doc):
    with open(os.path.join(ROOT, doc), encoding='utf-8') as f:
        text = f.read()
    links = re.findall(r'\]\(([^)\s]+)\)', text)
    assert links or doc != 'README.md'  # the README links to DATASETS.md at least
    for link in links:
        if re.match(r'[a-z]+:', link):
            continue
        target, _, anchor = link.partition('#')
        path = os.path.join(ROOT, os.path.dirname(doc), target) if target else os.path.join(ROOT, doc)
        assert os.path.exists(path), f'{doc} links to {link}: {target} does not exist'
        if anchor and path.endswith('.md'):
            assert anchor in anchors(path), f'{doc} links to {link}: {target or doc} has no heading #{anchor}'


def test_readme_shows_the_test_command_that_ci_runs():
    with open(os.path.join(ROOT, '.ci', 'run')) as f:
        ci = [line.strip() for line in f if line.startswith('python -m pytest')]
    assert ci == ['python -m pytest -q -n auto --dist loadgroup tests']
    assert any(words(text) == words(ci[0]) for _, text in code_lines('README.md'))


def words(line):
    try:
        return shlex.split(line, comments=True)
    except ValueError:
        return None
