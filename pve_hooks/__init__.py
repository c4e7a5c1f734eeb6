"""pve-hooks: keep AccountDB in step with the guests on a Proxmox VE node.

This file stays tiny: the hookscript imports the package on its hot path.
"""

__version__ = '0.1.0'
# The systemd unit that runs the reconciler (named in every message that says how to start or stop it).
UNIT = 'pve-hooks-reconciler'
