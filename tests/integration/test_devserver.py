"""The reference AccountDB as a process: start-up line, signals, validation, admin, dump."""

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from tests.support.accountdb import REPO, DevAccountDB, dev_accountdb, run_dev_accountdb  # noqa: F401


def request(server, method, path, body=None, headers=None, token=True, raw=None):
    """Send one request with urllib (not the client under test). Return (status, headers, decoded body)."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode('utf-8'))
    all_headers = {'Content-Type': 'application/json'}
    if token:
        all_headers['Authorization'] = 'Bearer ' + (server.token if token is True else token)
    all_headers.update(headers or {})
    req = urllib.request.Request(server.url + path, data=data, method=method, headers=all_headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            status, head, content = response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        status, head, content = error.code, error.headers, error.read()
    return status, head, json.loads(content) if content else None


def run_cli(*args, timeout=20):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, '-m', 'pve_hooks', 'dev-accountdb'] + list(args),
                          capture_output=True, text=True, timeout=timeout, env=env)


# -- process lifecycle --------------------------------------------------------------

@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT])
def test_stops_cleanly_on_signal(tmp_path, sig):
    server = DevAccountDB(tmp_path)
    assert server.url.startswith('http://127.0.0.1:') and server.port > 0
    server.process.send_signal(sig)
    assert server.process.wait(10) == 0
    assert 'stopped' in server.read_log() and 'Traceback' not in server.read_log()
    server.stop()


def test_restart_reuses_the_port_after_sigkill(dev_accountdb):
    port = dev_accountdb.port
    status, _, _ = request(dev_accountdb, 'GET', '/api/v1/health')
    assert status == 200  # leaves a connection behind in TIME_WAIT
    dev_accountdb.kill()
    dev_accountdb.restart()
    assert dev_accountdb.port == port
    assert request(dev_accountdb, 'GET', '/api/v1/health')[0] == 200


def test_missing_options_are_a_usage_error():
    result = run_cli('--listen', '127.0.0.1:0')
    assert result.returncode == 2 and '--db' in result.stderr and '--token-file' in result.stderr


def test_bad_faults_spec_is_one_clear_line(tmp_path):
    DevAccountDB.write_token(str(tmp_path / 'token'), 'x')
    result = run_cli('--listen', '127.0.0.1:0', '--db', str(tmp_path / 'db'), '--token-file',
                     str(tmp_path / 'token'), '--faults', '[{"mode": "explode"}]')
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        'Error: --faults: fault rule 1: "mode" must be one of ' + ', '.join(
            __import__('pve_hooks_devserver.faults', fromlist=['MODES']).MODES)]


def test_unusable_token_file_is_one_clear_line(tmp_path):
    result = run_cli('--listen', '127.0.0.1:0', '--db', str(tmp_path / 'db'), '--token-file',
                     str(tmp_path / 'missing'))
    assert result.returncode == 1 and 'token file not found' in result.stderr
    assert 'Traceback' not in result.stderr


def test_port_in_use_is_one_clear_line(tmp_path):
    DevAccountDB.write_token(str(tmp_path / 'token'), 'x')
    with socket.socket() as busy:
        busy.bind(('127.0.0.1', 0))
        busy.listen()
        result = run_cli('--listen', '127.0.0.1:{0}'.format(busy.getsockname()[1]), '--db', str(tmp_path / 'db'),
                         '--token-file', str(tmp_path / 'token'))
    assert result.returncode == 1 and 'cannot serve on' in result.stderr and 'Traceback' not in result.stderr


def test_faults_at_start(tmp_path):
    with run_dev_accountdb(tmp_path, faults=[{'mode': 'status', 'status': 503, 'retry_after': 4, 'count': 1}]) as s:
        status, headers, body = request(s, 'GET', '/api/v1/health')
        assert status == 503 and headers['Retry-After'] == '4' and 'error' in body
        assert request(s, 'GET', '/api/v1/health')[0] == 200


# -- auth and validation -----------------------------------------------------------

def test_wrong_or_missing_token_is_401(dev_accountdb):
    assert request(dev_accountdb, 'GET', '/api/v1/health', token='wrong')[0] == 401
    assert request(dev_accountdb, 'GET', '/api/v1/health', token=False)[0] == 401
    assert request(dev_accountdb, 'GET', '/_admin/stats', token='wrong')[0] == 401


def test_server_rereads_its_token_file(dev_accountdb):
    DevAccountDB.write_token(dev_accountdb.token_file, 'rotated-token')
    assert request(dev_accountdb, 'GET', '/api/v1/health')[0] == 401
    assert request(dev_accountdb, 'GET', '/api/v1/health', token='rotated-token')[0] == 200


@pytest.mark.parametrize('raw, status, words', [
    (b'{not json', 400, 'not valid JSON'),
    (b'[]', 400, '"node"'),
    (b'{"node": "pve1"}', 400, '"events"'),
    (b'{"node": "pve1", "events": [{"vmid": 100}]}', 400, 'events[0]'),
])
def test_bad_event_requests_are_400_with_a_reason(dev_accountdb, raw, status, words):
    code, _, body = request(dev_accountdb, 'POST', '/api/v1/events', raw=raw)
    assert code == status and words in body['error']


def test_per_event_validation(dev_accountdb):
    good = {'event_id': 'ok', 'vmid': 100, 'phase': 'post-stop', 'seq': 0, 'occurred_at': 't'}
    cases = {'bad-vmid': dict(good, vmid=True), 'bad-phase': dict(good, phase='reboot'),
             'bad-seq': dict(good, seq=-1), 'no-time': dict(good, occurred_at='')}
    batch = [good] + [dict(event, event_id=key) for key, event in cases.items()]
    status, _, body = request(dev_accountdb, 'POST', '/api/v1/events', {'node': 'pve1', 'events': batch})
    assert status == 200
    assert [r['status'] for r in body['results']] == ['accepted'] + ['rejected'] * 4
    assert [row['event_id'] for row in dev_accountdb.events()] == ['ok']


def test_gzip_bodies_are_accepted_and_bad_gzip_is_400(dev_accountdb):
    body = json.dumps({'node': 'pve1', 'events': [{'event_id': 'gz', 'vmid': 100, 'phase': 'pre-start',
                                                   'seq': 1, 'occurred_at': 't'}]}).encode()
    status, _, answer = request(dev_accountdb, 'POST', '/api/v1/events', raw=gzip.compress(body),
                                headers={'Content-Encoding': 'gzip'})
    assert status == 200 and answer['results'][0]['status'] == 'accepted'
    status, _, answer = request(dev_accountdb, 'POST', '/api/v1/events', raw=b'not gzip',
                                headers={'Content-Encoding': 'gzip'})
    assert status == 400 and 'gzip' in answer['error']
    assert request(dev_accountdb, 'POST', '/api/v1/events', raw=body, headers={'Content-Encoding': 'br'})[0] == 415


def test_body_limit_is_413_also_after_decompression(dev_accountdb):
    dev_accountdb.set_faults({'max_body_bytes': 2048, 'rules': []})
    bomb = gzip.compress(b'{"node": "pve1", "events": [' + b' ' * 100000 + b']}')
    assert len(bomb) < 2048
    status, _, answer = request(dev_accountdb, 'POST', '/api/v1/events', raw=bomb,
                                headers={'Content-Encoding': 'gzip'})
    assert status == 413 and 'decompressed' in answer['error']
    assert request(dev_accountdb, 'POST', '/api/v1/events', raw=b' ' * 3000)[0] == 413


def test_unknown_path_is_404_and_wrong_method_405(dev_accountdb):
    assert request(dev_accountdb, 'GET', '/api/v2/health')[0] == 404
    status, headers, _ = request(dev_accountdb, 'DELETE', '/api/v1/whitelist')
    assert status == 405 and headers['Allow'] == 'GET, POST'


def test_inventory_node_must_match_the_path(dev_accountdb):
    status, _, body = request(dev_accountdb, 'PUT', '/api/v1/nodes/pve1/inventory',
                              {'node': 'pve2', 'guests': []})
    assert status == 400 and 'does not match' in body['error']
    status, _, body = request(dev_accountdb, 'PUT', '/api/v1/nodes/pve1/inventory',
                              {'node': 'pve1', 'guests': [{'vmid': 'x'}]})
    assert status == 422


def test_whitelist_validation_names_the_bad_item(dev_accountdb):
    status, _, body = request(dev_accountdb, 'POST', '/api/v1/whitelist', {'add': [100, 99]})
    assert status == 422 and 'add[1]' in body['error']
    assert request(dev_accountdb, 'GET', '/api/v1/whitelist')[2] == {'vmids': []}  # nothing applied


def test_whitelist_if_modified_since_and_unchanged_updates(dev_accountdb):
    status, headers, _ = request(dev_accountdb, 'POST', '/api/v1/whitelist', {'add': [100, 101]})
    etag, modified = headers['ETag'], headers['Last-Modified']
    assert request(dev_accountdb, 'GET', '/api/v1/whitelist', headers={'If-Modified-Since': modified})[0] == 304
    assert request(dev_accountdb, 'GET', '/api/v1/whitelist',
                   headers={'If-Modified-Since': 'Thu, 01 Jan 1970 00:00:00 GMT'})[0] == 200
    # If-None-Match wins over If-Modified-Since.
    assert request(dev_accountdb, 'GET', '/api/v1/whitelist',
                   headers={'If-None-Match': '"other"', 'If-Modified-Since': modified})[0] == 200
    # Adding what is there changes nothing: same ETag.
    assert request(dev_accountdb, 'POST', '/api/v1/whitelist', {'add': [100]})[1]['ETag'] == etag
    status, headers, body = request(dev_accountdb, 'POST', '/api/v1/whitelist', {'remove': [100]},
                                    headers={'If-Match': etag})
    assert status == 200 and body == {'vmids': [101]} and headers['ETag'] != etag
    status, headers, _ = request(dev_accountdb, 'POST', '/api/v1/whitelist', {'remove': [101]},
                                 headers={'If-Match': etag})
    assert status == 412 and headers['ETag'] != etag


# -- faults and admin ---------------------------------------------------------------

def test_fault_count_probability_and_path(dev_accountdb):
    dev_accountdb.set_faults({'seed': 7, 'rules': [
        {'mode': 'status', 'status': 500, 'path': '/api/v1/whitelist', 'count': 2},
        {'mode': 'status', 'status': 502, 'path': '/api/v1/health', 'probability': 0.5}]})
    assert [request(dev_accountdb, 'GET', '/api/v1/whitelist')[0] for _ in range(3)] == [500, 500, 200]
    first = [request(dev_accountdb, 'GET', '/api/v1/health')[0] for _ in range(40)]
    assert set(first) == {200, 502}
    dev_accountdb.set_faults({'seed': 7, 'rules': [
        {'mode': 'status', 'status': 502, 'path': '/api/v1/health', 'probability': 0.5}]})
    again = [request(dev_accountdb, 'GET', '/api/v1/health')[0] for _ in range(40)]
    assert again == first  # the same seed gives the same sequence
    assert request(dev_accountdb, 'GET', '/_admin/faults')[0] == 200  # admin is never faulted


def test_invalid_fault_spec_over_admin_is_400(dev_accountdb):
    status, _, body = request(dev_accountdb, 'POST', '/_admin/faults', [{'mode': 'slow'}])
    assert status == 400 and 'delay' in body['error']


def test_unauthorized_fault_then_fixed(dev_accountdb):
    dev_accountdb.set_faults([{'mode': 'unauthorized'}])
    assert request(dev_accountdb, 'GET', '/api/v1/health')[0] == 401
    dev_accountdb.set_faults([])
    assert request(dev_accountdb, 'GET', '/api/v1/health')[0] == 200


def test_stats_count_bytes_by_endpoint(dev_accountdb):
    request(dev_accountdb, 'POST', '/api/v1/whitelist', {'add': list(range(100, 1100))})
    dev_accountdb.reset_stats()
    full = request(dev_accountdb, 'GET', '/api/v1/whitelist')
    request(dev_accountdb, 'GET', '/api/v1/whitelist', headers={'If-None-Match': full[1]['ETag']})
    entry = dev_accountdb.stats()['endpoints']['GET /api/v1/whitelist']
    assert entry['count'] == 2 and entry['status'] == {'200': 1, '304': 1}
    assert entry['bytes_out'] > len(json.dumps(full[2], separators=(',', ':')))
    assert dev_accountdb.stats()['totals']['count'] == 2


# -- dump -----------------------------------------------------------------------------

def test_dump_shows_what_the_database_holds(dev_accountdb):
    request(dev_accountdb, 'POST', '/api/v1/events', {'node': 'pve1', 'events': [
        {'event_id': 'd1', 'vmid': 100, 'phase': 'pre-start', 'seq': 1, 'occurred_at': 't'}]})
    request(dev_accountdb, 'PUT', '/api/v1/nodes/pve1/inventory', {'node': 'pve1', 'guests': [{'vmid': 100}]})
    request(dev_accountdb, 'POST', '/api/v1/nodes/pve1/heartbeat', {'node': 'pve1'})
    request(dev_accountdb, 'POST', '/api/v1/whitelist', {'add': [100]})
    text = run_cli('dump', '--db', dev_accountdb.db)
    assert text.returncode == 0, text.stderr
    assert 'events: 1' in text.stdout and '  pve1: 1' in text.stdout and '1 guests' in text.stdout
    assert 'whitelist: 100 (1 VMIDs' in text.stdout
    as_json = json.loads(run_cli('dump', '--json', '--db', dev_accountdb.db).stdout)
    assert as_json['events']['per_node'] == {'pve1': 1}
    assert as_json['heartbeats']['pve1']['count'] == 1
    assert as_json['whitelist']['vmids'] == [100]


def test_dump_of_a_missing_database_is_one_clear_line(tmp_path):
    result = run_cli('dump', '--db', str(tmp_path / 'nothing.sqlite'))
    assert result.returncode == 1 and 'no such database file' in result.stderr
    assert not (tmp_path / 'nothing.sqlite').exists()


def test_unusable_database_is_one_clear_line(tmp_path):
    DevAccountDB.write_token(str(tmp_path / 'token'), 'x')
    result = run_cli('--listen', '127.0.0.1:0', '--db', str(tmp_path / 'missing-dir' / 'db'), '--token-file',
                     str(tmp_path / 'token'))
    assert result.returncode == 1 and 'cannot use the database' in result.stderr
    (tmp_path / 'not.sqlite').write_text('not a database at all, ' * 100)
    result = run_cli('dump', '--db', str(tmp_path / 'not.sqlite'))
    assert result.returncode == 1 and 'cannot read the database' in result.stderr
    assert 'Traceback' not in result.stderr
