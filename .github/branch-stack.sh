#!/usr/bin/env bash
# Prints the stack slug for a git branch: what goes into Branch=<slug> and payment3-<slug>.
#   dev, master          -> themselves (the long-lived stacks)
#   KB-12_retry          -> kb-12-retry (lowercase, [a-z0-9-], at most 16 characters)
#   feature/KB-12_retry  -> feature-k-13191b (too long: prefix + hash)
# A feature branch whose cleaned name is too long, or would collide with dev/master, gets a
# short prefix plus 6 hex characters of the branch name's SHA-1, so two branches never share
# a stack. 16 characters keep payment3-process-paid-wallet-order-internal-<slug>-rs within
# Lambda's 64-character function name limit (template.yaml, Branch MaxLength).
set -euo pipefail
branch=${1:?usage: branch-stack.sh <branch>}
case "$branch" in
  dev|master) echo "$branch"; exit 0 ;;
esac
slug=$(printf '%s' "$branch" | tr '[:upper:]' '[:lower:]' | sed -e 's/[^a-z0-9]\{1,\}/-/g' -e 's/^-*//' -e 's/-*$//')
if [ -z "$slug" ] || [ ${#slug} -gt 16 ] || [ "$slug" = dev ] || [ "$slug" = master ] || [ "$slug" = sandbox ]; then
  hash=$(printf '%s' "$branch" | sha1sum | cut -c1-6)
  prefix=$(printf '%s' "${slug:-b}" | cut -c1-9 | sed 's/-*$//')
  slug="${prefix:-b}-${hash}"
fi
echo "$slug"
