"""Fixtures of the end-to-end scenarios: a reference AccountDB, fakepve and simulated nodes.

Local to tests/end_to_end/ (nothing outside depends on them).
"""

import os

import pytest

from tests.end_to_end.harness import Node, soak
from tests.support.accountdb import run_dev_accountdb
from tests.support.fakepve import fake_node, fake_pve, fake_pve_pki, pve_root  # noqa: F401 (fixtures)


def pytest_collection_modifyitems(config, items):
    """With PVE_HOOKS_SOAK=1 (make soak), mark every scenario here ``soak``: ``-m soak`` then runs
    them all, each at its full size (harness.size)."""
    if not soak():
        return
    here = os.path.dirname(os.path.abspath(__file__))
    for item in items:
        if str(item.fspath).startswith(here + os.sep):
            item.add_marker(pytest.mark.soak)


@pytest.fixture
def accountdb(tmp_path):
    """A fresh reference AccountDB subprocess on loopback (tests/support/accountdb.py)."""
    with run_dev_accountdb(tmp_path / 'accountdb') as server:
        yield server


@pytest.fixture
def make_node(tmp_path):
    """Return a factory ``make_node(name='pve1', accountdb=None, settings=None, env=None, pve_root=None, prefix=(), view='')``.

    Every node made is closed at the end (daemon killed, journal socket removed).
    """
    nodes = []

    def make(name='pve1', accountdb=None, settings=None, env=None, pve_root=None, prefix=(), view=''):
        node = Node(tmp_path / name, name, accountdb=accountdb, settings=settings, env=env, pve_root=pve_root,
                    prefix=prefix, view=view)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.close()


@pytest.fixture
def pve_node(make_node, fake_node, accountdb):
    """Return a factory ``pve_node(name='pve1', settings=None, **kw)``: a Node on the shared fakepve cluster.

    All nodes share one fakepve (reached through the test pvesh shim), one
    /etc/pve tree (``fake_node.tree``) and the ``accountdb`` fixture's server.
    """
    def make(name='pve1', settings=None, **kwargs):
        values = {'proxmox.pvesh': fake_node.fake.pvesh}
        values.update(settings or {})
        if name != fake_node.node:
            fake_node.fake.add_node(name)
        return make_node(name, accountdb, settings=values, pve_root=fake_node.pve_root, **kwargs)

    return make
