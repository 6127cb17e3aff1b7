#!/usr/bin/env bash
# Deletes a feature branch's stack and what it retained: the stack itself, then the DynamoDB
# tables, log groups and S3 buckets it had (every table, bucket and log group is DeletionPolicy
# Retain, so a stack delete alone leaves them; a re-created branch would collide with them).
# Only for a stack this model made for <branch> (.github/stack-owner.sh), never dev or master:
# their data is never deleted by CI (docs/deploy.md, "Rolling back").
set -euo pipefail
stack=${1:?usage: stack-cleanup.sh <stack> <branch>}
branch=${2:?usage: stack-cleanup.sh <stack> <branch>}
here=$(dirname "${BASH_SOURCE[0]}")
slug=$("$here/branch-stack.sh" "$branch")
case "$slug" in
  dev|master) echo "stack-cleanup: refusing to delete the $slug stack or its data" >&2; exit 1 ;;
esac
[ "$stack" = "payment3-rs-$slug" ] || { echo "stack-cleanup: $stack is not the stack of $branch (payment3-rs-$slug)" >&2; exit 1; }
owner=$("$here/stack-owner.sh" "$stack" "$branch")
if [ "$owner" = absent ]; then echo "stack-cleanup: $stack does not exist; nothing to delete"; exit 0; fi

retained() {
  aws cloudformation list-stack-resources --stack-name "$stack" \
    --query "StackResourceSummaries[?ResourceType=='$1' && PhysicalResourceId!=null].PhysicalResourceId" --output text
}
tables=$(retained AWS::DynamoDB::Table)
groups=$(retained AWS::Logs::LogGroup)
buckets=$(retained AWS::S3::Bucket)

aws cloudformation delete-stack --stack-name "$stack"
aws cloudformation wait stack-delete-complete --stack-name "$stack"
echo "stack-cleanup: deleted stack $stack"

# Only names of this branch: payment3-<name>-<slug>, order-table-<slug>, /aws/lambda/payment3-rs/<slug>/.
for t in $tables; do
  case "$t" in payment3-*-"$slug"|order-table-"$slug") ;; *) echo "stack-cleanup: keeping table $t (not a $slug name)"; continue ;; esac
  aws dynamodb delete-table --table-name "$t" >/dev/null && echo "stack-cleanup: deleted table $t"
done
for g in $groups; do
  case "$g" in /aws/lambda/payment3-rs/"$slug"/*) ;; *) echo "stack-cleanup: keeping log group $g"; continue ;; esac
  aws logs delete-log-group --log-group-name "$g" && echo "stack-cleanup: deleted log group $g"
done
for b in $buckets; do
  case "$b" in *"$slug"*) ;; *) echo "stack-cleanup: keeping bucket $b"; continue ;; esac
  aws s3 rb "s3://$b" --force && echo "stack-cleanup: deleted bucket $b"
done
