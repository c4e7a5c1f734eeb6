"""pve-hooks: keep AccountDB in step with the guests on a Proxmox VE node.

This file stays tiny: the hookscript imports the package on its hot path.
"""

__version__ = '0.1.0'
