#!/usr/bin/env python3
"""Checks the yichuang chart (helm/yichuang) the way a cluster would see it, offline.

For each value set (the defaults, and each of helm/test-values/*.yaml: demo, development,
notifier, production, reporter):

1. lints the chart and renders it with Helm's own engine (helm-python-sdk embeds Helm; no
   binary, no cluster), values checked against values.schema.json;
2. reads every manifest, refusing duplicate keys, and validates it against the Kubernetes
   schemas of KUBE_VERSION in strict mode (kubernetes-validate ships them: no network), and the
   custom resources (ServiceMonitor, cert-manager's Certificate) against the fields they may
   have, with no CRD installed;
3. checks what schemas cannot see: selectors select the pods they mean, named ports exist, the
   HPA, PDB, Services, ServiceMonitor and volumes refer to objects that are rendered, each adapter
   Deployment runs exactly one department whose file is mounted, every `${VAR}` a mounted
   configuration file needs without a default is in the container's environment, gateway.toml
   has only keys the gateway knows, and the acceptance list and calendar are the repository's;
4. with the `yichuang-adapter` binary built (make test builds it first; CARGO_TARGET_DIR says
   where), runs `yichuang-adapter --check` on each adapter's rendered configuration, as it would
   start (the reporter's through `report refused`, which reads all of it and connects nowhere), the Secrets' certificates stood in for by development ones (yichuang-dev-certs).
   The notifier's is not: `yichuang-adapter notify` has `run` only, no --check and no command
   that reads its settings without connecting; its notifier.toml is checked here only (keys
   against config/notifier.toml, known events, the ledger on the claim).

Then it makes sure the check can fail: each value set in helm/test-values/bad/ must be refused
with the message its first line names, and copies of the chart broken on purpose (a template
syntax error, a field the Kubernetes schema does not have, a Service selecting nothing, a
duplicated key) must each be caught.

Exit status 0 when everything holds; 1 with every problem listed otherwise.
Run by scripts/chart-check.sh, which prepares the virtual environment (part of `make test`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml

# The Kubernetes version whose schemas every manifest must satisfy (the chart needs >= 1.27).
KUBE_VERSION = "1.30.0"
ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "yichuang"
VALUE_SETS = ROOT / "helm" / "test-values"
RELEASE, NAMESPACE = "yichuang", "hall"
SHIPPED_DEPARTMENTS = sorted(p.stem for p in (ROOT / "config" / "departments").glob("*.yaml"))


class Problems(list):
    def add(self, where: str, what: str) -> None:
        self.append(f"{where}: {what}")


@contextlib.contextmanager
def helm_quiet():
    """Helm logs each symlink it follows (files/ links to config/) on stderr: kept out of sight."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(devnull)
        os.close(saved)


class UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a key twice in one mapping, as kubectl's strict decoding does."""


def _unique_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark,
                f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def render(chart: Path, values: dict) -> dict[str, str]:
    with helm_quiet(), helm.Chart.load(chart) as c:
        c.validate_schema(values)
        return c.render(values=values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def lint(chart: Path, values: dict, where: str, problems: Problems) -> None:
    with helm_quiet():
        report = helm.lint(chart, values, strict=True, namespace=NAMESPACE,
                           kube_version=f"v{KUBE_VERSION}")
    for e in report.get("errors") or []:
        problems.add(where, f"helm lint: {e}")
    for m in report.get("messages") or []:
        if m.get("severity", 0) >= 2:
            problems.add(where, f"helm lint: {m.get('path')}: {m.get('error')}")


def documents(rendered: dict[str, str]) -> list[tuple[str, dict]]:
    docs = []
    for template, text in sorted(rendered.items()):
        if not template.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.load_all(text, Loader=UniqueKeyLoader):
            if doc:
                docs.append((template, doc))
    return docs


# The fields of a ServiceMonitor (monitoring.coreos.com/v1) the chart may set: the CRD is not in
# the Kubernetes schemas.
SERVICE_MONITOR = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {"type": "object", "properties": {"matchLabels": {
                    "type": "object", "additionalProperties": {"type": "string"}}}},
                "namespaceSelector": {"type": "object", "properties": {
                    "matchNames": {"type": "array", "items": {"type": "string"}},
                    "any": {"type": "boolean"}}, "additionalProperties": False},
                "endpoints": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False, "properties": {
                        "port": {"type": "string"}, "path": {"type": "string"},
                        "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                        "scrapeTimeout": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                        "scheme": {"enum": ["http", "https"]}}}},
            },
        },
    },
}


# The fields of a cert-manager Certificate (cert-manager.io/v1) the chart may set: its CRD is
# not in the Kubernetes schemas either, and the check needs no cert-manager installed.
DURATION = {"type": "string", "pattern": "^([0-9]+(\\.[0-9]+)?(h|m|s|ms))+$"}
CERTIFICATE = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "cert-manager.io/v1"},
        "kind": {"const": "Certificate"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["secretName", "issuerRef"],
            # A server certificate names hosts; a client one (the reporter's) an identity URI.
            "anyOf": [{"required": ["dnsNames"]}, {"required": ["uris"]}],
            "additionalProperties": False,
            "properties": {
                "secretName": {"type": "string", "minLength": 1},
                "commonName": {"type": "string", "maxLength": 64},
                "dnsNames": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
                "uris": {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": "^urn:yichuang:"}},
                "duration": DURATION,
                "renewBefore": DURATION,
                "usages": {"type": "array", "items": {"enum": [
                    "server auth", "client auth", "digital signature", "key encipherment"]}},
                "privateKey": {"type": "object", "additionalProperties": False, "properties": {
                    "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
                    "size": {"type": "integer"},
                    "encoding": {"enum": ["PKCS1", "PKCS8"]},
                    "rotationPolicy": {"enum": ["Never", "Always"]}}},
                "issuerRef": {"type": "object", "required": ["name"], "additionalProperties": False,
                              "properties": {"name": {"type": "string", "minLength": 1},
                                             "kind": {"enum": ["Issuer", "ClusterIssuer"]},
                                             "group": {"type": "string"}}},
            },
        },
    },
}

# Custom resources the chart renders, checked against the fields above instead of the
# Kubernetes schemas (which do not know them).
CUSTOM = {"monitoring.coreos.com/": SERVICE_MONITOR, "cert-manager.io/": CERTIFICATE}


def validate_schemas(docs, where: str, problems: Problems) -> None:
    for template, doc in docs:
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        custom = next((s for g, s in CUSTOM.items() if doc.get("apiVersion", "").startswith(g)), None)
        try:
            if custom is not None:
                jsonschema.validate(doc, custom)
            else:
                kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError as e:
            problems.add(f"{where} {template} {name}", e.message)
        except jsonschema.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            problems.add(f"{where} {template} {name}", f"{path}: {e.message}")


def by_kind(docs, kind: str) -> list[dict]:
    return [d for _, d in docs if d.get("kind") == kind]


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def containers(workload: dict) -> list[dict]:
    return workload["spec"]["template"]["spec"]["containers"]


def check_references(docs, where: str, problems: Problems) -> None:
    deployments = by_kind(docs, "Deployment")
    names = {(d["kind"], d["metadata"]["name"]) for _, d in docs}
    pods = [(d["metadata"]["name"], d["spec"]["template"]["metadata"].get("labels", {}), d)
            for d in deployments]
    for d in deployments:
        n = d["metadata"]["name"]
        selector = d["spec"]["selector"].get("matchLabels", {})
        if not selects(selector, d["spec"]["template"]["metadata"].get("labels", {})):
            problems.add(where, f"Deployment/{n}: its selector does not select its own pods")
        others = [p for p, labels, _ in pods if p != n and selects(selector, labels)]
        if others:
            problems.add(where, f"Deployment/{n}: its selector also selects the pods of {others}")
        spec = d["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in spec["containers"]:
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                p = c.get(probe)
                if not p:
                    continue
                for how in ("httpGet", "tcpSocket"):
                    if how in p and isinstance(p[how]["port"], str) and p[how]["port"] not in ports:
                        problems.add(where, f"Deployment/{n} {probe}: no port named {p[how]['port']}")
                if "grpc" in p and p["grpc"]["port"] not in ports.values():
                    problems.add(where, f"Deployment/{n} {probe}: gRPC port {p['grpc']['port']} is not a container port")
            for m in c.get("volumeMounts", []):
                if m["name"] not in volumes:
                    problems.add(where, f"Deployment/{n}: mounts volume {m['name']}, which the pod does not have")
        for v in volumes.values():
            if "configMap" in v and ("ConfigMap", v["configMap"]["name"]) not in names:
                problems.add(where, f"Deployment/{n}: volume {v['name']} needs ConfigMap/{v['configMap']['name']}, not rendered")
            if "persistentVolumeClaim" in v and ("PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"]) not in names:
                problems.add(where, f"Deployment/{n}: volume {v['name']} needs a claim that is not rendered")
            if "configMap" in v:
                cm = next((x for x in by_kind(docs, "ConfigMap") if x["metadata"]["name"] == v["configMap"]["name"]), None)
                for item in v["configMap"].get("items", []):
                    if cm is not None and item["key"] not in (cm.get("data") or {}):
                        problems.add(where, f"Deployment/{n}: ConfigMap/{cm['metadata']['name']} has no key {item['key']}")
        if spec.get("serviceAccountName") and ("ServiceAccount", spec["serviceAccountName"]) not in names:
            problems.add(where, f"Deployment/{n}: ServiceAccount/{spec['serviceAccountName']} is not rendered")
    services = by_kind(docs, "Service")
    for s in services:
        n = s["metadata"]["name"]
        selected = [d for _, labels, d in pods if selects(s["spec"].get("selector", {}), labels)]
        if not selected:
            problems.add(where, f"Service/{n}: selects no pod")
        for port in s["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for d in selected:
                named = {p.get("name") for c in containers(d) for p in c.get("ports", [])}
                numbered = {p["containerPort"] for c in containers(d) for p in c.get("ports", [])}
                if target not in named and target not in numbered:
                    problems.add(where, f"Service/{n}: port {port['name']} targets {target}, which Deployment/{d['metadata']['name']} does not have")
    for h in by_kind(docs, "HorizontalPodAutoscaler"):
        ref = h["spec"]["scaleTargetRef"]
        target = next((d for d in deployments if d["metadata"]["name"] == ref["name"]), None)
        if ref["kind"] != "Deployment" or target is None:
            problems.add(where, f"HorizontalPodAutoscaler/{h['metadata']['name']}: scales {ref['kind']}/{ref['name']}, not rendered")
        elif "replicas" in target["spec"]:
            problems.add(where, f"Deployment/{ref['name']}: sets replicas although an autoscaler scales it")
        else:
            for c in containers(target):
                if not c.get("resources", {}).get("requests", {}).get("cpu"):
                    problems.add(where, f"Deployment/{ref['name']}: no CPU request, which CPU autoscaling needs")
    for p in by_kind(docs, "PodDisruptionBudget"):
        if not any(selects(p["spec"]["selector"]["matchLabels"], labels) for _, labels, _ in pods):
            problems.add(where, f"PodDisruptionBudget/{p['metadata']['name']}: selects no pod")
    for m in by_kind(docs, "ServiceMonitor"):
        chosen = [s for s in services if selects(m["spec"]["selector"]["matchLabels"], s["metadata"].get("labels", {}))]
        if not chosen:
            problems.add(where, f"ServiceMonitor/{m['metadata']['name']}: selects no Service")
        for e in m["spec"]["endpoints"]:
            for s in chosen:
                if e["port"] not in {p["name"] for p in s["spec"]["ports"]}:
                    problems.add(where, f"ServiceMonitor/{m['metadata']['name']}: Service/{s['metadata']['name']} has no port {e['port']}")
    jobs = [(j["metadata"]["name"], j["spec"]["template"]["metadata"].get("labels", {}), j)
            for j in by_kind(docs, "Job")]
    for np in by_kind(docs, "NetworkPolicy"):
        chosen = [d for _, labels, d in pods + jobs if selects(np["spec"]["podSelector"]["matchLabels"], labels)]
        if not chosen:
            problems.add(where, f"NetworkPolicy/{np['metadata']['name']}: selects no pod")
        # A named port the pods do not have admits nothing.
        for rule in np["spec"].get("ingress") or []:
            for port in rule.get("ports", []):
                for d in chosen:
                    named = {p.get("name") for c in containers(d) for p in c.get("ports", [])}
                    if isinstance(port.get("port"), str) and port["port"] not in named:
                        problems.add(where, f"NetworkPolicy/{np['metadata']['name']}: port {port['port']} is not a port of {d['kind']}/{d['metadata']['name']}")
    secrets = {v["secret"]["secretName"] for d in deployments
               for v in d["spec"]["template"]["spec"].get("volumes", []) if "secret" in v}
    for cert in by_kind(docs, "Certificate"):
        if cert["spec"]["secretName"] not in secrets:
            problems.add(where, f"Certificate/{cert['metadata']['name']}: no pod mounts its Secret {cert['spec']['secretName']}")
    for i in by_kind(docs, "Ingress"):
        for rule in i["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                svc = path["backend"]["service"]
                s = next((x for x in services if x["metadata"]["name"] == svc["name"]), None)
                if s is None or svc["port"].get("name") not in {p["name"] for p in s["spec"]["ports"]}:
                    problems.add(where, f"Ingress/{i['metadata']['name']}: backend {svc} is not a rendered Service port")


VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")
ENV_SECRET = re.compile(r"\{\s*env:\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}")
# The same in TOML: secret = { env = "VAR" }.
ENV_SECRET_TOML = re.compile(r"\{\s*env\s*=\s*\"([A-Za-z_][A-Za-z0-9_]*)\"\s*\}")


def uncommented(text: str) -> str:
    """The text without its comments (a shipped file shows optional settings commented out)."""
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def needed_vars(text: str) -> set[str]:
    """Variables a configuration file needs without a default (comments left out)."""
    out = set()
    for line in text.splitlines():
        code = line.split("#", 1)[0]
        out |= {m.group(1) for m in VAR.finditer(code) if m.group(2) is None}
    return out


def mounted_files(d: dict, docs) -> dict[str, str]:
    """mount path/file → content of the ConfigMaps a Deployment mounts."""
    spec = d["spec"]["template"]["spec"]
    maps = {c["metadata"]["name"]: c.get("data") or {} for c in by_kind(docs, "ConfigMap")}
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    files = {}
    for c in spec["containers"]:
        for m in c.get("volumeMounts", []):
            v = volumes.get(m["name"], {})
            if "configMap" not in v:
                continue
            data = maps.get(v["configMap"]["name"], {})
            items = v["configMap"].get("items")
            keys = [(i["key"], i["path"]) for i in items] if items else [(k, k) for k in data]
            for key, path in keys:
                if key in data:
                    files[f"{m['mountPath']}/{path}"] = data[key]
    return files


def container_env(c: dict) -> tuple[set[str], list[str]]:
    return {e["name"] for e in c.get("env", [])}, [
        e["secretRef"]["name"] for e in c.get("envFrom", []) if "secretRef" in e]


GATEWAY_KEYS = {
    "": {"catalog_dir", "calendar_dir"},
    "store": {"kind", "url", "schema", "pool_size", "path"},
    "tracing": {"otlp_endpoint", "sampling_ratio", "service_name"},
    # src/config/trust.rs: DevelopmentConfig (the shipped file shows plaintext only).
    "development": {"plaintext", "unchecked_results"},
    # src/config/trust.rs: JwtConfig (commented out in the shipped file).
    "auth.jwt": set(),
    # src/config/hotline.rs: HotlineConfig (the shipped file leaves timeout_secs at its default).
    "hotline": {"timeout_secs"},
}


def gateway_keys() -> dict[str, set[str]]:
    """The keys the gateway knows, from the shipped, documented config/gateway.toml."""
    # Variables become their defaults first: some stand for a bare value (a boolean).
    text = (ROOT / "config" / "gateway.toml").read_text()
    shipped = tomllib.loads(VAR.sub(lambda m: m.group(2)[2:] if m.group(2) else "x", text))
    keys = {k: set(v) for k, v in GATEWAY_KEYS.items()}
    for table, body in shipped.items():
        if isinstance(body, dict):
            keys.setdefault(table, set()).update(k for k, v in body.items() if not isinstance(v, dict))
            for sub in (k for k, v in body.items() if isinstance(v, dict)):
                keys.setdefault(f"{table}.{sub}", set())
        else:
            keys[""].add(table)
    return keys


def check_configuration(docs, where: str, problems: Problems) -> None:
    # The Jobs (`yichuang bus users`) read the gateway's configuration as the gateway does.
    deployments = {d["metadata"]["name"]: d for d in by_kind(docs, "Deployment") + by_kind(docs, "Job")}
    known = gateway_keys()
    for name, d in deployments.items():
        check_mounted_paths(d, where, problems)
        files = mounted_files(d, docs)
        c = containers(d)[0]
        env, env_from = container_env(c)
        args = c.get("args", [])
        needed: dict[str, str] = {}
        if args[:2] == ["yichuang", "serve"] or args[:3] == ["yichuang", "bus", "users"]:
            path = args[args.index("--config") + 1]
            if path not in files:
                problems.add(where, f"{d['kind']}/{name}: {path} is not mounted")
                continue
            text = files[path]
            try:
                config = tomllib.loads(VAR.sub("x", text))
            except tomllib.TOMLDecodeError as e:
                problems.add(where, f"{d['kind']}/{name}: {path}: {e}")
                continue
            for table, body in config.items():
                if not isinstance(body, dict):
                    if table not in known[""]:
                        problems.add(where, f"{path}: unknown key {table}")
                    continue
                for key, value in body.items():
                    if isinstance(value, dict):
                        if f"{table}.{key}" not in known:
                            problems.add(where, f"{path}: unknown table [{table}.{key}]")
                    elif table in known and known[table] and key not in known[table]:
                        problems.add(where, f"{path}: unknown key [{table}] {key}")
                    elif table not in known:
                        problems.add(where, f"{path}: unknown table [{table}]")
            for d_dir in ("catalog_dir", "calendar_dir"):
                mounted = [f for f in files if f.startswith(config[d_dir] + "/")]
                if not mounted:
                    problems.add(where, f"{d['kind']}/{name}: {d_dir} {config[d_dir]} has no files mounted")
            needed = {v: path for v in needed_vars(text)}
        elif args[:2] == ["yichuang-adapter", "run"]:
            path = args[args.index("--config") + 1]
            departments = [args[i + 1] for i, a in enumerate(args) if a == "--department"]
            if len(departments) != 1:
                problems.add(where, f"{d['kind']}/{name}: runs {departments}, not one department")
                continue
            text = files.get(path)
            if text is None:
                problems.add(where, f"{d['kind']}/{name}: {path} is not mounted")
                continue
            config = tomllib.loads(VAR.sub("x", text))
            department_file = f"{config['departments_dir']}/{departments[0]}.yaml"
            if department_file not in files:
                problems.add(where, f"{d['kind']}/{name}: {department_file} is not mounted")
                continue
            dept_text = files[department_file]
            try:
                dept = yaml.load(dept_text, Loader=UniqueKeyLoader)
            except yaml.YAMLError as e:
                problems.add(where, f"{department_file}: {e}")
                continue
            if dept.get("department") != departments[0]:
                problems.add(where, f"{department_file}: names department {dept.get('department')!r}")
            needed = {v: path for v in needed_vars(text)}
            needed.update({v: department_file for v in needed_vars(dept_text)})
            # Credentials by reference: { env: VAR } must be set too.
            needed.update({v: department_file for v in ENV_SECRET.findall(uncommented(dept_text))})
        elif args[:3] == ["yichuang-adapter", "report", "run"]:
            path = args[args.index("--config") + 1]
            text = files.get(path)
            if text is None:
                problems.add(where, f"{d['kind']}/{name}: {path} is not mounted")
                continue
            try:
                config = tomllib.loads(VAR.sub("x", text))
            except tomllib.TOMLDecodeError as e:
                problems.add(where, f"{d['kind']}/{name}: {path}: {e}")
                continue
            check_reporter_config(d, config, path, files, where, problems)
            needed = {v: path for v in needed_vars(text)}
        elif args[:3] == ["yichuang-adapter", "notify", "run"]:
            path = args[args.index("--config") + 1]
            text = files.get(path)
            if text is None:
                problems.add(where, f"{d['kind']}/{name}: {path} is not mounted")
                continue
            try:
                config = tomllib.loads(VAR.sub("x", text))
            except tomllib.TOMLDecodeError as e:
                problems.add(where, f"{d['kind']}/{name}: {path}: {e}")
                continue
            check_notifier_config(d, config, path, where, problems)
            needed = {v: path for v in needed_vars(text)}
            # The SMS secret by reference: { env = "VAR" } must be set too.
            needed.update({v: path for v in ENV_SECRET_TOML.findall(uncommented(text))})
        elif args[:1] == ["yichuang-sim"]:
            continue
        else:
            problems.add(where, f"{d['kind']}/{name}: runs {args}, which the chart does not know")
            continue
        for var, source in sorted(needed.items()):
            if var not in env and not env_from:
                problems.add(where, f"{d['kind']}/{name}: {source} needs ${{{var}}}, which the container's environment lacks")
    # The acceptance list and calendar are the repository's (unless a value set replaced them).
    maps = {c["metadata"]["name"]: c.get("data") or {} for c in by_kind(docs, "ConfigMap")}
    for what, pattern in (("catalog", "*.toml"), ("calendar", "*.toml")):
        data = maps.get(f"{RELEASE}-{what}")
        if data is None:
            problems.add(where, f"ConfigMap/{RELEASE}-{what} is not rendered")
            continue
        for f in (ROOT / "config" / what).glob(pattern):
            if data.get(f.name) != f.read_text():
                problems.add(where, f"ConfigMap/{RELEASE}-{what}: {f.name} differs from config/{what}/{f.name}")


REPORTER_KEYS = {
    # adapters/src/report/transport.rs: TransportConfig::Tables (the shipped file shows http) and
    # the HTTP interface's optional ca_file.
    "transport": {"url", "schema", "ca_file"},
    "tracing": {"otlp_endpoint", "sampling_ratio", "service_name"},
}


def reporter_keys() -> dict[str, set[str]]:
    """The keys the reporter knows, from the shipped, documented config/reporter.toml; [bus] is
    the gateway's BusConfig."""
    text = (ROOT / "config" / "reporter.toml").read_text()
    shipped = tomllib.loads(VAR.sub(lambda m: m.group(2)[2:] if m.group(2) else "x", text))
    keys: dict[str, set[str]] = {"": set()}
    for table, body in shipped.items():
        if isinstance(body, dict):
            keys.setdefault(table, set()).update(body)
        else:
            keys[""].add(table)
    for table, extra in REPORTER_KEYS.items():
        keys.setdefault(table, set()).update(extra)
    keys["bus"] |= gateway_keys()["bus"]
    return keys


def check_reporter_config(d: dict, config: dict, path: str, files: dict[str, str], where: str,
                          problems: Problems) -> None:
    """reporter.toml: only keys the reporter knows; its specification and calendar mounted; its
    ledger on the claim, not in a ConfigMap or an emptyDir; one replica, replaced by Recreate."""
    known = reporter_keys()
    name = f"{d['kind']}/{d['metadata']['name']}"
    for table, body in config.items():
        if not isinstance(body, dict):
            if table not in known[""]:
                problems.add(where, f"{path}: unknown key {table}")
        elif table not in known:
            problems.add(where, f"{path}: unknown table [{table}]")
        else:
            for key in body:
                if key not in known[table]:
                    problems.add(where, f"{path}: unknown key [{table}] {key}")
    if config.get("specification") not in files:
        problems.add(where, f"{name}: the specification {config.get('specification')} is not mounted")
    else:
        try:
            spec = yaml.load(files[config["specification"]], Loader=UniqueKeyLoader)
            if not isinstance(spec, dict) or "records" not in spec:
                problems.add(where, f"{name}: the specification has no records")
        except yaml.YAMLError as e:
            problems.add(where, f"{config['specification']}: {e}")
    if not [f for f in files if f.startswith(str(config.get("calendar_dir")) + "/")]:
        problems.add(where, f"{name}: calendar_dir {config.get('calendar_dir')} has no files mounted")
    spec = d["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    ledger = str(config.get("ledger", ""))
    mount = max((m for c in spec["containers"] for m in c.get("volumeMounts", [])
                 if ledger.startswith(m["mountPath"] + "/")), key=lambda m: len(m["mountPath"]), default=None)
    if mount is None or "persistentVolumeClaim" not in volumes.get(mount["name"], {}):
        problems.add(where, f"{name}: the ledger {ledger} is not on a PersistentVolumeClaim")
    if d["spec"].get("replicas") != 1 or d["spec"].get("strategy", {}).get("type") != "Recreate":
        problems.add(where, f"{name}: one reporter only: replicas 1 and strategy Recreate")


NOTIFIER_KEYS = {
    # adapters/src/notify/sms.rs: SmsConfig's optional ca_file, SignatureConfig's uppercase.
    "sms": {"ca_file"},
    "sms.signature": {"uppercase"},
    "tracing": {"otlp_endpoint", "sampling_ratio", "service_name"},
}
# Tables whose keys are the operator's own (an event's template, a body field).
NOTIFIER_FREE_TABLES = {"templates", "sms.fields"}


def notifier_keys() -> dict[str, set[str]]:
    """The keys the notifier knows, from the shipped, documented config/notifier.toml; [bus] is
    the gateway's BusConfig."""
    text = (ROOT / "config" / "notifier.toml").read_text()
    shipped = tomllib.loads(VAR.sub(lambda m: m.group(2)[2:] if m.group(2) else "x", text))
    keys: dict[str, set[str]] = {"": set()}

    def walk(prefix: str, body: dict) -> None:
        for k, v in body.items():
            if isinstance(v, dict) and f"{prefix}{k}" not in ("sms.secret",):
                keys.setdefault(f"{prefix}{k}", set())
                walk(f"{prefix}{k}.", v)
            else:
                keys.setdefault(prefix.rstrip("."), set()).add(k)
    walk("", shipped)
    for table, extra in NOTIFIER_KEYS.items():
        keys.setdefault(table, set()).update(extra)
    keys["bus"] |= gateway_keys()["bus"]
    return keys


def shipped_templates() -> dict[str, str]:
    return tomllib.loads((ROOT / "config" / "notifier.toml").read_text())["templates"]


def check_notifier_config(d: dict, config: dict, path: str, where: str, problems: Problems) -> None:
    """notifier.toml: only keys the notifier knows, and only known events in [templates]; its
    ledger on the claim, not in a ConfigMap or an emptyDir; one replica, replaced by Recreate.
    (`yichuang-adapter notify` has no --check: this is all that is checked of it.)"""
    known = notifier_keys()
    name = f"{d['kind']}/{d['metadata']['name']}"

    def walk(prefix: str, body: dict) -> None:
        table = prefix.rstrip(".")
        for key, value in body.items():
            if isinstance(value, dict) and f"{prefix}{key}" != "sms.secret":
                if f"{prefix}{key}" not in known:
                    problems.add(where, f"{path}: unknown table [{prefix}{key}]")
                else:
                    walk(f"{prefix}{key}.", value)
            elif table not in NOTIFIER_FREE_TABLES and key not in known.get(table, set()):
                problems.add(where, f"{path}: unknown key {f'[{table}] ' if table else ''}{key}")
    walk("", config)
    events = set(shipped_templates())
    for event in config.get("templates", {}):
        if event not in events:
            problems.add(where, f"{path}: [templates] {event} is not an event the notifier knows ({sorted(events)})")
    if not config.get("templates"):
        problems.add(where, f"{path}: [templates] is empty: no notice would ever be sent")
    spec = d["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    ledger = str(config.get("ledger", ""))
    mount = max((m for c in spec["containers"] for m in c.get("volumeMounts", [])
                 if ledger.startswith(m["mountPath"] + "/")), key=lambda m: len(m["mountPath"]), default=None)
    if mount is None or "persistentVolumeClaim" not in volumes.get(mount["name"], {}):
        problems.add(where, f"{name}: the ledger {ledger} is not on a PersistentVolumeClaim")
    if d["spec"].get("replicas") != 1 or d["spec"].get("strategy", {}).get("type") != "Recreate":
        problems.add(where, f"{name}: one notifier only: replicas 1 and strategy Recreate")


def adapter_binary() -> Path | None:
    target = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
    for p in (target / "debug" / "yichuang-adapter", target / "release" / "yichuang-adapter"):
        if p.is_file() and os.access(p, os.X_OK):
            return p
    return None


_PEMS: dict[str, str] = {}


def stand_in_pems(binary: Path) -> dict[str, str]:
    """A development CA's certificate and a private key, standing in for the Secrets' files
    (which --check reads): made once by yichuang-dev-certs beside the adapter, or openssl."""
    if _PEMS:
        return _PEMS
    with tempfile.TemporaryDirectory() as tmp:
        devcerts = binary.parent / "yichuang-dev-certs"
        if devcerts.is_file():
            subprocess.run([str(devcerts), tmp], capture_output=True, timeout=60, check=True)
            _PEMS.update(ca=Path(tmp, "ca.pem").read_text(), cert=Path(tmp, "server.pem").read_text(),
                         key=Path(tmp, "server-key.pem").read_text())
        elif shutil.which("openssl"):
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                            "-nodes", "-subj", "/CN=chart-check", "-days", "1",
                            "-keyout", f"{tmp}/key.pem", "-out", f"{tmp}/cert.pem"],
                           capture_output=True, timeout=60, check=True)
            cert = Path(tmp, "cert.pem").read_text()  # self-signed: its own CA
            _PEMS.update(ca=cert, cert=cert, key=Path(tmp, "key.pem").read_text())
    return _PEMS


def secret_files(d: dict) -> list[str]:
    """Paths of the files a Deployment's Secret (and projected) volumes mount."""
    spec = d["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    out = []
    for c in spec["containers"]:
        for m in c.get("volumeMounts", []):
            v = volumes.get(m["name"], {})
            sources = [v["secret"]] if "secret" in v else [
                s["secret"] for s in v.get("projected", {}).get("sources", []) if "secret" in s]
            out += [f"{m['mountPath']}/{i['path']}" for src in sources for i in src.get("items", [])]
    return out


def run_adapter_checks(docs, where: str, binary: Path, problems: Problems) -> int:
    """Runs `yichuang-adapter --check` on each adapter's configuration as mounted; the Secrets'
    files are stood in for by development certificates."""
    checked = 0
    for d in by_kind(docs, "Deployment"):
        c = containers(d)[0]
        args = c.get("args", [])
        reporter = args[:3] == ["yichuang-adapter", "report", "run"]
        if args[:2] != ["yichuang-adapter", "run"] and not reporter:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            files = mounted_files(d, docs)
            # Writable volumes (the worklist's) become directories of their own here.
            volumes = {v["name"]: v for v in d["spec"]["template"]["spec"].get("volumes", [])}
            writable = [m["mountPath"] for m in c.get("volumeMounts", [])
                        if "configMap" not in volumes.get(m["name"], {})]
            for path in writable:
                Path(tmp + path).mkdir(parents=True, exist_ok=True)

            prefixes = re.compile("(" + "|".join(re.escape(p + "/") for p in ["/etc/yichuang", *writable]) + ")")

            def here(text: str) -> str:
                return prefixes.sub(lambda m: tmp + m.group(1), text)

            for path, text in files.items():
                target = Path(tmp + path)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(here(text))
            for path in secret_files(d):
                pems = stand_in_pems(binary)
                target = Path(tmp + path)
                target.parent.mkdir(parents=True, exist_ok=True)
                name = Path(path).name
                kind = "key" if "key" in name else "ca" if name.startswith("ca") or name.endswith(".pem") else "cert"
                target.write_text(pems.get(kind, ""))
            env = {"PATH": os.environ.get("PATH", "")}
            for e in c.get("env", []):
                value = e.get("value")
                if value is None:
                    value = f"from-secret-{e['name'].lower()}"
                env[e["name"]] = here(re.sub(r"\$\(([A-Za-z_0-9]+)\)", lambda m: env.get(m.group(1), ""), value))
            if c.get("envFrom"):
                # The legacy Secret carries the department file's { env: VAR } credentials.
                dept_files = [t for p, t in files.items() if p.startswith("/etc/yichuang/departments/")]
                for text in dept_files:
                    for var in ENV_SECRET.findall(uncommented(text)):
                        env.setdefault(var, f"from-secret-{var.lower()}")
            # The reporter has no --check: `report refused` reads its whole configuration (the
            # specification, the calendar, the transport, the gateway's TLS material), opens its
            # ledger and lists nothing, without connecting anywhere.
            cmd = [str(binary), "report", "refused", *args[3:]] if reporter else [str(binary), *args[1:], "--check"]
            cmd[cmd.index("--config") + 1] = tmp + cmd[cmd.index("--config") + 1]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
            if out.returncode != 0:
                problems.add(where, f"Deployment/{d['metadata']['name']}: {' '.join(cmd[1:3]) if reporter else 'yichuang-adapter --check'}: {(out.stderr or out.stdout).strip()}")
            checked += 1
    return checked


def expectations(name: str, docs, problems: Problems) -> None:
    """What each value set must produce."""
    deployments = {d["metadata"]["name"]: d for d in by_kind(docs, "Deployment")}
    adapters = sorted(n.removeprefix(f"{RELEASE}-adapter-") for n in deployments if n.startswith(f"{RELEASE}-adapter-"))
    sims = sorted(n.removeprefix(f"{RELEASE}-sim-") for n in deployments if n.startswith(f"{RELEASE}-sim-"))
    kinds = {d["kind"] for _, d in docs}

    def expect(ok: bool, what: str) -> None:
        if not ok:
            problems.add(name, what)

    expect(f"{RELEASE}-gateway" in deployments, "a gateway Deployment")
    if name == "default":
        expect(adapters == SHIPPED_DEPARTMENTS, f"an adapter per shipped department, got {adapters}")
        expect(not sims, f"no simulator without demo, got {sims}")
        expect({"HorizontalPodAutoscaler", "PodDisruptionBudget", "PersistentVolumeClaim"} <= kinds, f"HPA, PDB and gjj's claim, got {sorted(kinds)}")
        expect("ServiceMonitor" not in kinds, "no ServiceMonitor unless asked")
        expect(f"{RELEASE}-reporter" not in deployments, "no reporter unless asked")
        gateway = next(c for c in by_kind(docs, "ConfigMap") if c["metadata"]["name"] == f"{RELEASE}-gateway")
        expect(tomllib.loads(VAR.sub("x", gateway["data"]["gateway.toml"]))["bus"]["report"] is False,
               "no report queue without a reporter ([bus] report = false)")
        expect(f"{RELEASE}-notifier" not in deployments, "no notifier unless asked")
        bus = tomllib.loads(VAR.sub("x", gateway["data"]["gateway.toml"]))["bus"]
        expect(bus["notify"] is False and "notify_user" not in bus,
               "no notify queue without a notifier ([bus] notify = false)")
        hotline = tomllib.loads(VAR.sub("x", gateway["data"]["gateway.toml"]))["hotline"]
        expect(hotline == {"max_failed_verifications": 5, "reply_working_days": 5, "reply_url": "",
                           "secret": "x", "timeout_secs": 10},
               f"the hotline's defaults, replies queued and not sent, got {hotline}")
        policies = {n["metadata"]["name"] for n in by_kind(docs, "NetworkPolicy")}
        expect(policies == {f"{RELEASE}-gateway", f"{RELEASE}-bus-users", *(f"{RELEASE}-adapter-{c}" for c in adapters)},
               f"NetworkPolicies on by default, for the gateway and each adapter, got {sorted(policies)}")
        expect_trust(docs, expect)
    elif name == "demo":
        expect(sims == sorted(set(SHIPPED_DEPARTMENTS) - {"gjj"}), f"a simulator per department but gjj, got {sims}")
        scjg = containers(deployments[f"{RELEASE}-adapter-scjg"])[0]
        env = {e["name"]: e.get("value") for e in scjg.get("env", [])}
        expect(env.get("SCJG_ENDPOINT") == f"http://{RELEASE}-sim-scjg:18081", f"scjg's adapter points at its simulator, got {env.get('SCJG_ENDPOINT')}")
        expect("envFrom" not in scjg, "a simulated department needs no legacy Secret")
    elif name == "development":
        gateway = containers(deployments[f"{RELEASE}-gateway"])[0]
        expect(all("grpc" in gateway[p] for p in ("startupProbe", "readinessProbe", "livenessProbe")),
               "plaintext: the probes ask the gRPC health service")
        config = next(m for m in by_kind(docs, "ConfigMap") if m["metadata"]["name"] == f"{RELEASE}-gateway")
        toml = tomllib.loads(VAR.sub("x", config["data"]["gateway.toml"]))
        expect(toml["development"]["plaintext"] is True and "tls" not in toml["server"],
               "plaintext said in [development], no [server.tls]")
    elif name == "production":
        expect(adapters == ["ga", "rs", "scjg", "sw", "xf"], f"five departments, got {adapters}")
        expect(deployments[f"{RELEASE}-adapter-scjg"]["spec"]["replicas"] == 2, "two scjg adapters")
        expect(not sims, "no simulators")
        ingress = by_kind(docs, "Ingress")
        notes = ingress[0]["metadata"].get("annotations", {}) if len(ingress) == 1 else {}
        expect(notes.get("nginx.ingress.kubernetes.io/ssl-passthrough") == "true"
               and notes.get("nginx.ingress.kubernetes.io/backend-protocol") == "GRPCS",
               "an Ingress passing the windows' TLS through to the gateway")
        certificates = {c["metadata"]["name"]: c for c in by_kind(docs, "Certificate")}
        expect(set(certificates) == {f"{RELEASE}-gateway", f"{RELEASE}-reporter-client", f"{RELEASE}-notifier-client"},
               f"the gateway's, the reporter's and the notifier's certificates from cert-manager, got {sorted(certificates)}")
        client = certificates.get(f"{RELEASE}-reporter-client", {}).get("spec", {})
        expect(client.get("uris") == ["urn:yichuang:platform"] and "client auth" in client.get("usages", [])
               and client.get("issuerRef", {}).get("name") == "nx-province-client-ca",
               "the reporter's client certificate names the platform role, from the client CA's issuer")
        client = certificates.get(f"{RELEASE}-notifier-client", {}).get("spec", {})
        expect(client.get("uris") == ["urn:yichuang:notifier"] and "client auth" in client.get("usages", [])
               and client.get("issuerRef", {}).get("name") == "nx-province-client-ca"
               and client.get("secretName") == f"{RELEASE}-notifier-client-tls",
               "the notifier's client certificate names the notifier role, from the client CA's issuer")
        # Callbacks: only 公安 takes them, on a port of their own, from its system's address only.
        for code in adapters:
            c = containers(deployments[f"{RELEASE}-adapter-{code}"])[0]
            has = "callbacks" in {p["name"] for p in c["ports"]}
            expect(has == (code == "ga"), f"{code}: a callbacks port only where the department takes callbacks")
        policy = next(n for n in by_kind(docs, "NetworkPolicy") if n["metadata"]["name"] == f"{RELEASE}-adapter-ga")
        callers = [r.get("from") for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == "callbacks"]
        expect(callers == [[{"ipBlock": {"cidr": "10.64.14.9/32"}}]], f"ga's callbacks from its system only, got {callers}")
        expect(len(by_kind(docs, "ServiceMonitor")) == 4, "ServiceMonitors for the gateway, the adapters, the reporter and the notifier")
        expect(len(by_kind(docs, "NetworkPolicy")) == 4 + len(adapters), "NetworkPolicies for the gateway, each adapter, the reporter, the notifier and the bus users Job")
        expect_trust(docs, expect)
        gateway = next(c for c in by_kind(docs, "ConfigMap") if c["metadata"]["name"] == f"{RELEASE}-gateway")
        users = tomllib.loads(VAR.sub("x", gateway["data"]["gateway.toml"]))["bus"]["department_users"]
        expect(users == {c: f"adapter-{c}" for c in adapters}, f"each department's results checked against its user, got {users}")
        config = expect_reporter(docs, expect)
        transport = config.get("transport", {})
        expect(transport.get("kind") == "http" and transport.get("secret") == {"env": "YICHUANG_PLATFORM_SECRET"}
               and transport.get("ca_file") == "/etc/yichuang/tls/report-platform/ca.crt",
               f"the reporter on the platform's HTTP interface, its secret from the environment, its CA mounted, got {transport}")
        notifier = expect_notifier(docs, expect)
        expect(notifier.get("hours") == "08:00-20:00" and set(notifier.get("templates", {})) == set(shipped_templates()),
               f"the notifier's default hours and the shipped texts, got {notifier.get('hours')}, {sorted(notifier.get('templates', {}))}")
        volumes = {v["name"]: v for v in next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == f"{RELEASE}-notifier")["spec"]["template"]["spec"]["volumes"]}
        expect(volumes.get("notifier-tls", {}).get("secret", {}).get("secretName") == f"{RELEASE}-notifier-client-tls"
               and volumes.get("gateway-ca", {}).get("secret", {}).get("secretName") == f"{RELEASE}-gateway-tls",
               "the notifier mounts the issued client certificate and the gateway's issued CA")
    elif name == "reporter":
        config = expect_reporter(docs, expect)
        url = config.get("transport", {}).get("url", "")
        expect(url == "postgres://gdbs_exchange:${YICHUANG_REPORT_DB_PASSWORD}@qzk.nx.gov.cn:5432/qzk"
               "?sslmode=verify-full&connect_timeout=10&sslrootcert=/etc/yichuang/tls/report-platform/ca.crt",
               f"the exchange tables' URL with the password from the environment and the CA mounted, got {url}")
        expect(len(by_kind(docs, "Certificate")) == 0, "no Certificate without cert-manager")
    elif name == "notifier":
        expect_reporter(docs, expect)
        config = expect_notifier(docs, expect)
        expect(config.get("hours") == "08:30-19:30", f"the notifier's hours from the values, got {config.get('hours')}")
        expect(set(config.get("templates", {})) == {"accepted", "ready"}, f"the notifier's own templates, got {config.get('templates')}")
        expect(config.get("sms", {}).get("ca_file") == "/etc/yichuang/tls/sms/ca.crt", "the SMS platform's CA mounted")
        maps = {m["metadata"]["name"]: m.get("data") or {} for m in by_kind(docs, "ConfigMap")}
        hotline = tomllib.loads(VAR.sub(lambda m: "${" + m.group(1) + "}", maps[f"{RELEASE}-gateway"]["gateway.toml"]))["hotline"]
        expect(hotline.get("reply_url") == "https://12345.nx.gov.cn/api/reply" and hotline.get("timeout_secs") == 15
               and hotline.get("max_failed_verifications") == 3 and hotline.get("reply_working_days") == 3,
               f"the hotline's settings from the values, got {hotline}")
        gw = containers(next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == f"{RELEASE}-gateway"))[0]
        env = {e["name"]: e for e in gw.get("env", [])}
        expect(env.get("YICHUANG_HOTLINE_SECRET", {}).get("valueFrom", {}).get("secretKeyRef") == {"name": "yichuang-hotline", "key": "secret"},
               "the hotline's secret from its Secret")


def expect_notifier(docs, expect) -> dict:
    """The notifier: one replica replaced by Recreate, probed on /healthz, its ledger on its
    claim, its own RabbitMQ user (made by the bus users Job), reading the gateway over TLS with
    its client certificate; the gateway declares its queue and admits it; its egress only to DNS,
    RabbitMQ, the gateway and the SMS platform; scraped. Returns its notifier.toml."""
    deployments = {d["metadata"]["name"]: d for d in by_kind(docs, "Deployment")}
    d = deployments.get(f"{RELEASE}-notifier")
    expect(d is not None, "a notifier Deployment")
    if d is None:
        return {}
    expect(d["spec"]["replicas"] == 1 and d["spec"]["strategy"] == {"type": "Recreate"},
           "one notifier, replaced by Recreate")
    c = containers(d)[0]
    expect(c["args"][:3] == ["yichuang-adapter", "notify", "run"], f"the notifier runs notify run, got {c['args']}")
    for p in ("readinessProbe", "livenessProbe"):
        expect(c.get(p, {}).get("httpGet") == {"path": "/healthz", "port": "http"}, f"the notifier's {p} on /healthz")
    env = {e["name"]: e for e in c.get("env", [])}
    expect(env.get("YICHUANG_AMQP_USER", {}).get("value") == "notifier", "the notifier's own RabbitMQ user")
    for var in ("YICHUANG_AMQP_PASSWORD", "YICHUANG_SMS_SECRET"):
        expect("secretKeyRef" in env.get(var, {}).get("valueFrom", {}), f"its {var} from a Secret")
    claims = {p["metadata"]["name"] for p in by_kind(docs, "PersistentVolumeClaim")}
    expect(f"{RELEASE}-notifier" in claims, "the notifier's ledger's claim")
    maps = {m["metadata"]["name"]: m.get("data") or {} for m in by_kind(docs, "ConfigMap")}
    config = tomllib.loads(VAR.sub(lambda m: "${" + m.group(1) + "}", maps.get(f"{RELEASE}-notifier", {}).get("notifier.toml", "")))
    gw = config.get("gateway", {})
    expect(gw.get("url") == f"https://{RELEASE}-gateway:50051" and gw.get("client_cert") == "/etc/yichuang/tls/notifier/tls.crt"
           and gw.get("ca_file"), f"the notifier reads the gateway's windows' listener over TLS with its client certificate, got {gw}")
    expect(config.get("bus", {}).get("url", "").startswith("amqps://"), "the notifier on AMQPS")
    expect(config.get("sms", {}).get("secret") == {"env": "YICHUANG_SMS_SECRET"}, "the SMS secret from the environment")
    gateway = tomllib.loads(VAR.sub("x", maps[f"{RELEASE}-gateway"]["gateway.toml"]))
    expect(gateway["bus"]["notify"] is True and gateway["bus"].get("notify_user") == "notifier",
           "the gateway declares the notify queue and names its user ([bus] notify = true, notify_user)")
    jobs = {j["metadata"]["name"]: j for j in by_kind(docs, "Job")}
    job = jobs.get(f"{RELEASE}-bus-users")
    sources = job["spec"]["template"]["spec"]["volumes"] if job else []
    paths = [i["path"] for v in sources for s in v.get("projected", {}).get("sources", []) for i in s.get("secret", {}).get("items", [])]
    expect("notifier" in paths, f"the bus users Job makes the notifier's user, got {paths}")
    policies = {n["metadata"]["name"]: n for n in by_kind(docs, "NetworkPolicy")}
    pods = d["spec"]["template"]["metadata"]["labels"]
    admitted = [r for r in policies[f"{RELEASE}-gateway"]["spec"]["ingress"]
                if any(selects(f.get("podSelector", {}).get("matchLabels", {}), pods) for f in r.get("from", []))]
    expect([r["ports"] for r in admitted] == [[{"protocol": "TCP", "port": "grpc"}]],
           f"the gateway admits the notifier on its windows' port only, got {admitted}")
    policy = policies.get(f"{RELEASE}-notifier")
    expect(policy is not None and selects(policy["spec"]["podSelector"]["matchLabels"], pods),
           "a NetworkPolicy for the notifier")
    monitors = [m for m in by_kind(docs, "ServiceMonitor") if m["metadata"]["name"] == f"{RELEASE}-notifier"]
    expect(len(monitors) == 1, "a ServiceMonitor for the notifier")
    return config


def expect_reporter(docs, expect) -> dict:
    """The reporter: one replica replaced by Recreate, probed on /healthz, its ledger on its
    claim, its own RabbitMQ user, reading the gateway over TLS with its client certificate; the
    gateway declares its queue and admits it; its egress only to DNS, RabbitMQ, the gateway and
    the platform (and the rules given); scraped. Returns its reporter.toml."""
    deployments = {d["metadata"]["name"]: d for d in by_kind(docs, "Deployment")}
    d = deployments.get(f"{RELEASE}-reporter")
    expect(d is not None, "a reporter Deployment")
    if d is None:
        return {}
    expect(d["spec"]["replicas"] == 1 and d["spec"]["strategy"] == {"type": "Recreate"},
           "one reporter, replaced by Recreate")
    c = containers(d)[0]
    expect(c["args"][:3] == ["yichuang-adapter", "report", "run"], f"the reporter runs report run, got {c['args']}")
    for p in ("readinessProbe", "livenessProbe"):
        expect(c.get(p, {}).get("httpGet") == {"path": "/healthz", "port": "http"}, f"the reporter's {p} on /healthz")
    env = {e["name"]: e for e in c.get("env", [])}
    expect(env.get("YICHUANG_AMQP_USER", {}).get("value") == "reporter", "the reporter's own RabbitMQ user")
    expect("secretKeyRef" in env.get("YICHUANG_AMQP_PASSWORD", {}).get("valueFrom", {}), "its password from a Secret")
    claims = {p["metadata"]["name"] for p in by_kind(docs, "PersistentVolumeClaim")}
    expect(f"{RELEASE}-reporter" in claims, "the ledger's claim")
    maps = {m["metadata"]["name"]: m.get("data") or {} for m in by_kind(docs, "ConfigMap")}
    data = maps.get(f"{RELEASE}-reporter", {})
    expect(data.get("specification.yaml") == (ROOT / "config" / "report" / "gdbs.yaml").read_text(),
           "the shipped specification, config/report/gdbs.yaml")
    config = tomllib.loads(VAR.sub(lambda m: "${" + m.group(1) + "}", data.get("reporter.toml", "")))
    gw = config.get("gateway", {})
    expect(gw.get("url") == f"https://{RELEASE}-gateway:50051" and gw.get("client_cert") and gw.get("ca_file"),
           f"the reporter reads the gateway's windows' listener over TLS with its client certificate, got {gw}")
    expect(config.get("bus", {}).get("url", "").startswith("amqps://"), "the reporter on AMQPS")
    gateway = tomllib.loads(VAR.sub("x", maps[f"{RELEASE}-gateway"]["gateway.toml"]))
    expect(gateway["bus"]["report"] is True, "the gateway declares the report queue ([bus] report = true)")
    policies = {n["metadata"]["name"]: n for n in by_kind(docs, "NetworkPolicy")}
    reporter_pods = d["spec"]["template"]["metadata"]["labels"]
    admitted = [r for r in policies[f"{RELEASE}-gateway"]["spec"]["ingress"]
                if any(selects(f.get("podSelector", {}).get("matchLabels", {}), reporter_pods) for f in r.get("from", []))]
    expect([r["ports"] for r in admitted] == [[{"protocol": "TCP", "port": "grpc"}]],
           f"the gateway admits the reporter on its windows' port only, got {admitted}")
    policy = policies.get(f"{RELEASE}-reporter")
    expect(policy is not None and selects(policy["spec"]["podSelector"]["matchLabels"], reporter_pods),
           "a NetworkPolicy for the reporter")
    if policy is not None:
        # A rule without peers (DNS; RabbitMQ when networkPolicy.egress.rabbitmq is empty) must
        # name its ports, and only those.
        broker = re.search(r"@[^:/]+:(\d+)/", config.get("bus", {}).get("url", ""))
        open_ports = {53} | ({int(broker.group(1))} if broker else set())
        egress = policy["spec"].get("egress") or []
        expect(all(r.get("to") or (r.get("ports") and {p.get("port") for p in r["ports"]} <= open_ports) for r in egress),
               f"the reporter's egress: peers named, or only DNS and RabbitMQ's port, got {egress}")
    monitors = [m for m in by_kind(docs, "ServiceMonitor") if m["metadata"]["name"] == f"{RELEASE}-reporter"]
    expect(len(monitors) == 1, "a ServiceMonitor for the reporter")
    return config


def expect_trust(docs, expect) -> None:
    """Both listeners over TLS, the internal one on a ClusterIP Service of its own, the
    certificates mounted where the environment says, TLS to the broker and the database."""
    services = {s["metadata"]["name"]: s for s in by_kind(docs, "Service")}
    public = {p["name"] for p in services[f"{RELEASE}-gateway"]["spec"]["ports"]}
    expect(public == {"grpc"}, f"the gateway's Service carries the windows' port only, got {sorted(public)}")
    internal = services.get(f"{RELEASE}-gateway-internal")
    expect(internal is not None and internal["spec"].get("type", "ClusterIP") == "ClusterIP"
           and {p["name"] for p in internal["spec"]["ports"]} == {"admin", "metrics"},
           "an internal ClusterIP Service with the admin and metrics ports")
    gateway = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == f"{RELEASE}-gateway")
    c = containers(gateway)[0]
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    for var in ("YICHUANG_TLS_CERT", "YICHUANG_TLS_KEY", "YICHUANG_TLS_CLIENT_CA"):
        expect(bool(env.get(var)), f"the gateway's {var} is set")
    for p in ("startupProbe", "readinessProbe", "livenessProbe"):
        expect("grpc" not in c.get(p, {}), f"the gateway's {p} does not use the kubelet's plaintext gRPC probe")
    config = next(m for m in by_kind(docs, "ConfigMap") if m["metadata"]["name"] == f"{RELEASE}-gateway")
    toml = tomllib.loads(VAR.sub("x", config["data"]["gateway.toml"]))
    expect(toml["bus"]["url"].startswith("amqps://"), "AMQPS to RabbitMQ")
    expect("sslmode=verify-full" in toml["store"]["url"], "PostgreSQL with sslmode=verify-full")
    expect(toml["development"] == {"plaintext": False, "unchecked_results": False}, "no development switch")


def check_mounted_paths(d: dict, where: str, problems: Problems) -> None:
    """Every file the environment names under /etc/yichuang/tls is a key a volume mounts there."""
    spec = d["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for c in spec["containers"]:
        mounted = set()
        for m in c.get("volumeMounts", []):
            secret = volumes.get(m["name"], {}).get("secret")
            if secret:
                mounted |= {f"{m['mountPath']}/{i['path']}" for i in secret.get("items", [])}
        for e in c.get("env", []):
            value = e.get("value") or ""
            if value.startswith("/etc/yichuang/tls/") and value not in mounted:
                problems.add(where, f"{d['kind']}/{d['metadata']['name']}: {e['name']} names {value}, which no Secret volume mounts")


def check_image(problems: Problems) -> None:
    """The chart runs what the Dockerfile builds, as the user it creates."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    user = values["podSecurityContext"]["runAsUser"]
    if not re.search(rf"^USER {user}(:\d+)?$", dockerfile, re.M):
        problems.add("Dockerfile", f"the image does not run as user {user}, which podSecurityContext names")
    for binary in ("yichuang", "yichuang-adapter", "yichuang-sim"):
        if f"target/release/{binary} " not in dockerfile and f"target/release/{binary}\n" not in dockerfile:
            problems.add("Dockerfile", f"the image does not carry {binary}, which the chart runs")


def check_value_set(name: str, values: dict, binary: Path | None, problems: Problems) -> str:
    lint(CHART, values, name, problems)
    try:
        rendered = render(CHART, values)
        docs = documents(rendered)
    except (helm.HelmError, yaml.YAMLError) as e:
        problems.add(name, f"does not render: {e}")
        return f"{name}: does not render"
    validate_schemas(docs, name, problems)
    check_references(docs, name, problems)
    check_configuration(docs, name, problems)
    expectations(name, docs, problems)
    checked = run_adapter_checks(docs, name, binary, problems) if binary else 0
    kinds: dict[str, int] = {}
    for _, d in docs:
        kinds[d["kind"]] = kinds.get(d["kind"], 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    return f"{name}: {len(docs)} manifests ({summary}); {checked} adapter configurations checked by yichuang-adapter"


def must_fail(label: str, chart: Path, values: dict, expected: str, problems: Problems) -> None:
    """Renders and checks; passes only if that fails with `expected` in what it says."""
    found = Problems()
    try:
        docs = documents(render(chart, values))
        validate_schemas(docs, label, found)
        check_references(docs, label, found)
        check_configuration(docs, label, found)
    except (helm.HelmError, yaml.YAMLError) as e:
        found.add(label, str(e))
    text = "\n".join(found)
    if not found:
        problems.add(label, f"passed, but must fail with {expected!r}")
    elif expected not in text:
        problems.add(label, f"failed, but not with {expected!r}:\n{text}")


BROKEN_TEMPLATES = {
    # A template that does not parse.
    "syntax error": ("broken.yaml", "{{ if .Values.gateway.replicas }}\nkind: ConfigMap\n", "unexpected EOF"),
    # A field the Deployment schema does not have.
    "unknown field": ("broken.yaml", """apiVersion: apps/v1
kind: Deployment
metadata:
  name: broken
spec:
  replica: 2
  selector:
    matchLabels: {app: broken}
  template:
    metadata:
      labels: {app: broken}
    spec:
      containers:
        - name: c
          image: x
""", "Additional properties are not allowed ('replica' was unexpected)"),
    # A Service that selects no pod.
    "dangling Service": ("broken.yaml", """apiVersion: v1
kind: Service
metadata:
  name: broken
spec:
  selector: {app.kubernetes.io/component: nothing}
  ports:
    - name: http
      port: 80
""", "Service/broken: selects no pod"),
    # A key twice in one mapping.
    "duplicate key": ("broken.yaml", """apiVersion: v1
kind: ConfigMap
metadata:
  name: broken
  name: broken-again
""", "duplicate key 'name'"),
}


def self_test(problems: Problems) -> int:
    """The check must be able to fail: bad value sets and broken charts are refused."""
    n = 0
    for f in sorted((VALUE_SETS / "bad").glob("*.yaml")):
        first = f.read_text().splitlines()[0]
        if not first.startswith("# expect: "):
            problems.add(str(f.relative_to(ROOT)), "first line must be `# expect: <part of the error>`")
            continue
        must_fail(f"bad/{f.name}", CHART, yaml.safe_load(f.read_text()) or {}, first.removeprefix("# expect: "), problems)
        n += 1
    with tempfile.TemporaryDirectory() as tmp:
        for label, (file, text, expected) in BROKEN_TEMPLATES.items():
            copy = Path(tmp) / label.replace(" ", "-") / "yichuang"
            shutil.copytree(CHART, copy, symlinks=False)
            (copy / "templates" / file).write_text(text)
            must_fail(f"broken chart ({label})", copy, {}, expected, problems)
            n += 1
    return n


def main() -> int:
    started = time.monotonic()
    problems = Problems()
    binary = adapter_binary()
    sets = [("default", {})] + [
        (f.stem, yaml.safe_load(f.read_text()) or {}) for f in sorted(VALUE_SETS.glob("*.yaml"))]
    for name, values in sets:
        print(f"chart-check: {check_value_set(name, values, binary, problems)}")
    if binary is None:
        print("chart-check: yichuang-adapter is not built: the adapters' rendered configuration was not run through it")
    check_image(problems)
    n = self_test(problems)
    print(f"chart-check: {n} broken value sets and charts refused as they must be")
    for p in problems:
        print(f"chart-check: FAILED {p}", file=sys.stderr)
    print(f"chart-check: {len(sets)} value sets against Kubernetes {KUBE_VERSION} schemas, "
          f"{'no problem' if not problems else f'{len(problems)} problem(s)'} "
          f"({time.monotonic() - started:.1f} s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
