#!/usr/bin/env bash
# Is <stack> ours to deploy over for <branch>? Prints `absent` (no such stack: a deploy creates
# it) or `ours` (made by this deployment model for this branch). Anything else is refused, exit 1:
# a stack without our tags (the Python stack, a hand-made one) or one made for another branch.
# Ours means the tags samconfig.toml / CI put on every stack they deploy:
#   payment3:deployer=payment3-rs-ci and payment3:branch-sha1=<SHA-1 of the git branch name>.
# Needs the AWS CLI with credentials; AWS_REGION as for the deploy.
set -euo pipefail
stack=${1:?usage: stack-owner.sh <stack> <branch>}
branch=${2:?usage: stack-owner.sh <stack> <branch>}
want_sha=$(printf '%s' "$branch" | sha1sum | cut -c1-40)
if ! out=$(aws cloudformation describe-stacks --stack-name "$stack" \
      --query 'Stacks[0].[StackStatus, Tags[?Key==`payment3:deployer`].Value | [0], Tags[?Key==`payment3:branch-sha1`].Value | [0]]' \
      --output text 2>&1); then
  if printf '%s' "$out" | grep -q 'does not exist'; then echo absent; exit 0; fi
  echo "stack-owner: cannot read $stack: $out" >&2
  exit 2
fi
read -r status deployer sha <<<"$out"
if [ "$deployer" != "payment3-rs-ci" ]; then
  echo "stack-owner: refusing $stack: it was not created by this deployment model (tag payment3:deployer is '$deployer'); see docs/deploy.md, 'Stacks CI will not touch'" >&2
  exit 1
fi
if [ "$sha" != "$want_sha" ]; then
  echo "stack-owner: refusing $stack: it belongs to another branch (payment3:branch-sha1 $sha, this branch $want_sha)" >&2
  exit 1
fi
echo "ours $status"
