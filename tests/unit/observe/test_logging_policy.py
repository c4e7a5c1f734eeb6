"""The level policy of docs/logging.md, checked on the source where a program can check it.

The checker reads every module of pve_hooks with ``ast`` and finds log calls
(``log.info(...)``, ``logger.warning(...)``, ``log.log(logging.ERROR, ...)``)
whose literal message or arguments contradict the written rules:

1. DEBUG/INFO naming a failure must say it is a repeat, a retry or over.
2. CRITICAL names its condition (alert, rejected, dropped, dead, stale, ...).
3. ``log.exception`` only inside ``except``; ``exc_info`` not at INFO/WARNING.
4. No secret-named variable (token, secret, password, ...) among the arguments.
5. A literal message is one line.

A call that is right despite a rule carries ``# log-policy: <reason>`` on one
of its lines. The checker itself is tested on small examples first, so a
broken checker cannot pass silently.
"""

import ast
import os
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

LEVELS = ('debug', 'info', 'warning', 'error', 'critical', 'exception')
LOGGER_NAMES = ('log', 'logger', '_log', 'LOG', '_logger', 'logging')
LEVEL_CONSTANTS = {'DEBUG': 'debug', 'INFO': 'info', 'WARNING': 'warning', 'WARN': 'warning', 'ERROR': 'error',
                   'CRITICAL': 'critical', 'FATAL': 'critical'}
FAILURE_WORDS = ('failed', 'unreachable', 'cannot', 'refused', 'timed out')
CONTEXT_WORDS = ('still', 'again', 'retry', 'next try', 'resolved', 'recovered', 'after')
CRITICAL_WORDS = ('alert', 'reject', 'drop', 'dead', 'stale', 'lost', 'full', 'token')
SECRET_WORDS = ('token', 'secret', 'password', 'passwd', 'authorization')
SECRET_OK_SUFFIXES = ('_file', '_path', '_dir', 'error', '_name')
ESCAPE = '# log-policy:'

# Reviewed calls in modules this file does not own (an inline '# log-policy:' comment is
# preferred): (path, start of the literal message) -> why the call is right.
REVIEWED = {
    ('pve_hooks/daemon/systemd.py', 'sd_notify failed'):
        'logged once per process; a NOTIFY_SOCKET nobody listens on is normal in containers and tests',
}


def _message_text(node):
    """Return the literal text of a message expression, or None when it is not known statically."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return ''.join(part.value if isinstance(part, ast.Constant) else '{}' for part in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mod)):
        left = _message_text(node.left)
        if isinstance(node.op, ast.Mod):
            return left
        right = _message_text(node.right)
        return None if left is None or right is None else left + right
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == 'format'):
        return _message_text(node.func.value)
    return None


def _level_of(call):
    """Return (level name or None if not static, message node) for a log call."""
    method = call.func.attr
    if method != 'log':
        return ('error' if method == 'exception' else method), (call.args[0] if call.args else None)
    if not call.args:
        return None, None
    level = call.args[0]
    name = level.attr if isinstance(level, ast.Attribute) else level.id if isinstance(level, ast.Name) else None
    return LEVEL_CONSTANTS.get(name), (call.args[1] if len(call.args) > 1 else None)


def _is_log_call(node):
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
        return False
    if node.func.attr not in LEVELS + ('log',):
        return False
    target = node.func.value
    if isinstance(target, ast.Name):
        return target.id in LOGGER_NAMES
    return isinstance(target, ast.Attribute) and target.attr in LOGGER_NAMES


def _secret_names(call):
    called = {id(node.func) for node in ast.walk(call) if isinstance(node, ast.Call)}
    found = []
    for argument in list(call.args) + [keyword.value for keyword in call.keywords]:
        for node in ast.walk(argument):
            if id(node) in called:
                continue
            name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
            if name is None:
                continue
            lowered = name.lower()
            if any(word in lowered for word in SECRET_WORDS) and not lowered.endswith(SECRET_OK_SUFFIXES):
                found.append(name)
    return found


def _debug_only(node):
    """True for ``exc_info=log.isEnabledFor(logging.DEBUG)``: a traceback only when debugging."""
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == 'isEnabledFor')


def check_source(text, filename='<test>'):
    """Return a list of 'file:line: rule N: ...' strings for policy violations in Python source ``text``."""
    tree = ast.parse(text, filename)
    lines = text.splitlines()
    problems = []
    handlers = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ExceptHandler):
            for inner in ast.walk(node):
                handlers.add(id(inner))
    for call in ast.walk(tree):
        if not _is_log_call(call):
            continue
        span = lines[call.lineno - 1:(call.end_lineno or call.lineno)]
        if any(ESCAPE in line for line in span):
            continue
        level, message = _level_of(call)
        text_ = _message_text(message) if message is not None else None
        if text_ is not None and any(filename == path and text_.startswith(start) for path, start in REVIEWED):
            continue
        lowered = text_.lower() if text_ is not None else None
        where = '{0}:{1}: '.format(filename, call.lineno)
        if level in ('debug', 'info') and lowered is not None:
            failure = [word for word in FAILURE_WORDS if word in lowered]
            if failure and not any(word in lowered for word in CONTEXT_WORDS):
                problems.append(where + 'rule 1: {0} message names a failure ({1!r}) without saying it is a '
                                'repeat, retry or over; use warning or above: {2!r}'.format(level, failure[0], text_))
        if level == 'critical' and lowered is not None and not any(word in lowered for word in CRITICAL_WORDS):
            problems.append(where + 'rule 2: critical is for the documented alert conditions only: {0!r}'.format(
                text_))
        if call.func.attr == 'exception' and id(call) not in handlers:
            problems.append(where + 'rule 3: log.exception outside an except block')
        for keyword in call.keywords:
            if keyword.arg == 'exc_info' and level in ('info', 'warning') and not (
                    isinstance(keyword.value, ast.Constant) and not keyword.value.value) and not _debug_only(
                    keyword.value):
                problems.append(where + 'rule 3: exc_info at {0}; a handled problem needs no traceback'.format(level))
        secrets = _secret_names(call)
        if secrets:
            problems.append(where + 'rule 4: secret-named value {0} in a log call'.format(', '.join(secrets)))
        if text_ is not None and ('\n' in text_ or '\r' in text_):
            problems.append(where + 'rule 5: multi-line message {0!r}'.format(text_))
    return problems


def check(snippet):
    return check_source(textwrap.dedent(snippet))


# -- the checker on examples ----------------------------------------------------------------------

@pytest.mark.parametrize('snippet, rule', [
    ("log.info('AccountDB unreachable (%s)', reason)", 'rule 1'),
    ("log.debug('pvesh call failed: %s', error)", 'rule 1'),
    ("logger.info(f'cannot write {path}')", 'rule 1'),
    ("log.log(logging.INFO, 'connection refused by %s', host)", 'rule 1'),
    ("log.critical('AccountDB answered slowly')", 'rule 2'),
    ("self.log.critical('something odd')", 'rule 2'),
    ("log.exception('boom')", 'rule 3'),
    ("log.warning('retrying', exc_info=True)", 'rule 3'),
    ("log.info('sending with %s', token)", 'rule 4'),
    ("log.debug(f'header {self.token}')", 'rule 4'),
    ("log.debug('auth {0}'.format(headers.authorization))", 'rule 4'),
    ("log.error('login', extra={'X': password})", 'rule 4'),
    ("log.warning('first\\nsecond')", 'rule 5'),
])
def test_checker_catches(snippet, rule):
    problems = check(snippet)
    assert len(problems) == 1 and rule in problems[0], problems


@pytest.mark.parametrize('snippet', [
    "log.warning('AccountDB unreachable (%s); next try in %s s', reason, delay)",
    "log.debug('%s still failing (%s)', what, reason)",
    "log.info('AccountDB reachable again after %d failed attempts', count)",
    "log.info('request failed (%s); retry %d of %d', error, attempt, attempts)",
    "log.critical('AccountDB rejected event %s; moved to dead letters', event_id)",
    "log.critical('ALERT %s: %s', condition, message)",
    "log.critical(message)",
    "log.log(level, 'whatever failed')",
    "try:\n    pass\nexcept OSError:\n    log.exception('unexpected error in pass')",
    "log.error('x', exc_info=True)",
    "log.warning('check failed unexpectedly; UNKNOWN', exc_info=log.isEnabledFor(logging.DEBUG))",
    "log.warning('x', exc_info=False)",
    "log.warning('%s: cannot read the token file', settings['accountdb.token_file'])",
    "log.error('%s', config.TokenError('x'))",
    "log.warning('token file %s is readable by others', token_path)",
    "log.debug('pvesh failed on purpose')  # log-policy: probing for pvesh is expected to fail off Proxmox",
    "print('failed', token)",
])
def test_checker_accepts(snippet):
    assert check(snippet) == []


# -- the code base --------------------------------------------------------------------------------

def python_sources():
    """Yield (relative path, text) for every Python module of pve_hooks and the Python hookscripts."""
    for directory, _, names in os.walk(os.path.join(ROOT, 'pve_hooks')):
        for name in sorted(names):
            if name.endswith('.py'):
                path = os.path.join(directory, name)
                with open(path, encoding='utf-8') as stream:
                    yield os.path.relpath(path, ROOT), stream.read()
    hookscripts = os.path.join(ROOT, 'hookscripts')
    for name in sorted(os.listdir(hookscripts)) if os.path.isdir(hookscripts) else ():
        path = os.path.join(hookscripts, name)
        with open(path, encoding='utf-8', errors='replace') as stream:
            text = stream.read()
        if text.startswith('#!') and 'python' in text.splitlines()[0]:
            yield os.path.relpath(path, ROOT), text


def test_sources_are_found():
    paths = [path for path, _ in python_sources()]
    assert 'pve_hooks/observe/logs.py' in paths and 'pve_hooks/observe/alerts.py' in paths


def test_code_follows_the_logging_policy():
    problems = []
    for path, text in python_sources():
        problems.extend(check_source(text, path))
    assert problems == [], 'log calls that contradict docs/logging.md:\n' + '\n'.join(problems)
