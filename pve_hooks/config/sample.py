"""Render the schema as a commented sample config.yaml and as docs/configuration.md."""

import json

from pve_hooks.config import schema


def _yaml_value(value):
    """Return ``value`` written as a YAML flow scalar or list (JSON is valid YAML)."""
    if value is None:
        return 'null'
    return json.dumps(value)


def _default_text(option):
    if isinstance(option.default, schema.Computed):
        return None
    return _yaml_value(option.default)


def render_sample():
    """Return a commented config.yaml: every option, its description and default."""
    lines = ['# pve-hooks configuration (/etc/pve-hooks/config.yaml).',
             '# Generated from the schema by `pve-hooks config sample`. Every option is shown',
             '# commented out with its default; uncomment to change it. Environment variables',
             '# PVE_HOOKS_<SECTION>__<KEY> and `pve-hooks --set section.key=value` override this file.',
             '# The AccountDB token never goes here: it lives in accountdb.token_file.',
             '']
    current = []
    for option in schema.OPTIONS:
        parts = option.key.split('.')
        common = 0
        while common < min(len(current), len(parts) - 1) and current[common] == parts[common]:
            common += 1
        for depth in range(common, len(parts) - 1):
            if depth == 0:
                lines.append('')
            lines.append('#' + '  ' * depth + ' ' + parts[depth] + ':')
        current = parts[:-1]
        indent = '  ' * (len(parts) - 1)
        lines.append('#' + indent + ' # ' + option.description)
        default = _default_text(option)
        if default is None:
            lines.append('#' + indent + ' # default: ' + option.default.text)
            lines.append('#' + indent + ' ' + parts[-1] + ': pve1')
        else:
            lines.append('#' + indent + ' ' + parts[-1] + ': ' + default)
    return '\n'.join(lines) + '\n'


def render_markdown():
    """Return docs/configuration.md: one table row per option, by section."""
    out = ['# Configuration reference', '',
           '<!-- Generated from pve_hooks/config/schema.py by `make docs`; do not edit by hand. -->', '',
           'Sources, lowest to highest precedence: these defaults < `/etc/pve-hooks/config.yaml` '
           '(or the file named by `PVE_HOOKS_CONFIG` / `--config`) < environment variables '
           '`PVE_HOOKS_<SECTION>__<KEY>` < `pve-hooks --set section.key=value`.',
           '', 'Check a configuration with `pve-hooks config check`; see the effective values and '
           'their sources with `pve-hooks config show`; print a commented sample with '
           '`pve-hooks config sample`.', '']
    section = None
    for option in schema.OPTIONS:
        this = option.key.split('.', 1)[0] if '.' in option.key else '(top level)'
        if this != section:
            section = this
            out += ['', '## ' + section, '', '| key | type | default | environment | description |',
                    '|---|---|---|---|---|']
        default = option.default.text if isinstance(option.default, schema.Computed) else _yaml_value(option.default)
        out.append('| `{0}` | {1} | `{2}` | `{3}` | {4} |'.format(
            option.key, option.type.name, default.replace('|', '\\|'), option.env_name,
            option.description.replace('|', '\\|')))
    return '\n'.join(out) + '\n'


if __name__ == '__main__':
    import sys

    sys.stdout.write(render_markdown() if sys.argv[1:] == ['markdown'] else render_sample())
