#!/usr/bin/env bash
# helm lint + helm template of charts/mergevq-operator with default and namespaced values; the rendered
# chart is installed for real (helm install against the apiserver) by the e2e suite, test/e2e/demo.test.ts.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$(hack/toolchain.sh --bin-dir)"
CHART=charts/mergevq-operator
"$BIN/helm" lint --strict "$CHART"
"$BIN/helm" template mergevq "$CHART" --namespace mergevq-system --kube-version v1.36.3 >/dev/null
"$BIN/helm" template mergevq "$CHART" --namespace mergevq-system --kube-version v1.36.3 \
  --set 'watchNamespaces={team-a,team-b}' --set gang.volcano=true --set leaderElection.enabled=false >/dev/null
# The chart's CRDs are the generated ones.
for f in crds/*.yaml; do cmp -s "$f" "$CHART/crds/$(basename "$f")" || { echo "helm-check: $CHART/crds differs from crds/ (run make crds)" >&2; exit 1; }; done
echo "helm-check: lint and template ok" >&2
