"""How the hookscript finds pve_hooks when started as ``#!/usr/bin/python3 -IS`` (isolated, no site).

The chain (hookscripts/accountdb-hook, load_hook): sys.path as set up; then
Debian's package directory of the interpreter (sys.prefix +
/lib/python3/dist-packages) without site; then full site processing. The
Debian step is exercised with a scratch prefix laid out like /usr (a copy of
/usr/bin/python3, its standard library linked, the package copied where the
.deb puts it): real processes, nothing installed in /usr.
"""

import os
import subprocess
import sys
import json

import pytest

from tests.support.hook import EXEC_HOOKSCRIPT, HOOKSCRIPT, REPO, SYSTEM_PYTHON, HookSite, copy_package, debian_prefix

PYTHON = sys.executable
needs_system_python = pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON),
                                         reason='needs {0} to lay out a Debian-like prefix'.format(SYSTEM_PYTHON))


@pytest.fixture
def site(tmp_path):
    value = HookSite(tmp_path / 'node')
    yield value
    value.close()


def fake_package(directory, hook_source=None):
    """Write a pve_hooks package in ``directory``: empty __init__ files and, if given, hook/main.py."""
    package = directory / 'pve_hooks'
    (package / 'hook').mkdir(parents=True)
    (package / '__init__.py').write_text('')
    (package / 'hook' / '__init__.py').write_text('')
    if hook_source is not None:
        (package / 'hook' / 'main.py').write_text(hook_source)


def version_of(python):
    """Return ``python``'s version as 'X.Y' (its lib/pythonX.Y directories)."""
    return subprocess.run([python, '-I', '-S', '-c', 'import sys; print("%d.%d" % sys.version_info[:2])'], check=True,
                          capture_output=True, text=True).stdout.strip()


def run(argv, site):
    return subprocess.run(argv, env=site.env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
                          cwd=REPO)  # the repository's package is in reach of nothing but the chain


def test_the_shebang_runs_isolated_without_site():
    with open(HOOKSCRIPT) as stream:
        assert stream.readline() == '#!/usr/bin/python3 -IS\n'
    assert os.access(HOOKSCRIPT, os.X_OK)


@needs_system_python
def test_run_by_its_shebang_it_finds_the_debian_package_without_site(site, tmp_path):
    python = debian_prefix(tmp_path / 'usr')
    packages = tmp_path / 'usr' / 'lib' / 'python3' / 'dist-packages'
    copy_package(packages)
    # site would execute this .pth: the marker says whether site processing ran.
    marker = tmp_path / 'site-ran'
    (packages / 'marker.pth').write_text('import os; os.close(os.open({0!r}, os.O_CREAT | os.O_WRONLY))\n'.format(
        str(marker)))
    # The hookscript with only its interpreter's path changed, executed as Proxmox does: the kernel applies the #!.
    with open(HOOKSCRIPT) as stream:
        first, rest = stream.readline(), stream.read()
    script = tmp_path / 'snippets' / 'accountdb-hook'
    script.parent.mkdir()
    script.write_text(first.replace('/usr/bin/python3', python) + rest)
    script.chmod(0o755)

    result = run([str(script), '100', 'pre-start'], site)
    assert (result.returncode, result.stderr) == (0, '')
    assert len(site.ready()) == 1
    assert not marker.exists()
    # The same from inside: the package came from the Debian directory and site was never imported.
    result = run([python, '-I', '-S', '-c', EXEC_HOOKSCRIPT.format(path=str(script), vmid='100', phase='pre-stop')],
                 site)
    report = json.loads(result.stdout)
    assert report['exit'] == 0 and 'site' not in report['modules']
    assert 'os' not in report['modules']  # nor os, which site would have imported (~1.2 ms)
    assert report['hook_file'] == str(packages / 'pve_hooks' / 'hook' / 'main.py')
    assert len(site.ready()) == 2 and not marker.exists()

    # The same interpreter with site (no -S) does run the .pth: the marker can tell.
    result = run([python, '-I', str(script), '100', 'post-stop'], site)
    assert (result.returncode, result.stderr) == (0, '')
    assert len(site.ready()) == 3 and marker.exists()


@pytest.mark.skipif(sys.prefix == sys.base_prefix, reason='needs the test interpreter to be a venv (make venv)')
def test_in_a_venv_the_site_fallback_finds_the_package_the_venv_imports(site):
    result = run([PYTHON, '-I', '-S', HOOKSCRIPT, '100', 'pre-start'], site)
    assert (result.returncode, result.stderr) == (0, '')
    assert len(site.ready()) == 1
    result = run([PYTHON, '-I', '-S', '-c', EXEC_HOOKSCRIPT.format(path=HOOKSCRIPT, vmid='100', phase='post-stop')],
                 site)
    report = json.loads(result.stdout)
    assert report['exit'] == 0 and 'site' in report['modules']
    expected = run([PYTHON, '-I', '-c', 'import pve_hooks.hook.main; print(pve_hooks.hook.main.__file__)'], site)
    assert report['hook_file'] == expected.stdout.strip()
    assert len(site.ready()) == 2


@needs_system_python
def test_a_venvs_package_wins_over_a_copy_in_the_base_interpreters_debian_directory(site, tmp_path):
    python = debian_prefix(tmp_path / 'usr')
    fake_package(tmp_path / 'usr' / 'lib' / 'python3' / 'dist-packages', 'import sys\n\n\ndef main(argv, environ):\n'
                 '    sys.stderr.write("the base interpreter\'s copy\\n")\n    return 0\n')
    venv = tmp_path / 'venv'
    subprocess.run([python, '-m', 'venv', '--without-pip', str(venv)], check=True)
    copy_package(venv / 'lib' / 'python{0}'.format(version_of(python)) / 'site-packages')
    # With -S a venv's sys.prefix is the base prefix: the Debian step would find the other copy.
    probe = run([str(venv / 'bin' / 'python'), '-I', '-S', '-c', 'import sys; print(sys.prefix)'], site)
    assert probe.stdout.strip() == str(tmp_path / 'usr')

    result = run([str(venv / 'bin' / 'python'), '-I', '-S', HOOKSCRIPT, '100', 'pre-start'], site)
    assert (result.returncode, result.stderr) == (0, '')
    assert len(site.ready()) == 1


@needs_system_python
def test_a_broken_debian_copy_does_not_shadow_what_site_finds(site, tmp_path):
    python = debian_prefix(tmp_path / 'usr')
    # A leftover without a hook module: importing pve_hooks.hook.main from it fails.
    fake_package(tmp_path / 'usr' / 'lib' / 'python3' / 'dist-packages')
    # Debian's site puts <prefix>/local/lib/python3.X/dist-packages (pip as root) before lib/python3/dist-packages.
    local = tmp_path / 'usr' / 'local' / 'lib' / 'python{0}'.format(version_of(python)) / 'dist-packages'
    local.mkdir(parents=True)
    copy_package(local)

    result = run([python, '-I', '-S', HOOKSCRIPT, '100', 'pre-start'], site)
    assert (result.returncode, result.stderr) == (0, '')
    assert len(site.ready()) == 1


@needs_system_python
def test_no_package_anywhere_is_one_line_and_exit_0(site, tmp_path):
    python = debian_prefix(tmp_path / 'usr')
    result = run([python, '-I', '-S', HOOKSCRIPT, '100', 'pre-start'], site)
    assert result.returncode == 0
    assert result.stderr == ('pve-hooks hookscript: cannot load the pve_hooks package (ModuleNotFoundError: No module '
                             "named 'pve_hooks'); the event was not recorded; reinstall pve-hooks\n")
    assert site.ready() == []

