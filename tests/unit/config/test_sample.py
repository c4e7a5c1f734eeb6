import pathlib

from pve_hooks.config import sample
from pve_hooks.config import schema

ROOT = pathlib.Path(__file__).resolve().parents[3]


def test_configuration_md_is_generated_and_up_to_date():
    on_disk = (ROOT / 'docs' / 'configuration.md').read_text()
    assert on_disk == sample.render_markdown(), 'docs/configuration.md is out of date: run make docs'


def test_markdown_lists_every_option_with_env_name():
    text = sample.render_markdown()
    for option in schema.OPTIONS:
        assert '`{0}`'.format(option.key) in text
        assert option.env_name in text


def test_sample_does_not_leak_the_build_machines_hostname(monkeypatch):
    monkeypatch.setattr(schema.BY_KEY['node'], 'default', schema.Computed(lambda: 'build-host-zz9', 'short host name'))
    text = sample.render_sample()
    assert 'build-host-zz9' not in text
    assert '# default: short host name' in text
