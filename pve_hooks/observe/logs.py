"""One logging set-up for every pve-hooks process (daemon, CLI), plus secret redaction.

Modules log with ``log = logging.getLogger(__name__)`` and put structured
journald fields in ``extra`` with UPPERCASE keys (see :data:`FIELDS`)::

    log.warning('AccountDB unreachable (%s); %d events kept in outbox, next try in %s',
                reason, depth, format_duration(delay), extra={'BATCH_SIZE': 12})

A process calls :func:`configure` once (again on SIGHUP, it replaces its
handler). Where records go follows ``logging.target``:

``journal``
    journald through systemd-python's ``journal.send``. Every UPPERCASE
    ``extra`` key becomes a journal field, plus PRIORITY, SYSLOG_IDENTIFIER,
    LOGGER and CODE_*. The message stays one line; a traceback goes in
    EXCEPTION_TEXT (``journalctl -o verbose`` shows it).
``stderr``
    one line per record: ``LEVEL message key=value ...``.
``file``
    ``logging.file``, rotated at ``logging.max_bytes`` keeping
    ``logging.backup_count`` old files (0: never rotated here, logrotate's
    job); lines carry a timestamp and the identifier.
``auto``
    journal when ``/run/systemd/journal/socket`` exists and systemd-python
    imports, else stderr.

Every handler has a :class:`RedactFilter`: any value passed to
:func:`register_secret` (the AccountDB token) is replaced with ``<redacted>``
in messages, arguments, tracebacks and fields before anything is written.

The level policy these calls follow is written down in docs/logging.md.
"""

import logging
import logging.handlers
import os
import sys
import time

# The structured fields pve-hooks puts on its records (journald field names).
FIELDS = ('VMID', 'PHASE', 'EVENT_ID', 'NODE', 'BATCH_SIZE', 'HTTP_STATUS', 'DURATION_MS',
          'BREAKER_STATE', 'ALERT', 'ALERT_STATUS')
JOURNAL_SOCKET = '/run/systemd/journal/socket'
REDACTED = '<redacted>'

# journald priorities (syslog levels) for Python's levels.
PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4),
              (logging.INFO, 6), (logging.DEBUG, 7))

# Fields the journal handler sets itself; an ``extra`` key of the same name is ignored.
_OWN_FIELDS = frozenset(('MESSAGE', 'MESSAGE_ID', 'PRIORITY', 'SYSLOG_IDENTIFIER', 'LOGGER',
                         'CODE_FILE', 'CODE_LINE', 'CODE_FUNC', 'THREAD_NAME', 'EXCEPTION_TEXT'))
_MARK = '_pve_hooks_handler'

_secrets = set()


def register_secret(value):
    """Given a secret string (e.g. the token), make every handler redact it from now on.

    Empty or None values are ignored. Return None.
    """
    if value:
        _secrets.add(str(value))


def clear_secrets():
    """Forget every registered secret (tests). Return None."""
    _secrets.clear()


def redact(text):
    """Given a string, return it with every registered secret replaced by ``<redacted>``."""
    if not _secrets or not isinstance(text, str):
        return text
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def priority(levelno):
    """Given a logging level number, return the journald PRIORITY (2 critical ... 7 debug)."""
    for threshold, value in PRIORITIES:
        if levelno >= threshold:
            return value
    return 7


def is_field_name(name):
    """Return True if ``name`` is a journald field name pve-hooks passes on (UPPERCASE extra keys)."""
    if not name or len(name) > 64 or not ('A' <= name[0] <= 'Z'):
        return False
    return all('A' <= ch <= 'Z' or '0' <= ch <= '9' or ch == '_' for ch in name)


def record_fields(record):
    """Given a LogRecord, return {FIELD: str value} of its UPPERCASE ``extra`` keys.

    None values are left out; bools become ``true``/``false``; secrets are redacted.
    """
    fields = {}
    for key, value in record.__dict__.items():
        if not is_field_name(key) or key in _OWN_FIELDS or value is None:
            continue
        if isinstance(value, bool):
            value = 'true' if value else 'false'
        fields[key] = redact(str(value))
    return fields


class RedactFilter(logging.Filter):
    """Render each record's message once, redact secrets, keep it on one line.

    After this filter ``record.msg`` is the final text and ``record.args`` is
    empty, so no handler (or systemd-python's CODE_ARGS) ever sees the raw
    arguments. Tracebacks are formatted into ``record.exc_text`` and redacted
    too; string fields are redacted. Always returns True (nothing is dropped).
    """

    def filter(self, record):
        if getattr(record, '_pve_hooks_redacted', False):
            return True
        try:
            message = record.getMessage()
        except Exception as error:  # a wrong format string must not lose the record
            message = '{0!r} {1!r} (bad log format: {2})'.format(record.msg, record.args, error)
        message = redact(message)
        if '\n' in message or '\r' in message:
            message = ' '.join(message.splitlines())
        record.msg = message
        record.args = ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key, value in list(record.__dict__.items()):
            if is_field_name(key) and isinstance(value, str):
                setattr(record, key, redact(value))
        record._pve_hooks_redacted = True
        return True


def _pairs(record):
    return ''.join(' {0}={1}'.format(key.lower(), _quote(value))
                   for key, value in sorted(record_fields(record).items()))


def _quote(value):
    if not value or any(ch.isspace() or ch in '"=' for ch in value):
        return '"' + value.replace('\\', '\\\\').replace('"', '\\"') + '"'
    return value


class LineFormatter(logging.Formatter):
    """``LEVEL message key=value ...`` (stderr); with ``identifier``, prefixed by a timestamp
    and ``identifier[pid]:`` (file). A traceback follows on indented lines.
    """

    def __init__(self, identifier=None):
        super().__init__()
        self.identifier = identifier

    def format(self, record):
        line = '{0} {1}{2}'.format(record.levelname, record.getMessage(), _pairs(record))
        if self.identifier:
            stamp = time.strftime('%Y-%m-%dT%H:%M:%S%z', time.localtime(record.created))
            line = '{0} {1}[{2}]: {3}'.format(stamp, self.identifier, record.process, line)
        if record.exc_text:
            line += '\n' + '\n'.join('    ' + part for part in record.exc_text.splitlines())
        return line


class StderrHandler(logging.StreamHandler):
    """A StreamHandler that writes to whatever ``sys.stderr`` is at the time of each record.

    (click's CliRunner and pytest swap sys.stderr; a handler holding the old
    stream would write to a closed file.)
    """

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


class JournalHandler(logging.Handler):
    """Send records to journald with their UPPERCASE ``extra`` keys as fields.

    Written here (instead of systemd-python's ``JournalHandler``) because that
    handler, in python-systemd 235 both on Debian and PyPI, passes the whole
    ``record.__dict__`` and the raw ``record.args`` (CODE_ARGS) to the
    journal; this one sends exactly the fields documented in docs/logging.md.
    ``send`` is ``systemd.journal.send`` unless given (tests).
    """

    def __init__(self, identifier, send=None, level=logging.NOTSET):
        super().__init__(level)
        if send is None:
            from systemd import journal
            send = journal.send
        self.identifier = identifier
        self._send = send

    def emit(self, record):
        try:
            fields = record_fields(record)
            if record.exc_text:
                fields['EXCEPTION_TEXT'] = record.exc_text
            self._send(record.getMessage(),
                       PRIORITY=str(priority(record.levelno)),
                       SYSLOG_IDENTIFIER=self.identifier,
                       LOGGER=record.name,
                       CODE_FILE=record.pathname,
                       CODE_LINE=record.lineno,
                       CODE_FUNC=record.funcName,
                       THREAD_NAME=record.threadName,
                       **fields)
        except Exception:
            self.handleError(record)


def journal_available(socket_path=JOURNAL_SOCKET):
    """Return True if journald's socket exists at ``socket_path`` and systemd-python imports."""
    if not os.path.exists(socket_path):
        return False
    try:
        from systemd import journal  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_target(settings, socket_path=JOURNAL_SOCKET):
    """Given settings, return where logs go: 'journal', 'stderr' or 'file' (``auto`` resolved)."""
    target = settings['logging.target']
    if target == 'auto':
        return 'journal' if journal_available(socket_path) else 'stderr'
    return target


def make_handler(settings, identifier='pve-hooks', stream=None, socket_path=JOURNAL_SOCKET):
    """Given settings, return (handler, problem) for ``logging.target``.

    ``problem`` is None, or a one-line reason why the configured target could
    not be used and stderr (``stream``) is used instead: no journald socket or
    systemd-python not installed for ``journal``, or the log file cannot be
    opened for ``file``.
    """
    target = resolve_target(settings, socket_path)
    problem = None
    handler = None
    if target == 'journal' and not os.path.exists(socket_path):
        # systemd-python's send() silently drops records without the socket.
        problem = ('logging.target is journal but journald is not running here ({0} does not exist); '
                   'logging to stderr instead'.format(socket_path))
    elif target == 'journal':
        try:
            handler = JournalHandler(identifier)
        except ImportError:
            problem = ('logging.target is journal but systemd-python is not installed '
                       '(apt install python3-systemd); logging to stderr instead')
    elif target == 'file':
        path = settings['logging.file']
        try:
            # backup_count 0: logrotate (debian/pve-hooks.logrotate) is in charge, never rotate here.
            backups = settings['logging.backup_count']
            handler = logging.handlers.RotatingFileHandler(
                path, maxBytes=settings['logging.max_bytes'] if backups else 0,
                backupCount=backups, encoding='utf-8')
            handler.setFormatter(LineFormatter(identifier))
        except OSError as error:
            problem = ('cannot open log file {0} ({1}); check logging.file and its directory; '
                       'logging to stderr instead'.format(path, error.strerror or error))
    if handler is None:
        handler = StderrHandler() if stream is None else logging.StreamHandler(stream)
        handler.setFormatter(LineFormatter())
    handler.addFilter(RedactFilter())
    return handler, problem


def configure(settings, identifier='pve-hooks', stream=None, socket_path=JOURNAL_SOCKET):
    """Set up the root logger for this process from ``settings`` (``logging.*``).

    ``identifier`` is the SYSLOG_IDENTIFIER (``pve-hooks``; the hookscript uses
    ``pve-hooks-hook``); ``stream`` replaces sys.stderr for the stderr target.
    Calling it again (SIGHUP) replaces the handler it installed before and
    leaves other handlers (e.g. pytest's) alone. Never raises for an unusable
    target: it falls back to stderr and logs one error saying why. Return None.
    """
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, _MARK, False):
            root.removeHandler(old)
            old.close()
    handler, problem = make_handler(settings, identifier, stream, socket_path)
    setattr(handler, _MARK, True)
    root.addHandler(handler)
    root.setLevel(getattr(logging, settings['logging.level'].upper()))
    # Library chatter (connection pool debug lines) only when it matters.
    logging.getLogger('urllib3').setLevel(logging.WARNING)
    logging.captureWarnings(True)
    for option_key, value in settings.items():
        option = _schema_option(option_key)
        if option is not None and option.secret:
            register_secret(value)
    if problem:
        logging.getLogger(__name__).error(problem)


def _schema_option(key):
    from pve_hooks.config import schema
    return schema.BY_KEY.get(key)


def format_duration(seconds):
    """Given seconds, return a short human text: '40 s', '5 min', '2 h', '3 d'."""
    seconds = max(0.0, float(seconds))
    if seconds < 1:
        return '{0:.0f} ms'.format(seconds * 1000) if seconds else '0 s'
    if seconds < 120:
        return '{0:.0f} s'.format(seconds)
    if seconds < 7200:
        return '{0:.0f} min'.format(seconds / 60)
    if seconds < 172800:
        return '{0:.0f} h'.format(seconds / 3600)
    return '{0:.0f} d'.format(seconds / 86400)


class Repeat:
    """What :class:`RepeatSummariser` decided about one failure.

    ``log`` says whether to log it now; ``suppressed`` is how many failures
    were not logged since the last logged one; ``elapsed`` the seconds since
    then; ``changed`` whether this failure differs from the last logged one.
    ``suffix`` is text to append to the message ('' when nothing was
    suppressed). True when it should be logged.
    """

    __slots__ = ('log', 'suppressed', 'elapsed', 'changed')

    def __init__(self, log, suppressed=0, elapsed=0.0, changed=False):
        self.log = log
        self.suppressed = suppressed
        self.elapsed = elapsed
        self.changed = changed

    def __bool__(self):
        return self.log

    @property
    def suffix(self):
        if not self.log or not self.suppressed:
            return ''
        return '; {0} {1} more time{2} in the last {3}'.format(
            'the previous failure happened' if self.changed else 'same failure', self.suppressed,
            '' if self.suppressed == 1 else 's', format_duration(self.elapsed))

    def __repr__(self):
        return 'Repeat(log={0}, suppressed={1}, elapsed={2}, changed={3})'.format(
            self.log, self.suppressed, self.elapsed, self.changed)


class RepeatSummariser:
    """Log a repeated identical failure once, then at most one summary per ``window`` seconds.

    ``clock`` returns seconds (monotonic by default). ``key`` names the kind
    of failure (``'accountdb'``), ``detail`` what exactly failed (``'connection
    refused'``): a failure whose detail differs from the last logged one is
    logged at once. Usage::

        repeat = repeats.failed('accountdb', reason)
        if repeat:
            log.warning('AccountDB unreachable (%s); ...%s', reason, repeat.suffix)
        ...
        failures = repeats.succeeded('accountdb')
        if failures:
            log.info('AccountDB reachable again after %d failed attempts', failures)
    """

    def __init__(self, window=300.0, clock=time.monotonic):
        self.window = window
        self.clock = clock
        self._state = {}  # key -> [last_logged, suppressed, total, detail]

    def failed(self, key, detail=''):
        """Record one failure of ``key``; return a :class:`Repeat` (true when to log it now)."""
        now = self.clock()
        state = self._state.get(key)
        if state is None:
            self._state[key] = [now, 0, 1, detail]
            return Repeat(True)
        state[2] += 1
        elapsed = now - state[0]
        if elapsed >= self.window or detail != state[3]:
            suppressed, changed = state[1], detail != state[3]
            state[0], state[1], state[3] = now, 0, detail
            return Repeat(True, suppressed, elapsed, changed)
        state[1] += 1
        return Repeat(False, state[1], elapsed)

    def succeeded(self, key):
        """Forget ``key``; return how many times it failed in a row (0 if it was not failing)."""
        state = self._state.pop(key, None)
        return state[2] if state else 0

    def failing(self):
        """Return the keys currently failing, sorted."""
        return sorted(self._state)
