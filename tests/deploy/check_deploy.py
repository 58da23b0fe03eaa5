"""Offline checks of Postline's deployment files, run by tests/deploy_manifests.rs.

    python check_deploy.py k8s REPO MAX_RECEIVER_TIMEOUT_SECS
        every manifest of deploy/k8s against the Kubernetes schemas shipped in
        the kubernetes-validate package (strict: unknown fields fail); the
        RabbitmqCluster, which has no built-in schema, against a schema of its
        own below; and what Postline needs of them (probes, grace, replicas,
        PodDisruptionBudget, AOF, the broker node list).
    python check_deploy.py compose REPO
        docker-compose.yml with no profile and with each profile: a structure
        check standing in for `docker compose config` where Docker is absent.

Prints one line per problem and exits 1 if there is any. Needs PyYAML,
jsonschema and kubernetes-validate (scripts/test installs them in target/venv).
"""

import os
import re
import sys
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import yaml

KUBERNETES_VERSION = "1.30.0"
problems = []


def problem(where, message):
    problems.append(f"{where}: {message}")


def load_all(path):
    with open(path, encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


# ---------------------------------------------------------------------------
# Kubernetes

# The fields of RabbitmqCluster.spec (rabbitmq.com/v1beta1) this repository
# may use, with their types; unknown fields are refused as kubectl's strict
# validation would refuse them against the operator's CRD.
RABBITMQ_CLUSTER_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "rabbitmq.com/v1beta1"},
        "kind": {"const": "RabbitmqCluster"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}},
        },
        "spec": {
            "type": "object",
            "required": ["replicas", "rabbitmq"],
            "additionalProperties": False,
            "properties": {
                "replicas": {"type": "integer", "minimum": 3},
                "image": {"type": "string", "minLength": 1},
                "imagePullSecrets": {"type": "array"},
                "service": {"type": "object"},
                "persistence": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "storageClassName": {"type": "string"},
                        "storage": {"type": ["string", "integer"]},
                    },
                },
                "resources": {"type": "object"},
                "affinity": {"type": "object"},
                "tolerations": {"type": "array"},
                "rabbitmq": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "additionalPlugins": {"type": "array", "items": {"type": "string"}},
                        "additionalConfig": {"type": "string"},
                        "advancedConfig": {"type": "string"},
                        "envConfig": {"type": "string"},
                        "erlangInetConfig": {"type": "string"},
                    },
                },
                "tls": {"type": "object"},
                "override": {"type": "object"},
                "terminationGracePeriodSeconds": {"type": "integer", "minimum": 0},
                "skipPostDeployChecks": {"type": "boolean"},
                "delayStartSeconds": {"type": "integer", "minimum": 0},
                "secretBackend": {"type": "object"},
                "autoEnableAllFeatureFlags": {"type": "boolean"},
            },
        },
    },
}


def check_rabbitmq_cluster(where, doc):
    validator = jsonschema.Draft7Validator(RABBITMQ_CLUSTER_SCHEMA)
    for error in validator.iter_errors(doc):
        path = "/".join(str(p) for p in error.absolute_path) or "(top)"
        problem(where, f"RabbitmqCluster {path}: {error.message}")
    spec = doc.get("spec", {})
    if spec.get("replicas", 0) % 2 == 0:
        problem(where, "RabbitmqCluster replicas must be odd (quorum majorities)")
    config = spec.get("rabbitmq", {}).get("additionalConfig", "")
    settings = {}
    for line in config.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            problem(where, f"additionalConfig line is not 'key = value': {line!r}")
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        settings[key] = value
    if settings.get("default_queue_type") != "quorum":
        problem(where, "additionalConfig must set default_queue_type = quorum")


def env_of(container):
    return {e["name"]: e for e in container.get("env", [])}


def check_workloads(docs, max_timeout_secs):
    by_kind = {}
    for where, doc in docs:
        by_kind.setdefault(doc["kind"], []).append((where, doc))
    names = {(doc["kind"], doc["metadata"]["name"]) for _, doc in docs}
    rabbit = [doc for _, doc in by_kind.get("RabbitmqCluster", [])]
    if len(rabbit) != 1:
        problem("deploy/k8s", f"expected one RabbitmqCluster, found {len(rabbit)}")

    deployments = {doc["metadata"]["name"]: (where, doc) for where, doc in by_kind.get("Deployment", [])}
    for service in ("ingest", "delivery", "token"):
        if service not in deployments:
            problem("deploy/k8s", f"no Deployment named {service}")
    for name, (where, doc) in deployments.items():
        pod = doc["spec"]["template"]["spec"]
        grace = pod.get("terminationGracePeriodSeconds", 30)
        if name in ("ingest", "delivery") and grace <= max_timeout_secs:
            problem(where, f"{name}: terminationGracePeriodSeconds {grace} must exceed the longest receiver timeout ({max_timeout_secs} s)")
        for container in pod["containers"]:
            ready = container.get("readinessProbe", {}).get("httpGet", {}).get("path")
            live = container.get("livenessProbe", {}).get("httpGet", {}).get("path")
            if ready != "/readyz":
                problem(where, f"{name}: readiness probe must GET /readyz (has {ready})")
            if live != "/healthz":
                problem(where, f"{name}: liveness probe must GET /healthz (has {live})")
            for source in container.get("envFrom", []):
                for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                    if key in source and (kind, source[key]["name"]) not in names:
                        problem(where, f"{name}: envFrom names a missing {kind} {source[key]['name']}")
            check_amqp_list(where, name, container, rabbit[0] if rabbit else None)
    if "delivery" in deployments:
        where, delivery = deployments["delivery"]
        if delivery["spec"].get("replicas", 1) < 2:
            problem(where, "delivery needs several replicas")
        labels = delivery["spec"]["template"]["metadata"]["labels"]
        pdbs = [
            doc for _, doc in by_kind.get("PodDisruptionBudget", [])
            if doc["spec"]["selector"].get("matchLabels", {}).items() <= labels.items()
        ]
        if not pdbs:
            problem(where, "no PodDisruptionBudget selects the delivery pods")

    workload_labels = [
        doc["spec"]["template"]["metadata"]["labels"]
        for kind in ("Deployment", "StatefulSet")
        for _, doc in by_kind.get(kind, [])
    ]
    for where, service in by_kind.get("Service", []):
        selector = service["spec"].get("selector", {})
        if not any(selector.items() <= labels.items() for labels in workload_labels):
            problem(where, f"Service {service['metadata']['name']} selects no workload")

    redis = [doc for _, doc in by_kind.get("StatefulSet", []) if doc["metadata"]["name"] == "redis"]
    if not redis:
        problem("deploy/k8s", "no StatefulSet named redis")
    for doc in redis:
        spec = doc["spec"]
        if not spec.get("volumeClaimTemplates"):
            problem("redis.yaml", "redis has no volumeClaimTemplates")
        args = " ".join(spec["template"]["spec"]["containers"][0].get("args", []))
        if "--appendonly yes" not in args:
            problem("redis.yaml", "redis must run with --appendonly yes")


def check_amqp_list(where, name, container, rabbit):
    """POSTLINE_AMQP_URL lists every node of the RabbitmqCluster's StatefulSet."""
    url = env_of(container).get("POSTLINE_AMQP_URL", {}).get("value")
    if name == "token":
        return
    if not url:
        problem(where, f"{name}: POSTLINE_AMQP_URL is not set")
        return
    if rabbit is None:
        return
    cluster = rabbit["metadata"]["name"]
    want = {f"{cluster}-server-{i}.{cluster}-nodes" for i in range(rabbit["spec"]["replicas"])}
    hosts = set()
    for entry in url.split(","):
        parts = urlsplit(entry.strip())
        if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
            problem(where, f"{name}: POSTLINE_AMQP_URL entry is not an AMQP URL")
            continue
        hosts.add(parts.hostname)
    if hosts != want:
        problem(where, f"{name}: POSTLINE_AMQP_URL lists {sorted(hosts)}, the cluster's nodes are {sorted(want)}")


def check_k8s(repo, max_timeout_secs):
    base = os.path.join(repo, "deploy", "k8s")
    kustomization = load_all(os.path.join(base, "kustomization.yaml"))[0]
    if kustomization.get("kind") != "Kustomization":
        problem("kustomization.yaml", "kind must be Kustomization")
    listed = kustomization.get("resources", [])
    present = sorted(f for f in os.listdir(base) if f.endswith((".yaml", ".yml")) and f != "kustomization.yaml")
    for missing in sorted(set(present) - set(listed)):
        problem("kustomization.yaml", f"{missing} is not listed in resources")
    docs = []
    for file in listed:
        path = os.path.join(base, file)
        if not os.path.exists(path):
            problem("kustomization.yaml", f"resource {file} does not exist")
            continue
        for doc in load_all(path):
            where = file
            if doc.get("kind") == "RabbitmqCluster":
                check_rabbitmq_cluster(where, doc)
            else:
                try:
                    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
                except kubernetes_validate.ValidationError as error:
                    path_ = "/".join(str(p) for p in error.path) or "(top)"
                    problem(where, f"{doc.get('kind')} {path_}: {error.message}")
                except kubernetes_validate.SchemaNotFoundError:
                    problem(where, f"no schema for {doc.get('apiVersion')} {doc.get('kind')}")
            docs.append((where, doc))
            print(f"checked {where}: {doc.get('kind')} {doc.get('metadata', {}).get('name')}")
    images = {i["name"] for i in kustomization.get("images", [])}
    for where, doc in docs:
        if doc["kind"] == "Deployment":
            for container in doc["spec"]["template"]["spec"]["containers"]:
                if container["image"] not in images:
                    problem(where, f"image {container['image']} has no entry in kustomization images")
    check_workloads(docs, max_timeout_secs)


# ---------------------------------------------------------------------------
# docker-compose.yml

COMPOSE_TOP = {"name", "services", "volumes", "networks", "configs", "secrets"}
PORT = re.compile(r"^(127\.0\.0\.1:)?(\d+)?:?\d+$")


def active_services(services, profiles):
    return {
        name for name, service in services.items()
        if not service.get("profiles") or set(service["profiles"]) & profiles
    }


def check_compose(repo):
    path = os.path.join(repo, "docker-compose.yml")
    compose = load_all(path)[0]
    for key in compose:
        if key not in COMPOSE_TOP and not key.startswith("x-"):
            problem("docker-compose.yml", f"unknown top-level key {key}")
    services = compose.get("services", {})
    volumes = set((compose.get("volumes") or {}).keys())
    profiles = sorted({p for s in services.values() for p in s.get("profiles", [])})
    for chosen in [set()] + [{p} for p in profiles]:
        label = f"profile {sorted(chosen)[0]}" if chosen else "no profile"
        active = active_services(services, chosen)
        host_ports = {}
        for name in sorted(active):
            where = f"docker-compose.yml ({label}) service {name}"
            service = services[name]
            if "image" not in service and "build" not in service:
                problem(where, "neither image nor build")
            depends = service.get("depends_on", {})
            for dependency in (depends if isinstance(depends, (dict, list)) else []):
                if dependency not in services:
                    problem(where, f"depends on undefined service {dependency}")
                elif dependency not in active:
                    problem(where, f"depends on {dependency}, which this profile does not enable")
            environment = service.get("environment", {})
            if not isinstance(environment, dict):
                problem(where, "environment must be a mapping")
                environment = {}
            for key, value in environment.items():
                if not isinstance(value, (str, int, float, bool)):
                    problem(where, f"environment {key} has no scalar value")
            for volume in service.get("volumes", []):
                source = str(volume).split(":")[0]
                if source.startswith((".", "/")):
                    if not os.path.exists(os.path.join(repo, source)):
                        problem(where, f"bind-mounted {source} does not exist")
                elif source not in volumes:
                    problem(where, f"named volume {source} is not declared")
            replicas = service.get("deploy", {}).get("replicas", 1)
            for port in service.get("ports", []):
                port = str(port)
                if not PORT.match(port):
                    problem(where, f"port mapping {port!r} is not [127.0.0.1:]HOST:CONTAINER")
                    continue
                parts = port.split(":")
                if len(parts) >= 2 and parts[-2]:
                    if replicas > 1:
                        problem(where, f"{replicas} replicas cannot share host port {parts[-2]}")
                    if parts[-2] in host_ports:
                        problem(where, f"host port {parts[-2]} also used by {host_ports[parts[-2]]}")
                    host_ports[parts[-2]] = name
            if "healthcheck" in service and not service["healthcheck"].get("test"):
                problem(where, "healthcheck without test")
            print(f"checked {where}")
    if "cluster" in profiles:
        check_compose_cluster(repo, services)


def check_compose_cluster(repo, services):
    where = "docker-compose.yml (profile cluster)"
    nodes = {
        name: service for name, service in services.items()
        if "cluster" in service.get("profiles", []) and "rabbitmq" in str(service.get("image", ""))
    }
    if len(nodes) != 3:
        problem(where, f"expected three RabbitMQ nodes, found {sorted(nodes)}")
    cookies = {str(s.get("environment", {}).get("RABBITMQ_ERLANG_COOKIE")) for s in nodes.values()}
    if len(cookies) != 1 or "None" in cookies:
        problem(where, "the RabbitMQ nodes must share one RABBITMQ_ERLANG_COOKIE")
    hostnames = {s.get("hostname") for s in nodes.values()}
    # classic config peer discovery names every node
    conf_paths = {
        str(v).split(":")[0] for s in nodes.values() for v in s.get("volumes", [])
        if str(v).split(":")[1:2] == ["/etc/rabbitmq/rabbitmq.conf"]
    }
    if len(conf_paths) != 1:
        problem(where, "every node must mount the same rabbitmq.conf at /etc/rabbitmq/rabbitmq.conf")
    for conf in conf_paths:
        settings = {}
        with open(os.path.join(repo, conf), encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#") and "=" in line:
                    key, value = (part.strip() for part in line.split("=", 1))
                    settings[key] = value
        if settings.get("cluster_formation.peer_discovery_backend") not in ("classic_config", "rabbit_peer_discovery_classic_config"):
            problem(conf, "peer discovery backend must be classic_config")
        listed = {v.split("@", 1)[1] for k, v in settings.items() if k.startswith("cluster_formation.classic_config.nodes.")}
        if listed != hostnames:
            problem(conf, f"classic_config lists {sorted(listed)}, the nodes' hostnames are {sorted(hostnames)}")
    deliveries = [
        (name, s) for name, s in services.items()
        if "cluster" in s.get("profiles", []) and s.get("build", {}).get("args", {}).get("SERVICE") == "delivery"
    ]
    if not deliveries:
        problem(where, "no delivery service in the cluster profile")
    for name, service in deliveries:
        if service.get("deploy", {}).get("replicas", 1) < 2:
            problem(where, f"{name}: expected at least two replicas")
    for name, service in services.items():
        if "cluster" not in service.get("profiles", []) or name in nodes:
            continue
        url = str(service.get("environment", {}).get("POSTLINE_AMQP_URL", ""))
        hosts = {urlsplit(entry.strip()).hostname for entry in url.split(",") if entry.strip()}
        if hosts != hostnames:
            problem(where, f"{name}: POSTLINE_AMQP_URL lists {sorted(h for h in hosts if h)}, not the three nodes")


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in ("k8s", "compose"):
        print(__doc__, file=sys.stderr)
        return 2
    repo = sys.argv[2]
    if sys.argv[1] == "k8s":
        check_k8s(repo, int(sys.argv[3]) if len(sys.argv) > 3 else 60)
    else:
        check_compose(repo)
    for line in problems:
        print(f"PROBLEM {line}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
