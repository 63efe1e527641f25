"""What the rendered manifests promise: config, ports, probes, shutdown, security, scaling."""

from __future__ import annotations

from typing import Any

import pytest
from chart_render import HELLO_SERVICE, NAMESPACE, RELEASE, VALUE_SETS, Helm, Manifest, Rendered

FULLNAME = f"{RELEASE}-activator"
ADMIN_SERVICE = f"{FULLNAME}-admin"


def _is_subset(small: dict[str, Any], large: dict[str, Any]) -> bool:
    return all(large.get(key) == value for key, value in small.items())


def _pod_labels(rendered: Rendered) -> dict[str, Any]:
    labels: dict[str, Any] = rendered.deployment["spec"]["template"]["metadata"]["labels"]
    return labels


def _pod_annotations(rendered: Rendered) -> dict[str, Any]:
    annotations: dict[str, Any] = rendered.deployment["spec"]["template"]["metadata"]["annotations"]
    return annotations


# --- what gets created -------------------------------------------------------------------


def test_defaults_create_the_core_objects_and_nothing_optional(default_render: Rendered) -> None:
    assert default_render.kinds() == sorted(
        [
            "ConfigMap",
            "Deployment",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "Service",
            "ServiceAccount",
        ]
    )
    assert {service["metadata"]["name"] for service in default_render.all("Service")} == {
        FULLNAME,
        ADMIN_SERVICE,
    }
    for manifest in default_render:
        assert manifest["metadata"]["namespace"] == NAMESPACE, manifest["kind"]
        assert manifest["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE


def test_fullname_override_names_every_object(helm: Helm) -> None:
    rendered = helm.template({"fullnameOverride": "gateway"})
    names = {manifest["metadata"]["name"] for manifest in rendered}
    assert names == {"gateway", "gateway-admin"}


# --- config ------------------------------------------------------------------------------


def test_default_config_parses_and_binds_the_port_values(default_render: Rendered) -> None:
    config = default_render.activator_config
    assert config["listen"] == "0.0.0.0:8080"
    assert config["admin"] == "0.0.0.0:9090"
    assert config["services"] == []
    assert config["limits"] == {
        "max_header_bytes": "64KiB",
        "max_concurrent_streams": 250,
        "replay_buffer": "64KiB",
        "max_replays": 3,
        "client_idle_timeout": "1h",
        "client_header_timeout": "30s",
        "premature_reset_streams": 500,
        "premature_reset_lifetime": "1s",
    }
    assert config["autoscaler"] == {
        "push_url": "http://autoscaler.knative-serving.svc:9999/v1/stats",
        "interval": "1s",
    }


def test_config_carries_services_and_types_through(helm: Helm) -> None:
    rendered = helm.template(
        {
            "ports": {"data": 8443, "admin": 9443},
            "config": {
                "services": [HELLO_SERVICE],
                "limits": {"max_concurrent_streams": 100},
            },
        }
    )
    config = rendered.activator_config
    assert config["listen"] == "0.0.0.0:8443"
    assert config["admin"] == "0.0.0.0:9443"
    assert config["services"] == [HELLO_SERVICE]
    # Integers stay integers through helm's JSON round trip (not 100.0).
    assert type(config["limits"]["max_concurrent_streams"]) is int
    assert type(config["services"][0]["container_concurrency"]) is int
    # Keys not overridden keep their defaults: values merge, not replace.
    assert config["limits"]["max_replays"] == 3


def test_ipv6_bind_address_is_bracketed(helm: Helm) -> None:
    config = helm.template({"bindAddress": "::"}).activator_config
    assert config["listen"] == "[::]:8080"
    assert config["admin"] == "[::]:9090"


@pytest.mark.parametrize("key", ["listen", "admin"])
def test_config_may_not_set_the_listeners(helm: Helm, key: str) -> None:
    error = helm.template_error({"config": {key: "0.0.0.0:1234"}})
    assert f"config.{key} is derived from bindAddress" in error


def test_config_is_mounted_where_the_command_reads_it(default_render: Rendered) -> None:
    container = default_render.container
    assert container["command"] == ["activator"]
    args = container["args"]
    assert args[:2] == ["serve", "--config"]
    config_path = args[2]
    mount = next(m for m in container["volumeMounts"] if config_path.startswith(m["mountPath"]))
    assert mount["readOnly"] is True
    volume = next(v for v in default_render.pod_spec["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == default_render.one("ConfigMap")["metadata"]["name"]
    file_name = config_path.removeprefix(mount["mountPath"]).lstrip("/")
    assert file_name in default_render.one("ConfigMap")["data"]


def test_config_change_rolls_pods_and_other_changes_do_not(helm: Helm) -> None:
    def checksum(values: Manifest) -> str:
        value: str = _pod_annotations(helm.template(values))["checksum/config"]
        return value

    baseline = checksum({})
    assert len(baseline) == 64
    assert checksum({"config": {"services": [HELLO_SERVICE]}}) != baseline
    assert checksum({"ports": {"data": 8081, "admin": 9090}}) != baseline
    assert checksum({"replicaCount": 5}) == baseline


# --- command line ------------------------------------------------------------------------


def test_workers_and_extra_args_reach_the_command_line(helm: Helm) -> None:
    container = helm.template(
        {"workers": 4, "drain": {"timeoutSeconds": 20}, "extraArgs": ["--log-level", "debug"]}
    ).container
    assert container["args"] == [
        "serve",
        "--config",
        "/etc/activator/config.yaml",
        "--workers",
        "4",
        "--drain-timeout",
        "20",
        "--log-level",
        "debug",
    ]


def test_extra_env_is_added_after_the_pod_identity(helm: Helm) -> None:
    env = helm.template({"extraEnv": [{"name": "LOG_FORMAT", "value": "json"}]}).container["env"]
    assert [variable["name"] for variable in env] == ["POD_NAME", "POD_NAMESPACE", "LOG_FORMAT"]
    assert env[2]["value"] == "json"


def test_image_defaults_to_app_version_and_takes_overrides(
    helm: Helm, default_render: Rendered
) -> None:
    assert default_render.container["image"] == "activator:0.1.0"
    container = helm.template(
        {"image": {"repository": "registry.example.com/activator", "tag": "1.2.3"}}
    ).container
    assert container["image"] == "registry.example.com/activator:1.2.3"


# --- ports, Services, probes -------------------------------------------------------------


@pytest.mark.parametrize("ports", [{"data": 8080, "admin": 9090}, {"data": 8181, "admin": 9191}])
def test_probes_hit_health_endpoints_on_the_admin_port(helm: Helm, ports: dict[str, int]) -> None:
    rendered = helm.template({"ports": ports})
    container = rendered.container
    liveness = container["livenessProbe"]["httpGet"]
    readiness = container["readinessProbe"]["httpGet"]
    assert liveness["path"] == "/healthz"
    assert readiness["path"] == "/readyz"
    for probe in (liveness, readiness):
        assert rendered.container_port(probe["port"]) == ports["admin"]
    assert rendered.container_port("http") == ports["data"]


def test_data_service_targets_the_data_port_over_h2c(helm: Helm) -> None:
    rendered = helm.template({"ports": {"data": 8181, "admin": 9191}})
    service = rendered.one("Service", FULLNAME)
    [port] = service["spec"]["ports"]
    assert port["port"] == 80
    assert rendered.container_port(port["targetPort"]) == 8181
    assert port["appProtocol"] == "kubernetes.io/h2c"
    assert _is_subset(service["spec"]["selector"], _pod_labels(rendered))


def test_admin_service_targets_the_admin_port(helm: Helm) -> None:
    rendered = helm.template({"ports": {"data": 8181, "admin": 9191}})
    service = rendered.one("Service", ADMIN_SERVICE)
    [port] = service["spec"]["ports"]
    assert port["port"] == 9090
    assert rendered.container_port(port["targetPort"]) == 9191
    assert _is_subset(service["spec"]["selector"], _pod_labels(rendered))


def test_default_pod_annotations_point_prometheus_at_the_admin_port(helm: Helm) -> None:
    annotations = _pod_annotations(helm.template({"ports": {"data": 8080, "admin": 9191}}))
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9191"
    assert annotations["prometheus.io/path"] == "/metrics"


def test_service_monitor_scrapes_only_the_admin_service(helm: Helm) -> None:
    rendered = helm.template(VALUE_SETS["service-monitor"])
    monitor = rendered.one("ServiceMonitor")
    # Checked by structure: the CRD's schema is not bundled with the validator.
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint == {
        "port": "admin",
        "path": "/metrics",
        "scheme": "http",
        "interval": "15s",
        "scrapeTimeout": "10s",
    }
    selector = monitor["spec"]["selector"]["matchLabels"]
    admin = rendered.one("Service", ADMIN_SERVICE)
    data = rendered.one("Service", FULLNAME)
    assert _is_subset(selector, admin["metadata"]["labels"])
    assert not _is_subset(selector, data["metadata"]["labels"])
    assert endpoint["port"] in {port["name"] for port in admin["spec"]["ports"]}
    assert "prometheus.io/scrape" not in _pod_annotations(rendered)


# --- shutdown and rollout ----------------------------------------------------------------


def test_grace_period_outlasts_prestop_and_drain(default_render: Rendered) -> None:
    pod_spec = default_render.pod_spec
    pre_stop = default_render.container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pre_stop == 5
    assert pod_spec["terminationGracePeriodSeconds"] > pre_stop + 30


def test_grace_period_follows_the_drain_deadline(helm: Helm) -> None:
    rendered = helm.template({"drain": {"timeoutSeconds": 120, "preStopSleepSeconds": 0}})
    assert rendered.pod_spec["terminationGracePeriodSeconds"] > 120
    # A zero sleep is no hook at all (a zero-second sleep action needs a newer cluster).
    assert "lifecycle" not in rendered.container


def test_rollout_never_reduces_capacity(default_render: Rendered) -> None:
    spec = default_render.deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert spec["strategy"]["rollingUpdate"]["maxSurge"] == 1
    assert _is_subset(spec["selector"]["matchLabels"], _pod_labels(default_render))


# --- security ----------------------------------------------------------------------------


def test_security_context_holds(default_render: Rendered) -> None:
    pod = default_render.pod_spec["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] != 0
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    container = default_render.container["securityContext"]
    assert container["runAsNonRoot"] is True
    assert container["readOnlyRootFilesystem"] is True
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"] == {"drop": ["ALL"]}
    assert container.get("privileged", False) is False
    assert container["seccompProfile"] == {"type": "RuntimeDefault"}


def test_only_tmp_and_config_are_mounted(default_render: Rendered) -> None:
    mounts = {m["mountPath"]: m for m in default_render.container["volumeMounts"]}
    assert set(mounts) == {"/etc/activator", "/tmp"}
    volumes = {v["name"]: v for v in default_render.pod_spec["volumes"]}
    assert volumes[mounts["/tmp"]["name"]]["emptyDir"]["sizeLimit"] == "64Mi"


def test_extra_volumes_are_mounted_beside_the_chart_own(helm: Helm) -> None:
    """A CA for a service's upstream_tls comes in through extraVolumes and extraVolumeMounts."""
    rendered = helm.template(
        {
            "extraVolumes": [{"name": "pods-ca", "secret": {"secretName": "pods-ca"}}],
            "extraVolumeMounts": [
                {"name": "pods-ca", "mountPath": "/etc/pods-ca", "readOnly": True}
            ],
            "config": {
                "services": [
                    {
                        **HELLO_SERVICE,
                        "upstream": "https",
                        "upstream_tls": {"ca": "/etc/pods-ca/ca.crt"},
                    }
                ]
            },
        }
    )
    mounts = [m["mountPath"] for m in rendered.container["volumeMounts"]]
    assert mounts == ["/etc/activator", "/tmp", "/etc/pods-ca"]
    volumes = {v["name"]: v for v in rendered.pod_spec["volumes"]}
    assert volumes["pods-ca"] == {"name": "pods-ca", "secret": {"secretName": "pods-ca"}}
    assert set(volumes) == {"config", "tmp", "pods-ca"}
    (service,) = rendered.activator_config["services"]
    assert service["upstream_tls"] == {"ca": "/etc/pods-ca/ca.crt"}


def test_resources_have_requests_and_limits(default_render: Rendered) -> None:
    resources = default_render.container["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert set(resources["limits"]) == {"cpu", "memory"}


# --- RBAC and service account ------------------------------------------------------------


def test_role_grants_read_only_access_to_endpoints(default_render: Rendered) -> None:
    role = default_render.one("Role")
    rules = {(tuple(r["apiGroups"]), tuple(r["resources"])): r["verbs"] for r in role["rules"]}
    assert rules == {
        (("discovery.k8s.io",), ("endpointslices",)): ["get", "list", "watch"],
        (("",), ("endpoints",)): ["get", "list", "watch"],
    }
    binding = default_render.one("RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    [subject] = binding["subjects"]
    account = default_render.one("ServiceAccount")
    assert subject["name"] == account["metadata"]["name"]
    assert subject["name"] == default_render.pod_spec["serviceAccountName"]
    assert subject["namespace"] == NAMESPACE


def test_rbac_can_be_turned_off(helm: Helm) -> None:
    rendered = helm.template({"rbac": {"create": False}})
    assert rendered.all("Role") == []
    assert rendered.all("RoleBinding") == []
    assert len(rendered.all("ServiceAccount")) == 1


def test_rbac_can_cover_other_namespaces(helm: Helm) -> None:
    rendered = helm.template({"rbac": {"namespaces": ["team-a", "team-b"]}})
    for kind in ("Role", "RoleBinding"):
        assert sorted(m["metadata"]["namespace"] for m in rendered.all(kind)) == [
            "team-a",
            "team-b",
        ]
    for binding in rendered.all("RoleBinding"):
        assert binding["subjects"][0]["namespace"] == NAMESPACE


def test_existing_service_account_is_used_when_not_created(helm: Helm) -> None:
    rendered = helm.template({"serviceAccount": {"create": False, "name": "mesh-identity"}})
    assert rendered.all("ServiceAccount") == []
    assert rendered.pod_spec["serviceAccountName"] == "mesh-identity"
    assert rendered.one("RoleBinding")["subjects"][0]["name"] == "mesh-identity"


# --- availability and scaling ------------------------------------------------------------


def test_pdb_keeps_one_pod_when_there_are_several(default_render: Rendered) -> None:
    pdb = default_render.one("PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert (
        pdb["spec"]["selector"]["matchLabels"]
        == (default_render.deployment["spec"]["selector"]["matchLabels"])
    )


def test_single_replica_gets_no_pdb(helm: Helm) -> None:
    rendered = helm.template({"replicaCount": 1})
    assert rendered.deployment["spec"]["replicas"] == 1
    assert rendered.all("PodDisruptionBudget") == []


def test_hpa_replaces_fixed_replicas(helm: Helm) -> None:
    rendered = helm.template(
        {"replicaCount": 1, "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 8}}
    )
    assert "replicas" not in rendered.deployment["spec"]
    hpa = rendered.one("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": rendered.deployment["metadata"]["name"],
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 8)
    assert [metric["resource"]["name"] for metric in hpa["spec"]["metrics"]] == ["cpu"]
    # minReplicas, not replicaCount, decides the budget under the HPA.
    assert len(rendered.all("PodDisruptionBudget")) == 1


def test_hpa_is_off_by_default(default_render: Rendered) -> None:
    assert default_render.all("HorizontalPodAutoscaler") == []
    assert default_render.all("ServiceMonitor") == []


# --- scheduling --------------------------------------------------------------------------


def test_default_scheduling_spreads_softly(default_render: Rendered) -> None:
    pod_spec = default_render.pod_spec
    selector = default_render.deployment["spec"]["selector"]["matchLabels"]
    [preferred] = pod_spec["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert preferred["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert preferred["podAffinityTerm"]["labelSelector"]["matchLabels"] == selector
    [spread] = pod_spec["topologySpreadConstraints"]
    assert spread["whenUnsatisfiable"] == "ScheduleAnyway"
    assert spread["labelSelector"]["matchLabels"] == selector


def test_hard_anti_affinity_and_extra_spread(helm: Helm) -> None:
    extra = VALUE_SETS["everything"]["topologySpreadConstraints"]
    pod_spec = helm.template(
        {"podAntiAffinity": "hard", "topologySpreadConstraints": extra}
    ).pod_spec
    [required] = pod_spec["affinity"]["podAntiAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert required["topologyKey"] == "kubernetes.io/hostname"
    assert pod_spec["topologySpreadConstraints"][1:] == extra


def test_user_affinity_replaces_the_chart_default(helm: Helm) -> None:
    values = VALUE_SETS["custom-affinity"]
    pod_spec = helm.template(values).pod_spec
    assert pod_spec["affinity"] == values["affinity"]
    assert "topologySpreadConstraints" not in pod_spec


def test_no_anti_affinity_when_asked(helm: Helm) -> None:
    pod_spec = helm.template({"podAntiAffinity": "none"}).pod_spec
    assert "affinity" not in pod_spec


def test_node_selector_and_tolerations_pass_through(helm: Helm) -> None:
    values = VALUE_SETS["everything"]
    pod_spec = helm.template(values).pod_spec
    assert pod_spec["nodeSelector"] == values["nodeSelector"]
    assert pod_spec["tolerations"] == values["tolerations"]
    assert pod_spec["imagePullSecrets"] == values["imagePullSecrets"]
