"""pve_hooks.proxmox.attach with fake qm/pct programs that record calls and edit the guest configs."""

import contextlib

import pytest

from pve_hooks.proxmox import attach
from tests.support.guests import FakeNode

VOL = 'local:snippets/accountdb-hook'


@pytest.fixture
def node(tmp_path):
    fake = FakeNode(tmp_path)
    with open(fake.source, 'rb') as src, open(fake.snippets + '/accountdb-hook', 'wb') as dst:
        dst.write(src.read())
    return fake


def test_attach_all_sets_hookscript_with_qm_for_vms_and_pct_for_containers(node):
    node.guest(100)
    node.guest(200, kind='lxc')
    summary = attach.attach_guests(node.settings(), None)
    assert summary.changed == [100, 200] and summary.ok
    assert node.calls() == [['qm', 'set', '100', '--hookscript', VOL], ['pct', 'set', '200', '--hookscript', VOL]]
    assert node.hookscript(100) == VOL and node.hookscript(200, 'lxc') == VOL
    assert summary.line() == 'attached 2, unchanged 0, skipped 0, failed 0'


def test_second_run_changes_nothing(node):
    node.guest(100)
    node.guest(101)
    attach.attach_guests(node.settings(), None)
    before = len(node.calls())
    summary = attach.attach_guests(node.settings(), None)
    assert summary.changed == [] and summary.unchanged == [100, 101]
    assert len(node.calls()) == before


def test_foreign_hookscript_is_skipped_and_kept_without_force(node):
    node.guest(100, hookscript='local:snippets/gpu-passthrough.sh')
    summary = attach.attach_guests(node.settings(), [100])
    assert summary.skipped == [(100, 'foreign hookscript', 'local:snippets/gpu-passthrough.sh')]
    assert node.calls() == []
    assert node.hookscript(100) == 'local:snippets/gpu-passthrough.sh'
    assert 'skipped 1 (foreign hookscript: 100 local:snippets/gpu-passthrough.sh)' in summary.line()
    assert summary.ok


def test_force_replaces_a_foreign_hookscript(node):
    node.guest(100, hookscript='local:snippets/gpu-passthrough.sh')
    summary = attach.attach_guests(node.settings(), [100], force=True)
    assert summary.changed == [100]
    assert node.hookscript(100) == VOL


def test_ours_on_another_storage_is_replaced_without_force(node):
    node.guest(100, hookscript='oldstore:snippets/accountdb-hook')
    summary = attach.attach_guests(node.settings(), [100])
    assert summary.changed == [100] and node.hookscript(100) == VOL


def test_templates_are_skipped_unless_asked(node):
    node.guest(100, template=True)
    summary = attach.attach_guests(node.settings(), None)
    assert summary.skipped == [(100, 'template', '')] and node.calls() == []
    assert 'skipped 1 (template: 100)' in summary.line()
    summary = attach.attach_guests(node.settings(), None, templates=True)
    assert summary.changed == [100] and node.hookscript(100) == VOL


def test_a_failure_half_way_is_named_and_the_rest_still_attached(node):
    for vmid in (101, 102, 103, 104):
        node.guest(vmid)
    node.fail(102)
    summary = attach.attach_guests(node.settings(), None)
    assert summary.changed == [101, 103, 104]
    assert [vmid for vmid, _ in summary.failed] == [102]
    assert not summary.ok
    assert "failed 1 (102: qm set exited 2: can't lock file" in summary.line()
    assert node.hookscript(102) is None and node.hookscript(104) == VOL


def test_unknown_vmid_fails_with_the_node_named(node):
    node.guest(100)
    summary = attach.attach_guests(node.settings(), [100, 555])
    assert summary.changed == [100]
    assert summary.failed == [(555, 'no guest 555 on node pve1')]


def test_guest_on_another_node_is_not_touched(node):
    node.guest(100)
    node.guest(300, node='pve2')
    summary = attach.attach_guests(node.settings(), None)
    assert summary.changed == [100]
    assert all(call[2] != '300' for call in node.calls())


def test_dry_run_reports_and_runs_nothing(node):
    node.guest(100)
    node.guest(101, hookscript=VOL)
    node.guest(102, hookscript='local:snippets/other')
    summary = attach.attach_guests(node.settings(), None, dry_run=True)
    assert node.calls() == []
    assert summary.line() == ('dry run: would attach 1, unchanged 1, skipped 1 (foreign hookscript: '
                              '102 local:snippets/other), failed 0')
    assert node.hookscript(100) is None


def test_snapshot_sections_do_not_count(node):
    node.guest(100, snapshot_hookscript=VOL)
    summary = attach.attach_guests(node.settings(), None)
    assert summary.changed == [100]


def test_missing_snippet_refuses_before_any_qm_call(node, tmp_path):
    import os

    os.unlink(node.snippets + '/accountdb-hook')
    node.guest(100)
    with pytest.raises(attach.AttachError, match='snippets install'):
        attach.attach_guests(node.settings(), None)
    assert node.calls() == []


def test_missing_program_counts_as_failed(node):
    node.guest(100)
    summary = attach.attach_guests(node.settings('proxmox.qm=/nonexistent/qm'), None)
    assert summary.failed == [(100, 'qm set exited 127: /nonexistent/qm: program not found')]


def test_progress_wraps_the_guests_being_changed(node):
    node.guest(100)
    node.guest(101, hookscript=VOL)
    seen = []

    @contextlib.contextmanager
    def progress(items):
        seen.append([guest.vmid for guest in items])
        yield items

    attach.attach_guests(node.settings(), None, progress=progress)
    assert seen == [[100]]


def test_detach_removes_only_ours_and_is_idempotent(node):
    node.guest(100, hookscript=VOL)
    node.guest(101, hookscript='local:snippets/other')
    node.guest(102)
    node.guest(200, kind='lxc', hookscript=VOL, template=True)
    summary = attach.detach_guests(node.settings(), None)
    assert summary.changed == [100, 200] and summary.unchanged == [102]
    assert summary.skipped == [(101, 'foreign hookscript', 'local:snippets/other')]
    assert node.calls() == [['qm', 'set', '100', '--delete', 'hookscript'],
                            ['pct', 'set', '200', '--delete', 'hookscript']]
    assert node.hookscript(100) is None and node.hookscript(101) == 'local:snippets/other'
    again = attach.detach_guests(node.settings(), None)
    assert again.changed == [] and len(node.calls()) == 2


def test_detach_failure_is_reported(node):
    node.guest(100, hookscript=VOL)
    node.fail(100)
    summary = attach.detach_guests(node.settings(), [100])
    assert not summary.ok and summary.failed[0][0] == 100


def test_detach_dry_run(node):
    node.guest(100, hookscript=VOL)
    summary = attach.detach_guests(node.settings(), None, dry_run=True)
    assert summary.line().startswith('dry run: would detach 1,')
    assert node.calls() == []


def test_attached_lists_states(node):
    node.guest(100, hookscript=VOL, name='web')
    node.guest(101, hookscript='local:snippets/other')
    node.guest(102, hookscript='nfs:snippets/accountdb-hook')
    node.guest(200, kind='lxc', template=True)
    rows = attach.attached(node.settings())
    assert [(r['vmid'], r['type'], r['state']) for r in rows] == [
        (100, 'qemu', 'ours'), (101, 'qemu', 'foreign'), (102, 'qemu', 'ours-other-storage'), (200, 'lxc', 'none')]
    assert rows[0]['name'] == 'web' and rows[3]['template'] is True


def test_read_only_pve_gets_a_hint():
    reason = attach._reason(2, "unable to create output file '/etc/pve/x' - Read-only file system\n",
                            ['/usr/sbin/qm', 'set', '100'])
    assert reason.startswith('qm set exited 2: unable to create')
    assert 'docs/packaging.md' in reason


def test_guest_dicts_from_the_inventory_are_accepted(node):
    node.guest(100)
    node.guest(101)
    summary = attach.attach_guests(node.settings(), [{'vmid': 101, 'type': 'qemu', 'name': 'guest101'}])
    assert summary.changed == [101] and node.hookscript(100) is None


# -- the config's digest: a hookscript set between our read and our qm set is never overwritten --------------

def test_qm_set_carries_the_digest_of_the_config_as_read(node):
    node.guest(100)
    node.guest(200, kind='lxc')
    digests = {100: node.digest(100), 200: node.digest(200, 'lxc')}
    attach.attach_guests(node.settings(), None)
    assert node.calls(digests=True) == [
        ['qm', 'set', '100', '--hookscript', VOL, '--digest', digests[100]],
        ['pct', 'set', '200', '--hookscript', VOL, '--digest', digests[200]]]


@pytest.mark.parametrize('kind', ['qemu', 'lxc'])
def test_a_hookscript_set_meanwhile_is_skipped_not_overwritten(node, kind, caplog):
    node.guest(100, kind=kind)
    node.race(100, 'local:snippets/gpu.sh')
    summary = attach.attach_guests(node.settings(), None)
    assert summary.skipped == [(100, 'foreign hookscript', 'local:snippets/gpu.sh')]
    assert summary.changed == [] and summary.ok
    assert node.hookscript(100, kind) == 'local:snippets/gpu.sh'
    assert len(node.calls()) == 1      # refused by the digest; decided again without another call
    assert 'guest 100: its config changed while pve-hooks was changing it' in caplog.text


def test_ours_set_meanwhile_is_unchanged(node):
    node.guest(100)
    node.race(100, VOL)
    summary = attach.attach_guests(node.settings(), [100])
    assert summary.unchanged == [100] and summary.changed == []


def test_an_unrelated_change_meanwhile_is_retried_with_the_new_digest(node):
    node.guest(100)
    node.race(100, 'oldstore:snippets/accountdb-hook')   # ours, other storage: still to be replaced
    summary = attach.attach_guests(node.settings(), [100])
    assert summary.changed == [100] and node.hookscript(100) == VOL
    calls = node.calls(digests=True)
    assert len(calls) == 2 and calls[0][-1] != calls[1][-1]


def test_detach_leaves_a_hookscript_set_meanwhile(node):
    node.guest(100, hookscript=VOL)
    node.race(100, 'local:snippets/gpu.sh')
    summary = attach.detach_guests(node.settings(), [100])
    assert summary.skipped == [(100, 'foreign hookscript', 'local:snippets/gpu.sh')]
    assert node.hookscript(100) == 'local:snippets/gpu.sh'


def test_a_config_that_keeps_changing_fails_after_a_few_attempts(node):
    node.guest(100)

    def runner(argv, timeout):
        return 255, 'checksum mismatch (file change by other user?)\n'

    summary = attach.attach_guests(node.settings(), [100], runner=runner)
    assert summary.failed == [(100, 'its config changed during each of 3 attempts (another tool keeps editing '
                                    'it); try again later')]


# -- the watchdog: tick per guest and while qm runs -------------------------------------------------------------

def test_tick_is_called_per_guest_and_every_second_while_qm_runs(node, tmp_path):
    import os
    import time

    slow = tmp_path / 'slow-qm'
    slow.write_text('#!/bin/sh\nsleep 2.5\n')
    os.chmod(str(slow), 0o755)
    for vmid in (100, 101):
        node.guest(vmid)
    ticks = []
    summary = attach.attach_guests(node.settings('proxmox.qm=' + str(slow)), None,
                                   tick=lambda: ticks.append(time.monotonic()))
    assert summary.changed == [100, 101]
    gaps = [later - earlier for earlier, later in zip(ticks, ticks[1:])]
    assert len(ticks) >= 8 and max(gaps) < 1.5


def test_a_hung_qm_is_killed_at_set_timeout_while_ticking(node, tmp_path):
    import os

    hung = tmp_path / 'hung-qm'
    hung.write_text('#!/bin/sh\nexec sleep 60\n')
    os.chmod(str(hung), 0o755)
    node.guest(100)
    ticks = []
    summary = attach.attach_guests(node.settings('proxmox.qm=' + str(hung), 'proxmox.set_timeout=2.5'), None,
                                   tick=lambda: ticks.append(1))
    assert summary.failed == [(100, 'hung-qm set exited 124: {0} set 100 killed after 2.5 s'.format(hung))]
    assert len(ticks) >= 3
