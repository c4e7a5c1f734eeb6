"""Property-based tests of the hookscript's hot path (Hypothesis): its YAML reader against PyYAML,
events' encode/parse/validate round trips, and outbox file names.

Example counts stay modest (the default suite must stay fast).
"""

import json
import string
import uuid

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from pve_hooks.config import loader
from pve_hooks.hook import event, miniyaml, spool

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# -- the YAML reader -----------------------------------------------------------------------------------------

KEYS = st.text(alphabet=string.ascii_lowercase + '_', min_size=1, max_size=6)
# Raw text written as it is after "key: ": YAML syntax characters included, so both readers meet the odd cases.
RAW = st.text(alphabet='abyn01 .:#-_/e+\'"[],&*!?|>%@`{}~\\\t', min_size=1, max_size=10)
SCALARS = st.one_of(
    st.integers(-10 ** 12, 10 ** 12).map(str),
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr),
    st.text(max_size=12).map(json.dumps),                                # double-quoted, escapes included
    st.text(alphabet=string.printable, max_size=12).map(lambda t: "'" + t.replace("'", "''") + "'"),
    st.sampled_from(['true', 'no', 'On', 'null', '~', '', 'yes # c', '0x1F', '012', '1_000', '2026-12-05',
                     '1:30', '.inf', '-.5', '+3', '1e3', '1.0e+3', '[a, b]', '[1, "x", ~]', '[]', '[a, [b]]',
                     '{a: 1}', '- x', 'a: b', 'a #b', 'a# b', '&anchor x', '*alias', '!!str 1', '|', '>']),
    RAW,
)


@st.composite
def documents(draw, depth=0):
    """A YAML document of nested block mappings (as lines), some with odd indentation or values."""
    lines = []
    indent = draw(st.sampled_from([2, 2, 4])) if depth else 0
    for key in draw(st.lists(KEYS, min_size=1, max_size=4, unique=True)):
        if depth < 3 and draw(st.booleans()):
            lines.append(' ' * indent + key + ':')
            lines.extend(' ' * indent + line for line in draw(documents(depth + 1)))
        else:
            lines.append(' ' * indent + key + ': ' + draw(SCALARS))
    return lines


def _pyyaml(text):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return 'PyYAML refused'


@SETTINGS
@given(documents())
def test_where_miniyaml_reads_a_document_pyyaml_reads_it_alike(lines):
    text = '\n'.join(lines) + '\n'
    try:
        ours = miniyaml.loads(text)
    except miniyaml.MiniYamlError as error:
        assert str(error).startswith('<string>:') and '\n' not in str(error)
        return
    theirs = _pyyaml(text)
    assert ours == ({} if theirs is None else theirs), text
    assert json.dumps(ours, sort_keys=True) == json.dumps(theirs or {}, sort_keys=True), text  # types too


@SETTINGS
@given(documents())
def test_where_miniyaml_refuses_a_document_config_check_refuses_it_too(tmp_path, lines):
    path = tmp_path / 'config.yaml'
    path.write_text('\n'.join(lines) + '\n')
    try:
        miniyaml.load_file(str(path))
    except miniyaml.MiniYamlError:
        with pytest.raises(loader.ConfigError) as refused:
            loader.check_hookscript_reads(loader.Settings({}, {}, file=str(path)))
        assert str(path) in refused.value.errors[0]


@settings(max_examples=25, deadline=None)
@given(st.integers(21, 60))
def test_both_readers_refuse_deep_nesting_in_one_line(depth):
    text = ''.join(' ' * level + 'k{0}:\n'.format(level) for level in range(depth)) + ' ' * depth + 'x: 1\n'
    with pytest.raises(miniyaml.MiniYamlError, match='nested deeper than 20 levels'):
        miniyaml.loads(text)
    with pytest.raises(yaml.YAMLError, match='nested deeper than 20 levels'):
        yaml.load(text, Loader=loader._bounded_loader())  # noqa: S506 - a SafeLoader subclass


# -- events ---------------------------------------------------------------------------------------------------

NODE_TEXT = st.text(min_size=1, max_size=40).filter(lambda t: '\x00' not in t)
EVENTS = st.builds(
    event.make_event,
    st.binary(min_size=16, max_size=16).map(event.new_event_id),
    NODE_TEXT,
    st.integers(event.VMID_MIN, event.VMID_MAX),
    st.sampled_from(event.GUEST_TYPES),
    st.sampled_from(event.PHASES),
    st.integers(0, 253402300799 * 10 ** 9).map(event.format_time),   # up to 9999-12-31
    st.integers(0, 2 ** 63),
    st.one_of(st.none(), NODE_TEXT),
)


@SETTINGS
@given(EVENTS)
def test_an_event_survives_encode_decode_validate(ev):
    data = event.encode(ev)
    assert data.endswith(b'\n') and data.isascii() and data.count(b'\n') == 1
    decoded = json.loads(data)
    assert event.validate(decoded) == ev and list(decoded) == list(ev)
    assert uuid.UUID(decoded['event_id']).version == 4


@SETTINGS
@given(st.dictionaries(st.sampled_from(event.FIELD_ORDER + ('extra',)),
                       st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=40))))
def test_validate_accepts_or_names_a_field_never_anything_else(candidate):
    try:
        assert event.validate(candidate) is candidate
    except event.EventError as error:
        assert str(error).startswith('event field ') and '\n' not in str(error)


@SETTINGS
@given(st.text(max_size=12))
def test_parse_vmid_takes_ascii_digits_in_range_only(text):
    try:
        vmid = event.parse_vmid(text)
    except event.EventError as error:
        assert 'is not a number from 100 to 999999999' in str(error)
        return
    assert text.isascii() and str(vmid) == text and event.VMID_MIN <= vmid <= event.VMID_MAX


# -- outbox file names ----------------------------------------------------------------------------------------

@SETTINGS
@given(st.integers(0, 10 ** 20 - 1), st.integers(1, 10 ** 12), st.binary(min_size=16, max_size=16))
def test_an_event_name_parses_back(seq, vmid, raw):
    event_id = event.new_event_id(raw)
    name = spool.event_name(seq, vmid, event_id)
    assert spool.parse_name(name) == (seq, vmid, event_id)


@SETTINGS
@given(st.integers(0, 10 ** 20 - 1), st.integers(0, 10 ** 20 - 1))
def test_names_sort_by_seq(first, second):
    assume(first != second)
    names = sorted([spool.event_name(first, 100, 'a'), spool.event_name(second, 100, 'b')])
    assert [spool.parse_name(name)[0] for name in names] == sorted([first, second])


@SETTINGS
@given(st.text(alphabet='0123456789-abcdefgjson.٠١', max_size=60))
def test_parse_name_never_raises_and_what_it_accepts_is_canonical(name):
    parsed = spool.parse_name(name)
    if parsed is not None:
        assert spool.event_name(*parsed) == name
