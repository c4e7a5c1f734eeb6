"""Unit tests for pve_hooks.hook.miniyaml: the subset reads like PyYAML, the rest fails with file:line."""

import pytest
import yaml

from pve_hooks.hook import miniyaml
from pve_hooks.config import sample

SUBSET = '''---
# comment
node: pve1   # trailing comment
paths:
  spool_dir: "/var/spool/pve hooks"
  state_dir: '/var/lib/it''s'
hook:
    on_error: abort
    chain_timeout: 2.5
    neg: -3
    plus: +7
    zero: 0
    exp: 1.0e+3
    dot: .5
    words: [a, 'b c', "d\\te", 4, yes, ~]
    empty_list: []
    flags: [true, false]
    t1: yes
    t2: On
    f1: no
    f2: FALSE
    n1: null
    n2: ~
    n3:
    url: http://x:8080/path#frag
    hash: a#b
    unicode: "\\u00e9t\\u00e9"
    x: 'single # not a comment'
outbox:
  max_events: 10
'''


def test_subset_reads_exactly_like_pyyaml():
    assert miniyaml.loads(SUBSET) == yaml.safe_load(SUBSET)


def test_generated_sample_with_everything_uncommented_reads_like_pyyaml():
    body = sample.render_sample().split('\n\n', 1)[1]  # skip the header paragraph
    lines = [line[2:] for line in body.splitlines()
             if line.startswith('# ') and not line[2:].lstrip().startswith('#')]
    text = '\n'.join(lines) + '\n'
    data = yaml.safe_load(text)
    assert isinstance(data, dict) and 'hook' in data and 'outbox' in data
    assert miniyaml.loads(text) == data


def test_empty_and_comment_only():
    assert miniyaml.loads('') == {}
    assert miniyaml.loads('# nothing\n\n') == {}


def test_crlf_and_bom():
    assert miniyaml.loads('\ufeffa: 1\r\nb:\r\n  c: x\r\n') == {'a': 1, 'b': {'c': 'x'}}


@pytest.mark.parametrize('text, line, words', [
    ('a: 1\nb:\n\t c: 2\n', 3, 'tab'),
    ('a:\n  - x\n', 2, 'block lists'),
    ('- x\n', 1, 'block lists'),
    ('a: &anchor 1\n', 1, 'outside the supported subset'),
    ('a: *alias\n', 1, 'outside the supported subset'),
    ('a: !!str 1\n', 1, 'outside the supported subset'),
    ('a: |\n  text\n', 1, 'outside the supported subset'),
    ('a: {b: 1}\n', 1, 'outside the supported subset'),
    ('a: 0700\n', 1, 'ambiguous number'),
    ('a: 0x1f\n', 1, 'ambiguous number'),
    ('a: 1_000\n', 1, 'ambiguous number'),
    ('a: 2026-01-01\n', 1, 'ambiguous number or date'),
    ('a: 1e3\n', 1, 'ambiguous number'),
    ('a: .inf\n', 1, 'ambiguous number'),
    ('a: 1:30\n', 1, 'ambiguous number'),
    ('a: 1\na: 2\n', 2, 'duplicate key'),
    ('a:\n  b: 1\n c: 2\n', 3, 'indentation'),
    ('a: 1\n  b: 2\n', 2, 'indentation'),
    ('  a: 1\n', 1, 'indented'),
    ('just text\n', 1, 'key: value'),
    ('a: "open\n', 1, 'unterminated'),
    ("a: 'open\n", 1, 'unterminated'),
    ('a: [1, 2\n', 1, 'unterminated list'),
    ('a: [[1]]\n', 1, 'nested'),
    ('a: [1,, 2]\n', 1, 'empty'),
    ('a: "x" y\n', 1, 'after the value'),
    ('a: b: c\n', 1, 'contains ": "'),
    ('a: "\\q"\n', 1, 'unsupported escape'),
    ('"a": 1\n', 1, 'key'),
    ('yes: 1\n', 1, 'not read as text'),
    ('x:\n  1: 2\n', 2, 'not read as text'),
])
def test_outside_the_subset_fails_with_file_and_line(text, line, words):
    with pytest.raises(miniyaml.MiniYamlError) as info:
        miniyaml.loads(text, '/etc/pve-hooks/config.yaml')
    assert str(info.value).startswith('/etc/pve-hooks/config.yaml:{0}: '.format(line))
    assert words in str(info.value)


def test_load_file_rejects_non_utf8(tmp_path):
    path = tmp_path / 'c.yaml'
    path.write_bytes(b'a: 1\nb: \xff\n')
    with pytest.raises(miniyaml.MiniYamlError, match=r'c.yaml:2: not UTF-8'):
        miniyaml.load_file(str(path))


def test_does_not_import_re():
    import subprocess
    import sys
    out = subprocess.run([sys.executable, '-I', '-c', 'import sys; b = set(sys.modules); '
                          'import pve_hooks.hook.miniyaml; print(sorted(set(sys.modules) - b))'],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['pve_hooks', 'pve_hooks.hook', 'pve_hooks.hook.miniyaml']"
