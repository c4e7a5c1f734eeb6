"""``pve-hooks health``: every status level and exit code, through click's CliRunner and a real process."""

import json
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from pve_hooks.cli import main
from tests.support.fakepve import fake_node, fake_pve, fake_pve_pki, pve_root  # noqa: F401
from tests.support.systemctl import make_systemctl


@pytest.fixture
def node(fake_node, tmp_path):
    fake_node.create_guest(100, status='running', hookscript='local:snippets/accountdb-hook')
    state = tmp_path / 'state'
    state.mkdir()
    (state / 'daemon.json').write_text(json.dumps({'heartbeat_at': time.time()}))
    fake_node.extra = ['paths.state_dir=' + str(state), 'paths.spool_dir=' + str(tmp_path / 'spool'),
                       'health.systemctl=' + make_systemctl(tmp_path), 'health.pvesh_timeout=20']
    return fake_node


def invoke(node, args, how):
    """Run pve-hooks with --set pairs for the node; return (exit code, stdout)."""
    argv = [item for pair in node.overrides(*node.extra) for item in ('--set', pair)] + list(args)
    if how == 'clirunner':
        result = CliRunner().invoke(main, argv)
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        return result.exit_code, result.output
    done = subprocess.run([sys.executable, '-m', 'pve_hooks'] + argv, capture_output=True, text=True, timeout=120)
    assert 'Traceback' not in done.stderr
    return done.returncode, done.stdout


def warning(node, tmp_path):
    node.fake.add_node('pve2')
    node.fake.set_node_offline('pve2')


def critical(node, tmp_path):
    node.fake.lose_quorum()


def unknown(node, tmp_path):
    node.extra.append('health.systemctl=' + str(tmp_path / 'missing-systemctl'))


@pytest.mark.parametrize('how', ['clirunner', 'subprocess'])
@pytest.mark.parametrize('scenario, code, status, words', [
    (None, 0, 'OK', 'all 9 checks OK'),
    (warning, 1, 'WARNING', 'cluster WARNING: cluster fakecluster: 1 of 2 nodes online, quorate; offline: pve2'),
    (critical, 2, 'CRITICAL', 'NOT quorate'),
    (unknown, 3, 'UNKNOWN', 'services UNKNOWN: '),
])
def test_status_levels_and_nagios_exit_codes(node, tmp_path, how, scenario, code, status, words):
    if scenario:
        scenario(node, tmp_path)
    exit_code, output = invoke(node, ['health', '--offline', '--nagios'], how)
    assert exit_code == code
    lines = output.splitlines()
    assert len(lines) == 1
    head, sep, perfdata = lines[0].partition(' | ')
    assert head.startswith('PVE-HOOKS {0} - '.format(status)) and words in head
    assert sep and 'pvesh_latency=' in perfdata and 'rootfs=25%;85;95;0;100' in perfdata


@pytest.mark.parametrize('how', ['clirunner', 'subprocess'])
def test_table_and_json(node, how):
    node.fake.lose_quorum()
    exit_code, output = invoke(node, ['health', '--offline', '--check', 'cluster', '--check', 'services'], how)
    assert exit_code == 2
    lines = output.splitlines()
    assert lines[0].split() == ['CHECK', 'STATUS', 'REASON']
    assert lines[1].split()[:2] == ['cluster', 'CRITICAL'] and lines[2].split()[:2] == ['services', 'OK']
    assert lines[-1] == 'overall: CRITICAL'
    exit_code, output = invoke(node, ['health', '--offline', '--json'], how)
    doc = json.loads(output)
    assert exit_code == 2 and doc['status'] == 'CRITICAL' and doc['exit_code'] == 2
    assert [c['name'] for c in doc['checks']][:3] == ['pvesh_api', 'node_resources', 'cluster']
    assert doc['checks'][2]['values']['quorate'] is False


def test_unknown_check_is_a_usage_error_listing_valid_names(node):
    exit_code, output = invoke(node, ['health', '--check', 'nope'], 'clirunner')
    assert exit_code == 2 and "'nope' is not one of" in output and "'hookscripts'" in output


def test_json_and_nagios_together_is_a_usage_error(node):
    exit_code, output = invoke(node, ['health', '--json', '--nagios'], 'clirunner')
    assert exit_code == 2 and 'cannot be used together' in output


@pytest.mark.parametrize('how', ['clirunner', 'subprocess'])
def test_invalid_configuration_is_unknown(node, how):
    node.extra.append('health.load_warning=lots')
    exit_code, output = invoke(node, ['health', '--nagios'], how)
    assert exit_code == 3
    assert output.startswith('PVE-HOOKS UNKNOWN - config UNKNOWN: invalid configuration: health.load_warning')


def test_hanging_pvesh_is_bounded_through_the_cli(node):
    node.fake.set_fault('hang-child')
    node.extra.append('health.pvesh_timeout=0.3')
    exit_code, output = invoke(node, ['health', '--offline', '--check', 'pvesh_api', '--nagios'], 'subprocess')
    assert exit_code == 2 and 'no answer within 0.3s, killed' in output
