"""A private systemd-journald for tests, so log records can be checked in the real journal.

journald does not need systemd as PID 1: it needs its sockets under
/run/systemd/journal and somewhere to write. :class:`PrivateJournal` starts
``/lib/systemd/systemd-journald`` in a private mount namespace (``unshare
-m``) with a tmpfs over ``/run`` (and over ``/var/log/journal`` when it
exists, so the host's journal is never touched). Processes under test run in
the same namespace through ``nsenter -m``: for them journald is simply there
at ``/run/systemd/journal/socket``. Records are read back from the host with
``journalctl -D /proc/<journald pid>/root/run/log/journal -o json``.

Needs root, util-linux (unshare, nsenter) and systemd (journald, journalctl);
:func:`unavailable_reason` says what is missing so tests skip with that
reason. Inside the namespace ``/run`` is empty: processes under test must
keep their files (spool, state, sockets) elsewhere, e.g. under tmp_path.

Usage::

    from tests.support.journald import run_with_journal, journal_or_skip

    def test_fields():
        journal_or_skip()
        completed, records = run_with_journal([sys.executable, '-c', CODE], identifier='pve-hooks')
        assert records[0]['VMID'] == '100'

    with PrivateJournal() as journal:          # for long-running processes
        daemon = journal.popen([...])
        ...
        records = journal.records('VMID=100', identifier='pve-hooks')
"""

import json
import os
import shutil
import signal
import subprocess
import time

JOURNALD = '/lib/systemd/systemd-journald'

# Runs as the first process of the namespace and becomes journald (exec).
_NAMESPACE_SCRIPT = '''set -e
mount -n -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/systemd/journal /run/log/journal
if [ -d /var/log/journal ]; then mount -n -t tmpfs -o mode=0755 tmpfs /var/log/journal; fi
exec "$0"
'''


def unavailable_reason(journald=JOURNALD):
    """Return why a private journald cannot run here (a one-line string), or None if it can."""
    if os.geteuid() != 0:
        return 'a private journald needs root (mount namespace + tmpfs)'
    for program in ('unshare', 'nsenter', 'journalctl', 'mount'):
        if shutil.which(program) is None:
            return '{0} not found (apt install util-linux systemd)'.format(program)
    if not os.access(journald, os.X_OK):
        return '{0} not found (apt install systemd)'.format(journald)
    probe = subprocess.run(['unshare', '-m', '--propagation', 'private', 'true'],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10)
    if probe.returncode != 0:
        return 'cannot create a mount namespace: {0}'.format(probe.stderr.decode(errors='replace').strip())
    return None


def journal_or_skip():
    """Skip the calling test (pytest.skip) with the reason when a private journald cannot run."""
    import pytest
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)


class JournalError(Exception):
    """The private journald did not start, sync or stop in time."""


class PrivateJournal:
    """A systemd-journald in its own mount namespace. Use as a context manager.

    ``workdir`` receives journald's stderr (journald.log); a temporary
    directory is made when None. ``timeout`` bounds every wait in seconds.
    """

    def __init__(self, workdir=None, journald=JOURNALD, timeout=15.0):
        self.journald = journald
        self.timeout = timeout
        self.workdir = workdir
        self.process = None
        self._made_workdir = False

    # -- life cycle ------------------------------------------------------------------------------

    def start(self):
        """Start journald and wait for its socket. Return self. Raise JournalError on failure."""
        if self.workdir is None:
            import tempfile
            self.workdir = tempfile.mkdtemp(prefix='private-journal-')
            self._made_workdir = True
        self._log = open(os.path.join(self.workdir, 'journald.log'), 'wb')
        self.process = subprocess.Popen(
            ['unshare', '-m', '--propagation', 'private', 'sh', '-c', _NAMESPACE_SCRIPT, self.journald],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        socket_path = self.path('/run/systemd/journal/socket')
        deadline = time.monotonic() + self.timeout
        while not os.path.exists(socket_path):
            if self.process.poll() is not None:
                raise JournalError('private journald exited with status {0}: {1}'.format(
                    self.process.returncode, self._journald_output()))
            if time.monotonic() > deadline:
                self.stop()
                raise JournalError('private journald did not create its socket within {0} s'.format(
                    self.timeout))
            time.sleep(0.02)
        return self

    def stop(self):
        """Stop journald (SIGTERM: it writes what it received first). Return None."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(self.timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(self.timeout)
        if getattr(self, '_log', None):
            self._log.close()
            self._log = None
        if self._made_workdir and self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- running things inside -------------------------------------------------------------------

    def path(self, inside):
        """Given an absolute path as seen inside the namespace, return it as seen from the host."""
        return '/proc/{0}/root{1}'.format(self.process.pid, inside)

    def command(self, argv):
        """Given an argv list, return the argv that runs it inside the namespace (nsenter exec's it)."""
        return ['nsenter', '-t', str(self.process.pid), '-m', '--'] + list(argv)

    def popen(self, argv, **kwargs):
        """subprocess.Popen ``argv`` inside the namespace; its pid is the program's own pid."""
        return subprocess.Popen(self.command(argv), **kwargs)

    def run(self, argv, **kwargs):
        """subprocess.run ``argv`` inside the namespace; return the CompletedProcess."""
        kwargs.setdefault('timeout', 60)
        return subprocess.run(self.command(argv), **kwargs)

    # -- reading ---------------------------------------------------------------------------------

    def sync(self):
        """Make journald write out every message it has received (SIGRTMIN+1, then wait for
        /run/systemd/journal/synced to change; journald handles queued messages first). Return None."""
        synced = self.path('/run/systemd/journal/synced')
        before = _mtime(synced)
        self.process.send_signal(signal.SIGRTMIN + 1)
        deadline = time.monotonic() + self.timeout
        while _mtime(synced) == before:
            if self.process.poll() is not None:
                raise JournalError('private journald died: ' + self._journald_output())
            if time.monotonic() > deadline:
                raise JournalError('private journald did not sync within {0} s'.format(self.timeout))
            time.sleep(0.01)

    def records(self, *matches, identifier=None, sync=True):
        """Return the journal's records as dicts (``journalctl -o json``), oldest first.

        ``matches`` are journalctl matches ('VMID=100'); ``identifier`` adds
        ``-t identifier``. Kernel messages journald picked up are included
        unless filtered out by a match.
        """
        if sync and self.process.poll() is None:
            self.sync()
        return read_records(self.path('/run/log/journal'), *matches, identifier=identifier,
                            timeout=self.timeout)

    def text(self, sync=True):
        """Return everything in the journal (all fields of all records) as one JSON-lines string."""
        if sync and self.process.poll() is None:
            self.sync()
        return _journalctl(self.path('/run/log/journal'), [], self.timeout)

    def _journald_output(self):
        try:
            with open(os.path.join(self.workdir, 'journald.log'), 'rb') as stream:
                return stream.read().decode('utf-8', 'replace').strip()[-500:]
        except OSError:
            return ''


def _mtime(path):
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return None


def _journalctl(directory, args, timeout):
    completed = subprocess.run(['journalctl', '-D', directory, '-o', 'json', '--no-pager'] + list(args),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    # journalctl exits 1 with "-- No entries --"-style output when nothing matches.
    if completed.returncode not in (0, 1):
        raise JournalError('journalctl failed: ' + completed.stderr.decode('utf-8', 'replace').strip())
    return completed.stdout.decode('utf-8', 'replace')


def read_records(directory, *matches, identifier=None, timeout=15.0):
    """Return the records in journal directory ``directory`` as dicts, filtered like journalctl."""
    args = list(matches)
    if identifier:
        args = ['-t', identifier] + args
    text = _journalctl(directory, args, timeout)
    return [json.loads(line) for line in text.splitlines() if line.startswith('{')]


def run_with_journal(cmd, env=None, timeout=60, identifier=None, matches=(), **kwargs):
    """Run ``cmd`` to completion with a private journald; return (completed_process, records).

    ``env`` is the process environment; output is captured (stdout/stderr
    bytes on the CompletedProcess). ``identifier`` and ``matches`` filter the
    records as ``journalctl -t identifier MATCH...`` would.
    """
    kwargs.setdefault('stdout', subprocess.PIPE)
    kwargs.setdefault('stderr', subprocess.PIPE)
    with PrivateJournal() as journal:
        completed = journal.run(cmd, env=env, timeout=timeout, **kwargs)
        records = journal.records(*matches, identifier=identifier)
    return completed, records
