"""pve_hooks.proxmox.snippets: storage.cfg resolution and the ours-and-unchanged rules, on real files."""

import json
import os
import stat

import pytest

from pve_hooks.proxmox import snippets
from tests.support.guests import FakeNode

VOL = 'local:snippets/accountdb-hook'


@pytest.fixture
def node(tmp_path):
    return FakeNode(tmp_path)


def _write(path, text):
    with open(path, 'w') as stream:
        stream.write(text)


def _cfg(node, text):
    _write(os.path.join(node.pve_root, 'storage.cfg'), text)


def test_storage_cfg_parsing(tmp_path):
    path = tmp_path / 'storage.cfg'
    path.write_text('# comment\ndir: local\n\tpath /var/lib/vz\n\tcontent iso,snippets\n\n'
                    'nfs: shared\n        server 10.0.0.1\n        export /x\n        content snippets\n')
    assert snippets.read_storage_cfg(str(path)) == {
        'local': {'type': 'dir', 'path': '/var/lib/vz', 'content': 'iso,snippets'},
        'shared': {'type': 'nfs', 'server': '10.0.0.1', 'export': '/x', 'content': 'snippets'}}


def test_snippets_dir_for_local_without_storage_cfg(node):
    settings = node.settings('proxmox.storage_cfg=' + os.path.join(node.root, 'missing.cfg'))
    assert snippets.snippets_dir(settings) == '/var/lib/vz/snippets'


def test_snippets_dir_of_a_mounted_storage_and_content_dirs(node):
    _cfg(node, 'nfs: shared\n\tserver x\n\tcontent snippets,iso\n\n'
               'dir: custom\n\tpath /srv/store\n\tcontent snippets\n\tcontent-dirs snippets=hooks/,iso=isos\n')
    assert snippets.snippets_dir(node.settings('proxmox.snippets_storage=shared')) == '/mnt/pve/shared/snippets'
    assert snippets.snippets_dir(node.settings('proxmox.snippets_storage=custom')) == '/srv/store/hooks'


@pytest.mark.parametrize('storage, message', [
    ('nowhere', "storage 'nowhere' is not defined in"),
    ('local-lvm', 'is of type lvmthin, which cannot hold snippets'),
])
def test_unusable_storages_are_named(node, storage, message):
    with pytest.raises(snippets.SnippetsError, match=message):
        snippets.snippets_dir(node.settings('proxmox.snippets_storage=' + storage))


def test_storage_without_snippets_content_says_how_to_enable_it(tmp_path):
    node = FakeNode(tmp_path, storage_content='iso,backup')
    with pytest.raises(snippets.SnippetsError, match='pvesm set local --content iso,backup,snippets'):
        snippets.snippets_dir(node.settings())


def test_install_copies_with_mode_0755_and_records_the_checksum(node):
    settings = node.settings()
    assert snippets.status(settings).state == snippets.MISSING
    message = snippets.install(settings)
    target = os.path.join(node.snippets, 'accountdb-hook')
    assert message == 'installed {0} ({1})'.format(target, VOL)
    assert not os.path.islink(target)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o755
    with open(target) as copy, open(node.source) as source:
        assert copy.read() == source.read()
    record = json.load(open(os.path.join(settings['paths.state_dir'], 'snippet.json')))
    assert record['path'] == target
    assert snippets.status(settings).state == snippets.CURRENT
    assert snippets.install(settings).endswith('is up to date ({0})'.format(VOL))


def test_upgrade_refreshes_our_unchanged_copy(node):
    settings = node.settings()
    snippets.install(settings)
    _write(node.source, '#!/bin/sh\n# packaged hookscript v2\nexit 0\n')
    assert snippets.status(settings).state == snippets.OUTDATED
    assert snippets.install(settings).startswith('updated ')
    assert 'v2' in open(os.path.join(node.snippets, 'accountdb-hook')).read()


def test_a_locally_changed_copy_is_left_alone_unless_forced(node):
    settings = node.settings()
    snippets.install(settings)
    target = os.path.join(node.snippets, 'accountdb-hook')
    _write(target, '#!/bin/sh\n# edited by the admin\n')
    _write(node.source, '#!/bin/sh\n# packaged hookscript v2\n')
    assert snippets.status(settings).state == snippets.MODIFIED
    with pytest.raises(snippets.SnippetsError, match='changed since pve-hooks installed it; left alone'):
        snippets.install(settings)
    with pytest.raises(snippets.SnippetsError, match='kept'):
        snippets.remove(settings)
    assert 'edited' in open(target).read()
    assert snippets.install(settings, force=True).startswith('replaced ')


def test_a_foreign_file_is_never_replaced_or_removed_without_force(node):
    settings = node.settings()
    target = os.path.join(node.snippets, 'accountdb-hook')
    _write(target, 'someone else\n')
    assert snippets.status(settings).state == snippets.FOREIGN
    with pytest.raises(snippets.SnippetsError, match='not installed by pve-hooks'):
        snippets.install(settings)
    with pytest.raises(snippets.SnippetsError, match='not installed by pve-hooks'):
        snippets.remove(settings)
    assert open(target).read() == 'someone else\n'


def test_missing_directory_is_reported_not_created(node):
    os.rmdir(node.snippets)
    settings = node.settings()
    assert snippets.status(settings).state == snippets.NO_DIR
    with pytest.raises(snippets.SnippetsError, match='does not exist, so the hookscript was not installed'):
        snippets.install(settings)
    assert not os.path.exists(node.snippets)
    assert 'nothing to remove' in snippets.remove(settings)


def test_remove_deletes_our_copy_and_the_record(node):
    settings = node.settings()
    snippets.install(settings)
    assert snippets.remove(settings).startswith('removed ')
    assert not os.path.exists(os.path.join(node.snippets, 'accountdb-hook'))
    assert snippets.read_record(settings) is None


def test_remove_keeps_a_copy_guests_still_use_on_any_node(node):
    settings = node.settings()
    snippets.install(settings)
    node.guest(300, node='pve2', hookscript=VOL)
    node.guest(301, node='pve2', hookscript='other:snippets/accountdb-hook')
    with pytest.raises(snippets.SnippetsError, match='guests 300 still use local:snippets/accountdb-hook'):
        snippets.remove(settings)
    assert os.path.exists(os.path.join(node.snippets, 'accountdb-hook'))
    assert snippets.remove(settings, force=True).startswith('removed ')


def test_missing_packaged_hookscript_is_named(node):
    os.unlink(node.source)
    _write(os.path.join(node.snippets, 'accountdb-hook'), 'x')
    with pytest.raises(snippets.SnippetsError, match='cannot read the packaged hookscript'):
        snippets.status(node.settings())


def test_is_ours():
    assert snippets.is_ours(VOL) and snippets.is_ours('nfs:snippets/accountdb-hook')
    assert not snippets.is_ours('local:snippets/accountdb-hook.bak')
    assert not snippets.is_ours(None) and not snippets.is_ours('accountdb-hook')
