"""deploy/kubernetes read as files (no cluster, no network): every manifest parses; the core
kinds validate against the Kubernetes API's JSON schemas (kubernetes-validate, which ships
them; strict, so an unknown or misspelt field is an error); the custom resources (ServiceMonitor,
ScaledObject) have the fields they use; and the pieces agree with each other and with the
engine: every SEGENGINE_* variable is a setting and the values are accepted, secrets come from
a Secret, the probes ask the open /readyz and /healthz on the API's port, the Service, the
ServiceMonitor, the PodDisruptionBudget and KEDA find the workers, Prometheus gets the job the
alert rules expect, KEDA watches the input topics and never scales past their partitions, the
kustomization lists every manifest and every rule pack, and the worker runs as the
Dockerfile's non-root user with room to stop gracefully."""

from __future__ import annotations

import copy
import inspect
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import ValidationError

from segengine.api import OPEN_PATHS
from segengine.rules import load_rules, rule_files
from segengine.settings import ENV_PREFIX, SECRET_FIELDS, Settings, env_name, unknown_variables
from segengine.worker.retry import RetryPolicy
from segengine.worker.tasks import stop_tasks

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
KUSTOMIZATION = K8S / "kustomization.yaml"
RULES = ROOT / "rules"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"

# The oldest Kubernetes the manifests are for: PodDisruptionBudget.unhealthyPodEvictionPolicy
# is generally available from 1.31 on. kubernetes-validate ships the schemas of 1.25 and later.
KUBERNETES_VERSION = "1.31"
CUSTOM_KINDS = {"ServiceMonitor": "monitoring.coreos.com/v1", "ScaledObject": "keda.sh/v1alpha1"}
RULES_CONFIGMAP = "segengine-rules"
MODELS_CONFIGMAP = "segengine-models"  # the CLV model the packs reference, projected beside them
# what `kubectl create secret generic segengine-secrets` would hold (README: Kubernetes)
SECRET_VALUES = {"api-token": "api-token-4567ef", "redis-url": "redis://:redis-pw-0123abcd@redis:6379/0"}


# --- reading the folder ------------------------------------------------------------------------


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.y*ml") if p.name != KUSTOMIZATION.name)


def documents() -> list[dict[str, Any]]:
    return [doc for path in manifest_files() for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def the(kind: str) -> dict[str, Any]:
    found = [doc for doc in documents() if doc["kind"] == kind]
    assert len(found) == 1, f"{len(found)} objects of kind {kind} in {K8S.relative_to(ROOT)}"
    return found[0]


def kustomization() -> dict[str, Any]:
    return yaml.safe_load(KUSTOMIZATION.read_text())


def rules_generator() -> dict[str, Any]:
    (generator,) = [g for g in kustomization().get("configMapGenerator", []) if g["name"] == RULES_CONFIGMAP]
    return generator


def models_generator() -> dict[str, Any]:
    (generator,) = [g for g in kustomization().get("configMapGenerator", []) if g["name"] == MODELS_CONFIGMAP]
    return generator


def generated_rules_configmap() -> dict[str, Any]:
    """The ConfigMap that kustomize builds from the generator: one key per file, named as it."""
    data = {Path(f).name: (K8S / f).read_text() for f in rules_generator()["files"]}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": RULES_CONFIGMAP}, "data": data}


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = the("Deployment")["spec"]["template"]["spec"]
    return spec


def worker() -> dict[str, Any]:
    (container,) = pod_spec()["containers"]
    return container


def settings_map() -> dict[str, str]:
    """The worker's environment from ConfigMaps (envFrom), as the kubelet passes it."""
    names = {ref["configMapRef"]["name"] for ref in worker().get("envFrom", []) if "configMapRef" in ref}
    maps = [doc for doc in documents() if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] in names]
    assert len(maps) == len(names), f"the worker reads ConfigMaps that are not here: {sorted(names)}"
    return {k: v for m in maps for k, v in m["data"].items()}


def container_port(port: int | str) -> int:
    """A probe's or a Service's port (a number or a container port's name) as a number."""
    for declared in worker()["ports"]:
        if port in (declared["containerPort"], declared.get("name")):
            return int(declared["containerPort"])
    raise AssertionError(f"port {port!r} is not a port of the worker container")


def strings(node: Any) -> Iterator[str]:
    """Every string of a parsed document, keys and values (comments are not in it)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)
    elif isinstance(node, str):
        yield node


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and selector.items() <= labels.items()


# --- parsing and schemas -----------------------------------------------------------------------


def test_every_manifest_parses_into_named_objects() -> None:
    assert manifest_files(), f"no manifests in {K8S}"
    kinds = []
    for path in manifest_files():
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert docs, f"{path.name} holds no object"
        for doc in docs:
            assert isinstance(doc, dict) and doc.get("apiVersion") and doc.get("kind"), path.name
            assert doc.get("metadata", {}).get("name"), f"{path.name}: {doc['kind']} without a name"
            # the kustomization sets the namespace; one written here could disagree with it
            assert "namespace" not in doc["metadata"], f"{path.name}: {doc['kind']} names its namespace"
            kinds.append(doc["kind"])
    assert sorted(kinds) == sorted(
        ["Namespace", "ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "ServiceMonitor", "ScaledObject"]
    )


def core_objects() -> list[dict[str, Any]]:
    return [doc for doc in documents() if doc["kind"] not in CUSTOM_KINDS] + [generated_rules_configmap()]


@pytest.mark.parametrize("obj", core_objects(), ids=lambda o: f"{o['kind']}/{o['metadata']['name']}")
def test_the_core_kinds_validate_against_the_kubernetes_schemas(obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_the_schema_validation_rejects_what_the_api_server_would() -> None:
    """The validator is not a formality: a misspelt field, a number where the API wants a
    string, a missing required field are each refused, from the schemas it ships."""
    deployment = copy.deepcopy(the("Deployment"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    configmap = copy.deepcopy(the("ConfigMap"))
    configmap["data"]["SEGENGINE_HTTP_PORT"] = 9108
    service = copy.deepcopy(the("Service"))
    del service["spec"]["ports"][0]["port"]
    for broken in (deployment, configmap, service):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


# The fields of the custom resources' specs, from their CRDs (Prometheus Operator's
# ServiceMonitor; KEDA's ScaledObject and its kafka scaler): a misspelt one would be dropped
# by the API server or ignored by the scaler (a misspelt lagThreshold falls back to KEDA's 10).
SERVICEMONITOR_SPEC = {
    "attachMetadata", "bodySizeLimit", "convertClassicHistogramsToNHCB", "endpoints", "fallbackScrapeProtocol",
    "jobLabel", "keepDroppedTargets", "labelLimit", "labelNameLengthLimit", "labelValueLengthLimit",
    "namespaceSelector", "nativeHistogramBucketLimit", "nativeHistogramMinBucketFactor", "podTargetLabels",
    "sampleLimit", "scrapeClass", "scrapeClassicHistograms", "scrapeNativeHistograms", "scrapeProtocols",
    "selector", "selectorMechanism", "serviceDiscoveryRole", "targetLabels", "targetLimit",
}  # fmt: skip
SERVICEMONITOR_ENDPOINT = {
    "authorization", "basicAuth", "bearerTokenFile", "bearerTokenSecret", "enableHttp2", "filterRunning",
    "followRedirects", "honorLabels", "honorTimestamps", "interval", "metricRelabelings", "noProxy", "oauth2",
    "params", "path", "port", "proxyConnectHeader", "proxyFromEnvironment", "proxyUrl", "relabelings",
    "scheme", "scrapeTimeout", "targetPort", "tlsConfig", "trackTimestampsStaleness",
}  # fmt: skip
SCALEDOBJECT_SPEC = {
    "advanced", "cooldownPeriod", "fallback", "idleReplicaCount", "initialCooldownPeriod",
    "maxReplicaCount", "minReplicaCount", "pollingInterval", "scaleTargetRef", "triggers",
}  # fmt: skip
KAFKA_TRIGGER_METADATA = {
    "activationLagThreshold", "allowIdleConsumers", "awsRegion", "bootstrapServers", "bootstrapServersFromEnv",
    "consumerGroup", "consumerGroupFromEnv", "ensureEvenDistributionOfPartitions", "excludePersistentLag",
    "fullMetadata", "lagThreshold", "limitToPartitionsWithLag", "offsetResetPolicy", "partitionLimitation",
    "sasl", "saslTokenProvider", "scaleToZeroOnInvalidOffset", "tls", "topic", "topicFromEnv", "unsafeSsl",
    "version",
}  # fmt: skip


def test_the_custom_resources_have_the_fields_they_use() -> None:
    for kind, api_version in CUSTOM_KINDS.items():
        obj = the(kind)
        assert obj["apiVersion"] == api_version
        assert isinstance(obj["metadata"]["name"], str) and isinstance(obj.get("spec"), dict), kind

    monitor = the("ServiceMonitor")["spec"]
    assert set(monitor) <= SERVICEMONITOR_SPEC, set(monitor) - SERVICEMONITOR_SPEC
    assert monitor["selector"]["matchLabels"] and monitor["endpoints"]
    for endpoint in monitor["endpoints"]:
        assert set(endpoint) <= SERVICEMONITOR_ENDPOINT, set(endpoint) - SERVICEMONITOR_ENDPOINT
        assert isinstance(endpoint["port"], str) and endpoint["path"].startswith("/")

    scaled = the("ScaledObject")["spec"]
    assert set(scaled) <= SCALEDOBJECT_SPEC, set(scaled) - SCALEDOBJECT_SPEC
    assert isinstance(scaled["scaleTargetRef"]["name"], str)
    assert isinstance(scaled["minReplicaCount"], int) and isinstance(scaled["maxReplicaCount"], int)
    assert scaled["triggers"]
    for trigger in scaled["triggers"]:
        assert trigger["type"] == "kafka"
        metadata = trigger["metadata"]
        assert set(metadata) <= KAFKA_TRIGGER_METADATA, set(metadata) - KAFKA_TRIGGER_METADATA
        # the CRD's metadata is a map of strings: `lagThreshold: 5000` unquoted is refused
        assert all(isinstance(v, str) for v in metadata.values()), metadata
        assert int(metadata["lagThreshold"]) > 0


# --- settings ----------------------------------------------------------------------------------


def known_settings() -> set[str]:
    return {f"{ENV_PREFIX}{field.upper()}" for field in Settings.model_fields}


def test_every_segengine_variable_is_a_real_setting() -> None:
    """A misspelt variable would only be warned about by the worker: every SEGENGINE_* name in
    the manifests (ConfigMap keys, env names, what KEDA reads from the env) is a setting."""
    names = {s for doc in documents() for s in strings(doc) if re.fullmatch(r"SEGENGINE_[A-Z0-9_]+", s)}
    assert {"SEGENGINE_KAFKA_BOOTSTRAP", "SEGENGINE_REDIS_URL", "SEGENGINE_API_TOKEN", "SEGENGINE_RULES_FILE"} <= names
    assert names - known_settings() == set()
    assert {"SEGENGINE_REDIS_ULR"} - known_settings() == {"SEGENGINE_REDIS_ULR"}  # the check can fail


def worker_environment(secret: dict[str, str] = SECRET_VALUES) -> dict[str, str]:
    """The worker's SEGENGINE_* environment, as the kubelet builds it with ``secret`` as the
    Secret's keys: a reference to a missing optional key sets no variable."""
    env = dict(settings_map())
    for var in worker().get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        ref = var["valueFrom"]["secretKeyRef"]
        if ref["key"] in secret:
            env[var["name"]] = secret[ref["key"]]
        else:
            assert ref.get("optional") is True, f"{var['name']}: the Secret has no {ref['key']}"
    return env


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a worker reads from ``env`` and nothing else."""
    for key in [k for k in os.environ if k.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


def test_the_worker_gets_settings_it_accepts(monkeypatch: pytest.MonkeyPatch) -> None:
    env = worker_environment()
    assert unknown_variables(env) == []
    settings = settings_from(env, monkeypatch)
    assert settings.missing_connections() == [] and not settings.embedded
    assert settings.http_port == container_port("http")
    assert settings.log_format == "json"
    assert settings.api_token is not None and settings.api_token.get_secret_value() == SECRET_VALUES["api-token"]
    assert settings.redis_url == SECRET_VALUES["redis-url"]


def test_the_commented_kafka_sasl_example_works_with_the_optional_password(monkeypatch: pytest.MonkeyPatch) -> None:
    """configmap.yaml shows the Kafka TLS/SASL settings as comments (a plain broker refuses
    them). Uncommented, with the Secret's kafka-sasl-password, the worker accepts them; without
    that key (the reference is optional) it stops with a line naming the missing variable."""
    text = (K8S / "configmap.yaml").read_text()
    example = dict(re.findall(r"^\s*#\s+(SEGENGINE_[A-Z0-9_]+):\s*(\S+)$", text, re.MULTILINE))
    assert "SEGENGINE_KAFKA_SECURITY_PROTOCOL" in example
    assert set(example) - known_settings() == set()
    # the certificate files come from a Secret mounted in the pod, not on this machine
    sasl = {k: v for k, v in example.items() if not k.startswith("SEGENGINE_KAFKA_SSL_")}
    with_password = worker_environment({**SECRET_VALUES, "kafka-sasl-password": "sasl-pw-cdef01"})
    settings = settings_from({**with_password, **sasl}, monkeypatch)
    assert settings.kafka_security_protocol.startswith("SASL_")
    assert settings.kafka_sasl_password is not None
    assert settings.kafka_sasl_password.get_secret_value() == "sasl-pw-cdef01"
    with pytest.raises(ValidationError, match="SEGENGINE_KAFKA_SASL_PASSWORD"):
        settings_from({**worker_environment(), **sasl}, monkeypatch)


def test_secrets_come_from_a_secret_never_from_a_configmap() -> None:
    """Every secret setting (the API token, the Kafka SASL password) and the Redis URL, which
    carries the Redis password, are Secret references; no ConfigMap holds them."""
    secret_vars = {env_name(f) for f in SECRET_FIELDS} | {"SEGENGINE_REDIS_URL"}
    configmap_keys = {k for doc in documents() if doc["kind"] == "ConfigMap" for k in doc["data"]}
    assert secret_vars & configmap_keys == set()
    refs = {
        v["name"]: v["valueFrom"]["secretKeyRef"] for v in worker()["env"] if "secretKeyRef" in v.get("valueFrom", {})
    }
    assert secret_vars <= set(refs), f"not from a Secret: {sorted(secret_vars - set(refs))}"
    # the Secret the README tells to create holds every key that is not optional
    assert {r["key"] for r in refs.values() if not r.get("optional")} <= set(SECRET_VALUES)


# --- probes, Service, ServiceMonitor, PodDisruptionBudget ---------------------------------------


def test_the_probes_ask_readiness_and_liveness_on_the_api_port() -> None:
    container = worker()
    api_port = int(settings_map()["SEGENGINE_HTTP_PORT"])
    assert container_port("http") == api_port
    expected = {"readinessProbe": "/readyz", "livenessProbe": "/healthz", "startupProbe": "/healthz"}
    for probe, path in expected.items():
        if probe == "startupProbe" and probe not in container:
            continue
        get = container[probe]["httpGet"]
        assert get["path"] == path, f"{probe} asks {get['path']}"
        assert container_port(get["port"]) == api_port, f"{probe} is not on the API port"
        assert get["path"] in OPEN_PATHS  # a probe carries no bearer token


def test_the_service_monitor_and_disruption_budget_find_the_workers() -> None:
    deployment, service, monitor = the("Deployment"), the("Service"), the("ServiceMonitor")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels_match(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    assert labels_match(service["spec"]["selector"], pod_labels), "the Service selects no worker"
    assert labels_match(the("PodDisruptionBudget")["spec"]["selector"]["matchLabels"], pod_labels)
    # a ServiceMonitor selects Services (by their labels) and scrapes their endpoints: the workers
    assert labels_match(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])

    (port,) = service["spec"]["ports"]
    assert container_port(port["targetPort"]) == int(settings_map()["SEGENGINE_HTTP_PORT"])
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] == port["name"], "the ServiceMonitor names no port of the Service"
        assert endpoint["path"] == "/metrics" and endpoint["path"] in OPEN_PATHS


def test_prometheus_gets_the_job_the_alert_rules_expect() -> None:
    """The operator names the job after the Service unless `jobLabel` names one of its labels;
    the alerts (`up{job="segengine"}`) and the dashboard select on that job."""
    alerts = (ROOT / "deploy" / "prometheus" / "rules" / "alerts.yml").read_text()
    jobs = set(re.findall(r'\bjob="([^"]+)"', alerts))
    assert jobs, "no job in the alert rules"
    monitor, service = the("ServiceMonitor")["spec"], the("Service")["metadata"]
    job = service["labels"][monitor["jobLabel"]] if "jobLabel" in monitor else service["name"]
    assert jobs == {job}


# --- KEDA ----------------------------------------------------------------------------------------


def input_topics() -> dict[str, int]:
    declared = yaml.safe_load((ROOT / "topics" / "topics.yaml").read_text())["topics"]
    return {t["name"]: t["partitions"] for t in declared if t["role"] == "input"}


def trigger_setting(metadata: dict[str, str], param: str, env: dict[str, str]) -> str:
    """A kafka trigger's parameter, given directly or read from the worker's environment."""
    if f"{param}FromEnv" in metadata:
        return env[metadata[f"{param}FromEnv"]]
    return metadata[param]


def test_keda_scales_the_workers_on_the_lag_of_every_input_topic() -> None:
    scaled = the("ScaledObject")["spec"]
    assert scaled["scaleTargetRef"]["name"] == the("Deployment")["metadata"]["name"]
    assert scaled["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    triggers = [t["metadata"] for t in scaled["triggers"]]
    assert {t["topic"] for t in triggers} == set(input_topics())
    env = worker_environment()
    for metadata in triggers:
        assert trigger_setting(metadata, "consumerGroup", env) == env.get("SEGENGINE_GROUP_ID", "segengine")
        assert trigger_setting(metadata, "bootstrapServers", env) == env["SEGENGINE_KAFKA_BOOTSTRAP"]
        assert metadata.get("allowIdleConsumers", "false") == "false"


def test_keda_never_runs_more_workers_than_partitions_nor_none() -> None:
    """Partition N of every input topic goes to one worker: a worker past the partition count
    owns nothing. And with no worker, time alone moves nobody (the due loop runs in workers)."""
    scaled = the("ScaledObject")["spec"]
    partitions = set(input_topics().values())
    assert len(partitions) == 1, "the input topics must share one partition count (co-partitioning)"
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"] <= partitions.pop()
    # the Deployment leaves the count to KEDA: a `replicas` would reset it on every apply
    assert "replicas" not in the("Deployment")["spec"]


# --- the kustomization and the rule packs -------------------------------------------------------


def test_the_kustomization_lists_every_manifest() -> None:
    listed = kustomization()["resources"]
    assert len(listed) == len(set(listed))
    assert sorted(listed) == [p.name for p in manifest_files()]


def test_the_rules_configmap_holds_every_rule_pack_of_the_repository() -> None:
    """kustomize reads files only below the kustomization, so deploy/kubernetes/rules is a copy
    of rules/: every pack, each as it is in rules/ (`cp rules/*.yaml deploy/kubernetes/rules/`)."""
    generator = rules_generator()
    packs = sorted(p.name for p in RULES.glob("*.y*ml"))
    assert sorted(generator["files"]) == [f"rules/{name}" for name in packs]
    copies = sorted(p.name for p in (K8S / "rules").iterdir() if p.is_file())
    assert copies == packs, "deploy/kubernetes/rules holds other files than rules/"
    stale = [name for name in packs if (K8S / "rules" / name).read_bytes() != (RULES / name).read_bytes()]
    assert stale == [], f"differ from rules/: {stale}; cp rules/*.yaml deploy/kubernetes/rules/"
    # the CLV model the packs reference (rules/models/), its own ConfigMap, copied the same way
    models = sorted(p.name for p in (RULES / "models").glob("*.y*ml"))
    assert sorted(models_generator()["files"]) == [f"rules/models/{name}" for name in models]
    assert sorted(p.name for p in (K8S / "rules" / "models").iterdir()) == models
    stale = [n for n in models if (K8S / "rules" / "models" / n).read_bytes() != (RULES / "models" / n).read_bytes()]
    assert stale == [], f"differ from rules/models/: {stale}; cp rules/models/*.yaml deploy/kubernetes/rules/models/"
    assert models_generator().get("options", {}).get("disableNameSuffixHash") is True
    # the same packs in a folder of the same name: the same rules version as the image ships
    assert load_rules(K8S / "rules").version == load_rules(RULES).version
    # updated in place (no name hash), so that running workers hot-reload it instead of restarting
    assert generator.get("options", {}).get("disableNameSuffixHash") is True


def configmaps_of(volume: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The ConfigMaps a volume shows (name -> its reference), itself or projected."""
    refs = [volume["configMap"]] if "configMap" in volume else []
    refs += [s["configMap"] for s in volume.get("projected", {}).get("sources", []) if "configMap" in s]
    return {ref["name"]: ref for ref in refs}


def test_the_worker_reads_the_rules_from_the_mounted_configmap() -> None:
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    (mount,) = [m for m in worker()["volumeMounts"] if RULES_CONFIGMAP in configmaps_of(volumes[m["name"]])]
    assert settings_map()["SEGENGINE_RULES_FILE"] == mount["mountPath"]
    # the model is projected where the packs name it (models: {clv: models/clv.yaml}, relative to them)
    model = configmaps_of(volumes[mount["name"]]).get(MODELS_CONFIGMAP)
    assert model is not None, f"the rules volume does not hold {MODELS_CONFIGMAP}"
    placed = {item["path"] for item in model["items"]}
    referenced = {f.relative_to(RULES).as_posix() for f in rule_files(RULES) if f.parent != RULES}
    assert referenced and placed == referenced
    assert "subPath" not in mount, "a subPath mount never sees an edited ConfigMap"
    assert float(settings_map().get("SEGENGINE_RULES_RELOAD_S", "2")) > 0, "hot reload is off"


# --- the pod -----------------------------------------------------------------------------------


def dockerfile_final_stage() -> dict[str, str]:
    """The last USER and WORKDIR of the image's final stage."""
    stage: dict[str, str] = {}
    for line in DOCKERFILE.read_text().splitlines():
        keyword, _, args = line.strip().partition(" ")
        if keyword.upper() == "FROM":
            stage = {}
        elif keyword.upper() in ("USER", "WORKDIR"):
            stage[keyword.upper()] = args.strip()
    return stage


def test_the_worker_runs_as_the_dockerfiles_non_root_user_with_a_read_only_root() -> None:
    stage = dockerfile_final_stage()
    uid, _, gid = stage["USER"].partition(":")
    assert uid.isdigit() and int(uid) != 0
    pod, container = pod_spec()["securityContext"], worker()["securityContext"]
    for context in (pod, container):
        assert context.get("runAsNonRoot") is True
        assert context.get("runAsUser", int(uid)) == int(uid)
        assert not gid or context.get("runAsGroup", int(gid)) == int(gid)
    assert pod.get("runAsUser") == int(uid)
    assert container["allowPrivilegeEscalation"] is False
    assert container["readOnlyRootFilesystem"] is True
    assert container["capabilities"]["drop"] == ["ALL"]
    assert (container.get("seccompProfile") or pod["seccompProfile"])["type"] == "RuntimeDefault"
    # the root is read-only: the image's WORKDIR is the writable scratch space
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    scratch = [m for m in worker()["volumeMounts"] if "emptyDir" in volumes[m["name"]]]
    assert stage["WORKDIR"] in {m["mountPath"] for m in scratch}


def test_the_pod_runs_the_projects_image_and_nothing_leaks_into_its_environment() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert worker()["image"] == f"segengine:{version}"
    assert worker()["args"] == ["run"]
    # Service links would add SEGENGINE_WORKER_PORT and the like: unknown settings to the worker
    assert pod_spec()["enableServiceLinks"] is False
    assert pod_spec()["automountServiceAccountToken"] is False


def test_a_stopping_worker_has_time_to_commit_and_rollouts_never_wait_for_a_partition() -> None:
    """SIGTERM: the batch in flight is finished (its retries, at worst), the background loops
    are stopped (twice stop_tasks' grace), then the clients close. A rollout stops an old worker
    before starting a new one: a surge pod finds no free partition when every one is owned."""
    policy = RetryPolicy()
    retries = sum(policy.delay(attempt) for attempt in range(policy.attempts - 1))
    grace = inspect.signature(stop_tasks).parameters["grace_s"].default
    assert pod_spec()["terminationGracePeriodSeconds"] >= retries + 2 * grace + 10
    strategy = the("Deployment")["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate" and strategy["rollingUpdate"]["maxSurge"] == 0


# --- kustomize itself, where kubectl is installed -----------------------------------------------


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (its built-in kustomize) is not installed")
def test_kustomize_builds_the_folder() -> None:
    built = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=120, check=False)
    assert built.returncode == 0, built.stderr
    objects = [doc for doc in yaml.safe_load_all(built.stdout) if doc is not None]
    generated = {("ConfigMap", RULES_CONFIGMAP), ("ConfigMap", MODELS_CONFIGMAP)}
    expected = {(d["kind"], d["metadata"]["name"]) for d in documents()} | generated
    assert {(o["kind"], o["metadata"]["name"]) for o in objects} == expected
    namespace = kustomization()["namespace"]
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == namespace
        if obj["kind"] not in CUSTOM_KINDS:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    (rules,) = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == RULES_CONFIGMAP]
    assert rules["data"] == {p.name: p.read_text() for p in sorted(RULES.glob("*.y*ml"))}
    (models,) = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == MODELS_CONFIGMAP]
    assert models["data"] == {p.name: p.read_text() for p in sorted((RULES / "models").glob("*.y*ml"))}
