"""docs/architecture.md opens with a map of the tree: it must name every subpackage, and nothing else."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
MAX_LINES = 450   # no production module longer than this (a module that grows past it is split by what it holds)


def _map_entries():
    text = (ROOT / 'docs' / 'architecture.md').read_text()
    block = text.split('## The tree is the architecture', 1)[1].split('```', 2)[1]
    return {match.group(1) for match in re.finditer(r'^  (\w+(?:/|\.py))\s', block, re.M)}


def test_the_map_lists_exactly_the_subpackages_and_top_level_modules():
    package = ROOT / 'pve_hooks'
    actual = {path.name + '/' for path in package.iterdir() if (path / '__init__.py').is_file()}
    actual |= {path.name for path in package.glob('*.py') if path.name not in ('__init__.py', '__main__.py')}
    assert _map_entries() == actual


def test_no_production_module_is_longer_than_the_limit():
    long = {str(path.relative_to(ROOT)): count for path in list((ROOT / 'pve_hooks').rglob('*.py'))
            + list((ROOT / 'pve_hooks_devserver').rglob('*.py'))
            for count in [len(path.read_text().splitlines())] if count > MAX_LINES}
    assert long == {}


# Command modules whose tests run the real command in a subprocess against real peers, so they live in
# tests/integration/ instead of tests/unit/cli/.
TESTED_IN_INTEGRATION = {
    'cli/whitelist.py': 'tests/integration/test_cli_whitelist.py',
    'cli/attach.py': 'tests/integration/test_attach_cli.py',
    'cli/health.py': 'tests/integration/test_health_cli.py',
}


def test_unit_tests_mirror_the_package():
    """Every module has tests/unit/<subpackage>/test_<module>.py (or its integration test named above)."""
    package = ROOT / 'pve_hooks'
    missing = []
    for module in package.rglob('*.py'):
        relative = module.relative_to(package)
        if module.name in ('__init__.py', '__main__.py'):
            continue
        expected = ROOT / 'tests' / 'unit' / relative.parent / ('test_' + module.name)
        elsewhere = TESTED_IN_INTEGRATION.get(str(relative))
        if not expected.is_file() and not (elsewhere and (ROOT / elsewhere).is_file()):
            missing.append(str(relative))
    assert missing == []
