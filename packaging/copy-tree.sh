#!/usr/bin/env bash
# Copy the working tree as git sees it (tracked files plus untracked,
# non-ignored ones; never .venv, build output or caches) into DEST.
# Usage: packaging/copy-tree.sh DEST [EXCLUDED_PATH...]   (run from the top)
set -euo pipefail
dest=$1
shift
excludes=()
for path in "$@"; do excludes+=(":!$path"); done
mkdir -p "$dest"
git ls-files -z --cached --others --exclude-standard -- . "${excludes[@]}" \
	| while IFS= read -r -d '' file; do [ -e "$file" ] && printf '%s\0' "$file"; done \
	| tar --null -T - -cf - | tar -xf - -C "$dest"
