#!/bin/sh
# run-job.sh MANIFEST IMAGE [TIMEOUT]: (re)create a Job from MANIFEST with IMAGE, wait until it
# completes or fails, print its logs, and exit 0 only when it completed.
# Jobs are immutable, so a deploy deletes the previous run of the same Job first.
set -eu
manifest=$1 image=$2 timeout=${3:-3600}
job=$(sed -n 's/^  name: //p' "$manifest" | head -n 1)
kubectl delete job "$job" --ignore-not-found --wait=true
sed "s|image: ghcr.io/example/accounts-app:.*|image: $image|" "$manifest" | kubectl apply -f -
deadline=$(( $(date +%s) + timeout ))
while :; do
  state=$(kubectl get job "$job" -o jsonpath='{range .status.conditions[?(@.status=="True")]}{.type}{" "}{end}')
  case " $state " in
    *" Complete "*) kubectl logs "job/$job" --all-containers --prefix --tail=50 || true; exit 0 ;;
    *" Failed "*) kubectl logs "job/$job" --all-containers --prefix --tail=200 || true; exit 1 ;;
  esac
  [ "$(date +%s)" -lt "$deadline" ] || { echo "timed out waiting for job/$job" >&2; exit 1; }
  sleep 10
done
