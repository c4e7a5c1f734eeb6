"""The AccountDB client against the real reference server over loopback HTTP (no mocked HTTP layer)."""

import logging
import os
import socket

import pytest

from pve_hooks.accountdb import client as accountdb
from pve_hooks.accountdb import errors
from tests.support.accountdb import DevAccountDB, dev_accountdb, run_dev_accountdb  # noqa: F401


@pytest.fixture(scope='module')
def shared_server(tmp_path_factory):
    with run_dev_accountdb(tmp_path_factory.mktemp('accountdb')) as server:
        yield server


@pytest.fixture
def server(shared_server):
    """The module's server with no faults and zeroed statistics."""
    shared_server.set_faults([])
    shared_server.reset_stats()
    yield shared_server
    shared_server.set_faults([])


def make_client(server, *overrides, **kwargs):
    return accountdb.Client(server.settings(*overrides), **kwargs)


def event(event_id, vmid=100, seq=1, phase='pre-start'):
    return {'event_id': event_id, 'schema': 1, 'node': 'pve1', 'vmid': vmid, 'guest_type': 'qemu',
            'phase': phase, 'occurred_at': '2026-11-26T10:00:00.000000Z', 'seq': seq, 'source': 'hookscript'}


def events(prefix, count):
    return [event('{0}-{1}'.format(prefix, i), vmid=100 + i, seq=i) for i in range(count)]


def stat(server, key):
    return server.stats()['endpoints'].get(key, {'count': 0, 'gzip': 0, 'status': {}})


# -- the happy paths ---------------------------------------------------------------

def test_health_sends_token_and_user_agent(server):
    assert make_client(server).health()['status'] == 'ok'
    entry = stat(server, 'GET /api/v1/health')
    assert entry['status'] == {'200': 1}
    assert entry['user_agent'] == 'pve-hooks/' + accountdb.__version__


def test_send_events_accepts_then_deduplicates(server):
    client = make_client(server)
    batch = events('dedupe', 3)
    assert [r['status'] for r in client.send_events('pve1', batch)] == ['accepted'] * 3
    again = client.send_events('pve1', list(reversed(batch)))
    assert [r['event_id'] for r in again] == [e['event_id'] for e in reversed(batch)]
    assert [r['status'] for r in again] == ['duplicate'] * 3
    stored = [row['event_id'] for row in server.events() if row['event_id'].startswith('dedupe-')]
    assert sorted(stored) == sorted(e['event_id'] for e in batch)


def test_an_invalid_event_is_rejected_alone(server):
    bad = dict(event('invalid-1'), vmid=7)
    results = make_client(server).send_events('pve1', [event('valid-1'), bad])
    assert results[0]['status'] == 'accepted'
    assert results[1]['status'] == 'rejected' and 'vmid' in results[1]['error']


def test_put_inventory_returns_the_etag_and_stores_it(server):
    inventory = {'node': 'pve1', 'cluster': 'lab', 'generated_at': '2026-11-26T10:00:00Z',
                 'guests': [{'vmid': 100, 'type': 'qemu', 'name': 'web'}]}
    etag = make_client(server).put_inventory('pve1', inventory)
    assert etag and etag.startswith('"')
    assert server.dump()['inventories']['pve1']['etag'] == etag


def test_node_names_are_quoted_in_paths(server):
    node = 'odd node'
    inventory = {'node': node, 'cluster': 'lab', 'generated_at': 't', 'guests': []}
    make_client(server).put_inventory(node, inventory)
    assert node in server.dump()['inventories']


def test_heartbeat_is_stored(server):
    make_client(server).heartbeat('pve1', {'node': 'pve1', 'sent_at': 't', 'agent_version': '0.1.0',
                                          'outbox': {'depth': 0}, 'health': {}})
    assert server.dump()['heartbeats']['pve1']['count'] >= 1
    assert stat(server, 'POST /api/v1/nodes/{node}/heartbeat')['status'] == {'204': 1}


# -- whitelist ---------------------------------------------------------------------

def test_whitelist_conditional_get_and_bulk_update(dev_accountdb):
    client = make_client(dev_accountdb)
    first = client.get_whitelist()
    assert first.status == 200 and first.vmids == [] and first.etag and first.last_modified
    unchanged = client.get_whitelist(etag=first.etag, last_modified=first.last_modified)
    assert unchanged.status == 304 and unchanged.vmids is None and unchanged.body_bytes == 0

    updated = client.update_whitelist(add=range(100, 10100), if_match=first.etag)
    assert updated.status == 200 and len(updated.vmids) == 10000 and updated.etag != first.etag
    entry = stat(dev_accountdb, 'POST /api/v1/whitelist')
    assert entry['count'] == 1 and entry['gzip'] == 1  # one bulk request, compressed

    changed = client.get_whitelist(etag=first.etag)
    assert changed.status == 200 and changed.vmids[:2] == [100, 101] and changed.body_bytes > 10000
    assert client.get_whitelist(last_modified=changed.last_modified).status == 304


def test_stale_if_match_is_a_precondition_failure(dev_accountdb):
    client = make_client(dev_accountdb)
    seen = client.get_whitelist()
    client.update_whitelist(add=[100], if_match=seen.etag)  # another operator wins the race
    with pytest.raises(errors.PreconditionFailed) as caught:
        client.update_whitelist(remove=[100], if_match=seen.etag)
    assert caught.value.kind == 'conflict' and caught.value.status == 412
    assert client.get_whitelist().vmids == [100]  # nothing was overwritten


def test_whitelist_without_vmids_list_is_malformed(server):
    server.set_faults([{'mode': 'wrong_shape', 'path': '/api/v1/whitelist'}])
    with pytest.raises(errors.TransientError, match='vmids'):
        make_client(server).get_whitelist()


# -- status classes ----------------------------------------------------------------

@pytest.mark.parametrize('status, kind', [
    (408, 'transient'), (409, 'transient'), (425, 'transient'), (429, 'transient'), (500, 'transient'),
    (502, 'transient'), (503, 'transient'), (504, 'transient'),
    (404, 'configuration'), (405, 'configuration'), (415, 'configuration'),
    (401, 'auth'), (403, 'auth'),
    (400, 'rejected'), (413, 'rejected'), (422, 'rejected'), (412, 'conflict')])
def test_every_status_class_over_http(server, status, kind):
    server.set_faults([{'mode': 'status', 'status': status, 'count': 1}])
    client = make_client(server)
    with pytest.raises(errors.AccountDBError) as caught:
        client.heartbeat('pve1', {'node': 'pve1'})
    assert caught.value.kind == kind and caught.value.status == status
    assert 'injected fault' in caught.value.reason
    client.heartbeat('pve1', {'node': 'pve1'})  # the fault was for one request only


@pytest.mark.parametrize('status', [429, 503])
def test_retry_after_is_parsed(server, status):
    server.set_faults([{'mode': 'status', 'status': status, 'retry_after': 17, 'count': 1}])
    with pytest.raises(errors.TransientError) as caught:
        make_client(server).health()
    assert caught.value.retry_after == 17.0


def test_wrong_endpoint_path_is_a_configuration_error(server):
    client = make_client(server, 'accountdb.endpoints.events=/api/v2/events')
    with pytest.raises(errors.ConfigurationError) as caught:
        client.send_events('pve1', [event('wrong-path')])
    assert caught.value.status == 404 and 'accountdb.endpoints' in caught.value.reason


def test_wrong_method_is_a_configuration_error(server):
    client = make_client(server, 'accountdb.endpoints.health=/api/v1/events')
    with pytest.raises(errors.ConfigurationError) as caught:
        client.health()
    assert caught.value.status == 405


def test_unset_url_is_a_configuration_error(server):
    with pytest.raises(errors.ConfigurationError, match='accountdb.url'):
        make_client(server, 'accountdb.url=').health()


# -- faults ------------------------------------------------------------------------

@pytest.mark.parametrize('fault, words', [
    ({'mode': 'refuse'}, 'reset'),
    ({'mode': 'drop'}, 'without a response'),
    ({'mode': 'garbage'}, 'text/html, not JSON'),
    ({'mode': 'bad_json'}, 'not valid JSON'),
    ({'mode': 'wrong_shape'}, 'results'),
])
def test_faults_on_events_are_transient(server, fault, words):
    server.set_faults([dict(fault, count=1)])
    client = make_client(server)
    with pytest.raises(errors.TransientError) as caught:
        client.send_events('pve1', [event('fault-' + fault['mode'])])
    assert words in caught.value.reason
    assert client.send_events('pve1', [event('fault-' + fault['mode'])])[0]['status'] == 'accepted'


def test_slow_response_beyond_read_timeout_is_transient(server):
    server.set_faults([{'mode': 'slow', 'delay': 1.5, 'count': 1}])
    with pytest.raises(errors.TransientError, match='timed out'):
        make_client(server, 'accountdb.timeout.read=0.3').health()


def test_slow_response_within_read_timeout_succeeds(server):
    server.set_faults([{'mode': 'slow', 'delay': 0.2, 'count': 1}])
    assert make_client(server, 'accountdb.timeout.read=5').health()['status'] == 'ok'


@pytest.mark.parametrize('no_length', [False, True])
def test_response_over_the_size_limit_is_transient(server, no_length):
    server.set_faults([{'mode': 'huge', 'size': 50000, 'no_length': no_length, 'count': 1}])
    with pytest.raises(errors.TransientError, match='max_response_bytes'):
        make_client(server, 'accountdb.max_response_bytes=4096').health()


def test_response_at_the_size_limit_is_read(server):
    server.set_faults([{'mode': 'huge', 'size': 4096, 'no_length': True, 'count': 1}])
    assert make_client(server, 'accountdb.max_response_bytes=4096').health()['status'] == 'ok'


def test_connection_refused_is_transient(server):
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]  # bound but not listening: connections are refused
        with pytest.raises(errors.TransientError, match='refused'):
            make_client(server, 'accountdb.url=http://127.0.0.1:{0}'.format(port)).health()


def test_client_reconnects_after_the_server_is_killed_and_restarted(dev_accountdb):
    client = make_client(dev_accountdb)
    assert client.health()['status'] == 'ok'
    dev_accountdb.kill()
    with pytest.raises(errors.TransientError):
        client.health()
    dev_accountdb.restart()
    assert client.health()['status'] == 'ok'  # same Client and Session, new connection
    assert client.send_events('pve1', [event('after-restart')])[0]['status'] == 'accepted'


def test_events_survive_a_killed_server(dev_accountdb):
    client = make_client(dev_accountdb)
    client.send_events('pve1', events('durable', 50))
    dev_accountdb.kill()
    assert len(dev_accountdb.events()) == 50
    dev_accountdb.restart()
    assert {r['status'] for r in client.send_events('pve1', events('durable', 50))} == {'duplicate'}


# -- bisection ---------------------------------------------------------------------

@pytest.mark.parametrize('as_status', ['400', '413', '422'])
def test_bisect_isolates_the_one_event_the_server_refuses(server, as_status):
    batch = events('bisect' + as_status, 16)
    bad = batch[11]['event_id']
    server.set_faults([{'mode': 'reject', 'event_ids': [bad], 'as': as_status}])
    results = make_client(server).send_events_bisect('pve1', batch)
    assert set(results) == {e['event_id'] for e in batch}
    assert results[bad]['status'] == 'rejected' and as_status in results[bad]['error']
    assert all(r['status'] == 'accepted' for key, r in results.items() if key != bad)
    requests_made = stat(server, 'POST /api/v1/events')['count']
    assert requests_made <= 1 + 2 * 4  # one full batch, then two halves per level for log2(16) levels
    stored = {row['event_id'] for row in server.events()}
    assert bad not in stored and len(stored & set(results)) == 15


def test_bisect_keeps_per_event_rejections_without_splitting(server):
    batch = events('result-reject', 4)
    server.set_faults([{'mode': 'reject', 'event_ids': [batch[2]['event_id']]}])
    results = make_client(server).send_events_bisect('pve1', batch)
    assert results[batch[2]['event_id']]['status'] == 'rejected'
    assert stat(server, 'POST /api/v1/events')['count'] == 1


def test_bisect_with_two_bad_events(server):
    batch = events('two-bad', 10)
    bad = {batch[0]['event_id'], batch[9]['event_id']}
    server.set_faults([{'mode': 'reject', 'event_ids': sorted(bad), 'as': '422'}])
    results = make_client(server).send_events_bisect('pve1', batch)
    assert {k for k, r in results.items() if r['status'] == 'rejected'} == bad


def test_bisect_propagates_transient_failures(server):
    batch = events('bisect-transient', 4)
    server.set_faults([{'mode': 'reject', 'event_ids': [batch[0]['event_id']], 'as': '400'},
                       {'mode': 'status', 'status': 503, 'path': '/api/v1/events', 'after': 1, 'count': 1}])
    with pytest.raises(errors.TransientError):  # the batch is refused, then its first half meets a 503
        make_client(server).send_events_bisect('pve1', batch)
    assert stat(server, 'POST /api/v1/events')['status'] == {'400': 1, '503': 1}


def test_oversized_batch_is_split_by_413(server):
    batch = events('big', 8)
    server.set_faults({'max_body_bytes': 1200, 'rules': []})
    results = make_client(server, 'accountdb.gzip_min_bytes=1000000').send_events_bisect('pve1', batch)
    assert {r['status'] for r in results.values()} == {'accepted'}
    assert stat(server, 'POST /api/v1/events')['status'].get('413', 0) >= 1


# -- token -------------------------------------------------------------------------

def test_token_rotation_is_picked_up_without_a_new_client(server, tmp_path):
    token_file = str(tmp_path / 'client-token')
    DevAccountDB.write_token(token_file, 'an-old-token')
    client = accountdb.Client(server.settings(token_file=token_file, directory=tmp_path))
    with pytest.raises(errors.AuthError) as caught:
        client.health()
    assert caught.value.status == 401
    DevAccountDB.write_token(token_file, server.token)  # the operator rotates the file
    assert client.health()['status'] == 'ok'


def test_missing_token_file_is_an_auth_error_without_a_request(server, tmp_path):
    client = accountdb.Client(server.settings(token_file=str(tmp_path / 'missing'), directory=tmp_path))
    with pytest.raises(errors.AuthError, match='token file not found') as caught:
        client.health()
    assert caught.value.status is None
    assert stat(server, 'GET /api/v1/health')['count'] == 0


def test_insecure_token_file_is_an_auth_error(server, tmp_path):
    token_file = tmp_path / 'loose-token'
    token_file.write_text(server.token)
    os.chmod(token_file, 0o644)
    with pytest.raises(errors.AuthError, match='chmod 600'):
        accountdb.Client(server.settings(token_file=str(token_file), directory=tmp_path)).health()


def test_token_never_appears_in_logs_or_errors(server, caplog):
    caplog.set_level(logging.DEBUG)
    client = make_client(server)
    client.health()
    server.set_faults([{'mode': 'garbage', 'body': 'echo: Bearer ' + server.token, 'count': 1},
                       {'mode': 'status', 'status': 500, 'count': 1}])
    with pytest.raises(errors.TransientError):
        client.health()
    with pytest.raises(errors.TransientError):
        client.heartbeat('pve1', {'node': 'pve1'})
    assert server.token not in caplog.text
    assert 'GET /api/v1/health -> 200' in caplog.text


def test_a_reason_echoing_the_token_is_scrubbed(server):
    server.set_faults([{'mode': 'status', 'status': 400, 'message': 'bad header Bearer ' + server.token,
                        'count': 1}])
    with pytest.raises(errors.RejectedError) as caught:
        make_client(server).health()
    assert server.token not in str(caught.value) and server.token not in repr(caught.value)
    assert 'bad header Bearer <token>' in caught.value.reason


# -- gzip, proxies, logging, metrics -----------------------------------------------

def test_bodies_at_or_above_the_threshold_are_gzipped(server):
    client = make_client(server, 'accountdb.gzip_min_bytes=600')
    client.send_events('pve1', [event('small-1')])
    client.send_events('pve1', events('gzip', 10))
    entry = stat(server, 'POST /api/v1/events')
    assert entry['count'] == 2 and entry['gzip'] == 1
    assert {row['event_id'] for row in server.events()} >= {'small-1', 'gzip-9'}


def test_zero_threshold_compresses_everything(server):
    make_client(server, 'accountdb.gzip_min_bytes=0').heartbeat('pve1', {'node': 'pve1'})
    assert stat(server, 'POST /api/v1/nodes/{node}/heartbeat')['gzip'] == 1


def test_proxies_come_from_the_environment(server, monkeypatch):
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        dead = probe.getsockname()[1]
    for name in ('NO_PROXY', 'no_proxy'):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv('HTTP_PROXY', 'http://127.0.0.1:{0}'.format(dead))
    monkeypatch.setenv('http_proxy', 'http://127.0.0.1:{0}'.format(dead))
    with pytest.raises(errors.TransientError):
        make_client(server).health()  # went to the (dead) proxy
    monkeypatch.setenv('NO_PROXY', '127.0.0.1')
    monkeypatch.setenv('no_proxy', '127.0.0.1')
    assert make_client(server).health()['status'] == 'ok'


def test_debug_log_has_structured_fields(server, caplog):
    caplog.set_level(logging.DEBUG, logger='pve_hooks.accountdb.client')
    make_client(server).send_events('pve1', [event('logged-1')], attempt=3)
    record = [r for r in caplog.records if r.name == 'pve_hooks.accountdb.client'][-1]
    assert record.HTTP_STATUS == 200 and isinstance(record.DURATION_MS, int) and record.BATCH_SIZE == 1
    assert 'POST /api/v1/events -> 200' in record.getMessage() and 'attempt 3' in record.getMessage()
    assert 'logged-1' not in record.getMessage()  # no bodies in the log


class Recorder:
    def __init__(self):
        self.calls = []

    def on_request(self, method, endpoint, status_class, duration_s):
        self.calls.append((method, endpoint, status_class, duration_s >= 0))


def test_metrics_hook_counts_requests_by_status_class(server):
    metrics = Recorder()
    client = make_client(server, metrics=metrics)
    client.health()
    server.set_faults([{'mode': 'status', 'status': 503, 'count': 1}])
    with pytest.raises(errors.TransientError):
        client.health()
    server.set_faults([{'mode': 'refuse', 'count': 1}])
    with pytest.raises(errors.TransientError):
        client.health()
    assert metrics.calls == [('GET', 'health', '2xx', True), ('GET', 'health', '5xx', True),
                             ('GET', 'health', 'error', True)]

