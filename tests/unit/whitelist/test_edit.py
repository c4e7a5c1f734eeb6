"""Planning the operator's bulk changes (add/remove/set). Sending them is in
tests/integration/test_whitelist_http.py (against the reference AccountDB)."""

import pytest

from pve_hooks.whitelist import edit
from pve_hooks.whitelist.vmidset import InputError, VmidSet


def test_plan_add_skips_what_is_present_and_remove_what_is_absent():
    current = VmidSet.from_ints([100, 101, 102])
    change = edit.plan(current, add=VmidSet([(101, 104)]))
    assert change.add.format() == '103-104' and not change.remove
    change = edit.plan(current, remove=VmidSet([(102, 200)]))
    assert change.remove.format() == '102' and not change.add


def test_plan_set_computes_both_directions():
    current = VmidSet.from_ints([100, 101, 102, 300])
    change = edit.plan(current, set_to=VmidSet([(101, 103)]))
    assert change.add.format() == '103'
    assert change.remove.format() == '100,300'
    assert len(change) == 3


def test_plan_refuses_a_vmid_both_added_and_removed():
    with pytest.raises(InputError) as caught:
        edit.plan(VmidSet(), add=VmidSet([(100, 110)]), remove=VmidSet([(105, 120)]))
    assert '105-110 both added and removed' in caught.value.errors[0]


def test_plan_with_nothing_to_do_is_false():
    assert not edit.plan(VmidSet.from_ints([100]), add=VmidSet.from_ints([100]))


def test_check_size_names_the_option():
    change = edit.plan(VmidSet(), set_to=VmidSet([(100, 100 + 999)]))
    edit.check_size(change, 1000)
    with pytest.raises(InputError) as caught:
        edit.check_size(change, 999)
    assert 'touches 1000 VMIDs, more than whitelist.max_change (999)' in caught.value.errors[0]
