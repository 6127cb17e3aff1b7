#!/usr/bin/env bash
# Prints the stack slug for a git branch: what goes into Branch=<slug> and payment3-rs-<slug>.
#   dev, master          -> themselves (the long-lived stacks)
#   kb-12-retry          -> kb-12-retry (already a clean slug: kept as it is)
#   kb/12-retry          -> kb-12-ret-<6 hex>
#   KB-12_retry          -> kb-12-ret-<6 hex>  (another 6 hex: another branch, another stack)
# Cleaning: lowercase, runs of characters outside [a-z0-9] become one '-', no '-' at either end.
# Whenever the cleaned slug differs from the branch name (cleaning changed it, it is too long, or
# it is a reserved name), the slug is its first 9 characters plus '-' and 6 hex digits of the
# SHA-1 of the full branch name, so two branches never share a stack. 16 characters keep the
# longest function name, payment3-process-paid-wallet-order-internal-<slug>-rs, within Lambda's
# 64 (template.yaml, Branch MaxLength). CI also tags each stack with the SHA-1 of its branch and
# refuses to deploy over a stack of another branch (.github/stack-owner.sh).
set -euo pipefail
branch=${1:?usage: branch-stack.sh <branch>}
case "$branch" in
  dev|master) echo "$branch"; exit 0 ;;
esac
slug=$(printf '%s' "$branch" | tr '[:upper:]' '[:lower:]' | sed -e 's/[^a-z0-9]\{1,\}/-/g' -e 's/^-*//' -e 's/-*$//')
case "$slug" in
  dev|master|sandbox) reserved=1 ;;
  *) reserved=0 ;;
esac
if [ "$slug" != "$branch" ] || [ ${#slug} -gt 16 ] || [ "$reserved" = 1 ]; then
  hash=$(printf '%s' "$branch" | sha1sum | cut -c1-6)
  prefix=$(printf '%s' "${slug:-b}" | cut -c1-9 | sed 's/-*$//')
  slug="${prefix:-b}-${hash}"
fi
echo "$slug"
