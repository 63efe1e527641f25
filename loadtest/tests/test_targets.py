"""Generated proxy configs, checked by the real HAProxy and the activator's own config loader."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from loadtest.pods import PodKind, PodSet
from loadtest.procs import PortAllocator, ProcessRegistry
from loadtest.targets import (
    DEFAULT_ACTIVATOR_EMPTY_TEMPLATE,
    DEFAULT_ACTIVATOR_TEMPLATE,
    Activator,
    HAProxy,
    LaunchContext,
    activator_config,
    haproxy_config,
)

from .conftest import require


@pytest.mark.parametrize("h2_frontend", [True, False])
def test_haproxy_accepts_the_generated_config(tmp_path: Path, h2_frontend: bool) -> None:
    require("haproxy")
    config = haproxy_config(18080, [18081, 18082], h2_frontend=h2_frontend, h2_backend=True)
    path = tmp_path / "haproxy.cfg"
    path.write_text(config)
    check = subprocess.run(
        ["haproxy", "-c", "-f", str(path)], capture_output=True, text=True, timeout=30, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "balance leastconn" in config
    assert "nbthread 1" in config
    assert config.count("proto h2") == (3 if h2_frontend else 2)


def test_haproxy_in_front_of_real_pods_answers(
    registry: ProcessRegistry, nghttpd_pods: PodSet, tmp_path: Path
) -> None:
    require("haproxy")
    require("curl")
    context = LaunchContext(registry, PortAllocator(), tmp_path, proxy_core=0, start_timeout_s=30)
    launch = HAProxy("haproxy").launch(
        context, nghttpd_pods, http1_clients=False, started_empty=False
    )
    assert launch.error is None, launch.error
    assert launch.process is not None
    fetched = subprocess.run(
        [
            "curl",
            "-s",
            "--http2-prior-knowledge",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
            f"http://127.0.0.1:{launch.port}/100b",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert fetched.stdout == "200 100"
    registry.stop(launch.process)
    assert not launch.process.running()


def test_activator_template_fields_and_workers(tmp_path: Path) -> None:
    activator = Activator(DEFAULT_ACTIVATOR_TEMPLATE, DEFAULT_ACTIVATOR_EMPTY_TEMPLATE, workers=2)
    argv = activator.render(
        DEFAULT_ACTIVATOR_TEMPLATE,
        8080,
        9090,
        ["h2c://127.0.0.1:1", "h2c://127.0.0.1:2"],
        tmp_path / "c.yaml",
        tmp_path,
    )
    assert argv == [
        "activator",
        "serve",
        "--listen",
        "127.0.0.1:8080",
        "--admin",
        "127.0.0.1:9090",
        "--upstream",
        "h2c://127.0.0.1:1",
        "--upstream",
        "h2c://127.0.0.1:2",
        "--workers",
        "2",
    ]
    empty = activator.render(
        DEFAULT_ACTIVATOR_EMPTY_TEMPLATE, 1, 2, [], tmp_path / "c.yaml", tmp_path
    )
    assert empty == ["activator", "serve", "--config", str(tmp_path / "c.yaml"), "--workers", "2"]


def test_a_variant_is_the_activator_with_arguments_appended(tmp_path: Path) -> None:
    variant = ("busy-poll", ["--busy-poll", "20ms"])
    activator = Activator(
        DEFAULT_ACTIVATOR_TEMPLATE, DEFAULT_ACTIVATOR_EMPTY_TEMPLATE, workers=2, variant=variant
    )
    assert activator.name == "activator+busy-poll"
    assert "`--workers 2 --busy-poll 20ms`" in activator.description
    argv = activator.render(
        DEFAULT_ACTIVATOR_TEMPLATE, 8080, 9090, ["h2c://127.0.0.1:1"], tmp_path / "c.yaml", tmp_path
    )
    assert argv[-4:] == ["--workers", "2", "--busy-poll", "20ms"]
    empty = activator.render(
        DEFAULT_ACTIVATOR_EMPTY_TEMPLATE, 1, 2, [], tmp_path / "c.yaml", tmp_path
    )
    assert empty[-2:] == ["--busy-poll", "20ms"]
    plain = Activator(DEFAULT_ACTIVATOR_TEMPLATE, DEFAULT_ACTIVATOR_EMPTY_TEMPLATE, None)
    assert plain.name == "activator"
    assert "busy" not in plain.description


def test_missing_activator_binary_is_reported(registry: ProcessRegistry, tmp_path: Path) -> None:
    activator = Activator("no-such-activator-binary serve", DEFAULT_ACTIVATOR_EMPTY_TEMPLATE, None)
    context = LaunchContext(registry, PortAllocator(), tmp_path, proxy_core=0, start_timeout_s=5)
    pods = PodSet(kind=PodKind.STATIC_H2C, scheme="h2c", ports=[1])
    launch = activator.launch(context, pods, http1_clients=False, started_empty=False)
    assert launch.error is not None
    assert "no-such-activator-binary not found" in launch.error
    assert len(registry) == 0


@pytest.mark.parametrize("endpoints", [[], ["127.0.0.1:1", "127.0.0.1:2"]])
def test_activator_loads_the_generated_config(tmp_path: Path, endpoints: list[str]) -> None:
    config_module = pytest.importorskip("activator.config")
    path = tmp_path / "activator.yaml"
    path.write_text(activator_config(8080, 9090, "h2c", endpoints))
    config = config_module.load_config(str(path))
    (service,) = config.services
    assert service.name == "default"
    assert service.upstream == "h2c"
    assert list(service.endpoints) == endpoints
