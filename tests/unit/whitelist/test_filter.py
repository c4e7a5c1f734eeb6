"""The per-guest filter: a list restricts, no list or an empty one allows all; no list warns once."""

import logging

import pytest

from pve_hooks.whitelist.filter import UNFILTERED_WARNING, Filter, NoListFilter


def test_filter_with_a_list_allows_only_its_vmids():
    only = Filter([101, 105])
    assert only.active
    assert only.allows(101) and only.allows(105)
    assert not only.allows(102)
    assert only.select([100, 101, 102, 105]) == [101, 105]


@pytest.mark.parametrize('vmids', [None, []])
def test_filter_without_a_list_or_with_an_empty_one_allows_all(vmids):
    every = Filter(vmids)
    assert not every.active
    assert every.allows(100) and every.allows(999999999)
    assert every.select([3, 1, 2]) == [3, 1, 2]


def test_the_no_list_filter_allows_all_and_warns_once_for_all_filters_sharing_the_flag(caplog):
    warned = [False]
    first, second = NoListFilter('/state/whitelist.json', warned), NoListFilter('/state/whitelist.json', warned)
    with caplog.at_level(logging.WARNING, logger='pve_hooks.whitelist.filter'):
        assert first.allows(100) and second.select([300, 100]) == [300, 100] and first.allows(200)
    assert [r.getMessage() for r in caplog.records] == [UNFILTERED_WARNING.format('/state/whitelist.json')]
    assert not first.active and len(first) == 0 and warned == [True]
