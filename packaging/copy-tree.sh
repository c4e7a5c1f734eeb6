#!/usr/bin/env bash
# Copy the working tree as git sees it (tracked files plus untracked,
# non-ignored ones; never .venv, build output or caches) into DEST.
# Outside a git checkout (the copy packaging/deb-check-chroot.sh puts in its
# chroot, itself made by this script) every file, less .scratch/ and dist*/.
# Usage: packaging/copy-tree.sh DEST [EXCLUDED_PATH...]   (run from the top)
set -euo pipefail
dest=$1
shift
mkdir -p "$dest"
if ! git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	excludes=(--exclude=./.scratch --exclude='./dist*')
	for path in "$@"; do excludes+=("--exclude=./$path"); done
	tar "${excludes[@]}" -cf - . | tar -xf - -C "$dest"
	exit 0
fi
excludes=()
for path in "$@"; do excludes+=(":!$path"); done
git ls-files -z --cached --others --exclude-standard -- . "${excludes[@]}" \
	| while IFS= read -r -d '' file; do [ -e "$file" ] && printf '%s\0' "$file"; done \
	| tar --null -T - -cf - | tar -xf - -C "$dest"
