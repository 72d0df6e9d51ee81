"""Deployment files: parsed and checked against broker.config.settings and against each other."""

from __future__ import annotations

import copy
import fnmatch
import functools
import itertools
import json
import os
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from dotenv import dotenv_values

from broker.config.settings import VARIABLES, ConfigError, parse
from tests.e2e.test_env_shell import sourced_in_shell
from tests.support import broker_env

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
CONFIG = ROOT / "config"
PROFILES = sorted(CONFIG.glob("*.env"))

# Variables the deployment files may name beyond VARIABLES, and why.
EXTRAS = {
    "PROMETHEUS_MULTIPROC_DIR",  # prometheus-client's directory shared by the workers
    "SANDBOX_DELAY",  # read by `broker sandbox`, development only
    "SANDBOX_FAST",  # read by `broker sandbox`, development only
    "SANDBOX_SEED",  # read by `broker sandbox`, development only
    "SANDBOX_PORT",  # read by `broker sandbox`, development only
}
SECRET_VARIABLES = ("BROKER_SIGNING_KEYS", "BROKER_ISSUER_KEYS", "BROKER_METRICS_TOKEN")
PROCFILE_COMMAND = ["broker", "serve"]
# The container's writable directory (a tmpfs or emptyDir), not a file this test touches.
CONTAINER_TMP = "/tmp"  # noqa: S108
PORT = 8000
K8S_FILES = (
    "configmap.yaml",
    "deployment.yaml",
    "service.yaml",
    "hpa.yaml",
    "pdb.yaml",
    "redis.yaml",
    "networkpolicy.yaml",
)
# Applied by hand where they fit the cluster (kustomization.yaml says so).
K8S_OPTIONAL = ("ingress.example.yaml", "servicemonitor.yaml")
# What the demo Redis reads from the Secret besides the broker's own variables.
REDIS_SERVER_SECRETS = {"REDIS_PASSWORD"}

# Fake but valid secrets, to check that the non-secret profiles complete a valid configuration.
FAKE_SECRETS = {
    "BROKER_SIGNING_KEYS": "k1:" + "QUJD" * 11,
    "BROKER_ISSUER_KEYS": "an-issuer-key-for-tests-only-0123456",
}


# -- parsing helpers ---------------------------------------------------------------------------


@functools.cache
def _parsed_yaml(path: Path) -> tuple[dict[str, Any], ...]:
    return tuple(doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc)


def load_yaml(path: Path) -> list[dict[str, Any]]:
    """The documents of a YAML file (parsed once per run; each caller gets its own copy)."""
    return copy.deepcopy(list(_parsed_yaml(path)))


def k8s(kind: str, name: str | None = None) -> dict[str, Any]:
    """The one manifest of ``kind`` (and ``name``) among the kustomization's files."""
    found = [
        doc
        for file in K8S_FILES
        for doc in load_yaml(K8S / file)
        if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def broker_deployment() -> dict[str, Any]:
    return k8s("Deployment", "referral-broker")


def broker_container() -> dict[str, Any]:
    containers = broker_deployment()["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "broker")


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in (DEPLOY / "Dockerfile").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, rest = line.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends in a continuation line"
    return instructions


def dockerfile_args(keyword: str) -> list[str]:
    return [rest for kw, rest in dockerfile() if kw == keyword]


def exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list)
    return [str(v) for v in value]


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for rest in dockerfile_args("ENV"):
        for item in shlex.split(rest):
            name, sep, value = item.partition("=")
            assert sep, f"ENV {item!r} is not written NAME=value"
            env[name] = value
    return env


def compose() -> dict[str, Any]:
    [doc] = load_yaml(DEPLOY / "compose.yaml")
    return doc


def redis_options(args: list[str]) -> dict[str, str]:
    """``--name value`` pairs of a redis-server command line."""
    options = {}
    for flag, value in itertools.pairwise(args):
        if flag.startswith("--"):
            options[flag[2:]] = str(value)
    return options


def demo_redis_container() -> dict[str, Any]:
    container: dict[str, Any]
    [container] = k8s("Deployment", "broker-redis")["spec"]["template"]["spec"]["containers"]
    return container


def shipped_redis_eviction() -> tuple[str, str]:
    """(maxmemory-policy, maxmemory-samples) of compose's Redis, checked equal in Kubernetes."""
    command = [str(a) for a in compose()["services"]["redis"]["command"]]
    assert command[0] == "redis-server"
    in_compose = redis_options(command[1:])
    in_k8s = redis_options([str(a) for a in demo_redis_container()["args"]])
    keys = ("maxmemory-policy", "maxmemory-samples")
    assert {k: in_compose[k] for k in keys} == {k: in_k8s[k] for k in keys}
    return in_compose["maxmemory-policy"], in_compose["maxmemory-samples"]


def env_file_names(path: Path) -> list[str]:
    """Variables assigned in an env file, including commented-out examples (``# NAME=``)."""
    pattern = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=")
    text = path.read_text(encoding="utf-8")
    return [m[1] for line in text.splitlines() if (m := pattern.match(line.strip()))]


def profile(path: Path) -> dict[str, str]:
    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def pod_env_names() -> set[str]:
    return {item["name"] for item in broker_container().get("env", [])}


# -- variables ---------------------------------------------------------------------------------


def test_profiles_exist() -> None:
    """config/ holds the local, ci and production profiles."""
    assert {p.name for p in PROFILES} >= {"local.env", "ci.env", "production.env"}


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.name)
def test_profile_names_only_known_variables(path: Path) -> None:
    """Each config profile sets only variables the broker (or the sandbox) reads."""
    names = set(env_file_names(path))
    assert names
    assert names <= set(VARIABLES) | EXTRAS, names - set(VARIABLES) - EXTRAS


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.name)
def test_profile_holds_no_secret(path: Path) -> None:
    """No profile assigns a signing key, issuer key, metrics token or Redis password."""
    names = set(env_file_names(path))
    assert not names & set(SECRET_VARIABLES)
    redis_url = profile(path).get("REDIS_URL", "")
    assert "@" not in redis_url, "REDIS_URL with credentials belongs in a secret"


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.name)
def test_profile_is_valid_once_secrets_are_added(path: Path) -> None:
    """Each profile plus secrets (and a shop, if it leaves that to the deployment) validates."""
    values = {"BROKER_SHOP": "example-shop", **profile(path), **FAKE_SECRETS}
    parse({k: v for k, v in values.items() if k in VARIABLES})


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.name)
def test_profile_reads_the_same_in_a_shell(path: Path) -> None:
    """`set -a; . config/X.env` gives the values python-dotenv and compose's env_file read."""
    expected = profile(path)
    seen = sourced_in_shell(path)
    assert {name: seen.get(name) for name in expected} == expected
    for name, value in expected.items():
        assert "#" not in value, f"{name}: inline comments read differently in compose"


def test_local_profile_is_what_broker_dev_uses() -> None:
    """local.env equals the non-secret part of `broker dev`'s environment with default ports."""
    from broker.cli import dev_environment

    expected = {
        k: v
        for k, v in dev_environment({}, 8000, 8001, 8002, "127.0.0.1").items()
        if k not in SECRET_VARIABLES
    }
    values = profile(CONFIG / "local.env")
    assert {k: values.get(k) for k in expected} == expected
    assert values["BROKER_UPSTREAM_URL"].startswith("http://127.0.0.1:")
    assert "REDIS_URL" not in values
    assert values["LOG_FORMAT"] == "console"


def test_ci_profile_matches_what_the_tests_build() -> None:
    """ci.env equals the non-secret part of tests.support.broker_env()."""
    expected = {k: v for k, v in broker_env().items() if k not in SECRET_VARIABLES}
    values = profile(CONFIG / "ci.env")
    assert {k: values.get(k) for k in expected} == expected
    assert "REDIS_URL" not in values


def test_production_profile_matches_the_configmap() -> None:
    """production.env and the Kubernetes ConfigMap agree on every variable both set."""
    values = profile(CONFIG / "production.env")
    data = k8s("ConfigMap", "broker-config")["data"]
    shared = set(values) & set(data)
    assert len(shared) >= 10
    assert {k: values[k] for k in shared} == {k: str(data[k]) for k in shared}
    assert values["LOG_FORMAT"] == "json"
    assert values["BROKER_UPSTREAM_URL"].startswith("https://")


def test_configmap_holds_only_known_non_secret_variables() -> None:
    """The ConfigMap names known variables and none of the secrets."""
    data = k8s("ConfigMap", "broker-config")["data"]
    assert set(data) <= set(VARIABLES) | EXTRAS
    assert not set(data) & {*SECRET_VARIABLES, "REDIS_URL"}
    assert all(isinstance(v, str) for v in data.values()), "ConfigMap values must be strings"


def test_secret_example_holds_the_secrets_only() -> None:
    """secret.example.yaml names the secret variables, with placeholders, and nothing else."""
    [secret] = load_yaml(K8S / "secret.example.yaml")
    assert secret["kind"] == "Secret"
    data = secret["stringData"]
    assert set(data) <= set(VARIABLES) | REDIS_SERVER_SECRETS
    assert set(data) >= {"BROKER_SIGNING_KEYS", "BROKER_ISSUER_KEYS", "REDIS_URL"}
    with pytest.raises(ConfigError, match="BROKER_SIGNING_KEYS"):
        parse({"BROKER_SHOP": "example-shop", **{k: v for k, v in data.items() if k in VARIABLES}})


def test_compose_and_pod_environment_name_known_variables() -> None:
    """compose's environment and the pod's env name only known variables."""
    names = set(compose()["services"]["broker"]["environment"]) | pod_env_names()
    assert names <= set(VARIABLES) | EXTRAS


def test_dockerfile_env_names_known_variables() -> None:
    """The image sets PORT and PROMETHEUS_MULTIPROC_DIR (under /tmp) besides Python's own."""
    env = dockerfile_env()
    ours = {n for n in env if not n.startswith(("PYTHON", "PIP_")) and n != "PATH"}
    assert ours <= set(VARIABLES) | EXTRAS
    assert env["PORT"] == str(PORT)
    assert env["PROMETHEUS_MULTIPROC_DIR"].startswith(CONTAINER_TMP + "/")


def test_runbook_documents_every_variable() -> None:
    """deploy/README.md names each variable of VARIABLES in its table."""
    text = (DEPLOY / "README.md").read_text(encoding="utf-8")
    missing = [name for name in VARIABLES if f"| `{name}` |" not in text]
    assert not missing


# -- ports and paths ---------------------------------------------------------------------------


def test_ports_agree_everywhere() -> None:
    """Settings' default PORT = Dockerfile EXPOSE = containerPort = compose target = probes."""
    assert parse({"BROKER_SHOP": "example-shop", **FAKE_SECRETS}).port == PORT
    assert dockerfile_args("EXPOSE") == [str(PORT)]
    [port] = broker_container()["ports"]
    assert port["containerPort"] == PORT
    assert k8s("ConfigMap", "broker-config")["data"]["PORT"] == str(PORT)
    annotations = broker_deployment()["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(PORT)
    published = compose()["services"]["broker"]["ports"]
    assert [p.rsplit(":", 1)[1] for p in published] == [str(PORT)]


def test_service_maps_port_80_to_the_container() -> None:
    """The ClusterIP Service listens on 80 and targets the broker's container port."""
    service = k8s("Service", "referral-broker")
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    [port] = service["spec"]["ports"]
    assert port["port"] == 80
    [container_port] = broker_container()["ports"]
    assert port["targetPort"] in (container_port["containerPort"], container_port["name"])
    assert service["spec"]["selector"].items() <= pod_labels().items()


def test_probe_paths() -> None:
    """Liveness hits /healthz, readiness /readyz, startup one of them, metrics at /metrics."""
    container = broker_container()
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe, paths in (
        ("livenessProbe", {"/healthz"}),
        ("readinessProbe", {"/readyz"}),
        ("startupProbe", {"/healthz", "/readyz"}),
    ):
        get = container[probe]["httpGet"]
        assert get["path"] in paths, probe
        assert named.get(get["port"], get["port"]) == PORT, probe
    annotations = broker_deployment()["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/scrape"] == "true"


def test_dockerfile_healthcheck_uses_python_on_healthz() -> None:
    """The image's HEALTHCHECK probes /healthz with python, since the slim image has no curl."""
    [healthcheck] = dockerfile_args("HEALTHCHECK")
    command = exec_form(healthcheck.split("CMD", 1)[1])
    assert command[0] == "python"
    assert "/healthz" in command[-1]
    assert "curl" not in healthcheck


# -- the image ---------------------------------------------------------------------------------


def test_cmd_is_the_procfile_command() -> None:
    """The image's CMD is the Procfile's web command, `broker serve`."""
    [cmd] = dockerfile_args("CMD")
    procfile = ROOT / "Procfile"
    expected = PROCFILE_COMMAND
    if procfile.is_file():
        web = [
            line.split(":", 1)[1]
            for line in procfile.read_text().splitlines()
            if line.startswith("web:")
        ]
        assert len(web) == 1
        expected = shlex.split(web[0])
    assert exec_form(cmd) == expected == PROCFILE_COMMAND
    assert "command" not in broker_container(), "the pod must run the image's CMD"


def test_image_is_multi_stage_python_slim() -> None:
    """Every stage starts from python:3.11-slim, and the final stage copies from the build."""
    stages = dockerfile_args("FROM")
    assert len(stages) >= 2
    assert all(stage.split()[0] == "python:3.11-slim" for stage in stages)
    copies = [rest for kw, rest in dockerfile() if kw == "COPY"]
    assert any(rest.startswith("--from=") for rest in copies)


def test_image_installs_the_lock_then_the_project_without_dependencies() -> None:
    """pip installs -r requirements.lock first, then the project with --no-deps."""
    runs = dockerfile_args("RUN")
    lock = next(i for i, run in enumerate(runs) if "-r requirements.lock" in run)
    project = next(i for i, run in enumerate(runs) if re.search(r"pip install --no-deps \.", run))
    assert lock < project
    assert "--no-deps" not in runs[lock]


def test_image_runs_as_a_numeric_non_root_user() -> None:
    """The final USER is a numeric UID other than 0, the same the pod runs as."""
    user = dockerfile_args("USER")[-1]
    uid, _, gid = user.partition(":")
    assert uid.isdigit()
    assert int(uid) != 0
    assert not gid or (gid.isdigit() and int(gid) != 0)
    pod = broker_deployment()["spec"]["template"]["spec"]["securityContext"]
    assert pod["runAsUser"] == int(uid)
    assert broker_container()["securityContext"]["runAsUser"] == int(uid)


def test_image_stops_on_sigterm() -> None:
    """STOPSIGNAL is SIGTERM, which `broker serve` handles by draining."""
    assert dockerfile_args("STOPSIGNAL") == ["SIGTERM"]


def dockerignore_excludes(path: str) -> bool:
    """Whether .dockerignore keeps ``path`` out of the build context (last match wins)."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.lstrip("!").rstrip("/")
        globs = [glob, glob.removeprefix("**/")] if glob.startswith("**/") else [glob]
        for candidate in candidates:
            names = [candidate, candidate.rsplit("/", 1)[-1]] if "**/" in glob else [candidate]
            if any(fnmatch.fnmatchcase(n, g) for n in names for g in globs):
                excluded = not negated
    return excluded


def test_build_context_carries_what_the_image_copies_and_no_secret() -> None:
    """Every COPY source is in the build context; .env, .git, .venv and tests are not."""
    for rest in dockerfile_args("COPY"):
        if rest.startswith("--from="):
            continue
        *sources, _ = rest.split()
        for source in sources:
            assert not dockerignore_excludes(source), source
    assert not dockerignore_excludes("broker/config/settings.py")
    for private in (".env", ".git/config", ".venv/bin/python", "tests/conftest.py"):
        assert dockerignore_excludes(private), private
    assert dockerignore_excludes("broker/__pycache__/settings.cpython-311.pyc")


def test_lock_pins_exact_versions() -> None:
    """Both locks pin every requirement with == (the image installs requirements.lock)."""
    for lock in (ROOT / "requirements.lock", ROOT / "requirements-test.lock"):
        assert_pinned(lock)


def assert_pinned(lock: Path) -> None:
    requirements = [
        line.split(";")[0].strip()
        for line in lock.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith(("#", "--hash", "-"))
    ]
    assert requirements
    loose = [r for r in requirements if not re.match(r"^[A-Za-z0-9._\[\],-]+==\S+", r)]
    assert not loose


# -- Kubernetes --------------------------------------------------------------------------------


def pod_labels() -> dict[str, str]:
    labels: dict[str, str] = broker_deployment()["spec"]["template"]["metadata"]["labels"]
    return labels


def test_kustomization_lists_the_manifests_but_not_the_secret() -> None:
    """kustomization.yaml lists every manifest, never the example Secret, and no namespace."""
    [kustomization] = load_yaml(K8S / "kustomization.yaml")
    assert kustomization["resources"] == list(K8S_FILES)
    assert "namespace" not in kustomization
    for file in (*K8S_FILES, *K8S_OPTIONAL, "secret.example.yaml"):
        for doc in load_yaml(K8S / file):
            assert "namespace" not in doc["metadata"], file


def test_deployment_rollout() -> None:
    """The HPA owns the replica count; rolling updates never drop below it; config from both."""
    spec = broker_deployment()["spec"]
    assert "replicas" not in spec, "an apply would reset the HPA's count"
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert spec["selector"]["matchLabels"].items() <= pod_labels().items()
    sources = broker_container()["envFrom"]
    assert {"configMapRef": {"name": "broker-config"}} in sources
    assert {"secretRef": {"name": "broker-secrets"}} in sources
    [secret] = load_yaml(K8S / "secret.example.yaml")
    assert secret["metadata"]["name"] == "broker-secrets"


def test_deployment_security_context_is_restrictive() -> None:
    """Non-root, read-only root fs, no escalation, no capabilities, RuntimeDefault seccomp."""
    pod = broker_deployment()["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod.get("automountServiceAccountToken") is False
    context = broker_container()["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert "add" not in context["capabilities"]
    assert context.get("privileged", False) is False


def test_deployment_scratch_space_is_writable() -> None:
    """The temp and multiprocess metrics directories are emptyDir mounts on a read-only root."""
    pod = broker_deployment()["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in broker_container()["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    env = {e["name"]: e.get("value") for e in broker_container()["env"]}
    multiproc = env["PROMETHEUS_MULTIPROC_DIR"]
    assert multiproc == dockerfile_env()["PROMETHEUS_MULTIPROC_DIR"]
    for path in (CONTAINER_TMP, multiproc):
        assert "emptyDir" in volumes[mounts[path]], path


def test_deployment_stops_gracefully() -> None:
    """The grace period covers the preStop sleep plus the broker's drain, with 5 s or more spare."""
    from broker.web.server import GRACEFUL_SECONDS

    pod = broker_deployment()["spec"]["template"]["spec"]
    command = broker_container()["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pause = int(command[1])
    assert 1 <= pause <= 15
    assert pause + GRACEFUL_SECONDS + 5 <= pod["terminationGracePeriodSeconds"] <= 90


def test_compose_waits_for_the_drain() -> None:
    """compose's stop_grace_period is longer than the broker's drain after SIGTERM."""
    from broker.web.server import GRACEFUL_SECONDS

    period = compose()["services"]["broker"]["stop_grace_period"]
    assert re.fullmatch(r"\d+s", period)
    assert int(period[:-1]) >= GRACEFUL_SECONDS + 5


def test_deployment_resources_fit_its_workers() -> None:
    """Requests and limits are set, with memory for about 100 MB per worker."""
    resources = broker_container()["resources"]
    workers = int(k8s("ConfigMap", "broker-config")["data"]["WEB_CONCURRENCY"])
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[kind])
    assert mebibytes(resources["limits"]["memory"]) >= 100 * workers
    assert mebibytes(resources["requests"]["memory"]) <= mebibytes(resources["limits"]["memory"])


def mebibytes(quantity: str) -> int:
    match = re.fullmatch(r"(\d+)(Mi|Gi)", quantity)
    assert match, quantity
    return int(match[1]) * (1024 if match[2] == "Gi" else 1)


def test_hpa_scales_the_deployment_on_cpu() -> None:
    """autoscaling/v2 on CPU utilization, 2 to 10 replicas of the broker."""
    hpa = k8s("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    spec = hpa["spec"]
    assert spec["scaleTargetRef"]["name"] == broker_deployment()["metadata"]["name"]
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 10)
    assert [m["resource"]["name"] for m in spec["metrics"]] == ["cpu"]


def test_pdb_lets_one_broker_go_at_a_time() -> None:
    """The PodDisruptionBudget allows one broker pod down at a time, whatever the HPA's count."""
    pdb = k8s("PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in pdb["spec"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels().items()


def test_broker_pods_get_no_service_link_variables() -> None:
    """enableServiceLinks is off, so the demo Redis Service's BROKER_REDIS_* docker-link
    variables never reach the broker's environment."""
    assert broker_deployment()["spec"]["template"]["spec"]["enableServiceLinks"] is False


def test_broker_pods_network_policy() -> None:
    """The broker's NetworkPolicy admits the ingress controller, the merchant's namespace and
    Prometheus on the broker's port, and lets the pods reach only Redis, DNS and HTTPS outside
    the cluster."""
    policy = k8s("NetworkPolicy", "referral-broker")["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels().items()
    assert policy["podSelector"]["matchLabels"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    [container_port] = broker_deployment()["spec"]["template"]["spec"]["containers"][0]["ports"]
    sources = []
    for rule in policy["ingress"]:
        assert [p["port"] for p in rule["ports"]] == [container_port["containerPort"]]
        [source] = rule["from"]
        assert "namespaceSelector" in source and "ipBlock" not in source
        sources.append(source["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"])
    assert sources == ["ingress-nginx", "merchant", "monitoring"]
    redis, dns, https = policy["egress"]
    redis_pods = k8s("Deployment", "broker-redis")["spec"]["template"]["metadata"]["labels"]
    assert redis["to"][0]["podSelector"]["matchLabels"].items() <= redis_pods.items()
    assert [p["port"] for p in redis["ports"]] == [6379]
    assert {(p["protocol"], p["port"]) for p in dns["ports"]} == {("UDP", 53), ("TCP", 53)}
    [block] = https["to"]
    assert block["ipBlock"]["cidr"] == "0.0.0.0/0" and block["ipBlock"]["except"]
    assert [(p["protocol"], p["port"]) for p in https["ports"]] == [("TCP", 443)]


def test_demo_redis_matches_the_example_redis_url() -> None:
    """The example REDIS_URL names redis.yaml's Service and carries the Secret's REDIS_PASSWORD."""
    service = k8s("Service", "broker-redis")
    [secret] = load_yaml(K8S / "secret.example.yaml")
    data = secret["stringData"]
    host, port = service["metadata"]["name"], service["spec"]["ports"][0]["port"]
    assert data["REDIS_URL"] == f"redis://:{data['REDIS_PASSWORD']}@{host}:{port}/0"
    container = demo_redis_container()
    assert container["image"].startswith("redis:7")
    assert "redis+cluster://" in (K8S / "redis.yaml").read_text()


def test_demo_redis_requires_the_secret_password() -> None:
    """redis-server runs with --requirepass from the Secret; its probe authenticates by env."""
    container = demo_redis_container()
    env = {item["name"]: item for item in container["env"]}
    options = redis_options([str(a) for a in container["args"]])
    variable = re.fullmatch(r"\$\((\w+)\)", options["requirepass"])
    assert variable, "the password must come from the environment, not the manifest"
    for name in (variable[1], "REDISCLI_AUTH"):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == ("broker-secrets", "REDIS_PASSWORD")
    assert container["readinessProbe"]["exec"]["command"] == ["redis-cli", "ping"]


def test_only_broker_pods_reach_the_demo_redis() -> None:
    """A NetworkPolicy admits only the broker's pods, on Redis's port, to the Redis pods."""
    policy = k8s("NetworkPolicy", "broker-redis")["spec"]
    redis_pods = k8s("Deployment", "broker-redis")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= redis_pods.items()
    assert policy["policyTypes"] == ["Ingress"]
    [rule] = policy["ingress"]
    [source] = rule["from"]
    assert set(source) == {"podSelector"}, "no namespaceSelector or ipBlock"
    assert source["podSelector"]["matchLabels"].items() <= pod_labels().items()
    assert source["podSelector"]["matchLabels"]  # an empty selector would admit every pod
    [port] = rule["ports"]
    [container_port] = demo_redis_container()["ports"]
    assert port["port"] == container_port["containerPort"] == 6379


def test_redis_evicts_what_expires_first() -> None:
    """compose and Kubernetes run Redis with volatile-ttl and 10 samples (why: runbook)."""
    assert shipped_redis_eviction() == ("volatile-ttl", "10")
    runbook = (DEPLOY / "README.md").read_text(encoding="utf-8")
    assert "volatile-ttl" in runbook and "volatile-lru" in runbook


# -- Ingress and ServiceMonitor ----------------------------------------------------------------

BROWSER_PATHS = {"/api", "/static", "/shopify/token"}
PRIVATE_PATHS = ("/tokens", "/invalidations", "/metrics", "/healthz", "/readyz", "/openapi.json")


def ingress_paths() -> list[dict[str, Any]]:
    [ingress] = load_yaml(K8S / "ingress.example.yaml")
    assert ingress["kind"] == "Ingress"
    return [path for rule in ingress["spec"]["rules"] for path in rule["http"]["paths"]]


def ingress_matches(path: dict[str, Any], request_path: str) -> bool:
    """Kubernetes' path matching: Exact, or Prefix element by element."""
    if path["pathType"] == "Exact":
        return bool(request_path == path["path"])
    prefix = [p for p in path["path"].split("/") if p]
    return [p for p in request_path.split("/") if p][: len(prefix)] == prefix


def test_ingress_exposes_only_the_browser_routes() -> None:
    """The example Ingress routes /api, /static and /shopify/token, and nothing server-side."""
    paths = ingress_paths()
    assert {p["path"] for p in paths} == BROWSER_PATHS
    assert all(p["pathType"] in ("Prefix", "Exact") for p in paths), "no ImplementationSpecific"
    for private in PRIVATE_PATHS:
        assert not [p["path"] for p in paths if ingress_matches(p, private)], private
    assert any(ingress_matches(p, "/api/v2023061/shop/Refer2") for p in paths)
    assert any(ingress_matches(p, "/static/referrals.js") for p in paths)
    assert not any(ingress_matches(p, "/shopify/token/x") for p in paths)


def test_ingress_backend_is_the_broker_service() -> None:
    """Every Ingress path goes to the referral-broker Service by its named port."""
    service = k8s("Service", "referral-broker")
    names = {port["name"] for port in service["spec"]["ports"]}
    for path in ingress_paths():
        backend = path["backend"]["service"]
        assert backend["name"] == service["metadata"]["name"]
        assert backend["port"]["name"] in names


def test_service_monitor_scrapes_the_broker_with_its_token() -> None:
    """The ServiceMonitor selects the broker Service, scrapes /metrics with the Secret's token."""
    [monitor] = load_yaml(K8S / "servicemonitor.yaml")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["kind"] == "ServiceMonitor"
    service = k8s("Service", "referral-broker")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector and selector.items() <= service["metadata"]["labels"].items()
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert re.fullmatch(r"\d+s", endpoint["interval"])
    credentials = endpoint["authorization"]["credentials"]
    [secret] = load_yaml(K8S / "secret.example.yaml")
    assert credentials["name"] == secret["metadata"]["name"]
    assert credentials["key"] == "BROKER_METRICS_TOKEN" in secret["stringData"]


# Custom resources have no schema in kubernetes-validate; each is checked structurally above.
CUSTOM_KINDS = {"ServiceMonitor": "test_service_monitor_scrapes_the_broker_with_its_token"}
KUBERNETES_VERSION = "1.30.0"


@pytest.mark.parametrize(
    "file", [*K8S_FILES, *K8S_OPTIONAL, "secret.example.yaml", "kustomization.yaml"]
)
def test_manifest_validates_against_the_kubernetes_schema(file: str) -> None:
    """Each manifest is valid (strict: no unknown fields) for Kubernetes 1.30 by its schema."""
    import kubernetes_validate

    for doc in load_yaml(K8S / file):
        if doc["kind"] in CUSTOM_KINDS or doc["kind"] == "Kustomization":
            continue
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_schema_validation_rejects_an_unknown_field() -> None:
    """The validator is strict: a misspelt field in a Deployment fails."""
    import kubernetes_validate
    from kubernetes_validate.utils import ValidationError

    deployment = broker_deployment()
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


# -- compose -----------------------------------------------------------------------------------


def test_compose_builds_the_broker_beside_a_healthy_redis() -> None:
    """compose builds deploy/Dockerfile from .., waits for a healthy redis:7-alpine."""
    services = compose()["services"]
    broker, redis = services["broker"], services["redis"]
    assert broker["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert broker["depends_on"]["redis"]["condition"] == "service_healthy"
    assert broker["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    assert redis["image"] == "redis:7-alpine"
    assert "redis-cli" in redis["healthcheck"]["test"]


def test_compose_keeps_secrets_out_and_the_container_locked_down() -> None:
    """Secrets come from ../.env, the port binds loopback only, only tmpfs is writable."""
    broker = compose()["services"]["broker"]
    assert broker["env_file"] in ("../.env", ["../.env"])
    assert not set(broker["environment"]) & set(SECRET_VARIABLES)
    assert all(str(p).startswith("127.0.0.1:") for p in broker["ports"])
    assert broker["read_only"] is True
    tmpfs = {str(t).split(":", 1)[0] for t in broker["tmpfs"]}
    assert {CONTAINER_TMP, broker["environment"]["PROMETHEUS_MULTIPROC_DIR"]} <= tmpfs
    assert broker["cap_drop"] == ["ALL"]


# -- nginx -------------------------------------------------------------------------------------


def nginx() -> str:
    text = (DEPLOY / "nginx.conf").read_text(encoding="utf-8")
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def nginx_locations(text: str) -> dict[str, str]:
    """Location argument -> body, for the un-nested location blocks."""
    blocks: dict[str, str] = {}
    for match in re.finditer(r"location\s+([^{]+?)\s*\{", text):
        depth, end = 1, match.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            end += 1
        blocks[match[1]] = text[match.end() : end - 1]
    return blocks


def test_nginx_is_balanced_and_pools_two_instances() -> None:
    """nginx.conf has balanced braces, terminated directives, and an upstream pool of two
    instances (ports 8000 and 8001) with explicit passive health checks."""
    text = nginx()
    assert text.count("{") == text.count("}")
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and stripped[-1] not in ";{}":
            raise AssertionError(f"unterminated directive: {stripped}")
    servers = re.findall(r"^\s*server\s+([\w.]+:\d+)\s+(.*);", text, re.MULTILINE)
    assert [address for address, _ in servers] == [f"127.0.0.1:{PORT}", "127.0.0.1:8001"]
    for _, options in servers:
        assert re.search(r"max_fails=\d+", options) and re.search(r"fail_timeout=\d+s", options)


def test_nginx_passes_request_id_trace_and_client_address() -> None:
    """Every server forwards X-Request-ID, traceparent and X-Forwarded-For to the broker."""
    text = nginx()
    for header in ("X-Request-ID", "traceparent", "X-Forwarded-For"):
        assert len(re.findall(rf"proxy_set_header\s+{header}\s", text)) == 2, header


def test_nginx_passes_failed_connections_on_but_never_a_sent_post() -> None:
    """proxy_next_upstream covers error and timeout only, never the broker's own 5xx answers;
    non_idempotent (a sent POST is sent again) only for CustomerReferrals2, a read that the
    storefront client sends as a POST: a sent Refer2 or /tokens is never sent again."""
    text = nginx()
    settings = re.findall(r"proxy_next_upstream\s+([^;]+);", text)
    assert settings.count("error timeout") == 2
    assert [s for s in settings if s != "error timeout"] == ["error timeout non_idempotent"]
    reads = nginx_locations(text)["~ ^/loyalty/api/[^/]+/[^/]+/CustomerReferrals2$"]
    assert "proxy_next_upstream error timeout non_idempotent;" in reads


def test_nginx_blocks_private_routes_on_the_public_site() -> None:
    """The public server proxies only /api/, /static/ and the two platform token routes."""
    public = nginx().split("\nserver {", 2)[1]
    proxied = [
        argument for argument, body in nginx_locations(public).items() if "proxy_pass" in body
    ]
    assert sorted(a.split()[-1] for a in proxied) == [
        "/loyalty/api/",
        "/loyalty/bigcommerce/token",
        "/loyalty/shopify/token",
        "/loyalty/static/",
        "^/loyalty/api/[^/]+/[^/]+/CustomerReferrals2$",  # nested in /loyalty/api/
    ]


# -- package indexes ---------------------------------------------------------------------------

# Not the repository's files: git's own, caches, and what scripts/setup installs (the virtual
# environment and the client's npm dev tools under node_modules, both ignored by git).
SKIPPED_DIRS = {
    ".git",
    ".venv",
    "node_modules",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
}
# Written in pieces so that this file does not match what it looks for.
_DASHES = "-" * 2
INDEX_PATTERNS = [
    re.compile(_DASHES + r"(?:extra-)?index" + "-url"),
    re.compile(_DASHES + "find" + "-links"),
    re.compile(r"\b(?:PIP|UV)_(?:EXTRA_)?(?:INDEX_URL|FIND_LINKS)\b"),
    re.compile(r"^\s*(?:extra-)?index" + r"-url\s*=", re.MULTILINE),
    re.compile(r"(?:^|\s)-i\s+https?:", re.MULTILINE),
    re.compile("https?" + r"://[^\s\"'<>)]+/" + "simple" + r"\b"),
]


def repository_files() -> Iterator[Path]:
    for directory, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS]
        for name in files:
            yield Path(directory) / name


def test_no_file_names_a_package_index() -> None:
    """No file in the repository names a package index address or option."""
    offenders = []
    for path in repository_files():
        data = path.read_bytes()
        if b"\0" in data:
            continue
        text = data.decode("utf-8", errors="replace")
        offenders += [
            f"{path.relative_to(ROOT)}: {m[0]}" for p in INDEX_PATTERNS if (m := p.search(text))
        ]
    assert not offenders


def test_index_patterns_catch_the_usual_spellings() -> None:
    """The index scan recognises the options and index URLs it is meant to forbid."""
    samples = [
        _DASHES + "index-url x",
        _DASHES + "extra-index-url x",
        _DASHES + "find" + "-links x",
        "PIP_" + "INDEX_URL=x",
        "index-url = x",
        "pip install -i " + "https:" + "//pypi.example/simple/ x",
        "https:" + "//pypi.example/" + "simple/",
    ]
    for sample in samples:
        assert any(p.search(sample) for p in INDEX_PATTERNS), sample
    assert not any(p.search("uv pip compile --no-emit-index-url") for p in INDEX_PATTERNS)
