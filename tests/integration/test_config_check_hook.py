"""``pve-hooks config check`` also checks that the hookscript's own YAML reader agrees with PyYAML."""

from click.testing import CliRunner

from pve_hooks.cli import main


def _check(path):
    return CliRunner().invoke(main, ['--config', str(path), 'config', 'check'], env={'PVE_HOOKS_CONFIG': ''},
                              catch_exceptions=False)


def test_a_file_the_hook_reads_alike_passes(tmp_path):
    path = tmp_path / 'config.yaml'
    path.write_text('node: pve1\npaths:\n  spool_dir: /srv/spool  # here\nhook:\n  chain_timeout: 2.5\n')
    result = _check(path)
    assert result.exit_code == 0 and 'configuration OK' in result.output


def test_valid_yaml_outside_the_hook_subset_fails_with_file_and_line(tmp_path):
    path = tmp_path / 'config.yaml'
    path.write_text('node: pve1\npaths:\n  spool_dir: /srv/spool\nhealth:\n  services:\n    - pveproxy\n')
    result = _check(path)
    assert result.exit_code == 1
    assert '{0}:6: block lists'.format(path) in result.output and 'the hookscript cannot read this file' in result.output


def test_anchors_are_refused_by_both_readers_with_file_and_line(tmp_path):
    path = tmp_path / 'config.yaml'
    path.write_text('node: pve1\npaths:\n  spool_dir: &spool /srv/spool\n')
    result = _check(path)
    assert result.exit_code == 1
    assert '{0}, line 3'.format(path) in result.output and 'anchors and aliases' in result.output
