"""Fake ``systemctl`` programs for health-check tests (generated shell scripts).

    from tests.support.systemctl import make_systemctl
    path = make_systemctl(tmp_path, {'pveproxy': 'active', 'pvedaemon': 'failed'})
    settings = config.load(None, env={}, overrides=['health.systemctl=' + path])

``systemctl is-active UNIT...`` prints one state per unit (``active`` for units
not named in ``states`` unless ``default`` says otherwise) and exits 0 only when
all are active, like the real one. ``hang=True`` makes it sleep in a child process
that keeps the output pipe open (the timeout must kill the whole group).
"""

import os
import stat


def make_systemctl(directory, states=None, default='active', hang=False, name='systemctl'):
    """Write an executable fake systemctl into ``directory``; return its path."""
    path = os.path.join(str(directory), name)
    lines = ['#!/bin/sh', '[ "$1" = is-active ] || { echo "fake systemctl: only is-active" >&2; exit 64; }']
    if hang:
        lines += ['sleep 3600', 'exit 0']
    else:
        lines += ['shift', 'rc=0', 'for unit in "$@"; do', '  case "$unit" in']
        for unit, state in sorted((states or {}).items()):
            lines.append('    {0}) state={1} ;;'.format(unit, state))
        lines += ['    *) state={0} ;;'.format(default), '  esac', '  echo "$state"',
                  '  [ "$state" = active ] || rc=3', 'done', 'exit $rc']
    with open(path, 'w') as out:
        out.write('\n'.join(lines) + '\n')
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path
