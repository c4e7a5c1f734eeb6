"""inventory: row normalisation, refusal of partial reads, hashing, .vmlist and guest configs."""

import json

import pytest

from pve_hooks.proxmox import inventory
from pve_hooks.proxmox.pvesh import PveshError

QEMU = [
    {'vmid': 101, 'name': 'db', 'status': 'stopped', 'cpus': 2, 'maxmem': 2147483648, 'maxdisk': 34359738368,
     'uptime': 0, 'template': 1},
    {'vmid': 100, 'name': 'web', 'status': 'running', 'cpus': 1, 'maxmem': 536870912, 'maxdisk': 0,
     'uptime': 4242, 'tags': 'prod;web', 'lock': 'backup', 'pid': 1100, 'serial': 0},
]
LXC = [{'vmid': 200, 'type': 'lxc', 'name': 'ct1', 'status': 'running', 'cpus': 1.5, 'maxmem': 536870912,
        'maxdisk': 8589934592, 'uptime': '12', 'pressurecpusome': '0.00'}]


def answers(**by_type):
    """A pvesh_run returning canned data per guest type; an Exception value is raised."""
    calls = []

    def run(settings, path):
        calls.append(path)
        value = by_type[path.rsplit('/', 1)[1]]
        if isinstance(value, Exception):
            raise value
        return value
    run.calls = calls
    return run


def test_reads_both_types_normalised_and_sorted():
    run = answers(qemu=QEMU, lxc=LXC)
    guests = inventory.read_guests({}, 'pve1', run)
    assert run.calls == ['/nodes/pve1/qemu', '/nodes/pve1/lxc']
    assert [g['vmid'] for g in guests] == [100, 101, 200]
    assert guests[0] == {'vmid': 100, 'type': 'qemu', 'name': 'web', 'status': 'running', 'template': False,
                         'maxmem': 536870912, 'maxdisk': 0, 'uptime': 4242, 'cpus': 1, 'lock': 'backup',
                         'tags': ['prod', 'web']}
    assert guests[1]['template'] is True and guests[1]['lock'] is None and guests[1]['tags'] == []
    assert guests[2]['type'] == 'lxc' and guests[2]['uptime'] == 12 and guests[2]['cpus'] == 1.5


def test_empty_only_when_both_calls_succeed_empty():
    assert inventory.read_guests({}, 'pve1', answers(qemu=[], lxc=[])) == []


@pytest.mark.parametrize('qemu, lxc', [
    (PveshError('pvesh get /nodes/pve1/qemu: failed'), []),
    ([], PveshError('pvesh get /nodes/pve1/lxc: no answer')),
    (QEMU, PveshError('pvesh get /nodes/pve1/lxc: failed mid-way')),
])
def test_a_failed_call_raises_never_partial(qemu, lxc):
    with pytest.raises(PveshError):
        inventory.read_guests({}, 'pve1', answers(qemu=qemu, lxc=lxc))


@pytest.mark.parametrize('row, words', [
    ('not a dict', ['expected an object']),
    ({'name': 'x', 'status': 'running'}, ['no vmid']),
    ({'vmid': 'abc', 'status': 'running'}, ["'vmid'", 'positive integer']),
    ({'vmid': 0, 'status': 'running'}, ["'vmid'"]),
    ({'vmid': 100}, ["'status'"]),
    ({'vmid': 100, 'status': ''}, ["'status'"]),
    ({'vmid': 100, 'status': 'running', 'type': 'lxc'}, ["'type'"]),
    ({'vmid': 100, 'status': 'running', 'name': 5}, ["'name'"]),
    ({'vmid': 100, 'status': 'running', 'template': 'yes'}, ["'template'"]),
    ({'vmid': 100, 'status': 'running', 'maxmem': -1}, ["'maxmem'"]),
    ({'vmid': 100, 'status': 'running', 'maxdisk': 1.5}, ["'maxdisk'"]),
    ({'vmid': 100, 'status': 'running', 'uptime': None}, ["'uptime'"]),
    ({'vmid': 100, 'status': 'running', 'cpus': 'many'}, ["'cpus'"]),
    ({'vmid': 100, 'status': 'running', 'lock': 1}, ["'lock'"]),
    ({'vmid': 100, 'status': 'running', 'tags': ['a']}, ["'tags'"]),
])
def test_any_malformed_row_raises_naming_it(row, words):
    with pytest.raises(inventory.InventoryError) as caught:
        inventory.read_guests({}, 'pve1', answers(qemu=[QEMU[0], row], lxc=LXC))
    message = str(caught.value)
    assert '/nodes/pve1/qemu row 1' in message and '\n' not in message
    for word in words:
        assert word in message


@pytest.mark.parametrize('answer', [{'data': []}, None, 'text'])
def test_answer_that_is_not_a_list_raises(answer):
    with pytest.raises(inventory.InventoryError, match='expected a list'):
        inventory.read_guests({}, 'pve1', answers(qemu=answer, lxc=[]))


def test_vmid_twice_raises():
    with pytest.raises(inventory.InventoryError, match='vmid 200 listed twice'):
        inventory.read_guests({}, 'pve1', answers(qemu=[{'vmid': 200, 'status': 'stopped'}], lxc=LXC))


def test_inventory_errors_are_pvesh_errors():
    assert issubclass(inventory.InventoryError, PveshError)


def test_split_tags():
    assert inventory.split_tags('a;b,c d;;a') == ['a', 'b', 'c', 'd']
    assert inventory.split_tags('') == []


def test_build_inventory_sorts_and_stamps():
    guests = inventory.read_guests({}, 'pve1', answers(qemu=QEMU, lxc=LXC))
    doc = inventory.build_inventory('pve1', 'clu', list(reversed(guests)), clock=lambda: 0)
    assert doc['node'] == 'pve1' and doc['cluster'] == 'clu'
    assert doc['generated_at'] == '1970-01-01T00:00:00Z'
    assert [g['vmid'] for g in doc['guests']] == [100, 101, 200]
    json.dumps(doc)


def test_content_hash_ignores_time_and_uptime_but_not_content():
    guests = inventory.read_guests({}, 'pve1', answers(qemu=QEMU, lxc=LXC))
    one = inventory.build_inventory('pve1', None, guests, clock=lambda: 1)
    later = [dict(g, uptime=g['uptime'] + 60) for g in reversed(guests)]
    two = inventory.build_inventory('pve1', None, later, clock=lambda: 99999)
    assert inventory.content_hash(one) == inventory.content_hash(two)
    changed = inventory.build_inventory('pve1', None, [dict(guests[0], status='stopped')] + guests[1:])
    assert inventory.content_hash(changed) != inventory.content_hash(one)
    assert inventory.content_hash(inventory.build_inventory('pve2', None, guests)) != inventory.content_hash(one)
    assert len(inventory.content_hash(one)) == 64


def test_read_vmlist(tmp_path):
    assert inventory.read_vmlist(str(tmp_path)) is None
    (tmp_path / '.vmlist').write_text(json.dumps({'version': 7, 'ids': {
        '100': {'node': 'pve1', 'type': 'qemu', 'version': 3},
        '200': {'node': 'pve2', 'type': 'lxc', 'version': 5}}}))
    assert inventory.read_vmlist(str(tmp_path)) == (7, {100: {'node': 'pve1', 'type': 'qemu', 'version': 3},
                                                        200: {'node': 'pve2', 'type': 'lxc', 'version': 5}})
    (tmp_path / '.vmlist').write_text('{"version": 1}')
    assert inventory.read_vmlist(str(tmp_path)) == (1, {})


@pytest.mark.parametrize('content, words', [
    ('{"version": ', 'not valid JSON'),
    (b'\xff\xfe', 'not valid JSON'),
    ('[1]', 'integer "version"'),
    ('{"version": "3"}', 'integer "version"'),
    ('{"version": 3, "ids": []}', '"ids" should be an object'),
    ('{"version": 3, "ids": {"x": {"node": "a", "type": "qemu"}}}', "malformed entry for id 'x'"),
    ('{"version": 3, "ids": {"100": {"node": "a", "type": "kvm"}}}', "malformed entry for id '100'"),
])
def test_corrupt_vmlist_is_a_clear_error(tmp_path, content, words):
    path = tmp_path / '.vmlist'
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(inventory.VmlistError) as caught:
        inventory.read_vmlist(str(tmp_path))
    assert str(path) in str(caught.value) and words in str(caught.value)


def write(tmp_path, relative, text):
    path = tmp_path / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_list_guest_configs(tmp_path):
    for relative in ('nodes/pve1/qemu-server/101.conf', 'nodes/pve1/qemu-server/100.conf',
                     'nodes/pve1/lxc/150.conf', 'nodes/pve1/lxc/150.conf.tmp', 'nodes/pve1/lxc/abc.conf',
                     'nodes/pve2/qemu-server/300.conf'):
        write(tmp_path, relative, 'name: x\n')
    found = inventory.list_guest_configs(str(tmp_path), 'pve1')
    assert [(vmid, kind) for vmid, kind, _ in found] == [(100, 'qemu'), (101, 'qemu'), (150, 'lxc')]
    assert found[2][2] == str(tmp_path / 'nodes/pve1/lxc/150.conf')
    assert inventory.list_guest_configs(str(tmp_path), 'nowhere') == []
