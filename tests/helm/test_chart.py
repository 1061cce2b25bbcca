"""Tests of the introspectd Helm chart, rendered offline with Helm's own engine.

helm-python-sdk binds Helm's Go library (libhelm_c), so lint and template run exactly
as `helm lint` / `helm template` would, with no helm binary and no cluster. Every
rendered object is validated against the Kubernetes OpenAPI schemas that
kubernetes-validate ships. Run through tests/helm/run.sh.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "introspectd"
EXAMPLES = CHART / "examples"
KUBE_VERSION = "1.37.0"
RELEASE = "idp"
NAMESPACE = "auth"
FULLNAME = "idp-introspectd"
GRPC_PORT = 50051
HTTP_PORT = 8080
# Custom resources: kubernetes-validate only ships the built-in API schemas.
KINDS_WITHOUT_SCHEMA = {"ServiceMonitor", "PrometheusRule", "Certificate"}

ISSUER = {
    "issuer": "https://id.example.com/",
    "audiences": ["https://api.example.com"],
    "algorithms": ["RS256"],
    "jwks_uri": "https://id.example.com/.well-known/jwks.json",
}


# Enrichers of one issuer: configured per issuer under `enrich`, written as they are.
ENRICH = [
    {"kind": "static", "claims": {"tenant": "acme", "tier": 2}, "when": {"scope": ["api"]}},
    {"kind": "mapping", "rules": [{"strip_prefix": "https://myapp.example.com/"},
                                  {"from": "scp", "to": "scopes", "split": " "}]},
    {"kind": "subject"},
    {"kind": "remote", "url": "https://claims.internal/claims", "timeout_ms": 150,
     "cache_ttl_secs": 300, "on_error": "closed"},
]


def example(name: str) -> dict[str, Any]:
    return yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())


# Value sets every structural test runs over: the defaults, the shipped examples, and
# combinations that switch on the optional objects.
SCENARIOS: dict[str, dict[str, Any]] = {
    "default": {},
    "example-embedded": example("embedded"),
    "example-redis": example("redis"),
    "memory": {
        "store": {"backend": "memory"},
        "replicaCount": 3,
        "issuers": [ISSUER],
        "auth": {"anonymous_introspect": True},
    },
    "embedded-emptydir": {
        "persistence": {"enabled": False},
        "auth": {"apiKeysSecret": {"name": "keys"}},
        "replicaCount": 0,
        "issuers": [ISSUER],
    },
    "redis-everything": {
        "replicaCount": 4,
        "store": {"backend": "redis", "redisUrlSecret": {"name": "redis", "key": "url"}},
        "auth": {"anonymous_introspect": True, "apiKeysSecret": {"name": "keys"}},
        "image": {"repository": "r.example/introspectd", "digest": "sha256:" + "a" * 64},
        "serviceAccount": {"create": False, "name": "shared"},
        "podDisruptionBudget": {"maxUnavailable": "25%"},
        "serviceMonitor": {"enabled": True, "relabelings": [{"action": "labeldrop", "regex": "pod"}]},
        "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "networkPolicy": {
            "enabled": True,
            "ingressFrom": [{"podSelector": {"matchLabels": {"role": "gateway"}}}],
            "metricsFrom": [{"namespaceSelector": {}}],
            "egress": {"enabled": True, "rules": [{"ports": [{"port": 443, "protocol": "TCP"}]}]},
        },
        "extraEnv": [{"name": "INTROSPECTD_CACHE__MAX_ENTRIES", "value": "10"}],
        "extraEnvFrom": [{"configMapRef": {"name": "more-env"}}],
        "extraVolumes": [{"name": "jwks", "configMap": {"name": "jwks"}}],
        "extraVolumeMounts": [{"name": "jwks", "mountPath": "/etc/introspectd/jwks", "readOnly": True}],
        "priorityClassName": "high",
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "podAnnotations": {"a": "b"},
        "podLabels": {"team": "identity"},
        "telemetry": {"otlp_endpoint": "http://otel:4317", "sample_ratio": 0.25},
        "issuers": [
            ISSUER,
            {"issuer": "https://b.example/", "audiences": ["b-api"], "discovery": True, "enrich": ENRICH},
        ],
    },
    "tls-cert-manager-mtls": {
        "store": {"backend": "memory"},
        "tls": {
            "enabled": True,
            "clientAuth": True,
            "certManager": {"enabled": True, "issuerRef": {"name": "internal-ca", "kind": "ClusterIssuer"}},
        },
        "auth": {"clients": [{"name": "edge", "identity": "spiffe://cluster.local/ns/edge/sa/envoy", "roles": ["introspect"]}]},
        "serviceMonitor": {"enabled": True},
    },
    "tls-secret": {
        "store": {"backend": "memory"},
        "auth": {"anonymous_introspect": True},
        "tls": {"enabled": True, "secretName": "introspectd-cert", "clientAuth": True, "clientCa": {"secretName": "mesh-ca", "key": "root.pem"}},
    },
    "memory-hpa-default-metrics": {
        "store": {"backend": "memory"},
        "autoscaling": {"enabled": True, "targetCPUUtilizationPercentage": 0},
        "podDisruptionBudget": {"enabled": False},
    },
    "redis-hpa-egress-closed": {
        "store": {"backend": "redis", "redisUrlSecret": {"name": "redis"}},
        "autoscaling": {"enabled": True, "targetMemoryUtilizationPercentage": 80},
        "networkPolicy": {"enabled": True, "egress": {"enabled": True, "allowDNS": False}},
        "persistence": {"storageClass": "-"},
    },
}


# === helpers ===


@pytest.fixture(scope="session")
def chart():
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def with_issuer(values: dict[str, Any] | None) -> dict[str, Any]:
    """The chart refuses to render without an issuer: values that give none get ISSUER."""
    values = dict(values or {})
    values.setdefault("issuers", [ISSUER])
    return values


def render(chart: helm.Chart, values: dict[str, Any] | None = None) -> dict[str, Any]:
    """Render like `helm template` (with_issuer); returns {"objects": [...], "notes": str}."""
    manifests = chart.render(with_issuer(values), name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects: list[dict[str, Any]] = []
    notes = ""
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return {"objects": objects, "notes": notes}


def objects_of(rendered: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [o for o in rendered["objects"] if o["kind"] == kind]


def one(rendered: dict[str, Any], kind: str) -> dict[str, Any]:
    found = objects_of(rendered, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def container(rendered: dict[str, Any]) -> dict[str, Any]:
    containers = one(rendered, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["introspectd"]
    return containers[0]


def volumes(rendered: dict[str, Any]) -> dict[str, dict[str, Any]]:
    pod = one(rendered, "Deployment")["spec"]["template"]["spec"]
    return {v["name"]: v for v in pod["volumes"]}


def config_toml(rendered: dict[str, Any]) -> dict[str, Any]:
    return tomllib.loads(one(rendered, "ConfigMap")["data"]["config.toml"])


def render_error(chart: helm.Chart, values: dict[str, Any]) -> str:
    with pytest.raises(helm.HelmError) as caught:
        chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return str(caught.value)


@pytest.fixture(scope="session", params=sorted(SCENARIOS))
def scenario(request, chart):
    return request.param, render(chart, SCENARIOS[request.param])


# === lint and schema validation of every scenario ===


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_lint_is_clean(name):
    report = helm.lint(CHART, with_issuer(SCENARIOS[name]), strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["total_charts_linted"] == 1
    assert not problems, problems
    assert not report["errors"], report["errors"]


def test_every_object_is_valid_kubernetes(scenario):
    name, rendered = scenario
    assert rendered["objects"], name
    for obj in rendered["objects"]:
        assert obj["metadata"]["namespace"] == NAMESPACE
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
        if obj["kind"] in KINDS_WITHOUT_SCHEMA:
            with pytest.raises(kubernetes_validate.SchemaNotFoundError):
                kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
            continue
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            path = ".".join(str(p) for p in err.path)
            pytest.fail(f"{name}: {obj['kind']}/{obj['metadata']['name']}: {path}: {err.message}")


def test_every_config_parses_as_toml(scenario):
    name, rendered = scenario
    config = config_toml(rendered)
    assert config["server"]["grpc_addr"] == f"0.0.0.0:{GRPC_PORT}", name
    assert config["server"]["http_addr"] == f"0.0.0.0:{HTTP_PORT}", name
    assert "redis_url" not in config["store"], "the Redis URL must only come from a Secret"


# === pod spec ===


def test_probes_are_grpc_health_checks_or_https_with_tls(scenario):
    name, rendered = scenario
    c = container(rendered)
    if SCENARIOS[name].get("tls", {}).get("enabled"):
        # The kubelet's gRPC probes cannot speak TLS (test_tls_probes_are_https_gets...).
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["httpGet"]["scheme"] == "HTTPS", probe
        return
    for probe in ("startupProbe", "readinessProbe"):
        assert c[probe]["grpc"] == {"port": GRPC_PORT, "service": ""}, probe
        assert "httpGet" not in c[probe] and "exec" not in c[probe]
    assert c["livenessProbe"]["grpc"] == {"port": GRPC_PORT, "service": "liveness"}
    assert "exec" not in c.get("lifecycle", {}).get("preStop", {}), "distroless has no shell: no exec preStop hook"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"grpc": GRPC_PORT, "http": HTTP_PORT}


def test_a_custom_probe_replaces_the_default(chart):
    custom = {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 3}
    c = container(render(chart, {"probes": {"readiness": {"custom": custom}}}))
    assert c["readinessProbe"] == custom
    assert c["livenessProbe"]["grpc"]["service"] == "liveness"


def test_security_context_is_restrictive(scenario):
    _, rendered = scenario
    pod = one(rendered, "Deployment")["spec"]["template"]["spec"]
    sc = container(rendered)["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 65532
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["fsGroup"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    # Service links would inject INTROSPECTD_PORT, INTROSPECTD_SERVICE_HOST, ... for a
    # Service named "introspectd", colliding with the config's environment prefix.
    assert pod["enableServiceLinks"] is False


def test_command_mounts_and_shutdown(scenario):
    name, rendered = scenario
    pod = one(rendered, "Deployment")["spec"]["template"]["spec"]
    c = container(rendered)
    assert c["args"] == ["serve", "--config", "/etc/introspectd/config.toml"]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert mounts["/etc/introspectd"] == "config"
    assert mounts["/var/lib/introspectd"] == "data"
    assert mounts["/tmp"] == "tmp"
    vols = volumes(rendered)
    assert vols["config"]["configMap"]["name"] == FULLNAME
    assert "emptyDir" in vols["tmp"]
    grace = config_toml(rendered)["server"]["shutdown_grace_secs"]
    sleep = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    assert pod["terminationGracePeriodSeconds"] > sleep + grace, name


def test_pre_stop_sleeps_so_endpoints_go_before_sigterm(chart):
    # Kubernetes' own sleep action: the distroless image has no shell to run `sleep` in.
    assert container(render(chart))["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    assert "lifecycle" not in container(render(chart, {"preStopSleepSeconds": 0}))
    # API servers before 1.30 know no sleep action: the chart says so up front.
    chart_yaml = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart_yaml["kubeVersion"] == ">=1.30.0-0"
    hook = {"preStop": {"httpGet": {"path": "/readyz", "port": "http"}}}
    assert container(render(chart, {"lifecycle": hook}))["lifecycle"] == hook


def test_anonymous_introspect_is_off_as_in_the_binary_and_notes_say_how(chart):
    rendered = render(chart, {"issuers": [ISSUER]})
    assert config_toml(rendered)["auth"]["anonymous_introspect"] is False
    assert "--set auth.anonymous_introspect=true" in rendered["notes"]


def test_config_checksum_annotation_tracks_the_config(chart):
    def checksum(values):
        pod = one(render(chart, values), "Deployment")["spec"]["template"]
        return pod["metadata"]["annotations"]["checksum/config"]

    base = checksum({})
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    assert checksum({}) == base
    assert checksum({"log": {"filter": "debug"}}) != base
    assert checksum({"image": {"tag": "9.9.9"}}) == base


def test_topology_spread_gets_the_selector(chart):
    rendered = render(chart)
    pod = one(rendered, "Deployment")["spec"]["template"]["spec"]
    selector = one(rendered, "Deployment")["spec"]["selector"]["matchLabels"]
    constraints = pod["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in constraints} == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    for c in constraints:
        assert c["labelSelector"] == {"matchLabels": selector}
    explicit = {"maxSkew": 2, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"x": "y"}}}
    rendered = render(chart, {"topologySpreadConstraints": [explicit]})
    assert one(rendered, "Deployment")["spec"]["template"]["spec"]["topologySpreadConstraints"] == [explicit]


def test_service_exposes_named_grpc_and_http_ports(chart):
    svc = one(render(chart), "Service")
    ports = {p["name"]: p for p in svc["spec"]["ports"]}
    assert ports["grpc"]["port"] == GRPC_PORT and ports["grpc"]["targetPort"] == "grpc"
    assert ports["http"]["port"] == HTTP_PORT and ports["http"]["targetPort"] == "http"
    assert svc["spec"]["selector"] == one(render(chart), "Deployment")["spec"]["selector"]["matchLabels"]


# === store modes ===


def test_embedded_mode_uses_one_pod_a_pvc_and_recreate(chart):
    for values in ({}, example("embedded")):
        rendered = render(chart, values)
        deploy = one(rendered, "Deployment")
        assert deploy["spec"]["replicas"] == 1
        assert deploy["spec"]["strategy"] == {"type": "Recreate"}
        pvc = one(rendered, "PersistentVolumeClaim")
        assert pvc["metadata"]["name"] == f"{FULLNAME}-data"
        assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
        assert volumes(rendered)["data"]["persistentVolumeClaim"] == {"claimName": f"{FULLNAME}-data"}
        assert not objects_of(rendered, "HorizontalPodAutoscaler")
        assert not objects_of(rendered, "PodDisruptionBudget")
        assert "env" not in container(rendered)
        store = config_toml(rendered)["store"]
        assert store == {"backend": "embedded", "path": "/var/lib/introspectd/state.redb"}
    pvc = one(render(chart, example("embedded")), "PersistentVolumeClaim")
    assert pvc["spec"]["storageClassName"] == "standard-rwo"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert pvc["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}


def test_embedded_existing_claim_and_emptydir(chart):
    rendered = render(chart, {"persistence": {"existingClaim": "kept"}})
    assert not objects_of(rendered, "PersistentVolumeClaim")
    assert volumes(rendered)["data"]["persistentVolumeClaim"] == {"claimName": "kept"}
    rendered = render(chart, {"persistence": {"enabled": False}})
    assert not objects_of(rendered, "PersistentVolumeClaim")
    assert "emptyDir" in volumes(rendered)["data"]
    assert one(rendered, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}
    assert "LOST" in rendered["notes"]
    pvc = one(render(chart, {"persistence": {"storageClass": "-"}}), "PersistentVolumeClaim")
    assert pvc["spec"]["storageClassName"] == ""


def test_redis_mode_reads_the_url_from_a_secret(chart):
    rendered = render(chart, example("redis"))
    deploy = one(rendered, "Deployment")
    assert "replicas" not in deploy["spec"], "the HPA owns the replica count"
    assert deploy["spec"]["strategy"]["type"] == "RollingUpdate"
    assert deploy["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": "25%", "maxUnavailable": 0}
    env = {e["name"]: e for e in container(rendered)["env"]}
    assert env["INTROSPECTD_STORE__REDIS_URL"] == {
        "name": "INTROSPECTD_STORE__REDIS_URL",
        "valueFrom": {"secretKeyRef": {"name": "introspectd-redis", "key": "redis-url"}},
    }
    assert not objects_of(rendered, "PersistentVolumeClaim")
    assert "emptyDir" in volumes(rendered)["data"]
    hpa = one(rendered, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": FULLNAME}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    assert hpa["spec"]["metrics"][0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 65}
    pdb = one(rendered, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == deploy["spec"]["selector"]["matchLabels"]
    assert config_toml(rendered)["store"] == {
        "backend": "redis",
        "redis_wait_replicas": 2,
        "redis_ca_file": "/etc/introspectd/redis-ca/ca.crt",
    }
    # The CA file is where the example mounts it.
    mounts = {m["mountPath"]: m["name"] for m in container(rendered)["volumeMounts"]}
    assert mounts["/etc/introspectd/redis-ca"] == "redis-ca"
    assert volumes(rendered)["redis-ca"]["secret"]["secretName"] == "redis-ca"
    # Fixed replicas without autoscaling.
    deploy = one(render(chart, {**example("redis"), "autoscaling": {"enabled": False}, "replicaCount": 5}), "Deployment")
    assert deploy["spec"]["replicas"] == 5


def test_memory_mode_is_throwaway(chart):
    rendered = render(chart, SCENARIOS["memory"])
    deploy = one(rendered, "Deployment")
    assert deploy["spec"]["replicas"] == 3
    assert deploy["spec"]["strategy"]["type"] == "RollingUpdate"
    assert not objects_of(rendered, "PersistentVolumeClaim")
    assert "emptyDir" in volumes(rendered)["data"]
    assert config_toml(rendered)["store"] == {"backend": "memory"}
    assert "throwaway" in rendered["notes"] or "For tests only" in rendered["notes"]


def test_api_keys_secret_is_mounted_and_configured(chart):
    rendered = render(chart, example("embedded"))
    assert volumes(rendered)["secrets"]["secret"] == {
        "secretName": "introspectd-api-keys",
        "defaultMode": 0o440,
        "items": [{"key": "api-keys.toml", "path": "api-keys.toml"}],
    }
    mounts = {m["name"]: m for m in container(rendered)["volumeMounts"]}
    assert mounts["secrets"] == {"name": "secrets", "mountPath": "/etc/introspectd/secrets", "readOnly": True}
    assert config_toml(rendered)["auth"] == {
        "anonymous_introspect": False,
        "api_keys_file": "/etc/introspectd/secrets/api-keys.toml",
    }
    rendered = render(chart)
    assert "secrets" not in volumes(rendered)
    assert "api_keys_file" not in config_toml(rendered)["auth"]


def test_service_and_service_monitor_overrides(chart):
    rendered = render(chart, {
        "service": {"type": "LoadBalancer", "labels": {"expose": "internal"}, "clusterIP": "10.0.0.9",
                    "externalTrafficPolicy": "Local"},
        "serviceMonitor": {"enabled": True, "namespace": "monitoring", "interval": "15s"},
        "revisionHistoryLimit": 2,
    })
    svc = one(rendered, "Service")
    assert svc["metadata"]["labels"]["expose"] == "internal"
    assert svc["spec"]["clusterIP"] == "10.0.0.9"
    assert svc["spec"]["externalTrafficPolicy"] == "Local"
    sm = one(rendered, "ServiceMonitor")
    assert sm["metadata"]["namespace"] == "monitoring"
    # Still scrapes the release's namespace wherever the ServiceMonitor lives.
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert sm["spec"]["endpoints"][0]["interval"] == "15s"
    assert one(rendered, "Deployment")["spec"]["revisionHistoryLimit"] == 2
    defaults = render(chart)
    assert "externalTrafficPolicy" not in one(defaults, "Service")["spec"]
    assert "clusterIP" not in one(defaults, "Service")["spec"]
    assert one(defaults, "Deployment")["spec"]["revisionHistoryLimit"] == 5


def test_common_labels_and_annotations_reach_every_object(chart):
    values = dict(SCENARIOS["redis-everything"])
    values["commonLabels"] = {"team": "identity"}
    values["commonAnnotations"] = {"owner": "iam@example.com"}
    values["service"] = {"annotations": {"own": "kept"}}
    rendered = render(chart, values)
    for obj in rendered["objects"]:
        meta = obj["metadata"]
        assert meta["labels"]["team"] == "identity", obj["kind"]
        assert meta["annotations"]["owner"] == "iam@example.com", obj["kind"]
    assert one(rendered, "Service")["metadata"]["annotations"]["own"] == "kept"
    assert "annotations" not in one(render(chart), "Service")["metadata"]


def test_image_registry_and_global_values(chart):
    image = {"registry": "ghcr.io", "repository": "acme/introspectd", "tag": "1.2.3"}
    assert container(render(chart, {"image": image}))["image"] == "ghcr.io/acme/introspectd:1.2.3"
    rendered = render(chart, {
        "image": image,
        "global": {"imageRegistry": "mirror.internal", "imagePullSecrets": [{"name": "mirror"}]},
        "imagePullSecrets": [{"name": "own"}],
    })
    assert container(rendered)["image"] == "mirror.internal/acme/introspectd:1.2.3"
    pod = one(rendered, "Deployment")["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "mirror"}, {"name": "own"}]


def test_extra_args_init_containers_and_sidecars(chart):
    rendered = render(chart, {
        "extraArgs": ["--http-addr", "0.0.0.0:8080"],
        "initContainers": [{"name": "wait", "image": "busybox"}],
        "sidecars": [{"name": "proxy", "image": "envoy"}],
    })
    pod = one(rendered, "Deployment")["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["introspectd", "proxy"]
    assert pod["containers"][0]["args"][-2:] == ["--http-addr", "0.0.0.0:8080"]
    assert pod["initContainers"] == [{"name": "wait", "image": "busybox"}]


def test_prometheus_rule_is_the_shipped_rules_file_for_this_release(chart, tmp_path):
    assert not objects_of(render(chart), "PrometheusRule")
    rendered = render(chart, SCENARIOS["redis-everything"])
    rule = one(rendered, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    shipped = yaml.safe_load((CHART / "files" / "introspectd-rules.yml").read_text())
    names = lambda groups: [r["alert"] for g in groups for r in g["rules"]]
    assert names(rule["spec"]["groups"]) == names(shipped["groups"])
    down = next(r for g in rule["spec"]["groups"] for r in g["rules"] if r["alert"] == "IntrospectdDown")
    # The ServiceMonitor's job is the Service's name.
    assert f'job="{FULLNAME}"' in down["expr"], down["expr"]
    if not shutil.which("promtool"):
        if os.environ.get("INTROSPECTD_REQUIRE_ALL") == "1":
            pytest.fail("promtool is not installed and INTROSPECTD_REQUIRE_ALL=1")
        pytest.skip("promtool is not on PATH (apt-get install prometheus)")
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    result = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_refusals_name_their_own_template(chart):
    # Not whichever template happened to include the check first (hpa.yaml, once).
    message = render_error(chart, {"replicaCount": 2})
    assert "templates/validate.yaml" in message, message
    for other in ("hpa.yaml", "deployment.yaml", "configmap.yaml"):
        assert other not in message, message


def test_optional_objects(chart):
    rendered = render(chart, SCENARIOS["redis-everything"])
    sm = one(rendered, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["spec"]["endpoints"][0]["port"] == "http"
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
    np = one(rendered, "NetworkPolicy")
    assert np["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert {p["port"] for p in np["spec"]["ingress"][0]["ports"]} == {"grpc", "http"}
    assert np["spec"]["ingress"][-1]["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert len(np["spec"]["egress"]) == 2  # DNS + the given rule
    assert one(rendered, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "shared"
    assert not objects_of(rendered, "ServiceAccount")
    assert container(rendered)["image"] == "r.example/introspectd@sha256:" + "a" * 64
    closed = one(render(chart, SCENARIOS["redis-hpa-egress-closed"]), "NetworkPolicy")
    assert closed["spec"]["egress"] == []
    default = render(chart)
    for kind in ("ServiceMonitor", "NetworkPolicy", "HorizontalPodAutoscaler"):
        assert not objects_of(default, kind), kind


# === config.toml ===


def test_default_config_toml(chart):
    config = config_toml(render(chart))
    assert config.pop("issuers") == [ISSUER]
    assert config == {
        "server": {
            "grpc_addr": "0.0.0.0:50051",
            "http_addr": "0.0.0.0:8080",
            "max_token_bytes": 16384,
            "max_request_bytes": 65536,
            "shutdown_grace_secs": 10,
            "expose_inactive_reason": False,
        },
        "log": {"format": "json", "filter": "info"},
        "cache": {"max_entries": 100000},
        "auth": {"anonymous_introspect": False},
        "store": {"backend": "embedded", "path": "/var/lib/introspectd/state.redb"},
        # service_name and sample_ratio are left out, so OTEL_SERVICE_NAME and
        # OTEL_TRACES_SAMPLER apply: only the [telemetry] header remains.
        "telemetry": {},
    }
    assert isinstance(config["server"]["max_token_bytes"], int)


def test_telemetry_keys_are_rendered_only_when_set(chart):
    text = one(render(chart), "ConfigMap")["data"]["config.toml"]
    assert "service_name" not in text and "sample_ratio" not in text
    for values in ({"service_name": "", "sample_ratio": None}, {"sample_ratio": None}):
        assert config_toml(render(chart, {"telemetry": values}))["telemetry"] == {}
    telemetry = config_toml(render(chart, {"telemetry": {"service_name": "introspectd", "sample_ratio": 1}}))["telemetry"]
    assert telemetry == {"service_name": "introspectd", "sample_ratio": 1.0}
    assert isinstance(telemetry["sample_ratio"], float)


def test_issuer_enrichment_is_rendered_as_is(chart):
    rendered = render(chart, SCENARIOS["redis-everything"])
    text = one(rendered, "ConfigMap")["data"]["config.toml"]
    assert text.count("\n[[issuers]]\n") == 2
    issuers = config_toml(rendered)["issuers"]
    assert issuers[0] == ISSUER
    assert issuers[1]["enrich"] == ENRICH
    assert [e["kind"] for e in issuers[1]["enrich"]] == ["static", "mapping", "subject", "remote"]


@pytest.mark.parametrize("name", ["embedded", "redis"])
def test_example_config_toml(chart, name):
    values = example(name)
    config = config_toml(render(chart, values))
    assert config["issuers"] == values["issuers"]
    for section in ("server", "log", "cache"):
        assert {k: config[section][k] for k in values[section]} == values[section]
    assert config["telemetry"] == values["telemetry"]
    assert config["auth"]["api_keys_file"] == "/etc/introspectd/secrets/api-keys.toml"
    assert config["store"]["backend"] == name


def test_toml_rendering_of_awkward_values(chart):
    issuer = {
        "issuer": 'https://id.example.com/"quoted"\\back\nline\ttab é 漢',
        "audiences": [],
        "algorithms": ["RS256", "ES256"],
        "discovery": True,
        "leeway_secs": 30,
        "max_lifetime_secs": 86400,
        "ratio": 0.5,
        "required_claims": ["sub", "exp"],
        "claim_names": {"scope": "scp", "client": ["client_id", "azp"], "odd key": 1, "nested": {"x": False}},
        "static_claims": [{"name": "tier", "value": "gold"}, {"name": "n", "value": 2}],
        "typ": "",
    }
    values = {
        "issuers": [issuer, ISSUER],
        "log": {"filter": 'info,tower_http=debug,"x"'},
        "telemetry": {"sample_ratio": 0},
    }
    config = config_toml(render(chart, values))
    expected = {k: v for k, v in issuer.items() if v != ""}  # empty strings are left out
    assert config["issuers"] == [expected, ISSUER]
    assert config["log"]["filter"] == values["log"]["filter"]
    assert config["telemetry"]["sample_ratio"] == 0.0
    assert isinstance(config["telemetry"]["sample_ratio"], float)
    assert set(config) == {"server", "log", "cache", "auth", "store", "telemetry", "issuers"}


def test_bind_address_and_ports_follow_values(chart):
    rendered = render(chart, {"bindAddress": "[::]", "containerPorts": {"grpc": 9090, "http": 9091}})
    server = config_toml(rendered)["server"]
    assert (server["grpc_addr"], server["http_addr"]) == ("[::]:9090", "[::]:9091")
    c = container(rendered)
    assert c["readinessProbe"]["grpc"]["port"] == 9090
    assert c["livenessProbe"]["grpc"] == {"port": 9090, "service": "liveness"}


# === refusals ===

REFUSALS = {
    "no-issuer": (
        {},
        "issuers is empty: introspectd refuses to start without a trusted issuer",
    ),
    "grace-shorter-than-pre-stop-and-shutdown": (
        {"terminationGracePeriodSeconds": 14},
        "terminationGracePeriodSeconds (14) must be greater than preStopSleepSeconds (5) plus server.shutdown_grace_secs (10)",
    ),
    "embedded-two-replicas": (
        {"replicaCount": 2},
        "store.backend=embedded supports exactly one replica",
    ),
    "embedded-autoscaling": (
        {"autoscaling": {"enabled": True}},
        "store.backend=embedded supports exactly one replica, so autoscaling.enabled must be false",
    ),
    "redis-without-secret": (
        {"store": {"backend": "redis"}, "replicaCount": 3},
        "store.backend=redis needs the Redis URL from an existing Secret: set store.redisUrlSecret.name",
    ),
    "grace-period-too-short": (
        {"terminationGracePeriodSeconds": 10, "preStopSleepSeconds": 0},
        "terminationGracePeriodSeconds (10) must be greater than preStopSleepSeconds (0) plus server.shutdown_grace_secs (10)",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refuses_to_render(chart, case):
    values, message = REFUSALS[case]
    # `helm template` and `helm install` stop here. (`helm lint` does not: Helm's lint
    # mode turns `fail` into a log line, so lint cannot be used to test refusals.)
    assert message in render_error(chart, values)


def test_embedded_refusal_names_the_replica_count(chart):
    assert "but replicaCount is 3" in render_error(chart, {"replicaCount": 3})
    assert "but replicaCount is 2" in render_error(chart, {**example("embedded"), "replicaCount": 2})


@pytest.mark.parametrize(
    "values, message",
    [
        ({"replicas": 2}, "additional properties 'replicas' not allowed"),
        ({"store": {"backend": "redb"}}, "/store/backend"),
        ({"server": {"max_token_byte": 1}}, "additional properties 'max_token_byte' not allowed"),
        ({"persistence": {"sise": "1Gi"}}, "additional properties 'sise' not allowed"),
        ({"autoscaling": {"enable": True}}, "additional properties 'enable' not allowed"),
        ({"replicaCount": "2"}, "/replicaCount"),
        ({"log": {"format": "yaml"}}, "/log/format"),
        ({"telemetry": {"sample_ratio": 2}}, "/telemetry/sample_ratio"),
        ({"telemetry": {"sample_ratio": "0.5"}}, "/telemetry/sample_ratio"),
        ({"issuers": [{"audiences": ["x"]}]}, "issuer"),
        # The service has no config section besides those the chart renders.
        ({"extraConfig": {"enrichment": {"x": 1}}}, "additional properties 'extraConfig' not allowed"),
    ],
)
def test_schema_catches_typos(chart, values, message):
    with pytest.raises(helm.HelmValuesError) as caught:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert message in str(caught.value)


# === documentation and image ===


def _documented_keys() -> set[str]:
    readme = (CHART / "README.md").read_text()
    table = readme.split("\n## Values\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([A-Za-z0-9_.]+)` \|", table, flags=re.MULTILINE))


def _leaves(values: Any, documented: set[str], prefix: str = "") -> list[str]:
    """Paths of values.yaml not covered by a documented key."""
    if prefix and prefix in documented:
        return []
    if isinstance(values, dict) and values:
        return [p for k, v in values.items() for p in _leaves(v, documented, f"{prefix}.{k}" if prefix else k)]
    return [prefix]


def test_readme_documents_every_value():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    documented = _documented_keys()
    assert _leaves(values, documented) == []
    for key in documented:
        node = values
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"README documents {key}, which values.yaml lacks"
            node = node[part]


def test_values_yaml_comments_every_documented_value():
    lines = (CHART / "values.yaml").read_text().splitlines()
    documented = _documented_keys()
    stack: list[tuple[int, str]] = []
    seen = set()
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z_][A-Za-z0-9_]*):", line)
        if not m:
            continue
        indent = len(m.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, m.group(2)))
        path = ".".join(k for _, k in stack)
        if path in documented:
            seen.add(path)
            j = i - 1
            while j >= 0 and lines[j].strip().startswith("#") and not lines[j].strip().startswith("# --"):
                j -= 1
            assert j >= 0 and lines[j].strip().startswith("# --"), f"values.yaml: {path} has no '# --' comment"
    assert seen == documented


def test_dockerfile_matches_the_chart(chart):
    dockerfile = (ROOT / "Dockerfile").read_text()
    froms = re.findall(r"^FROM (\S+)", dockerfile, flags=re.MULTILINE)
    assert froms == ["${BUILDER_IMAGE}", "${RUNTIME_IMAGE}"]
    # Both bases pinned by digest; the builder's Rust is the toolchain the crate asks for.
    builder = re.search(r"^ARG BUILDER_IMAGE=rust:(\S+)-bookworm@sha256:([0-9a-f]{64})$", dockerfile, flags=re.MULTILINE)
    runtime = re.search(
        r"^ARG RUNTIME_IMAGE=gcr\.io/distroless/cc-debian12:nonroot@sha256:([0-9a-f]{64})$", dockerfile, flags=re.MULTILINE
    )
    assert builder and runtime
    rust_version = re.search(r'^rust-version = "(\S+)"$', (ROOT / "Cargo.toml").read_text(), flags=re.MULTILINE)
    assert rust_version and builder.group(1) == rust_version.group(1)
    assert f'org.opencontainers.image.base.digest="sha256:{runtime.group(1)}"' in dockerfile
    # The chart's data directory is the image's own volume, owned by the user it runs as.
    assert re.search(r"^WORKDIR /var/lib/introspectd$", dockerfile, flags=re.MULTILINE)
    assert re.search(r"^VOLUME /var/lib/introspectd$", dockerfile, flags=re.MULTILINE)
    assert "--chown=65532:65532 /out/state /var/lib/introspectd" in dockerfile
    for label in ("title", "version", "licenses", "description"):
        assert f"org.opencontainers.image.{label}=" in dockerfile
    assert "cargo build --release --locked --bin introspectd" in dockerfile
    assert re.search(r"^USER 65532:65532$", dockerfile, flags=re.MULTILINE)
    assert re.search(r"^EXPOSE 50051 8080$", dockerfile, flags=re.MULTILINE)
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (.+)$", dockerfile, flags=re.MULTILINE).group(1))
    cmd = json.loads(re.search(r"^CMD (.+)$", dockerfile, flags=re.MULTILINE).group(1))
    assert entrypoint == ["/usr/local/bin/introspectd"]
    assert cmd == container(render(chart))["args"]
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in ("target/", "data/", ".git", ".venv*"):
        assert entry in ignored


# === the service itself accepts what the chart renders ===

# Scenarios that configure a complete service (at least one issuer).
ACCEPTED_BY_THE_SERVICE = ["example-embedded", "example-redis", "memory", "embedded-emptydir", "redis-everything"]


def _a_certificate() -> str:
    """A PEM certificate (self-signed, made with openssl) to stand in for a mounted CA."""
    with __import__("tempfile").TemporaryDirectory() as scratch:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", f"{scratch}/k.pem", "-out", f"{scratch}/c.pem", "-days", "1", "-subj", "/CN=redis CA"],
            check=True, capture_output=True,
        )
        return Path(f"{scratch}/c.pem").read_text()


@pytest.mark.parametrize("name", ACCEPTED_BY_THE_SERVICE)
def test_the_service_accepts_the_rendered_config(chart, name, tmp_path):
    binary = os.environ.get("INTROSPECTD_BIN")
    if not binary:
        pytest.skip("INTROSPECTD_BIN is not set (cargo test sets it to the built binary)")
    text = one(render(chart, SCENARIOS[name]), "ConfigMap")["data"]["config.toml"]
    path = tmp_path / "config.toml"
    path.write_text(text)
    env = dict(os.environ)
    # In a cluster these come from Secrets; here, stand-ins.
    env["INTROSPECTD_STORE__REDIS_URL"] = "redis://redis.test:6379"
    if "redis_ca_file" in tomllib.loads(text).get("store", {}):
        # A Redis CA: a certificate (the binary's own test CA will do), over rediss://.
        ca = tmp_path / "redis-ca.crt"
        ca.write_text(_a_certificate())
        env["INTROSPECTD_STORE__REDIS_URL"] = "rediss://redis.test:6380"
        env["INTROSPECTD_STORE__REDIS_CA_FILE"] = str(ca)
    if "api_keys_file" in tomllib.loads(text).get("auth", {}):
        keys = tmp_path / "api-keys.toml"
        keys.write_text('[[api_keys]]\nname = "gateway"\nsha256 = "' + "0" * 64 + '"\nroles = ["introspect"]\n')
        env["INTROSPECTD_AUTH__API_KEYS_FILE"] = str(keys)
    result = subprocess.run(
        [binary, "check-config", "--config", str(path)], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"{name}: {result.stderr}"


# === TLS ===


def test_tls_probes_are_https_gets_and_mounts_match_the_config(chart):
    rendered = render(chart, SCENARIOS["tls-cert-manager-mtls"])
    c = container(rendered)
    for probe, path in (("startupProbe", "/readyz"), ("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert c[probe]["httpGet"] == {"path": path, "port": "http", "scheme": "HTTPS"}, probe
        assert "grpc" not in c[probe], "the kubelet's gRPC probes cannot speak TLS"
    config = config_toml(rendered)
    tls = config["tls"]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    for key in ("cert_file", "key_file", "client_ca_file"):
        assert tls[key].startswith(mounts["tls"] + "/"), (key, tls[key], mounts)
    assert volumes(rendered)["tls"]["secret"]["secretName"] == f"{RELEASE}-introspectd-tls" or volumes(rendered)["tls"]["secret"]["secretName"].endswith("-tls")
    assert config["auth"]["clients"] == [{"name": "edge", "identity": "spiffe://cluster.local/ns/edge/sa/envoy", "roles": ["introspect"]}]
    cert = one(rendered, "Certificate")
    assert cert["spec"]["secretName"] == volumes(rendered)["tls"]["secret"]["secretName"]
    assert cert["spec"]["issuerRef"] == {"name": "internal-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    svc = one(rendered, "Service")["metadata"]["name"]
    assert f"{svc}.{NAMESPACE}.svc" in cert["spec"]["dnsNames"]
    endpoint = one(rendered, "ServiceMonitor")["spec"]["endpoints"][0]
    assert endpoint["scheme"] == "https"
    assert endpoint["tlsConfig"]["ca"]["secret"]["name"] == cert["spec"]["secretName"]


def test_tls_with_a_separate_client_ca_secret(chart):
    rendered = render(chart, SCENARIOS["tls-secret"])
    tls = config_toml(rendered)["tls"]
    v = volumes(rendered)
    assert v["tls"]["secret"]["secretName"] == "introspectd-cert"
    assert v["client-ca"]["secret"]["secretName"] == "mesh-ca"
    assert v["client-ca"]["secret"]["items"] == [{"key": "root.pem", "path": "ca.crt"}]
    mounts = {m["name"]: m["mountPath"] for m in container(rendered)["volumeMounts"]}
    assert tls["client_ca_file"] == mounts["client-ca"] + "/ca.crt"
    assert not objects_of(rendered, "Certificate")


def test_helm_test_hook_runs_the_health_check_through_the_service(chart):
    rendered = render(chart, {})
    pods = [o for o in objects_of(rendered, "Pod") if o["metadata"]["annotations"].get("helm.sh/hook") == "test"]
    assert len(pods) == 1
    pod = pods[0]
    svc = one(rendered, "Service")["metadata"]["name"]
    args = pod["spec"]["containers"][0]["args"]
    assert args == ["health", "--grpc-addr", f"http://{svc}.{NAMESPACE}.svc:{GRPC_PORT}"]
    assert pod["spec"]["containers"][0]["image"] == container(rendered)["image"]
    assert pod["spec"]["restartPolicy"] == "Never"
    tls = render(chart, SCENARIOS["tls-cert-manager-mtls"])
    pod = [o for o in objects_of(tls, "Pod") if o["metadata"]["name"].endswith("-test-health")][0]
    args = pod["spec"]["containers"][0]["args"]
    assert args[2].startswith("https://") and "--tls-ca" in args
    assert pod["spec"]["volumes"][0]["secret"]["secretName"] == one(tls, "Certificate")["spec"]["secretName"]
    assert not objects_of(render(chart, {"helmTest": {"enabled": False}}), "Pod")


def _admits(policy: dict[str, Any], labels: dict[str, str], port: str) -> bool:
    """Whether an ingress rule of `policy` admits a pod of this namespace with `labels` on `port`."""
    for rule in policy["spec"]["ingress"]:
        if port not in {p["port"] for p in rule.get("ports", [])}:
            continue
        sources = rule.get("from")
        if sources is None:
            return True
        for source in sources:
            selector = source.get("podSelector")
            if selector is not None and "namespaceSelector" not in source:
                wanted = selector.get("matchLabels", {})
                if all(labels.get(k) == v for k, v in wanted.items()):
                    return True
    return False


def test_helm_test_gets_through_the_network_policy(chart):
    # The redis example admits only namespaces with a label the release's own lacks.
    values = yaml.safe_load((EXAMPLES / "redis.yaml").read_text())
    rendered = render(chart, values)
    policy = one(rendered, "NetworkPolicy")
    pod = [o for o in objects_of(rendered, "Pod") if o["metadata"]["name"].endswith("-test-health")][0]
    assert _admits(policy, pod["metadata"]["labels"], "grpc")
    # No other pod of the namespace is let in by it.
    assert not _admits(policy, {"app": "something-else"}, "grpc")
    # Without the test, no such rule.
    values["helmTest"] = {"enabled": False}
    untested = one(render(chart, values), "NetworkPolicy")
    assert len(untested["spec"]["ingress"]) == len(policy["spec"]["ingress"]) - 1


def test_tls_refusals_name_the_value(chart):
    assert "tls.secretName" in render_error(chart, with_issuer({"tls": {"enabled": True}}))
    assert "issuerRef.name" in render_error(chart, with_issuer({"tls": {"enabled": True, "certManager": {"enabled": True}}}))
    assert "tls.enabled" in render_error(chart, with_issuer({"tls": {"clientAuth": True}}))
    clients = {"auth": {"clients": [{"name": "x", "identity": "y", "roles": ["introspect"]}]}}
    assert "tls.clientAuth" in render_error(chart, with_issuer(clients))
