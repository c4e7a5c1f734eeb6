"""pve_hooks.guestconf: top-section parsing of guest configs on real files."""

from pve_hooks import guestconf
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
