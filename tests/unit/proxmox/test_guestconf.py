"""pve_hooks.proxmox.guestconf: top-section parsing of guest configs on real files."""

import pytest

from pve_hooks.proxmox import guestconf
from tests.support.guests import write_guest


def test_top_section_stops_at_the_first_section(tmp_path):
    path = write_guest(tmp_path, 100, hookscript='local:snippets/a', snapshot_hookscript='local:snippets/b')
    options = guestconf.top_section(path)
    assert options['hookscript'] == 'local:snippets/a' and 'snaptime' not in options


def test_node_guests_reads_vms_and_containers(tmp_path):
    write_guest(tmp_path, 100, name='web')
    write_guest(tmp_path, 200, kind='lxc', template=True, name='ct')
    guests, errors = guestconf.node_guests(str(tmp_path), 'pve1')
    assert errors == {}
    assert (guests[100].type, guests[100].name, guests[100].template) == ('qemu', 'web', False)
    assert (guests[200].type, guests[200].name, guests[200].template) == ('lxc', 'ct', True)


def test_unreadable_config_is_reported_not_raised(tmp_path):
    path = write_guest(tmp_path, 100)
    import os

    os.unlink(path)
    os.mkdir(path)  # a directory named like a config: open() fails
    guests, errors = guestconf.node_guests(str(tmp_path), 'pve1')
    assert guests == {} and 'cannot read' in errors[100]


def test_guests_using_scans_every_node(tmp_path):
    write_guest(tmp_path, 100, hookscript='local:snippets/x')
    write_guest(tmp_path, 300, node='pve2', hookscript='local:snippets/x')
    write_guest(tmp_path, 301, node='pve2')
    assert guestconf.guests_using(str(tmp_path), lambda v: v == 'local:snippets/x') == [100, 300]
    assert guestconf.guests_using(str(tmp_path / 'nothing'), lambda v: True) == []


def test_hookscript_only_from_top_section(tmp_path):
    def write(relative, text):
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return str(path)

    vm = write('nodes/pve1/qemu-server/100.conf',
               'boot: order=scsi0\nhookscript: local:snippets/gpu-hook\nname: web\n\n[snap1]\nhookscript: old\n')
    pending = write('nodes/pve1/qemu-server/101.conf', 'name: x\n\n[PENDING]\nhookscript: local:snippets/y\n')
    ct = write('nodes/pve1/lxc/200.conf', '#hookscript: not-this\nhostname: ct\nhookscript:local:snippets/z\n')
    assert guestconf.read_guest(vm, 100, 'qemu', 'pve1').hookscript == 'local:snippets/gpu-hook'
    assert guestconf.read_guest(pending, 101, 'qemu', 'pve1').hookscript is None
    guest = guestconf.read_guest(ct, 200, 'lxc', 'pve1')
    assert (guest.hookscript, guest.name) == ('local:snippets/z', 'ct')
    with pytest.raises(FileNotFoundError):
        guestconf.read_guest(str(tmp_path / 'nodes/pve1/qemu-server/300.conf'), 300, 'qemu', 'pve1')
