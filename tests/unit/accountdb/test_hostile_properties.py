"""Property-based: whatever a server sends, parsing and classification give a bounded value or a kind, never an exception."""

import json
import os

from hypothesis import given, settings as hsettings, strategies as st
from requests.structures import CaseInsensitiveDict

from pve_hooks.accountdb import backoff
from pve_hooks.accountdb import client as accountdb
from pve_hooks.accountdb import errors
from pve_hooks.config import loader as config

EXAMPLES = hsettings(max_examples=200, deadline=None)

header_text = st.one_of(
    st.text(max_size=60),
    st.text(alphabet='0123456789', min_size=1, max_size=6000),
    st.builds(lambda d, n: d * n, st.sampled_from(['9', '0', '1', '²', '٣', ' ']), st.integers(1, 5000)),
    st.sampled_from(['Fri, 31 Dec 9999 23:59:59 GMT', 'Mon, 01 Jan 0001 00:00:00 GMT', '-1', '1e9', 'inf', 'nan',
                     'Thu, 26 Nov 2026 10:49:17 GMT', 'Thu, 99 Nov 2026 99:49:17 GMT']))


@EXAMPLES
@given(header_text)
def test_retry_after_is_none_or_a_bounded_number(value):
    seconds = backoff.parse_retry_after(value, now=lambda: 1.8e9)
    assert seconds is None or 0.0 <= seconds <= backoff.MAX_SECONDS


@EXAMPLES
@given(header_text)
def test_a_length_header_is_none_or_a_bounded_number(value):
    length = backoff.parse_length(value, maximum=float(2 ** 63))
    assert length is None or 0.0 <= length <= 2 ** 63


@EXAMPLES
@given(st.integers(min_value=-10, max_value=10 ** 6), st.one_of(st.none(), st.text(max_size=500)), st.booleans(),
       st.one_of(st.none(), st.floats(allow_nan=True)))
def test_any_status_is_classified_into_one_kind(status, reason, shaped, retry_after):
    error = errors.classify(status=status, reason=reason, accountdb_error=shaped, retry_after=retry_after)
    assert isinstance(error, errors.AccountDBError) and error.kind in errors.KINDS
    assert '\n' not in str(error)


bodies = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda n: b'[' * n, st.integers(0, 200000)),
    st.builds(lambda n: b'{"error":' + b'[' * n, st.integers(0, 200000)),
    st.builds(lambda n: b'{"results":' + b'{"a":' * n, st.integers(0, 200000)),
    st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=10)),
                 lambda inner: st.one_of(st.lists(inner, max_size=4),
                                         st.dictionaries(st.sampled_from(['error', 'results', 'vmids', 'status',
                                                                          'event_id']), inner, max_size=4)),
                 max_leaves=20).map(lambda value: json.dumps(value).encode()))


class _Raw:
    def __init__(self, status, headers, body):
        self.status_code = status
        self.headers = CaseInsensitiveDict(headers)
        self.body = body

    def iter_content(self, size):
        for start in range(0, len(self.body), size):
            yield self.body[start:start + size]

    def close(self):
        pass


class _Session:
    def __init__(self, answer):
        self.answer = answer

    def request(self, *args, **kwargs):
        return self.answer

    def close(self):
        pass



def _client(answer, tmp):
    token = os.path.join(tmp, 'token')
    if not os.path.exists(token):
        with open(token, 'w') as stream:
            stream.write('tok-' + 'b' * 28 + '\n')
        os.chmod(token, 0o600)
    settings = config.load(env={}, require_file=False, overrides=[
        'node=pve1', 'accountdb.url=https://adb.example', 'accountdb.token_file=' + token])
    return accountdb.Client(settings, session=_Session(answer))


@EXAMPLES
@given(st.integers(min_value=100, max_value=999), bodies,
       st.sampled_from(['application/json', 'text/html', '', 'application/json; charset=utf-8']),
       header_text, st.sampled_from(['send_events', 'get_whitelist', 'health', 'heartbeat', 'put_inventory']))
def test_any_status_and_body_end_in_a_result_or_a_kind(tmp_path_factory, status, body, content_type, retry_after,
                                                       call):
    headers = {'Content-Type': content_type, 'Retry-After': retry_after, 'Content-Length': str(len(body))}
    client = _client(_Raw(status, headers, body), str(tmp_path_factory.getbasetemp()))
    arguments = {'send_events': ('pve1', [{'event_id': 'a'}]), 'get_whitelist': (), 'health': (),
                 'heartbeat': ('pve1', {}), 'put_inventory': ('pve1', {})}[call]
    try:
        getattr(client, call)(*arguments)
    except errors.AccountDBError as error:
        assert error.kind in errors.KINDS
        if error.kind == errors.REJECTED:   # only AccountDB's own JSON error shape rejects
            assert 'json' in content_type and status in (400, 413, 422)
        if error.retry_after is not None:
            assert 0 <= error.retry_after <= backoff.MAX_SECONDS
