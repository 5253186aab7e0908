#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Regenerates the settings table of docs/configuration.md from the program's
# own list (`tinytown-bridge --help-config`, which prints the table in
# src/config.c), so the documentation cannot drift from the code. Only the
# part between the `settings:begin` and `settings:end` markers is replaced.
#
# Usage: scripts/gen-config-doc.sh [BINARY]   (default: build/tinytown-bridge)
#        scripts/gen-config-doc.sh - < help.txt   (help text on stdin)
set -euo pipefail

cd "$(dirname "$0")/.."
bin=${1:-build/tinytown-bridge}
doc=docs/configuration.md

if [ "$bin" = - ]; then
  help=$(cat)
else
  help=$("$bin" --help-config)
fi

# One block per setting: a name line, indented "type:", "default:", "env:"
# lines, then the wrapped help text. '|' would end a table cell and '<'
# open an HTML tag.
table=$(printf '%s\n' "$help" | awk '
  function flush() {
    if (name == "") return
    gsub(/\|/, "\\|", text); gsub(/\|/, "\\|", def)
    gsub(/</, "\\&lt;", text)
    d = (def == "(unset)") ? "unset" : "`" def "`"
    printf "| `%s` | `%s` | %s | %s | %s |\n", name, env, type, d, text
    name = ""
  }
  /^#/ { next }
  /^$/ { flush(); next }
  /^[^ ]/ { flush(); name = $0; type = def = env = text = ""; next }
  /^    type:    / { type = substr($0, 14); next }
  /^    default: / { def = substr($0, 14); next }
  /^    env:     / { env = substr($0, 14); next }
  /^    / { line = substr($0, 5); text = (text == "") ? line : text " " line; next }
  END { flush() }
')

tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
TABLE=$table awk '
  /<!-- settings:begin -->/ {
    print
    print "| Setting | Environment | Type | Default | Meaning |"
    print "|---|---|---|---|---|"
    print ENVIRON["TABLE"]
    skip = 1
    next
  }
  /<!-- settings:end -->/ { skip = 0 }
  !skip { print }
' "$doc" > "$tmp"
grep -q '<!-- settings:end -->' "$tmp" || { echo "$doc: markers missing" >&2; exit 1; }
cat "$tmp" > "$doc"
