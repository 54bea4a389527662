#!/usr/bin/env python3
"""Checks behind deploy/validate.sh that no off-the-shelf tool does.

Each subcommand prints what it checked and exits non-zero on the first class of
problems it finds (all problems of that class are listed). It needs PyYAML and
jsonschema, both dependencies of kubernetes-validate, so
`pip install kubernetes-validate` brings everything.

  extract-configs OUTDIR      write every corral.toml under deploy/ (the docker
                              default and each ConfigMap's) to OUTDIR, one file
                              each, and list them, for `corral check`
  k8s-results LOG FILE...     compare kubernetes-validate's output (LOG) with the
                              documents in FILE...: every core-kind document must
                              have passed for every version, and the only
                              "no schema" warnings allowed are for the CRD kinds
                              this script checks itself (PodMonitor)
  k8s-custom FILE...          schema-check the CRD kinds (PodMonitor) and
                              cross-check each file: Service/PodMonitor
                              selectors match the pods, named ports exist, the
                              probes hit the admin port of the embedded
                              corral.toml, and the shutdown budget fits in
                              terminationGracePeriodSeconds
  dockerfile DOCKERFILE       structure of deploy/Dockerfile: stages, non-root
                              USER, HEALTHCHECK and EXPOSE against the baked-in
                              config, exec-form CMD, COPY sources present and
                              not excluded by .dockerignore
  grafana-rules JSON OUT      turn the dashboard's PromQL into a rule file OUT,
                              so that `promtool check rules OUT` parses them
  spec-metrics FILE...        every corral_* name in FILE... is a metric of
                              SPEC.md (catches a typo shared by an alert and
                              its unit test)
"""

import fnmatch
import json
import os
import re
import sys
import tomllib

try:
    import jsonschema
    import yaml
except ImportError as e:  # pragma: no cover - reported by validate.sh preflight too
    sys.exit(f"missing Python module {e.name}: pip install kubernetes-validate")

# Kinds kubernetes-validate has no schema for, and that k8s-custom checks.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "PodMonitor")}

# ---------------------------------------------------------------- helpers


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def parse_duration(text):
    """corral's durations: "250ms", "2s", "30m", "1h" (one unit is all we use)."""
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", text)
    if not m:
        raise ValueError(f"unsupported duration {text!r}")
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]
    return int(m.group(1)) * scale


def port_of(bind):
    return int(bind.rsplit(":", 1)[1])


class Problems:
    def __init__(self, what):
        self.what = what
        self.items = []

    def add(self, msg):
        self.items.append(msg)

    def finish(self, ok_msg):
        if self.items:
            for item in self.items:
                print(f"  FAIL {item}")
            print(f"{self.what}: {len(self.items)} problem(s)", flush=True)
            sys.exit(1)
        print(f"  ok   {ok_msg}", flush=True)


# ------------------------------------------------------- extract-configs


def embedded_configs(root):
    """(label, toml text) for every corral.toml that deploy/ ships."""
    out = []
    docker = os.path.join(root, "deploy/docker/corral.toml")
    with open(docker) as f:
        out.append(("deploy/docker/corral.toml", f.read()))
    kdir = os.path.join(root, "deploy/kubernetes")
    for name in sorted(os.listdir(kdir)):
        if not name.endswith((".yaml", ".yml")):
            continue
        for doc in load_docs(os.path.join(kdir, name)):
            if doc.get("kind") == "ConfigMap" and "corral.toml" in doc.get("data", {}):
                label = f"deploy/kubernetes/{name}#configmap/{doc['metadata']['name']}"
                out.append((label, doc["data"]["corral.toml"]))
    return out


def cmd_extract_configs(outdir):
    root = os.getcwd()
    os.makedirs(outdir, exist_ok=True)
    for label, text in embedded_configs(root):
        fname = re.sub(r"[^A-Za-z0-9_.-]+", "_", label.removesuffix(".toml")) + ".toml"
        path = os.path.join(outdir, fname)
        with open(path, "w") as f:
            f.write(text)
        # label<TAB>path, for the shell to report which source a file came from
        print(f"{label}\t{path}")


# ----------------------------------------------------------- k8s-results


def cmd_k8s_results(log, files):
    with open(log) as f:
        lines = f.read().splitlines()
    probs = Problems("kubernetes-validate")
    passed = {}  # (file, kind/name) -> versions
    for line in lines:
        m = re.match(r"INFO (\S+) passed for resource (\S+) against version (\S+)", line)
        if m:
            passed.setdefault((m.group(1), m.group(2)), set()).add(m.group(3))
            continue
        m = re.match(r"WARN (\S+) Couldn't find schema for kind (\S+) with api version (\S+) ", line)
        if m:
            if (m.group(3), m.group(2)) not in CUSTOM_KINDS:
                probs.add(f"{m.group(1)}: no schema for {m.group(3)} {m.group(2)}, and no custom check either")
            continue
        if line.strip():
            probs.add(f"unexpected output: {line}")
    versions = {v for vs in passed.values() for v in vs}
    core = custom = 0
    for path in files:
        for doc in load_docs(path):
            key = (doc.get("apiVersion"), doc.get("kind"))
            kn = f"{str(doc.get('kind')).lower()}/{doc.get('metadata', {}).get('name')}"
            if key in CUSTOM_KINDS:
                custom += 1
                continue
            core += 1
            got = passed.get((path, kn), set())
            if not got or got != versions:
                probs.add(f"{path}: {kn} did not pass for every version ({sorted(got)} of {sorted(versions)})")
    probs.finish(f"{core} core documents passed strict schema validation against "
                 f"Kubernetes {', '.join(sorted(versions))}; {custom} CRD document(s) left to k8s-custom")


# ------------------------------------------------------------ k8s-custom

DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}
# A subset of the PodMonitor CRD's openAPIV3Schema (prometheus-operator,
# monitoring.coreos.com/v1): every property name of spec and of an endpoint is
# listed, so a misspelt key is caught, but only the ones these manifests use are
# typed in detail.
_ANY = {}
PODMONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PodMonitor"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253},
                "namespace": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "required": ["selector"],
            "additionalProperties": False,
            "properties": {
                "selector": LABEL_SELECTOR,
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"any": {"type": "boolean"},
                                   "matchNames": {"type": "array", "items": {"type": "string"}}},
                },
                "jobLabel": {"type": "string"},
                "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                "podMetricsEndpoints": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "portNumber": {"type": "integer", "minimum": 1, "maximum": 65535},
                            "path": {"type": "string", "pattern": "^/"},
                            "interval": {"type": "string", "pattern": DURATION},
                            "scrapeTimeout": {"type": "string", "pattern": DURATION},
                            "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                            "honorLabels": {"type": "boolean"},
                            "honorTimestamps": {"type": "boolean"},
                            **{k: _ANY for k in [
                                "authorization", "basicAuth", "bearerTokenSecret", "enableHttp2",
                                "filterRunning", "followRedirects", "metricRelabelings", "noProxy",
                                "oauth2", "params", "proxyConnectHeader", "proxyFromEnvironment",
                                "proxyUrl", "relabelings", "targetPort", "tlsConfig",
                                "trackTimestampsStaleness"]},
                        },
                    },
                },
                **{k: _ANY for k in [
                    "attachMetadata", "bodySizeLimit", "convertClassicHistogramsToNHCB",
                    "fallbackScrapeProtocol", "keepDroppedTargets", "labelLimit",
                    "labelNameLengthLimit", "labelValueLengthLimit", "nativeHistogramBucketLimit",
                    "nativeHistogramMinBucketFactor", "sampleLimit", "scrapeClass",
                    "scrapeClassicHistograms", "scrapeNativeHistograms", "scrapeProtocols",
                    "selectorMechanism", "targetLimit"]},
            },
        },
    },
}


def selects(selector, labels):
    """matchLabels only: that is all these manifests use."""
    if set(selector) - {"matchLabels"}:
        return None
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def check_k8s_file(path, probs):
    docs = load_docs(path)
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)

    # The CRD documents: schema.
    for d in docs:
        if (d.get("apiVersion"), d.get("kind")) in CUSTOM_KINDS:
            v = jsonschema.Draft202012Validator(PODMONITOR_SCHEMA)
            for err in sorted(v.iter_errors(d), key=lambda e: list(e.path)):
                where = ".".join(str(p) for p in err.path) or "(root)"
                probs.add(f"{path}: podmonitor/{d['metadata'].get('name')}: {where}: {err.message}")

    configmaps = {c["metadata"]["name"]: c for c in by_kind.get("ConfigMap", [])}
    pods = []  # (deployment name, pod labels, pod spec)
    for dep in by_kind.get("Deployment", []):
        tmpl = dep["spec"]["template"]
        labels = tmpl["metadata"].get("labels", {})
        if not selects(dep["spec"]["selector"], labels):
            probs.add(f"{path}: deployment/{dep['metadata']['name']}: selector does not match its pod labels")
        pods.append((dep["metadata"]["name"], labels, tmpl["spec"], tmpl["metadata"].get("annotations", {})))

    def named_ports(spec):
        return {p["name"]: p["containerPort"] for c in spec["containers"] for p in c.get("ports", []) if "name" in p}

    # Services and PodMonitors must select a pod and name ports that exist.
    for kind, sel_of, ports_of in [
        ("Service", lambda o: {"matchLabels": o["spec"].get("selector", {})},
         lambda o: [p["targetPort"] for p in o["spec"]["ports"]]),
        ("PodMonitor", lambda o: o["spec"]["selector"],
         lambda o: [e["port"] for e in o["spec"].get("podMetricsEndpoints", []) if "port" in e]),
    ]:
        for obj in by_kind.get(kind, []):
            kn = f"{kind.lower()}/{obj['metadata']['name']}"
            matched = [p for p in pods if selects(sel_of(obj), p[1])]
            if not matched:
                probs.add(f"{path}: {kn}: selects no pod of this file")
            for _, _, spec, _ in matched:
                for port in ports_of(obj):
                    if isinstance(port, str) and port not in named_ports(spec):
                        probs.add(f"{path}: {kn}: port {port!r} is not a named container port")

    # The corral container against its own config and the shutdown budget.
    for dep_name, _, spec, annotations in pods:
        corral = [c for c in spec["containers"] if c["name"] == "corral"]
        if len(corral) != 1:
            probs.add(f"{path}: deployment/{dep_name}: expected one container named corral")
            continue
        c = corral[0]
        # -c FILE from the command, else the image CMD's /etc/corral/corral.toml.
        cfg_path = c["command"][-1] if c.get("command") else "/etc/corral/corral.toml"
        mounted = {}
        for vm in c.get("volumeMounts", []):
            vol = next(v for v in spec.get("volumes", []) if v["name"] == vm["name"])
            if "configMap" in vol:
                mounted[vm["mountPath"]] = vol["configMap"]["name"]
        cm_name = mounted.get(os.path.dirname(cfg_path or ""))
        if cm_name not in configmaps:
            probs.add(f"{path}: deployment/{dep_name}: -c {cfg_path} is not a mounted ConfigMap of this file")
            continue
        cfg = tomllib.loads(configmaps[cm_name]["data"]["corral.toml"])
        admin = port_of(cfg.get("admin", {}).get("bind", "127.0.0.1:9090"))
        front = cfg.get("listener", {}).get("bind", "127.0.0.1:8080")
        if not cfg.get("admin", {}).get("bind", "127.0.0.1").startswith("0.0.0.0"):
            probs.add(f"{path}: {cm_name}: admin.bind must not be loopback, probes come from the kubelet")
        if not str(front).startswith("0.0.0.0"):
            probs.add(f"{path}: {cm_name}: listener.bind must not be loopback, the Service sends to the pod IP")
        ports = named_ports({"containers": [c]})
        if ports.get("metrics") != admin:
            probs.add(f"{path}: {dep_name}: container port 'metrics' {ports.get('metrics')} != admin port {admin}")
        if ports.get("http") != port_of(front):
            probs.add(f"{path}: {dep_name}: container port 'http' {ports.get('http')} != listener port {port_of(front)}")
        for probe, want in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]:
            g = c.get(probe, {}).get("httpGet", {})
            if g.get("path") != want or g.get("port") not in (admin, "metrics"):
                probs.add(f"{path}: {dep_name}: {probe} must be GET {want} on the admin port {admin}, is {g}")
        if annotations.get("prometheus.io/port") != str(admin) or annotations.get("prometheus.io/path") != "/metrics":
            probs.add(f"{path}: {dep_name}: prometheus.io annotations do not point at :{admin}/metrics")
        sc = {**spec.get("securityContext", {}), **c.get("securityContext", {})}
        for key, want in [("runAsNonRoot", True), ("readOnlyRootFilesystem", True),
                          ("allowPrivilegeEscalation", False)]:
            if sc.get(key) is not want:
                probs.add(f"{path}: {dep_name}: corral securityContext.{key} should be {want}")
        if not sc.get("runAsUser"):
            probs.add(f"{path}: {dep_name}: set a numeric runAsUser so that runAsNonRoot can be verified")
        res = c.get("resources", {})
        if not res.get("requests") or not res.get("limits"):
            probs.add(f"{path}: {dep_name}: corral needs resource requests and limits")
        # Shutdown budget: preStop sleep, then drain (+1s to cut the rest), then
        # the workers' stop_timeout, all inside terminationGracePeriodSeconds.
        pre = c.get("lifecycle", {}).get("preStop", {})
        argv = pre.get("exec", {}).get("command", [])
        pre_s = int(argv[1]) if len(argv) == 2 and argv[0] == "sleep" else pre.get("sleep", {}).get("seconds", 0)
        drain = parse_duration(cfg.get("timeouts", {}).get("drain", "30s"))
        stop = parse_duration(cfg["workers"].get("stop_timeout", "10s")) if "workers" in cfg else 0
        grace = spec.get("terminationGracePeriodSeconds", 30)
        need = pre_s + drain + 1 + stop
        if need >= grace:
            probs.add(f"{path}: {dep_name}: preStop {pre_s}s + drain {drain}s + 1s + stop_timeout {stop}s"
                      f" = {need}s does not fit terminationGracePeriodSeconds {grace}")
        else:
            print(f"  ok   {path}: {dep_name}: shutdown budget preStop {pre_s}s + drain {drain:g}s + 1s"
                  f" + worker stop {stop:g}s = {need:g}s < grace {grace}s")


def cmd_k8s_custom(files):
    probs = Problems("kubernetes custom checks")
    for path in files:
        check_k8s_file(path, probs)
    probs.finish(f"PodMonitor schema and cross-references in {len(files)} file(s)")


# ------------------------------------------------------------ dockerfile


def dockerfile_instructions(path):
    """(line number, INSTRUCTION, arguments) with continuations joined."""
    out, buf, start = [], "", None
    with open(path) as f:
        for n, raw in enumerate(f, 1):
            line = raw.rstrip("\n")
            if not buf and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if buf and line.lstrip().startswith("#"):
                continue  # comment lines inside a continuation are dropped by docker
            if start is None:
                start = n
            if line.endswith("\\"):
                buf += line[:-1] + " "
                continue
            buf += line
            word, _, rest = buf.strip().partition(" ")
            out.append((start, word.upper(), rest.strip()))
            buf, start = "", None
    return out


def dockerignore_patterns(root):
    path = os.path.join(root, ".dockerignore")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [l.strip().rstrip("/") for l in f if l.strip() and not l.startswith("#")]


def cmd_dockerfile(path):
    root = os.getcwd()
    probs = Problems("Dockerfile")
    ins = dockerfile_instructions(path)
    stages = [i for i, (_, w, _) in enumerate(ins) if w == "FROM"]
    if len(stages) < 2:
        probs.add("expected a multi-stage build (builder + runtime)")
        probs.finish("")
    builder = ins[stages[0]:stages[-1]]
    final = ins[stages[-1]:]
    if not re.match(r"rust:1-bookworm\s+AS\s+builder$", builder[0][2], re.I):
        probs.add(f"line {builder[0][0]}: builder should be `FROM rust:1-bookworm AS builder`")
    if not any(w == "RUN" and "cargo build --release --locked" in a for _, w, a in builder):
        probs.add("the builder must run `cargo build --release --locked`")
    if final[0][2] != "debian:bookworm-slim":
        probs.add(f"line {final[0][0]}: runtime stage should be FROM debian:bookworm-slim")
    words = {}
    for n, w, a in final:
        words.setdefault(w, []).append((n, a))
    users = words.get("USER", [])
    if not users:
        probs.add("the runtime stage has no USER: it would run as root")
    elif users[-1][1].split(":")[0] in ("root", "0"):
        probs.add(f"line {users[-1][0]}: USER is root")
    if not any("/usr/local/bin/corral" in a and "--from=builder" in a for _, a in words.get("COPY", [])):
        probs.add("the runtime stage must COPY --from=builder the binary to /usr/local/bin/corral")
    cmd = words.get("CMD", [])
    if not cmd:
        probs.add("no CMD")
    else:
        try:
            argv = json.loads(cmd[-1][1])
            if argv[:2] != ["corral", "run"]:
                probs.add(f"line {cmd[-1][0]}: CMD should run `corral run`, is {argv}")
        except json.JSONDecodeError:
            probs.add(f"line {cmd[-1][0]}: CMD must be exec form (JSON) so corral is PID 1 and gets signals")
    # The baked-in config: it exists, and EXPOSE/HEALTHCHECK agree with it.
    cfg_src = None
    for n, a in words.get("COPY", []):
        parts = [p for p in a.split() if not p.startswith("--")]
        if "--from=" in a:
            continue
        for src in parts[:-1]:
            if src == ".":
                continue
            if not os.path.exists(os.path.join(root, src)):
                probs.add(f"line {n}: COPY source {src} does not exist in the build context")
            for pat in dockerignore_patterns(root):
                if fnmatch.fnmatch(src, pat) or src.startswith(pat + "/"):
                    probs.add(f"line {n}: COPY source {src} is excluded by .dockerignore ({pat})")
            if parts[-1] == "/etc/corral/corral.toml":
                cfg_src = src
    if not cfg_src:
        probs.add("no default config copied to /etc/corral/corral.toml")
    else:
        with open(os.path.join(root, cfg_src), "rb") as f:
            cfg = tomllib.load(f)
        admin = port_of(cfg["admin"]["bind"])
        front = port_of(cfg["listener"]["bind"])
        exposed = {int(p.split("/")[0]) for _, a in words.get("EXPOSE", []) for p in a.split()}
        if {admin, front} - exposed:
            probs.add(f"EXPOSE {sorted(exposed)} misses the config's ports {sorted({admin, front} - exposed)}")
        hc = words.get("HEALTHCHECK", [])
        if not hc:
            probs.add("no HEALTHCHECK")
        elif f"127.0.0.1:{admin}/healthz" not in hc[-1][1]:
            probs.add(f"line {hc[-1][0]}: HEALTHCHECK should GET 127.0.0.1:{admin}/healthz")
        elif "curl" in hc[-1][1] and not any("curl" in a for _, a in words.get("RUN", [])):
            probs.add("HEALTHCHECK uses curl, which the runtime stage does not install")
    for pat in ("target", ".git"):
        if pat not in dockerignore_patterns(root):
            probs.add(f".dockerignore should exclude {pat}/")
    probs.finish(f"{path}: {len(stages)} stages, USER {users[-1][1] if users else '?'}, "
                 f"HEALTHCHECK and EXPOSE match {cfg_src}, COPY sources present")


# --------------------------------------------------------- grafana-rules


def cmd_grafana_rules(path, out):
    with open(path) as f:
        dash = json.load(f)
    probs = Problems("Grafana dashboard")
    rules = []
    ids = set()
    for p in dash.get("panels", []):
        if p.get("id") in ids:
            probs.add(f"duplicate panel id {p.get('id')}")
        ids.add(p.get("id"))
        for t in p.get("targets", []):
            expr = t.get("expr")
            if not expr:
                probs.add(f"panel {p.get('title')!r}: target without expr")
                continue
            # Grafana's variables are not PromQL: give them a PromQL stand-in.
            promql = (expr.replace("$__rate_interval", "5m")
                          .replace("$__interval", "1m")
                          .replace("$instance", ".*"))
            if "$" in promql.replace("{{", ""):
                probs.add(f"panel {p.get('title')!r}: unknown variable in {expr}")
            name = f"grafana:panel{p.get('id')}:{t.get('refId', 'A').lower()}"
            rules.append({"record": name, "expr": promql})
            for metric in re.findall(r"\b(corral_[a-z_]+)", promql):
                base = re.sub(r"_(bucket|sum|count)$", "", metric)
                if base not in KNOWN_METRICS:
                    probs.add(f"panel {p.get('title')!r}: {metric} is not a corral metric of SPEC.md")
    if not rules:
        probs.add("no panel has a query")
    with open(out, "w") as f:
        yaml.safe_dump({"groups": [{"name": "grafana-dashboard-queries", "rules": rules}]}, f)
    probs.finish(f"{path}: valid JSON, {len(ids)} panels, {len(rules)} queries on SPEC metrics (PromQL next)")


# SPEC.md "Metrics": the names dashboards and alerts may rely on.
KNOWN_METRICS = {
    "corral_connections_accepted_total", "corral_connections_total", "corral_connections_active",
    "corral_connection_errors_total", "corral_bytes_received_total", "corral_bytes_sent_total",
    "corral_backend_up", "corral_backend_connect_duration_seconds", "corral_health_checks_total",
    "corral_worker_restarts_total", "corral_sticky_entries", "corral_sticky_lookups_total",
}


def cmd_spec_metrics(files):
    probs = Problems("metric names")
    seen = set()
    for path in files:
        with open(path) as f:
            text = f.read()
        for metric in re.findall(r"\b(corral_[a-z_]+)", text):
            base = re.sub(r"_(bucket|sum|count)$", "", metric)
            seen.add(base)
            if base not in KNOWN_METRICS:
                probs.add(f"{path}: {metric} is not a metric of SPEC.md")
    probs.finish(f"{len(seen)} distinct corral_* metrics used, all in SPEC.md")


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    cmd, args = argv[1], argv[2:]
    if cmd == "extract-configs" and len(args) == 1:
        cmd_extract_configs(args[0])
    elif cmd == "k8s-results" and len(args) >= 2:
        cmd_k8s_results(args[0], args[1:])
    elif cmd == "k8s-custom" and args:
        cmd_k8s_custom(args)
    elif cmd == "dockerfile" and len(args) == 1:
        cmd_dockerfile(args[0])
    elif cmd == "spec-metrics" and args:
        cmd_spec_metrics(args)
    elif cmd == "grafana-rules" and len(args) == 2:
        cmd_grafana_rules(args[0], args[1])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
