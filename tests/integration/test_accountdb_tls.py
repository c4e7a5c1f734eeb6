"""TLS: verification is on by default, a private CA works through accountdb.ca_bundle,
and a failed verification is a configuration error (never a dead letter)."""

import pytest

from pve_hooks.accountdb import client as accountdb
from pve_hooks.accountdb import errors
from tests.support.accountdb import make_self_signed, run_dev_accountdb


@pytest.fixture(scope='module')
def tls_server(tmp_path_factory):
    directory = tmp_path_factory.mktemp('accountdb-tls')
    with run_dev_accountdb(directory, tls=make_self_signed(directory)) as server:
        yield server


def test_server_speaks_https(tls_server):
    assert tls_server.url.startswith('https://127.0.0.1:')


def test_ca_bundle_verifies_a_private_ca(tls_server):
    assert accountdb.Client(tls_server.settings()).health()['status'] == 'ok'


def test_unknown_certificate_is_a_configuration_error(tls_server, monkeypatch):
    monkeypatch.delenv('REQUESTS_CA_BUNDLE', raising=False)
    monkeypatch.delenv('CURL_CA_BUNDLE', raising=False)
    client = accountdb.Client(tls_server.settings('accountdb.ca_bundle='))
    with pytest.raises(errors.ConfigurationError) as caught:
        client.send_events('pve1', [{'event_id': 'tls-1', 'vmid': 100, 'phase': 'pre-start', 'seq': 1,
                                     'occurred_at': 't'}])
    assert caught.value.kind == 'configuration' and caught.value.status is None
    assert 'TLS verification' in caught.value.reason and 'accountdb.ca_bundle' in caught.value.reason
    assert tls_server.events() == []


def test_missing_ca_bundle_file_is_a_configuration_error(tls_server, tmp_path):
    client = accountdb.Client(tls_server.settings('accountdb.ca_bundle=' + str(tmp_path / 'nope.pem')))
    with pytest.raises(errors.ConfigurationError, match='accountdb.ca_bundle'):
        client.health()


def test_verification_can_be_switched_off(tls_server):
    client = accountdb.Client(tls_server.settings('accountdb.ca_bundle=', 'accountdb.verify_tls=false'))
    assert client.health()['status'] == 'ok'


def test_plain_http_client_against_tls_server_is_transient(tls_server):
    # The server cannot answer in plain HTTP, it only closes: indistinguishable from a crash, so transient.
    client = accountdb.Client(tls_server.settings('accountdb.url=' + tls_server.url.replace('https', 'http')))
    with pytest.raises(errors.TransientError, match='without a response'):
        client.health()


def test_https_client_against_plain_server_is_a_configuration_error(tmp_path):
    with run_dev_accountdb(tmp_path) as server:
        client = accountdb.Client(server.settings('accountdb.url=' + server.url.replace('http', 'https')))
        with pytest.raises(errors.ConfigurationError, match='TLS'):
            client.health()
