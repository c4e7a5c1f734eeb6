"""Unit tests for pve_hooks.hook.main.main, called in-process with a real spool, chain dir and journal socket."""

import errno
import json
import os

import pytest

from pve_hooks.hook import event
from pve_hooks.hook import main as hook
from tests.support.hook import HookSite

NOW_NS = 1795689326123456789


@pytest.fixture
def site(tmp_path):
    value = HookSite(tmp_path)
    yield value
    value.close()


def _run(site, *args, env=None, **kw):
    err = os.open(os.path.join(site.root, 'stderr'), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        code = hook.main(['accountdb-hook'] + list(args), dict(site.env, **(env or {})),
                         clock_ns=lambda: NOW_NS, stderr_fd=err, **kw)
    finally:
        os.close(err)
    with open(os.path.join(site.root, 'stderr')) as stream:
        return code, stream.read()


def _events(site):
    result = []
    for name in site.ready():
        with open(os.path.join(site.spool_dir, 'outbox', 'ready', name), 'rb') as stream:
            result.append(json.loads(stream.read()))
    return result


def test_spools_one_valid_event_and_logs_info(site):
    code, err = _run(site, '100', 'pre-start', random_bytes=lambda n: bytes(range(n)))
    assert (code, err) == (0, '')
    [ev] = _events(site)
    event.validate(ev)
    assert ev == {'schema': 1, 'event_id': '00010203-0405-4607-8809-0a0b0c0d0e0f', 'node': 'pve1', 'vmid': 100,
                  'guest_type': 'unknown', 'phase': 'pre-start', 'occurred_at': '2026-11-26T10:35:26.123456Z',
                  'seq': NOW_NS // 1000, 'source': 'hookscript'}
    [record] = site.journal_records()
    assert record['PRIORITY'] == '6' and record['SYSLOG_IDENTIFIER'] == 'pve-hooks-hook'
    assert (record['VMID'], record['PHASE'], record['EVENT_ID'], record['NODE']) == (
        '100', 'pre-start', ev['event_id'], 'pve1')


@pytest.mark.parametrize('kind', ['qemu', 'lxc'])
def test_guest_type_from_the_config_that_exists(site, kind):
    site.guest(123, kind)
    _run(site, '123', 'post-start')
    assert _events(site)[0]['guest_type'] == kind


def test_guest_type_of_another_node_is_unknown(site):
    os.makedirs(os.path.join(site.pve_root, 'nodes', 'pve2', 'lxc'))
    open(os.path.join(site.pve_root, 'nodes', 'pve2', 'lxc', '200.conf'), 'w').close()
    _run(site, '200', 'pre-start')
    assert _events(site)[0]['guest_type'] == 'unknown'


def test_migrated_from(site):
    _run(site, '100', 'pre-start', env={'PVE_MIGRATED_FROM': 'pve2'})
    _run(site, '100', 'post-start', env={'PVE_MIGRATED_FROM': ''})
    first, second = _events(site)
    assert first['migrated_from'] == 'pve2' and 'migrated_from' not in second


@pytest.mark.parametrize('args', [(), ('100',), ('100', 'pre-start', 'x'), ('99', 'pre-start'),
                                  ('1000000000', 'pre-start'), ('abc', 'pre-start'), ('0100', 'pre-start'),
                                  ('100', 'start'), ('100', 'PRE-START'), ('100', '')])
@pytest.mark.parametrize('on_error', ['continue', 'abort'])
def test_bad_argv_records_nothing_and_exits_0_unless_abort_in_pre_start(site, args, on_error):
    code, err = _run(site, *args, env={'PVE_HOOKS_HOOK__ON_ERROR': on_error})
    pre_start = len(args) > 1 and args[1] == 'pre-start'
    assert code == (1 if on_error == 'abort' and pre_start else 0)
    assert err.count('\n') == 1 and err.startswith('pve-hooks hookscript: invalid arguments')
    assert 'nothing was recorded' in err
    assert site.ready() == []
    assert [r['PRIORITY'] for r in site.journal_records()] == ['3']


def test_config_problem_still_spools_with_defaults_plus_env(site, tmp_path):
    with open(site.config_path, 'w') as stream:
        stream.write('hook:\n  - broken\n')
    code, err = _run(site, '100', 'pre-start', env={'PVE_HOOKS_PATHS__SPOOL_DIR': site.spool_dir})
    assert code == 0
    assert err.count('\n') == 1 and site.config_path + ':2:' in err
    assert 'spooling to {0}, with defaults for what could not be read'.format(site.spool_dir) in err
    assert len(site.ready()) == 1


def _enospc(fd, data):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize('on_error, phase, code', [('continue', 'pre-start', 0), ('abort', 'pre-start', 1),
                                                    ('abort', 'post-stop', 0)])
def test_spool_failure_enospc(site, on_error, phase, code):
    _run(site, '100', 'pre-start')
    before = site.ready()
    result, err = _run(site, '101', phase, env={'PVE_HOOKS_HOOK__ON_ERROR': on_error}, write=_enospc)
    assert result == code
    assert err.count('\n') == 1 and 'No space left on device' in err and 'could not record' in err
    assert ('start is aborted' in err) == bool(code)
    assert site.ready() == before
    assert os.listdir(os.path.join(site.spool_dir, 'outbox', 'tmp')) == []


def test_full_outbox_drops_new_event_logs_critical(site):
    env = {'PVE_HOOKS_OUTBOX__MAX_EVENTS': '2'}
    for vmid in ('100', '101'):
        assert _run(site, vmid, 'pre-start', env=env)[0] == 0
    kept = site.ready()
    site.journal_records()
    code, err = _run(site, '102', 'pre-start', env=env)
    assert code == 0 and 'DROPPED (1 dropped in total)' in err and 'outbox full' in err
    assert site.ready() == kept
    assert [r['PRIORITY'] for r in site.journal_records()] == ['2']
    code, err = _run(site, '103', 'pre-start', env=dict(env, PVE_HOOKS_HOOK__ON_ERROR='abort'))
    assert code == 1 and 'DROPPED (2 dropped in total)' in err and 'start is aborted' in err


def test_chain_runs_in_name_order_with_argv_env_and_empty_stdin(site):
    log = os.path.join(site.root, 'chain.log')
    body = 'echo "$(basename $0) $1 $2 $PVE_MIGRATED_FROM $(cat)" >> {0}'.format(log)
    site.chain('20-second', body)
    site.chain('10-first', body)
    site.chain('.hidden', body)
    site.chain('30-old~', body)
    site.chain('40-x.dpkg-old', body)
    site.chain('50-not-executable', body, mode=0o644)
    os.makedirs(os.path.join(site.chain_dir, '60-dir'))
    code, err = _run(site, '100', 'pre-start', env={'PVE_MIGRATED_FROM': 'pve9'})
    assert (code, err) == (0, '')
    with open(log) as stream:
        assert stream.read() == '10-first 100 pre-start pve9 \n20-second 100 pre-start pve9 \n'
    assert len(site.ready()) == 1  # spooled before the chain ran


@pytest.mark.parametrize('chain_on_error, phase, code', [('continue', 'pre-start', 0), ('abort', 'pre-start', 1),
                                                          ('abort', 'pre-stop', 0)])
def test_chain_failure(site, chain_on_error, phase, code):
    site.chain('10-fails', 'exit 3')
    marker = os.path.join(site.root, 'second-ran')
    site.chain('20-runs-anyway', 'touch {0}'.format(marker))
    result, err = _run(site, '100', phase, env={'PVE_HOOKS_HOOK__CHAIN_ON_ERROR': chain_on_error})
    assert result == code
    assert 'chained hook {0} exited with status 3'.format(os.path.join(site.chain_dir, '10-fails')) in err
    assert os.path.exists(marker)
    assert ('start of guest 100 is aborted' in err) == bool(code)


def test_chain_timeout_kills_the_script_and_its_children(site):
    pidfile = os.path.join(site.root, 'child.pid')
    site.chain('10-hangs', 'sleep 60 & echo $! > {0}; wait'.format(pidfile))
    code, err = _run(site, '100', 'pre-start', env={'PVE_HOOKS_HOOK__CHAIN_TIMEOUT': '0.3',
                                                     'PVE_HOOKS_HOOK__CHAIN_ON_ERROR': 'abort'})
    assert code == 1 and 'was killed after 0.3 s (hook.chain_timeout)' in err
    with open(pidfile) as stream:
        child = int(stream.read())
    assert _dead(child)


def _dead(pid):
    """Return True once ``pid`` is gone or a zombie (bounded wait: SIGKILL is delivered at once)."""
    import time
    for _ in range(250):
        try:
            with open('/proc/{0}/stat'.format(pid)) as stream:
                if stream.read().rsplit(')', 1)[1].split()[0] == 'Z':
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.02)
    return False


def test_chain_script_that_cannot_start(site):
    os.makedirs(site.chain_dir, exist_ok=True)
    path = os.path.join(site.chain_dir, '10-bad-interpreter')
    with open(path, 'w') as stream:
        stream.write('#!/nonexistent/interpreter\n')
    os.chmod(path, 0o755)
    code, err = _run(site, '100', 'post-start')
    assert code == 0 and 'could not be started' in err and '10-bad-interpreter' in err


def test_chain_not_run_when_the_start_is_aborted_anyway(site):
    marker = os.path.join(site.root, 'ran')
    site.chain('10-setup', 'touch {0}'.format(marker))
    code, err = _run(site, '100', 'pre-start', env={'PVE_HOOKS_HOOK__ON_ERROR': 'abort'}, write=_enospc)
    assert code == 1 and 'chained hooks in {0} not run'.format(site.chain_dir) in err
    assert not os.path.exists(marker)
    code, err = _run(site, '100', 'post-stop', env={'PVE_HOOKS_HOOK__ON_ERROR': 'abort'}, write=_enospc)
    assert code == 0 and os.path.exists(marker)  # other phases: the chain still runs


def test_chain_scripts_missing_dir(tmp_path):
    assert hook.chain_scripts(str(tmp_path / 'none')) == []


def test_odd_node_name_cannot_confuse_the_seq_splice(site):
    node = 'pve"seq":0,\\ü'
    _run(site, '100', 'pre-start', env={'PVE_HOOKS_NODE': node})
    [ev] = _events(site)
    assert ev['node'] == node and ev['seq'] == NOW_NS // 1000


def test_chain_dir_that_is_a_file_is_one_clear_line(site):
    with open(site.chain_dir, 'w') as stream:
        stream.write('not a directory')
    code, err = _run(site, '100', 'pre-start')
    assert code == 0 and err.count('\n') == 1 and 'cannot list chained hooks in {0}'.format(site.chain_dir) in err
    assert len(site.ready()) == 1


def test_error_lines_are_counted_for_the_hookscript_errors_metric(site):
    from pve_hooks.outbox.store import Outbox

    _run(site, '100', 'pre-start')
    assert Outbox(site.spool_dir).stats()['hookscript_errors'] == 0
    _run(site, '100', 'bogus-phase')
    _run(site)
    stats = Outbox(site.spool_dir).stats()
    assert stats['hookscript_errors'] == 2
    assert stats['spooled'] == 1
