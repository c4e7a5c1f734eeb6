from pve_hooks.cli import main

main()
