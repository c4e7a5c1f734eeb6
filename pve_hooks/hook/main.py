"""The hookscript's logic: turn one ``<vmid> <phase>`` call into a durable outbox event.

Proxmox runs the hookscript as root, without a timeout, and a non-zero exit
in pre-start aborts the guest's start. So :func:`main` spools the event to
local disk and returns 0 whatever goes wrong (one clear line to stderr, which
Proxmox puts in the task log, and to the journal), except with the documented
opt-ins ``hook.on_error: abort`` / ``hook.chain_on_error: abort``, which only
affect pre-start. It never touches the network, pvesh or qm.

On the hot path: it follows the import rules in :mod:`pve_hooks.hook`.
"""

import posix  # not os: see pve_hooks.hook
import time

from pve_hooks.hook import event
from pve_hooks.hook import settings as hookconfig
from pve_hooks.hook import journal as journal_native
from pve_hooks.hook import spool

IDENTIFIER = 'pve-hooks-hook'
PREFIX = 'pve-hooks hookscript: '


class Reporter:
    """Writes each message as one line to stderr and one journal record.

    Error and critical lines are also counted in the outbox's ``errors``
    counter under ``spool_dir`` (the pve_hooks_hookscript_errors_total metric),
    where the outbox can be written.
    """

    def __init__(self, socket_path, node, stderr_fd=2, spool_dir=None, lock_timeout=None):
        self.socket_path = socket_path
        self.stderr_fd = stderr_fd
        self.spool_dir = spool_dir
        self.lock_timeout = lock_timeout
        self.fields = {'SYSLOG_IDENTIFIER': IDENTIFIER, 'NODE': node}

    def journal(self, priority, message, **fields):
        """Send one journal record (only)."""
        record = {'MESSAGE': message, 'PRIORITY': priority}
        record.update(self.fields)
        record.update(fields)
        journal_native.send(record, self.socket_path)

    def line(self, priority, message, **fields):
        """Write ``message`` to stderr (one line) and to the journal."""
        text = (PREFIX + message).replace('\n', ' ') + '\n'
        try:
            posix.write(self.stderr_fd, text.encode('utf-8', 'backslashreplace'))
        except OSError:
            pass  # stderr closed: the journal still gets it
        self.journal(priority, message, **fields)
        if priority <= journal_native.ERROR and self.spool_dir:
            try:
                spool.adjust(self.spool_dir, 0, 0, errors_delta=1, lock_timeout=self.lock_timeout)
            except (spool.LockBusy, spool.UnsafeFile):
                self.spool_dir = None  # never wait for a stalled lock twice in one run
            except OSError:
                pass  # the outbox itself is unwritable: the line above is all we can do


def _exists(path):
    """os.path.exists without os."""
    try:
        posix.stat(path)
    except (OSError, ValueError):
        return False
    return True


def guest_type(pve_root, node, vmid):
    """Return 'qemu' or 'lxc' by which guest config exists under ``pve_root``, else 'unknown'."""
    base = pve_root + '/nodes/' + node
    if _exists('{0}/qemu-server/{1}.conf'.format(base, vmid)):
        return 'qemu'
    if _exists('{0}/lxc/{1}.conf'.format(base, vmid)):
        return 'lxc'
    return 'unknown'


def chain_scripts(chain_dir):
    """Return the executable regular files in ``chain_dir`` in name order.

    Skips dot-files, ``*.dpkg-*`` and ``*~`` (editor and package manager
    leftovers). A missing directory gives []; raise OSError if it cannot be read.
    """
    try:
        items = list(posix.scandir(chain_dir))
    except FileNotFoundError:
        return []
    found = []
    for item in items:
        name = item.name
        if name.startswith('.') or '.dpkg-' in name or name.endswith('~'):
            continue
        try:
            if item.is_file() and posix.access(item.path, posix.X_OK):
                found.append(item.path)
        except OSError:
            continue
    found.sort()
    return found


# After a chained hook exits, how long its output pipes may stay open (held by a child that left its
# process group) before the hookscript stops relaying them; not an option: nothing to tune.
PIPE_GRACE = 0.2


def run_chain(scripts, args, environ, timeout, deadline, report, vmid, phase, out_fd=1, err_fd=2,
              clock=time.monotonic):
    """Run each of ``scripts`` with ``args`` (vmid, phase) and ``environ``; return how many failed.

    stdin is empty (EOF). Each script gets pipes of its own for stdout and
    stderr, relayed to ``out_fd`` / ``err_fd``: a child it leaves behind
    (``sleep 300 &``) then holds those pipes, not Proxmox's, which Proxmox
    reads to EOF. Each script runs in a process group of its own, killed
    (SIGKILL) as soon as the script exits (its leftovers) or after
    ``timeout`` seconds (hook.chain_timeout); all scripts of one call
    together get ``deadline`` seconds (hook.chain_deadline): a script gets
    at most what is left of it, and scripts not started when it is used up
    are not run and count as failed. Failures are reported through
    ``report`` (a :class:`Reporter`).
    """
    import subprocess

    failures = 0
    end_all = clock() + deadline
    for index, path in enumerate(scripts):
        now = clock()
        if now >= end_all:
            failures += len(scripts) - index
            report.line(journal_native.ERROR, 'chained hooks {0} not run in {1} of guest {2}: hook.chain_deadline '
                        '({3:g} s for all chained hooks of one call) is used up; make the hooks faster or raise '
                        'hook.chain_deadline'.format(', '.join(scripts[index:]), phase, vmid, deadline),
                        VMID=vmid, PHASE=phase)
            break
        limit = min(timeout, end_all - now)
        try:
            process = subprocess.Popen([path] + list(args), env=dict(environ), stdin=subprocess.DEVNULL,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                                       close_fds=True)
        except OSError as error:
            failures += 1
            report.line(journal_native.ERROR, 'chained hook {0} could not be started ({1}) in {2} of guest {3}; '
                        'make it executable with a valid #! line'.format(path, error.strerror or error, phase,
                                                                          vmid), VMID=vmid, PHASE=phase)
            continue
        status, leftovers = _supervise(process, now + limit, out_fd, err_fd, clock)
        if leftovers:
            report.line(journal_native.WARNING, 'chained hook {0} left processes behind in {1} of guest {2}; they '
                        'were killed (start long-running helpers with systemd-run)'.format(path, phase, vmid),
                        VMID=vmid, PHASE=phase)
        if status is None:
            failures += 1
            which = 'hook.chain_timeout' if limit >= timeout else 'what was left of hook.chain_deadline'
            report.line(journal_native.ERROR, 'chained hook {0} was killed after {1:g} s ({2}) in {3} of guest '
                        '{4}; make it faster or raise hook.chain_timeout / hook.chain_deadline'.format(
                            path, round(limit, 1), which, phase, vmid), VMID=vmid, PHASE=phase)
        elif status != 0:
            failures += 1
            how = 'killed by signal {0}'.format(-status) if status < 0 else 'exited with status {0}'.format(status)
            report.line(journal_native.ERROR, 'chained hook {0} {1} in {2} of guest {3}'.format(path, how, phase, vmid),
                        VMID=vmid, PHASE=phase)
    return failures


def _killpg(pid):
    """SIGKILL process group ``pid``; return True if it still had a member."""
    try:
        posix.killpg(pid, 9)  # signal.SIGKILL, without importing signal
    except OSError:
        return False
    return True


def _relay(fd, data):
    try:
        while data:
            data = data[posix.write(fd, data):]
    except OSError:
        pass  # our own output is gone (the caller stopped reading): drop it, never block on it


def _supervise(process, end, out_fd, err_fd, clock):
    """Relay ``process``'s stdout/stderr until it exited and its pipes closed, or until ``end`` (clock time).

    Kill its process group as soon as it exits and at ``end``. Return
    (exit status, or None when it was killed at ``end``; True if it left
    processes behind). Pipes a process outside the group still holds are
    given up PIPE_GRACE seconds after the exit.
    """
    import select

    pipes = {process.stdout.fileno(): out_fd, process.stderr.fileno(): err_fd}
    try:
        exit_fd = posix.pidfd_open(process.pid)  # readable once the process exits (Linux >= 5.3)
    except (AttributeError, OSError):
        exit_fd = None
    status = None
    leftovers = False
    stop = end
    try:
        while True:
            if status is None:
                status = process.poll()
                if status is not None:
                    leftovers = _killpg(process.pid)
                    stop = min(end, clock() + PIPE_GRACE)
            if status is not None and not pipes:
                break
            wait = stop - clock()
            if wait <= 0:
                break
            watched = list(pipes)
            if status is None:
                if exit_fd is not None:
                    watched.append(exit_fd)
                else:
                    wait = min(wait, 0.02)  # no pidfd: look for the exit every 20 ms
            if not watched:
                try:
                    process.wait(wait)
                except Exception:  # subprocess.TimeoutExpired
                    pass
                continue
            for fd in select.select(watched, [], [], wait)[0]:
                if fd == exit_fd:
                    continue
                try:
                    data = posix.read(fd, 65536)
                except OSError:
                    data = b''
                if data:
                    _relay(pipes[fd], data)
                else:
                    del pipes[fd]
    finally:
        if exit_fd is not None:
            posix.close(exit_fd)
        if status is None:
            _killpg(process.pid)
            try:
                process.wait(1)  # a process stuck in the kernel is left to init: never wait for it
            except Exception:  # subprocess.TimeoutExpired
                pass
        process.stdout.close()
        process.stderr.close()
    return status, leftovers


def _report_note(report, note, phase, vmid, path, fields):
    """Report one problem of a write that still recorded the event at ``path`` (spool_event's ``notes``)."""
    if isinstance(note, (spool.LockBusy, spool.UnsafeFile)):
        report.spool_dir = None  # the counters cannot be updated in this run
        priority = journal_native.WARNING if isinstance(note, spool.LockBusy) else journal_native.ERROR
        report.line(priority, '{0}; the {1} event of guest {2} was still recorded ({3}), without updating the '
                    'outbox counters: the daemon recounts them when it starts (pve-hooks outbox status)'.format(
                        note.strerror, phase, vmid, path), **fields)
    else:
        report.line(journal_native.ERROR, 'could not sync {0} after the {1} event of guest {2} was written there '
                    '({3}); the event is recorded, but a power loss now could lose it; check the disk'.format(
                        note.filename or path.rpartition('/')[0], phase, vmid, note.strerror or note), **fields)


def _exit_code(abort, phase):
    return 1 if abort and phase == 'pre-start' else 0


def main(argv, environ, clock_ns=time.time_ns, random_bytes=posix.urandom, stderr_fd=2, write=posix.write):
    """Run the hookscript for ``argv`` (``[script, vmid, phase]``) and ``environ``; return the exit code.

    ``environ`` is a str mapping (os.environ, or the hookscript's decoded
    copy of posix.environ). ``clock_ns`` (time.time_ns) and ``random_bytes``
    (os.urandom, which is posix.urandom) make time and the event id
    controllable in tests; ``write`` is os.write (posix.write), for fault
    injection. Returns 0 except in pre-start with hook.on_error: abort (the
    event could not be spooled, or argv is invalid) or hook.chain_on_error:
    abort (a chained hook failed). Does not raise for expected failures.
    """
    now_ns = clock_ns()
    settings, problems, _path = hookconfig.load(environ)
    spool_dir = settings['paths.spool_dir']
    report = Reporter(settings['hook.journal_socket'], settings['node'], stderr_fd, spool_dir,
                      settings['hook.lock_timeout'])
    for problem in problems:
        report.line(journal_native.ERROR, '{0}; spooling to {1}, with defaults for what could not be read'.format(
            problem, spool_dir))

    phase_arg = argv[2] if len(argv) > 2 else None
    try:
        if len(argv) != 3:
            raise event.EventError('expected 2 arguments, got {0}'.format(len(argv) - 1))
        vmid = event.parse_vmid(argv[1])
        phase = event.check_phase(argv[2])
    except event.EventError as error:
        report.line(journal_native.ERROR, 'invalid arguments {0}: {1}; Proxmox calls it as <vmid> <phase> '
                    '(vmid {2}..{3}, phase one of {4}); nothing was recorded'.format(
                        ' '.join(argv[1:]) or '(none)', error, event.VMID_MIN, event.VMID_MAX,
                        ', '.join(event.PHASES)))
        return _exit_code(settings['hook.on_error'] == 'abort', phase_arg)

    node = settings['node']
    event_id = event.new_event_id(random_bytes(16))
    migrated_from = environ.get('PVE_MIGRATED_FROM') or None
    fields = {'VMID': vmid, 'PHASE': phase, 'EVENT_ID': event_id}
    record = event.make_event(event_id, node, vmid, guest_type(settings['proxmox.pve_root'], node, vmid), phase,
                              event.format_time(now_ns), 0, migrated_from)

    # Encoded once, outside the outbox lock; build() only splices the seq in.
    head, _, tail = event.encode(record).partition(b'"seq":0,')

    def build(seq):
        return b'%s"seq":%d,%s' % (head, seq, tail)

    spool_failed = False
    aborting = '; the start is aborted (hook.on_error: abort)' if _exit_code(
        settings['hook.on_error'] == 'abort', phase) else ''
    notes = []
    try:
        path, _seq = spool.spool_event(spool_dir, vmid, event_id, build, now_ns, settings['outbox.max_events'],
                                       settings['outbox.max_bytes'], write, settings['hook.lock_timeout'], notes)
        report.journal(journal_native.INFO, 'recorded {0} of guest {1} as event {2} in {3}'.format(
            phase, vmid, event_id, path), **fields)
        for note in notes:
            _report_note(report, note, phase, vmid, path, fields)
    except spool.OutboxFull as error:
        spool_failed = True
        report.line(journal_native.CRITICAL, '{0}: the {1} event of guest {2} was DROPPED ({3} dropped in total); '
                    'check that the pve-hooks daemon is running and delivering (pve-hooks outbox status){4}'.format(
                        error, phase, vmid, error.dropped, aborting), **fields)
    except OSError as error:
        spool_failed = True
        what = error.strerror or str(error)
        where = error.filename or spool.outbox_dir(spool_dir)
        report.line(journal_native.CRITICAL, 'could not record {0} of guest {1}: {2}: {3}; free space or fix the '
                    'permissions of {4} (paths.spool_dir); the event is lost, the daemon\'s inventory '
                    'reconciliation will correct the state{5}'.format(phase, vmid, where, what, spool_dir, aborting),
                    **fields)

    code = _exit_code(spool_failed and settings['hook.on_error'] == 'abort', phase)
    try:
        scripts = chain_scripts(settings['hook.chain_dir'])
    except OSError as error:
        scripts = []
        report.line(journal_native.ERROR, 'cannot list chained hooks in {0} ({1}); none were run; make it a '
                    'readable directory or set hook.chain_dir'.format(settings['hook.chain_dir'],
                                                                      error.strerror or error), **fields)
    if code:
        if scripts:  # do not set a guest up for a start that is aborted anyway
            report.line(journal_native.ERROR, 'chained hooks in {0} not run: the start of guest {1} is aborted'.format(
                settings['hook.chain_dir'], vmid), **fields)
        return code
    chain_failed = False
    if scripts:
        chain_failed = run_chain(scripts, argv[1:3], environ, settings['hook.chain_timeout'],
                                 settings['hook.chain_deadline'], report, vmid, phase, 1, stderr_fd) > 0
        if chain_failed and phase == 'pre-start' and settings['hook.chain_on_error'] == 'abort':
            report.line(journal_native.ERROR, 'the start of guest {0} is aborted because a chained hook failed '
                        '(hook.chain_on_error: abort)'.format(vmid), **fields)
    return _exit_code(chain_failed and settings['hook.chain_on_error'] == 'abort', phase)
