"""The error taxonomy: every status and exception maps to exactly one kind."""

import socket

import pytest
import requests

from pve_hooks.accountdb import errors


@pytest.mark.parametrize('status, kind', [
    (408, 'transient'), (409, 'transient'), (425, 'transient'), (429, 'transient'),
    (500, 'transient'), (502, 'transient'), (503, 'transient'), (504, 'transient'), (599, 'transient'),
    (404, 'configuration'), (405, 'configuration'), (301, 'configuration'), (415, 'configuration'),
    (410, 'configuration'), (401, 'auth'), (403, 'auth'),
    (400, 'rejected'), (413, 'rejected'), (422, 'rejected'), (412, 'conflict')])
def test_status_kinds(status, kind):
    error = errors.classify(status=status, reason='why', retry_after=3.0)
    assert error.kind == kind
    assert isinstance(error, errors.AccountDBError)
    assert error.status == status and error.retry_after == 3.0


def test_classes_match_kinds():
    assert isinstance(errors.classify(status=503), errors.TransientError)
    assert isinstance(errors.classify(status=404), errors.ConfigurationError)
    assert isinstance(errors.classify(status=401), errors.AuthError)
    assert isinstance(errors.classify(status=422), errors.RejectedError)
    assert isinstance(errors.classify(status=412), errors.PreconditionFailed)


def test_reason_is_one_bounded_line():
    error = errors.classify(status=500, reason='line one\nline two\t' + 'x' * 1000)
    assert '\n' not in error.reason and len(error.reason) <= 300
    assert str(error).startswith('HTTP 500: line one line two')


def test_config_and_auth_statuses_say_what_to_check():
    assert 'accountdb.endpoints' in errors.classify(status=404, reason='no such endpoint').reason
    assert 'token' in errors.classify(status=401, reason='bad token').reason


@pytest.mark.parametrize('exception, kind, words', [
    (requests.exceptions.ConnectionError(ConnectionRefusedError(111, 'Connection refused')),
     'transient', 'refused'),
    (requests.exceptions.ConnectionError(ConnectionResetError(104, 'reset')), 'transient', 'reset'),
    (requests.exceptions.ConnectionError(socket.gaierror(-2, 'Name or service not known')),
     'transient', 'DNS'),
    (requests.exceptions.ConnectTimeout('timed out'), 'transient', 'connecting'),
    (requests.exceptions.ReadTimeout('Read timed out.'), 'transient', 'waiting'),
    (requests.exceptions.ChunkedEncodingError('broken'), 'transient', 'malformed'),
    (requests.exceptions.SSLError('[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed '
                                  'certificate'), 'configuration', 'self-signed'),
    (requests.exceptions.SSLError('[SSL: WRONG_VERSION_NUMBER] wrong version number'), 'configuration',
     'does not speak TLS'),
    (requests.exceptions.SSLError('EOF occurred in violation of protocol'), 'transient', 'TLS error'),
    (requests.exceptions.InvalidURL('bad'), 'configuration', 'accountdb.url'),
    (requests.exceptions.MissingSchema('bad'), 'configuration', 'accountdb.url'),
    (OSError('Could not find a suitable TLS CA certificate bundle, invalid path: /x'), 'configuration',
     'accountdb.ca_bundle'),
    (RuntimeError('weird'), 'transient', 'RuntimeError'),
])
def test_exception_kinds(exception, kind, words):
    error = errors.classify(exception=exception)
    assert error.kind == kind
    assert error.status is None
    assert words in error.reason


def test_wrapped_causes_are_found():
    try:
        try:
            raise ConnectionRefusedError(111, 'Connection refused')
        except OSError as inner:
            raise requests.exceptions.ConnectionError('Max retries exceeded') from inner
    except requests.exceptions.ConnectionError as outer:
        assert errors.classify(exception=outer).reason == 'connection to AccountDB refused'


def test_malformed_is_transient():
    error = errors.malformed('not JSON', 200)
    assert error.kind == 'transient' and error.status == 200 and 'malformed' in error.reason


def test_nothing_known_is_transient():
    error = errors.classify()
    assert error.kind == 'transient' and error.status is None and error.reason
