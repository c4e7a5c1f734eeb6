"""Client pieces that need no network: answer validation, URLs, encoding, verification."""

import gzip
import json

import pytest

from pve_hooks.accountdb import client as accountdb
from pve_hooks.config import loader as config
from pve_hooks.accountdb import errors


def settings(*overrides):
    return config.load(env={}, require_file=False, overrides=['node=pve1', 'accountdb.url=https://adb.example:8443/']
                       + list(overrides))


def sent(*ids):
    return [{'event_id': event_id} for event_id in ids]


def test_results_are_aligned_with_the_events_sent():
    answer = {'results': [{'event_id': 'b', 'status': 'duplicate'}, {'event_id': 'a', 'status': 'accepted'}]}
    assert accountdb.validate_results(sent('a', 'b'), answer) == [
        {'event_id': 'a', 'status': 'accepted'}, {'event_id': 'b', 'status': 'duplicate'}]


def test_rejected_results_always_carry_a_one_line_reason():
    answer = {'results': [{'event_id': 'a', 'status': 'rejected', 'error': 'bad\nvmid'},
                          {'event_id': 'b', 'status': 'rejected'}]}
    results = accountdb.validate_results(sent('a', 'b'), answer)
    assert results[0]['error'] == 'bad vmid'
    assert results[1]['error'] == 'rejected by AccountDB (no reason given)'


@pytest.mark.parametrize('answer', [
    None, [], {}, {'results': {}},
    {'results': [{'event_id': 'a', 'status': 'accepted'}]},                                      # b missing
    {'results': [{'event_id': 'a', 'status': 'accepted'}, {'event_id': 'a', 'status': 'accepted'},
                 {'event_id': 'b', 'status': 'accepted'}]},                                     # a twice
    {'results': [{'event_id': 'a', 'status': 'ok'}, {'event_id': 'b', 'status': 'accepted'}]},  # bad status
    {'results': [{'event_id': 'a', 'status': 'accepted'}, {'event_id': 'b', 'status': 'accepted'},
                 {'event_id': 'c', 'status': 'accepted'}]},                                     # c not sent
    {'results': [{'event_id': 1, 'status': 'accepted'}, {'event_id': 'b', 'status': 'accepted'}]},
    {'results': ['a', 'b']},
])
def test_answers_that_do_not_answer_every_event_exactly_once_are_malformed(answer):
    with pytest.raises(errors.TransientError, match='malformed'):
        accountdb.validate_results(sent('a', 'b'), answer)


def test_urls_join_base_and_configured_paths_with_the_node_quoted():
    client = accountdb.Client(settings('accountdb.endpoints.inventory=/v9/{node}/inv'))
    assert client.url('health') == 'https://adb.example:8443/api/v1/health'
    assert client.url('inventory', node='a b/c') == 'https://adb.example:8443/v9/a%20b%2Fc/inv'


def test_no_url_is_a_configuration_error():
    client = accountdb.Client(settings('accountdb.url='))
    with pytest.raises(errors.ConfigurationError, match='accountdb.url'):
        client.url('health')


def test_bodies_are_gzipped_at_the_threshold():
    client = accountdb.Client(settings('accountdb.gzip_min_bytes=20'))
    small, big = {}, {}
    assert client._encode({'a': 1}, small) == b'{"a":1}' and 'Content-Encoding' not in small
    body = {'padding': 'x' * 9}  # exactly 21 bytes of JSON
    data = client._encode(body, big)
    assert big['Content-Encoding'] == 'gzip' and json.loads(gzip.decompress(data)) == body


@pytest.mark.parametrize('overrides, expected', [
    ((), True), (('accountdb.ca_bundle=/etc/pve-hooks/ca.pem',), '/etc/pve-hooks/ca.pem'),
    (('accountdb.verify_tls=false', 'accountdb.ca_bundle=/etc/pve-hooks/ca.pem'), False)])
def test_tls_verification_setting(overrides, expected):
    assert accountdb.Client(settings(*overrides))._verify() == expected


def test_token_errors_become_auth_errors_naming_the_file(tmp_path):
    def reader(path):
        raise config.TokenError('{0}: token file is empty; write the AccountDB token into it'.format(path))

    client = accountdb.Client(settings('accountdb.token_file=' + str(tmp_path / 't')), token_reader=reader)
    with pytest.raises(errors.AuthError, match='token file is empty'):
        client.health()


def test_the_session_is_injected_and_closed():
    class Session:
        closed = False

        def close(self):
            self.closed = True

    session = Session()
    client = accountdb.Client(settings(), session=session)
    client.close()
    assert session.closed


def test_token_is_registered_for_redaction_when_read(tmp_path):
    from pve_hooks.accountdb import client as accountdb
    from pve_hooks.config import loader as config
    from pve_hooks.observe import logs as logsetup

    logsetup.clear_secrets()
    token = tmp_path / 'token'
    token.write_text('tok-REDACT-ME-42\n')
    token.chmod(0o600)
    settings = config.load(env={}, require_file=False, overrides=[
        'accountdb.url=http://127.0.0.1:9', 'accountdb.token_file={0}'.format(token)])
    client = accountdb.Client(settings)
    assert 'tok-REDACT-ME-42' in logsetup.redact('leaked tok-REDACT-ME-42 here')
    client._read_token()
    assert 'tok-REDACT-ME-42' not in logsetup.redact('leaked tok-REDACT-ME-42 here')
    logsetup.clear_secrets()
