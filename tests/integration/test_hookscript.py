"""The real hookscript: ``python -I hookscripts/accountdb-hook <vmid> <phase>``.

Run with the test interpreter, whose site finds pve_hooks; how it finds the
package when started by its ``#!/usr/bin/python3 -IS`` is in test_hookscript_startup.py.

Real processes, real files, real signals, real (namespaced) mounts.
"""

import json
import os
import random
import shutil
import subprocess
import sys
import textwrap

import pytest

from pve_hooks.hook import event
from pve_hooks.outbox import admin
from pve_hooks.outbox.store import Outbox
from tests.support.hook import EXEC_HOOKSCRIPT, HOOKSCRIPT, REPO, HookSite

PYTHON = sys.executable
FORBIDDEN_ANYWHERE = ('yaml', 'click', 'requests', 'urllib3', 'logging')
FORBIDDEN_ON_HOT_PATH = ('re', 'json', 'enum', 'socket', 'subprocess', 'logging', 'yaml', 'click', 'requests',
                         'urllib3', 'uuid', 'datetime', 'dataclasses', 'typing')


@pytest.fixture
def site(tmp_path):
    value = HookSite(tmp_path)
    yield value
    value.close()


def run_hook(site, *args, env=None, python=PYTHON, flags=()):
    """Run the real hookscript; return CompletedProcess (text)."""
    return subprocess.run([python, '-I'] + list(flags) + [HOOKSCRIPT] + list(args), env=dict(site.env, **(env or {})),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)


def events(site):
    """Claim every ready event through the daemon's API; return (events, quarantined names)."""
    box = Outbox(site.spool_dir)
    got = [box.claim(entry) for entry in admin.list_ready(box)]
    return [ev for ev in got if ev is not None], [name for name, _ in admin.list_quarantine(box)]


def imported(process_stderr):
    """Module names from ``-X importtime`` output."""
    names = set()
    for line in process_stderr.splitlines():
        if line.startswith('import time:') and '|' in line:
            name = line.rsplit('|', 1)[1].strip()
            if name != 'imported package':
                names.add(name)
    return names


def test_main_path_imports_no_heavy_or_forbidden_module(site):
    bare = subprocess.run([PYTHON, '-I', '-X', 'importtime', '-c', 'pass'], capture_output=True, text=True)
    result = run_hook(site, '100', 'pre-start', flags=('-X', 'importtime'))
    assert result.returncode == 0
    loaded = imported(result.stderr)
    assert 'pve_hooks.hook.main' in loaded and 'pve_hooks.hook.spool' in loaded  # the main path really ran
    assert [name for name in FORBIDDEN_ANYWHERE if name in loaded] == []
    added = loaded - imported(bare.stderr)
    assert sorted(name for name in added if name.split('.')[0] in FORBIDDEN_ON_HOT_PATH) == []
    assert len(events(site)[0]) == 1


def test_sys_modules_after_main_path(site):
    """The same check from inside: run the hookscript's main path, then look at sys.modules."""
    code = EXEC_HOOKSCRIPT.format(path=HOOKSCRIPT, vmid='100', phase='post-stop')
    result = subprocess.run([PYTHON, '-I', '-c', code], env=site.env, capture_output=True, text=True, timeout=60)
    report = json.loads(result.stdout)
    assert report['exit'] == 0
    modules = report['modules']
    assert 'pve_hooks.hook.main' in modules
    assert [name for name in FORBIDDEN_ANYWHERE if name in modules] == []


def test_main_path_without_site_does_not_import_os(site):
    """Started as Proxmox starts it (-IS), nothing has imported os: the hot path keeps it out (it costs ~1.2 ms)."""
    code = 'import sys; sys.path.insert(0, {0!r})\n'.format(REPO) + EXEC_HOOKSCRIPT.format(
        path=HOOKSCRIPT, vmid='100', phase='pre-start')
    result = subprocess.run([PYTHON, '-I', '-S', '-c', code], env=site.env, capture_output=True, text=True,
                            timeout=60)
    report = json.loads(result.stdout)
    assert (report['exit'], result.stderr) == (0, '')
    assert report['hook_file'] == os.path.join(REPO, 'pve_hooks', 'hook', 'main.py') and 'site' not in report['modules']
    assert [name for name in ('os', '_collections_abc', 'posixpath', 'stat') if name in report['modules']] == []
    assert len(events(site)[0]) == 1  # the main path really ran: an event was spooled


# The hot path's own modules (pve_hooks/hook/__init__.py states the import rules they follow).
HOT_PATH_MODULES = {'pve_hooks', 'pve_hooks.hook', 'pve_hooks.hook.main', 'pve_hooks.hook.settings',
                    'pve_hooks.hook.miniyaml', 'pve_hooks.hook.event', 'pve_hooks.hook.spool',
                    'pve_hooks.hook.journal', 'pve_hooks.config', 'pve_hooks.config.schema'}
# Standard library modules the rules allow besides what a bare `python3 -IS` already loaded.
HOT_PATH_STDLIB = {'posix', 'time', 'fcntl', '_socket'}


def test_hot_path_under_dash_IS_loads_only_the_hook_subpackage_the_schema_and_builtins(site):
    """What Proxmox runs (``python3 -IS``), seen through ``-X importtime``: nothing else is imported."""
    bare = subprocess.run([PYTHON, '-I', '-S', '-X', 'importtime', '-c', 'pass'], capture_output=True, text=True)
    code = 'import sys; sys.path.insert(0, {0!r})\n'.format(REPO) + EXEC_HOOKSCRIPT.format(
        path=HOOKSCRIPT, vmid='100', phase='pre-start').replace('import json\n', '')
    code = code.replace('print(json.dumps(', 'print(repr(')   # json would show up in the import log
    result = subprocess.run([PYTHON, '-I', '-S', '-X', 'importtime', '-c', code], env=site.env,
                            capture_output=True, text=True, timeout=60)
    assert 'exit' in result.stdout and "'exit': 0" in result.stdout, result.stdout + result.stderr
    added = imported(result.stderr) - imported(bare.stderr)
    ours = {name for name in added if name.split('.')[0] == 'pve_hooks'}
    assert ours == HOT_PATH_MODULES   # exactly these: the main path ran, and nothing else of ours came along
    assert sorted(added - ours - HOT_PATH_STDLIB) == []
    assert len(events(site)[0]) == 1


def test_subprocess_is_imported_only_when_the_chain_dir_has_executables(site):
    assert 'subprocess' not in imported(run_hook(site, '100', 'pre-start', flags=('-X', 'importtime')).stderr)
    site.chain('10-true', 'true')
    assert 'subprocess' in imported(run_hook(site, '100', 'pre-start', flags=('-X', 'importtime')).stderr)


def test_event_fields_guest_type_and_migrated_from(site):
    site.guest(100, 'qemu')
    site.guest(200, 'lxc')
    assert run_hook(site, '100', 'pre-start', env={'PVE_MIGRATED_FROM': 'pve2'}).returncode == 0
    assert run_hook(site, '200', 'post-stop').returncode == 0
    assert run_hook(site, '300', 'pre-stop').returncode == 0
    got, bad = events(site)
    assert bad == []
    assert [(ev['vmid'], ev['guest_type'], ev['phase'], ev.get('migrated_from')) for ev in got] == [
        (100, 'qemu', 'pre-start', 'pve2'), (200, 'lxc', 'post-stop', None), (300, 'unknown', 'pre-stop', None)]
    assert all(ev['node'] == 'pve1' and ev['source'] == 'hookscript' and ev['schema'] == 1 for ev in got)
    assert got[0]['seq'] < got[1]['seq'] < got[2]['seq']
    info = [record for record in site.journal_records() if record.get('PRIORITY') == '6']
    assert [record['VMID'] for record in info] == ['100', '200', '300']


def test_spool_and_files_modes(site):
    run_hook(site, '100', 'pre-start')
    from tests.support.hook import mode
    assert mode(site.spool_dir) == 0o700
    for sub in ('tmp', 'ready', 'claimed', 'dead', 'quarantine'):
        assert mode(os.path.join(site.spool_dir, 'outbox', sub)) == 0o700
    [name] = site.ready()
    assert mode(os.path.join(site.spool_dir, 'outbox', 'ready', name)) == 0o600


@pytest.mark.parametrize('args, on_error, code', [
    (('100',), 'continue', 0),
    (('99', 'pre-start'), 'continue', 0),
    (('99', 'pre-start'), 'abort', 1),
    (('99', 'post-start'), 'abort', 0),
    (('100', 'migrate'), 'abort', 0),
    (('1e3', 'pre-start'), 'continue', 0),
    (('100', 'pre-start', 'extra'), 'abort', 1),
])
def test_bad_argv(site, args, on_error, code):
    result = run_hook(site, *args, env={'PVE_HOOKS_HOOK__ON_ERROR': on_error})
    assert result.returncode == code
    assert result.stderr.count('\n') == 1 and 'invalid arguments' in result.stderr
    assert 'Traceback' not in result.stderr
    assert site.ready() == []


def test_unreadable_config_still_spools_with_defaults_and_env(site):
    os.unlink(site.config_path)
    os.mkdir(site.config_path)  # unreadable even for root
    result = run_hook(site, '100', 'pre-start', env={'PVE_HOOKS_PATHS__SPOOL_DIR': site.spool_dir})
    assert result.returncode == 0
    assert result.stderr.count('\n') == 1
    assert 'cannot read the configuration file' in result.stderr and site.config_path in result.stderr
    assert 'spooling to {0}, with defaults for what could not be read'.format(site.spool_dir) in result.stderr
    assert len(site.ready()) == 1


def test_200_concurrent_hookscripts_make_200_distinct_events(site):
    processes = [subprocess.Popen([PYTHON, '-I', HOOKSCRIPT, str(100 + index % 50), event.PHASES[index % 4]],
                                  env=site.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE) for index in range(200)]
    outputs = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0] * 200
    assert [err for _, err in outputs if err] == []
    got, bad = events(site)
    assert bad == [] and len(got) == 200
    assert len({ev['event_id'] for ev in got}) == 200
    assert len({ev['seq'] for ev in got}) == 200
    assert os.listdir(os.path.join(site.spool_dir, 'outbox', 'tmp')) == []
    stats = Outbox(site.spool_dir).recover()
    assert stats['depth'] == 200


WRITER = textwrap.dedent('''
    import os
    from pve_hooks.hook import main as hook

    def slow_write(fd, data):  # one byte per system call: a wide window for the kill to land mid-file
        return os.write(fd, bytes(data[:1]))

    env = dict(os.environ)
    vmid = 100
    while True:
        hook.main(['hook', str(vmid), 'pre-start'], env, write=slow_write)
        vmid = vmid + 1 if vmid < 999 else 100
''')


def test_sigkill_at_random_points_never_leaves_a_visible_partial_event(site):
    rng = random.Random(4242)
    for _ in range(25):
        writer = subprocess.Popen([PYTHON, '-I', '-c', WRITER], env=site.env, stdin=subprocess.DEVNULL)
        import time
        time.sleep(0.05 + rng.random() * 0.15)  # import time + somewhere in the writing loop
        writer.kill()
        writer.wait()
    names = site.ready()
    assert len(names) > 10  # the writers really wrote
    got, bad = events(site)
    assert bad == [] and len(got) == len(names)
    assert all(event.validate(ev) for ev in got)
    # Leftovers in tmp/ are invisible to readers and removed by recover() once old enough.
    tmp = os.path.join(site.spool_dir, 'outbox', 'tmp')
    open(os.path.join(tmp, 'leftover-from-a-killed-writer'), 'wb').close()
    box = Outbox(site.spool_dir, clock=lambda: time.time() + 10**6)
    box.recover()
    assert os.listdir(tmp) == []


def _unshare_available():
    if shutil.which('unshare') is None or os.geteuid() != 0:
        return False
    probe = subprocess.run(['unshare', '-m', 'true'], capture_output=True)
    return probe.returncode == 0


needs_unshare = pytest.mark.skipif(not _unshare_available(),
                                   reason='needs root and unshare -m (private mount namespace)')

# Runs inside a private mount namespace: the tmpfs vanishes with it, so results are printed as JSON.
NAMESPACE_SCRIPT = textwrap.dedent('''
    set -e
    {setup}
    run() {{ set +e; PVE_HOOKS_HOOK__ON_ERROR=$2 "$PYTHON" -I "$HOOK" $1 pre-start 2>"$ROOT/err.$1"; echo $? > "$ROOT/rc.$1"; set -e; }}
    run 100 continue
    {between}
    run 101 continue
    run 102 abort
    "$PYTHON" -I -c "$DUMP"
''')
DUMP = textwrap.dedent('''
    import json, os
    root = os.environ['ROOT']
    from pve_hooks.hook import event
    ready = os.path.join(os.environ['SPOOL'], 'outbox', 'ready')  # only read: the spool may be mounted read-only
    got = [event.validate(json.load(open(os.path.join(ready, name)))) for name in sorted(os.listdir(ready))]
    print(json.dumps({'events': got, 'tmp': os.listdir(os.path.join(os.environ['SPOOL'], 'outbox', 'tmp')),
                      'rc': {v: open(os.path.join(root, 'rc.' + v)).read().strip() for v in ('100', '101', '102')},
                      'err': {v: open(os.path.join(root, 'err.' + v)).read() for v in ('100', '101', '102')}}))
''')


def _in_namespace(site, setup, between):
    env = dict(site.env, PYTHON=PYTHON, HOOK=HOOKSCRIPT, ROOT=site.root, SPOOL=site.spool_dir, DUMP=DUMP,
               PYTHONPATH=REPO)
    script = NAMESPACE_SCRIPT.format(setup=setup, between=between)
    result = subprocess.run(['unshare', '-m', '--propagation', 'private', 'sh', '-c', script], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


@needs_unshare
def test_full_filesystem_exits_0_with_a_clear_message_and_keeps_existing_events(site):
    os.makedirs(site.spool_dir)
    out = _in_namespace(site, 'mount -t tmpfs -o size=64k,mode=0700 tmpfs "$SPOOL"',
                        'dd if=/dev/zero of="$SPOOL/filler" bs=4k 2>/dev/null || true')
    assert out['rc'] == {'100': '0', '101': '0', '102': '1'}
    assert out['err']['100'] == ''
    for vmid in ('101', '102'):
        assert out['err'][vmid].count('\n') == 1 and 'No space left on device' in out['err'][vmid]
    assert 'start is aborted (hook.on_error: abort)' in out['err']['102']
    assert [ev['vmid'] for ev in out['events']] == [100] and out['tmp'] == []


@needs_unshare
def test_read_only_spool_exits_0_with_a_clear_message(site):
    os.makedirs(site.spool_dir)
    out = _in_namespace(site, 'mount --bind "$SPOOL" "$SPOOL"',
                        'mount -o remount,bind,ro "$SPOOL"')
    assert out['rc'] == {'100': '0', '101': '0', '102': '1'}
    assert 'Read-only file system' in out['err']['101'] and out['err']['101'].count('\n') == 1
    assert [ev['vmid'] for ev in out['events']] == [100]


def test_chaining_through_the_real_hookscript(site):
    log = os.path.join(site.root, 'chain.log')
    site.chain('10-log', 'echo "chained $1 $2" | tee -a {0}; echo to-stderr >&2'.format(log))
    site.chain('20-slow', 'sleep 30')
    result = run_hook(site, '100', 'pre-start', env={'PVE_HOOKS_HOOK__CHAIN_TIMEOUT': '0.5'})
    assert result.returncode == 0
    assert result.stdout == 'chained 100 pre-start\n'  # passes through to the hook's stdout
    assert 'to-stderr' in result.stderr and 'killed after 0.5 s' in result.stderr
    result = run_hook(site, '100', 'pre-start', env={'PVE_HOOKS_HOOK__CHAIN_TIMEOUT': '0.5',
                                                     'PVE_HOOKS_HOOK__CHAIN_ON_ERROR': 'abort'})
    assert result.returncode == 1 and 'aborted because a chained hook failed' in result.stderr
    assert len(site.ready()) == 2  # both events were spooled before the chain ran


@pytest.mark.parametrize('body, words', [
    ('raise RuntimeError("boom")', 'unexpected RuntimeError (boom)'),
    ('raise KeyboardInterrupt()', 'unexpected KeyboardInterrupt'),
    ('raise MemoryError()', 'unexpected MemoryError'),
])
def test_the_wrapper_turns_any_exception_into_one_line_and_exit_0(site, tmp_path, body, words):
    fake = tmp_path / 'fake' / 'pve_hooks'
    (fake / 'hook').mkdir(parents=True)
    (fake / '__init__.py').write_text('')
    (fake / 'hook' / '__init__.py').write_text('')
    (fake / 'hook' / 'main.py').write_text('def main(argv, environ):\n    {0}\n'.format(body))
    code = 'import sys; sys.path.insert(0, {0!r}); sys.argv = [{1!r}, "100", "pre-start"]; ' \
           'exec(compile(open({1!r}).read(), {1!r}, "exec"), {{"__name__": "__main__"}})'.format(
               str(fake.parent), HOOKSCRIPT)
    result = subprocess.run([PYTHON, '-I', '-c', code], env=site.env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stderr.count('\n') == 1 and words in result.stderr and 'Traceback' not in result.stderr
