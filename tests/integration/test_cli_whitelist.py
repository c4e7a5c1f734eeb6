"""``pve-hooks whitelist ...`` as real processes against the reference AccountDB on loopback."""

import json
import os
import subprocess
import sys

import yaml

from tests.support.accountdb import dev_accountdb  # noqa: F401  (pytest fixture)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WHITELIST_GET = 'GET /api/v1/whitelist'
WHITELIST_POST = 'POST /api/v1/whitelist'


def node_config(server, directory):
    """Write a config.yaml for a node using ``server``; return its path."""
    directory = str(directory)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, 'config.yaml')
    with open(path, 'w') as stream:
        yaml.safe_dump({'node': 'pve1',
                        'accountdb': {'url': server.url, 'token_file': server.token_file},
                        'paths': {'state_dir': os.path.join(directory, 'state'),
                                  'spool_dir': os.path.join(directory, 'spool')},
                        'metrics': {'textfile': None}}, stream)
    return path


def run(config_file, *args, stdin=None):
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop('PVE_HOOKS_CONFIG', None)
    return subprocess.run([sys.executable, '-m', 'pve_hooks', '--config', config_file, 'whitelist'] + list(args),
                          input=stdin, capture_output=True, text=True, env=env, timeout=60)


def count(server, key):
    return server.stats()['endpoints'].get(key, {}).get('count', 0)


def test_refresh_then_show_and_check_in_new_processes_without_fetching(dev_accountdb, tmp_path):
    conf = node_config(dev_accountdb, tmp_path / 'node')
    assert run(conf, 'add', '100-102', '250').returncode == 0
    dev_accountdb.reset_stats()

    shown = run(conf, 'show')
    assert shown.returncode == 0, shown.stderr
    assert 'whitelist: 4 VMIDs (only these guests are reported), ETag "wl-1"' in shown.stdout
    assert '100-102, 250' in shown.stdout
    data = json.loads(run(conf, 'show', '--json').stdout)
    assert data['compact'] == '100-102,250' and data['ranges'] == [[100, 102], [250, 250]]
    assert data['etag'] == '"wl-1"' and data['state'] == 'ok' and data['age'] >= 0
    allowed = run(conf, 'check', '101')
    assert allowed.returncode == 0 and 'VMID 101 is allowed' in allowed.stdout
    denied = run(conf, 'check', '200')
    assert denied.returncode == 1 and 'VMID 200 is not allowed' in denied.stdout
    assert count(dev_accountdb, WHITELIST_GET) == 0 and count(dev_accountdb, WHITELIST_POST) == 0

    refreshed = run(conf, 'refresh')
    assert refreshed.returncode == 0 and '(not modified)' in refreshed.stdout
    assert dev_accountdb.stats()['endpoints'][WHITELIST_GET]['status'] == {'304': 1}


def test_check_without_a_cache_allows_everything_and_rejects_bad_input(dev_accountdb, tmp_path):
    conf = node_config(dev_accountdb, tmp_path / 'node')
    result = run(conf, 'check', '4242')
    assert result.returncode == 0
    assert 'no whitelist cached: every guest is reported' in result.stdout
    bad = run(conf, 'check', '42')
    assert bad.returncode == 2 and "'42' is outside the VMID range 100-999999999" in bad.stderr


def test_bulk_add_of_10000_vmids_from_stdin_is_one_request(dev_accountdb, tmp_path):
    conf = node_config(dev_accountdb, tmp_path / 'node')
    lines = '# generated\n' + ''.join('{0}\n'.format(vmid) for vmid in range(5000, 15000))
    result = run(conf, 'set', '--from-file', '-', stdin=lines)
    assert result.returncode == 0, result.stderr
    assert 'added 10000 (5000-14999)' in result.stdout
    assert count(dev_accountdb, WHITELIST_POST) == 1
    assert len(dev_accountdb.dump()['whitelist']['vmids']) == 10000


def test_set_from_file_sends_the_difference(dev_accountdb, tmp_path):
    conf = node_config(dev_accountdb, tmp_path / 'node')
    run(conf, 'add', '100-105')
    wanted = tmp_path / 'vmids.txt'
    wanted.write_text('# web\n103-110\n\n')
    result = run(conf, 'set', '--from-file', str(wanted))
    assert result.returncode == 0, result.stderr
    assert 'added 5 (106-110), removed 3 (100-102)' in result.stdout
    assert dev_accountdb.dump()['whitelist']['vmids'] == list(range(103, 111))


def test_invalid_file_names_every_bad_line_and_sends_nothing(dev_accountdb, tmp_path):
    conf = node_config(dev_accountdb, tmp_path / 'node')
    bad = tmp_path / 'vmids.txt'
    bad.write_text('100\n101\n# ok so far\n102\n103\n104\n300-200\n105\nweb01\n')
    dev_accountdb.reset_stats()
    result = run(conf, 'set', '--from-file', str(bad))
    assert result.returncode == 1
    assert "line 7: '300-200' is an inverted range; write 200-300" in result.stderr
    assert "line 9: 'web01' is not a VMID" in result.stderr
    assert 'nothing was sent' in result.stderr
    assert 'Traceback' not in result.stderr
    assert count(dev_accountdb, WHITELIST_GET) == 0 and count(dev_accountdb, WHITELIST_POST) == 0


def test_invalid_arguments_are_named_and_nothing_is_sent(dev_accountdb, tmp_path):
    conf = node_config(dev_accountdb, tmp_path / 'node')
    dev_accountdb.reset_stats()
    result = run(conf, 'add', '100', '5', '300-200')
    assert result.returncode == 1
    assert "argument 2: '5' is outside the VMID range" in result.stderr
    assert "argument 3: '300-200' is an inverted range; write 200-300" in result.stderr
    assert count(dev_accountdb, WHITELIST_GET) == 0 and count(dev_accountdb, WHITELIST_POST) == 0


def test_an_empty_set_needs_allow_empty(dev_accountdb, tmp_path):
    conf = node_config(dev_accountdb, tmp_path / 'node')
    run(conf, 'add', '100')
    result = run(conf, 'set', '--from-file', '-', stdin='# nothing\n')
    assert result.returncode == 1 and '--allow-empty' in result.stderr
    assert dev_accountdb.dump()['whitelist']['vmids'] == [100]
    result = run(conf, 'set', '--from-file', '-', '--allow-empty', stdin='')
    assert result.returncode == 0 and 'removed 1 (100)' in result.stdout
    assert 'whitelist is empty: every guest is reported' in result.stdout


def test_concurrent_operators_second_gets_412_refetch_and_retry(dev_accountdb, tmp_path):
    alice = node_config(dev_accountdb, tmp_path / 'alice')
    bob = node_config(dev_accountdb, tmp_path / 'bob')
    assert run(alice, 'refresh').returncode == 0
    assert run(bob, 'refresh').returncode == 0
    assert run(alice, 'add', '500').returncode == 0

    conflict = run(bob, 'add', '600')
    assert conflict.returncode == 3
    assert 'changed on AccountDB since it was read (ETag "wl-0")' in conflict.stderr
    assert 'run the command again' in conflict.stderr
    assert len(conflict.stderr.strip().splitlines()) == 1
    assert '500' in run(bob, 'show').stdout            # bob's cache was refetched

    retried = run(bob, 'add', '600')
    assert retried.returncode == 0, retried.stderr
    assert dev_accountdb.dump()['whitelist']['vmids'] == [500, 600]


def test_unreachable_and_refused_token_are_one_line_with_distinct_exit_codes(dev_accountdb, tmp_path):
    conf = node_config(dev_accountdb, tmp_path / 'node')
    dev_accountdb.set_faults([{'mode': 'unauthorized'}])
    refused = run(conf, 'add', '100')
    assert refused.returncode == 1
    assert refused.stderr.startswith('Error: whitelist not changed: AccountDB refused the token')
    assert len(refused.stderr.strip().splitlines()) == 1

    dev_accountdb.stop()
    down = run(conf, 'refresh')
    assert down.returncode == 4
    assert 'AccountDB unreachable' in down.stderr and 'connection to AccountDB refused' in down.stderr
    assert len(down.stderr.strip().splitlines()) == 1
    shown = run(conf, 'show')
    assert 'no whitelist cached' in shown.stdout and 'last refresh failed at' in shown.stdout


def test_help_documents_exit_codes(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO)
    result = subprocess.run([sys.executable, '-m', 'pve_hooks', 'whitelist', 'add', '--help'],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0
    assert 'Exit codes:' in result.stdout and '3  the whitelist changed on AccountDB' in result.stdout


def test_show_with_a_corrupt_cache_warns_and_quarantines(dev_accountdb, tmp_path):
    conf = node_config(dev_accountdb, tmp_path / 'node')
    state = tmp_path / 'node' / 'state'
    state.mkdir()
    (state / 'whitelist.json').write_text('{"vmids": [1')
    result = run(conf, 'show')
    assert result.returncode == 0
    assert 'no whitelist cached: every guest is reported' in result.stdout
    assert 'whitelist cache is corrupt' in result.stderr and 'Traceback' not in result.stderr
    assert [p.name for p in state.iterdir()][0].startswith('whitelist.json.corrupt-')


def test_missing_accountdb_url_is_one_clear_line(dev_accountdb, tmp_path):
    conf = node_config(dev_accountdb, tmp_path / 'node')
    with open(conf) as stream:
        data = yaml.safe_load(stream)
    data['accountdb']['url'] = None
    with open(conf, 'w') as stream:
        yaml.safe_dump(data, stream)
    result = run(conf, 'add', '100')
    assert result.returncode == 1
    assert result.stderr.strip() == ('Error: whitelist not changed: accountdb.url is not set; set it in the '
                                     'configuration file')


def test_wrong_endpoint_path_names_the_option(dev_accountdb, tmp_path):
    conf = node_config(dev_accountdb, tmp_path / 'node')
    result = subprocess.run(
        [sys.executable, '-m', 'pve_hooks', '--config', conf, '--set', 'accountdb.endpoints.whitelist=/api/v2/wl',
         'whitelist', 'refresh'], capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=REPO), timeout=60)
    assert result.returncode == 1
    assert 'refresh failed: HTTP 404' in result.stderr and 'accountdb.endpoints' in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
