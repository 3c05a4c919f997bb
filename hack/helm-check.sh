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
# nodeFlags replace the image's node flags, keeping tini and the entry script of images/operator.Dockerfile
# (here: the image's flags without --lite-mode).
rendered="$("$BIN/helm" template mergevq "$CHART" --namespace mergevq-system --kube-version v1.36.3 \
  --set 'nodeFlags={--max-semi-space-size=2}')"
want="$(grep -o '^ENTRYPOINT \[.*\]' images/operator.Dockerfile | sed -E 's/^ENTRYPOINT //; s/"--lite-mode", //')"
grep -q '"--lite-mode", ' images/operator.Dockerfile || { echo "helm-check: images/operator.Dockerfile ENTRYPOINT lacks --lite-mode" >&2; exit 1; }
got="$(printf '%s\n' "$rendered" | awk '/^          command:/{f=1;next} f&&/^            - /{sub(/^            - /,"");a=a (a?", ":"") "\"" $0 "\"";next} f{exit} END{print "[" a "]"}')"
[ "$got" = "$want" ] || { echo "helm-check: nodeFlags rendered command $got, want $want" >&2; exit 1; }
if "$BIN/helm" template mergevq "$CHART" --namespace mergevq-system --kube-version v1.36.3 | grep -q '^          command:'; then
  echo "helm-check: default values must keep the image's entrypoint (no command)" >&2; exit 1
fi
# The chart's CRDs are the generated ones.
for f in crds/*.yaml; do cmp -s "$f" "$CHART/crds/$(basename "$f")" || { echo "helm-check: $CHART/crds differs from crds/ (run make crds)" >&2; exit 1; }; done
echo "helm-check: lint and template ok" >&2
