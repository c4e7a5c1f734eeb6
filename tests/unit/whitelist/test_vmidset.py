import pytest

from pve_hooks.whitelist.vmidset import MAX_VMID, MIN_VMID, InputError, VmidSet, parse_item, parse_items


def test_ranges_are_sorted_and_merged():
    vmids = VmidSet([(300, 310), (100, 199), (150, 250), (251, 251), (400, 400)])
    assert vmids.ranges == ((100, 251), (300, 310), (400, 400))
    assert len(vmids) == 152 + 11 + 1
    assert vmids.format() == '100-251,300-310,400'


def test_membership_on_range_edges():
    vmids = VmidSet([(100, 199), (300, 300)])
    assert 100 in vmids and 199 in vmids and 300 in vmids
    assert 99 not in vmids and 200 not in vmids and 299 not in vmids and 301 not in vmids
    assert 5 not in VmidSet()


def test_from_ints_compacts_consecutive_ids():
    vmids = VmidSet.from_ints([105, 101, 102, 103, 103, 200])
    assert vmids.ranges == ((101, 103), (105, 105), (200, 200))
    assert vmids.to_list() == [101, 102, 103, 105, 200]


def test_difference_and_union_on_ranges():
    left = VmidSet([(100, 199), (300, 400)])
    right = VmidSet([(150, 160), (190, 310), (400, 400)])
    assert (left - right).format() == '100-149,161-189,311-399'
    assert (right - left).format() == '200-299'
    assert (left | right).format() == '100-400'
    assert not (left - left)


def test_difference_of_a_huge_range_is_not_expanded():
    everything = VmidSet([(MIN_VMID, MAX_VMID)])
    assert (everything - VmidSet([(500, 500)])).ranges == ((MIN_VMID, 499), (501, MAX_VMID))


@pytest.mark.parametrize('text, expected', [
    ('100', (100, 100)), (' 100-199 ', (100, 199)), ('100 - 199', (100, 199)),
    (str(MAX_VMID), (MAX_VMID, MAX_VMID)), ('150-150', (150, 150)),
])
def test_parse_item_accepts(text, expected):
    assert parse_item(text) == expected


@pytest.mark.parametrize('text, words', [
    ('99', 'outside the VMID range 100-999999999'),
    ('1000000000', 'outside the VMID range'),
    ('abc', "'abc' is not a VMID"),
    ('-5', 'is not a range'),
    ('100-', 'is not a range'),
    ('100-200-300', 'is not a range'),
    ('300-200', "'300-200' is an inverted range; write 200-300"),
    ('100 200', 'more than one item'),
    ('１２３', 'is not a VMID'),
    ('50-200', "in range '50-200': '50' is outside"),
])
def test_parse_item_names_the_problem(text, words):
    with pytest.raises(ValueError) as caught:
        parse_item(text)
    assert words in str(caught.value)


def test_parse_items_skips_comments_and_blank_lines():
    lines = ['# production guests', '', '100-102   # web', '  250', b'300\n']
    assert parse_items(lines).format() == '100-102,250,300'


def test_parse_items_collects_every_error_with_its_line():
    lines = ['100', 'x', '', '300-200', '105', b'\xff']
    with pytest.raises(InputError) as caught:
        parse_items(lines, 'vmids.txt line')
    assert caught.value.errors == [
        "vmids.txt line 2: 'x' is not a VMID (an integer from 100 to 999999999) or a range such as 100-199",
        "vmids.txt line 4: '300-200' is an inverted range; write 200-300",
        'vmids.txt line 6: not UTF-8 text',
    ]


def test_parse_items_names_arguments():
    with pytest.raises(InputError) as caught:
        parse_items(['100', '7'], 'argument')
    assert caught.value.errors == ["argument 2: '7' is outside the VMID range 100-999999999"]


def test_parse_items_of_nothing_is_empty():
    assert not parse_items(['# nothing', ''])
