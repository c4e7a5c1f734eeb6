"""Run ``pvesh get PATH --output-format json`` with a hard time limit.

pvesh is Proxmox's in-process API client (Perl; hundreds of milliseconds per
call). Every call made by pve-hooks goes through :func:`run`, which bounds it
with a timeout that also holds when pvesh hangs while children it started
keep its output pipe open: pvesh runs in its own session and the whole
process group is killed on expiry.

Every failure is a :class:`PveshError` whose message is one line naming the
command and what went wrong. A failed call never looks like an empty answer.
"""

import json
import os
import signal
import subprocess
import time

# Characters of stderr/stdout quoted in an error message.
_QUOTE = 160


class PveshError(Exception):
    """A pvesh call failed; ``str(error)`` is one line saying what and why.

    Every failed read of Proxmox raises this class or a subclass (see
    :class:`pve_hooks.proxmox.inventory.InventoryError`), so catching it catches them all.
    """


class PveshTimeout(PveshError):
    """pvesh did not answer within its timeout and was killed."""


def run_bounded(argv, timeout):
    """Run ``argv`` in its own session; return a CompletedProcess with bytes output.

    On expiry of ``timeout`` seconds, kill the process group with SIGKILL and
    raise ``subprocess.TimeoutExpired`` (this also covers a program that exits
    while children it started still hold its output open). Raise OSError
    (e.g. FileNotFoundError) when the program cannot be started.
    """
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        raise subprocess.TimeoutExpired(argv, timeout)
    except BaseException:
        _kill_group(process)
        raise
    return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)


def _kill_group(process):
    """SIGKILL the process group of ``process``, close its pipes, reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL is not ignorable
        pass


def command(settings, path, args=()):
    """Return the argv for ``pvesh get PATH --output-format json`` plus extra ``args``."""
    return [settings['proxmox.pvesh'], 'get', path, '--output-format', 'json'] + list(args)


def run(settings, path, timeout=None, runner=run_bounded, args=(), expect=None, on_duration=None,
        clock=time.monotonic):
    """Run ``pvesh get PATH --output-format json`` and return the parsed JSON.

    ``settings`` supplies ``proxmox.pvesh`` and ``proxmox.pvesh_timeout`` (used
    when ``timeout`` is None). ``runner(argv, timeout)`` returns an object with
    ``returncode``, ``stdout`` and ``stderr`` (bytes) or raises
    ``subprocess.TimeoutExpired`` / OSError (default :func:`run_bounded`).
    ``args`` are extra arguments such as ``['--type', 'vm']``. ``expect`` is
    ``list`` or ``dict`` to check the answer's shape. ``on_duration(path,
    seconds, ok)`` is called once per call (for metrics), measured with ``clock``.

    Raise :class:`PveshError` (one line) when the program is missing or not
    executable, exits non-zero, times out (:class:`PveshTimeout`, a
    PveshError), prints nothing, prints invalid JSON, or returns the wrong shape.
    """
    if timeout is None:
        timeout = settings['proxmox.pvesh_timeout']
    argv = command(settings, path, args)
    shown = 'pvesh get ' + path + ''.join(' ' + str(arg) for arg in args)
    started = clock()
    ok = False
    try:
        result = _call(runner, argv, timeout, shown, settings['proxmox.pvesh'])
        data = _parse(result, shown)
        if expect is not None and not isinstance(data, expect):
            raise PveshError('{0}: returned {1}, expected {2}'.format(
                shown, _kind(data), 'a list' if expect is list else 'an object'))
        ok = True
        return data
    finally:
        if on_duration is not None:
            on_duration(path, clock() - started, ok)


def _call(runner, argv, timeout, shown, program):
    try:
        return runner(argv, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise PveshTimeout('{0}: no answer within {1:g}s, killed (proxmox.pvesh_timeout or '
                         'health.pvesh_timeout)'.format(shown, timeout)) from None
    except FileNotFoundError:
        raise PveshError('{0}: program {1!r} not found; install pve-manager or set proxmox.pvesh'.format(
            shown, program)) from None
    except PermissionError:
        raise PveshError('{0}: program {1!r} is not executable; check proxmox.pvesh'.format(
            shown, program)) from None
    except OSError as error:
        raise PveshError('{0}: cannot run {1!r} ({2})'.format(
            shown, program, error.strerror or error)) from None


def _parse(result, shown):
    if result.returncode != 0:
        detail = last_line(result.stderr) or last_line(result.stdout) or 'no message'
        if result.returncode < 0:
            status = 'killed by signal {0}'.format(-result.returncode)
        else:
            status = 'exit {0}'.format(result.returncode)
        raise PveshError('{0}: failed ({1}): {2}'.format(shown, status, detail))
    text = _text(result.stdout).strip()
    if not text:
        raise PveshError('{0}: printed nothing (expected JSON)'.format(shown))
    try:
        return json.loads(text)
    except ValueError as error:
        raise PveshError('{0}: printed invalid JSON ({1}): {2!r}'.format(
            shown, str(error).split(':')[0], text[:_QUOTE // 2])) from None


def _text(raw):
    if isinstance(raw, bytes):
        return raw.decode('utf-8', 'replace')
    return raw or ''


def last_line(raw):
    """Return the last non-blank line of ``raw`` (bytes or str), cut to a readable length."""
    lines = [line.strip() for line in _text(raw).splitlines() if line.strip()]
    return lines[-1][:_QUOTE] if lines else ''


def _kind(data):
    if data is None:
        return 'null'
    return {list: 'a list', dict: 'an object', str: 'a string', bool: 'a boolean'}.get(
        type(data), 'a ' + type(data).__name__)
