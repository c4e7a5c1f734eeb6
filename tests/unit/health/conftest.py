"""The ``settings`` fixture the health checks' tests share: node pve1, its files under tmp_path."""

import pytest

from pve_hooks.config import loader as config


@pytest.fixture
def settings(tmp_path):
    return config.load(None, env={}, overrides=[
        'node=pve1', 'proxmox.pvesh=pvesh', 'paths.state_dir=' + str(tmp_path / 'state'),
        'paths.spool_dir=' + str(tmp_path / 'spool'), 'proxmox.pve_root=' + str(tmp_path / 'pve'),
        'accountdb.url=http://127.0.0.1:9'])
