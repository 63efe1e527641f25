"""Configuration of pod discovery: the ``dns`` and ``kubernetes`` keys of a service."""

from __future__ import annotations

import pytest

from activator.config import (
    ConfigError,
    DnsDiscoveryConfig,
    KubernetesDiscoveryConfig,
    dump_config,
    parse_config,
)

EXAMPLE = """\
services:
  - name: hello
    hosts: [hello.example.com]
    dns: {name: hello.default.svc.cluster.local, port: 8012, interval: 5s}
  - name: world
    hosts: [world.example.com]
    kubernetes: {service: world, namespace: default, port: http}
"""


def service_yaml(body: str) -> str:
    return "services:\n  - name: web\n    hosts: [web.example.com]\n" + body


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "config.yaml")
    return str(info.value)


def test_the_example_parses() -> None:
    hello, world = parse_config(EXAMPLE).services
    assert hello.dns == DnsDiscoveryConfig(
        name="hello.default.svc.cluster.local", port=8012, interval=5.0
    )
    assert hello.kubernetes is None
    assert hello.endpoints == ()
    assert world.kubernetes == KubernetesDiscoveryConfig(
        service="world", namespace="default", port="http"
    )
    assert world.dns is None


def test_defaults() -> None:
    config = parse_config(
        "services:\n"
        "  - {name: a, hosts: [a], dns: {name: a.test, port: 80}}\n"
        "  - {name: b, hosts: [b], kubernetes: {service: b}}\n"
        "  - {name: c, hosts: [c], kubernetes: {service: c, port: 8080}}\n"
    )
    a, b, c = config.services
    assert a.dns == DnsDiscoveryConfig(name="a.test", port=80, interval=5.0)
    assert b.kubernetes == KubernetesDiscoveryConfig(service="b", namespace=None, port=None)
    assert c.kubernetes == KubernetesDiscoveryConfig(service="c", port=8080)


def test_round_trips_through_dump() -> None:
    config = parse_config(EXAMPLE)
    assert parse_config(dump_config(config)) == config
    minimal = parse_config("services:\n  - {name: b, hosts: [b], kubernetes: {service: b}}\n")
    assert parse_config(dump_config(minimal)) == minimal


def test_an_empty_endpoints_list_goes_with_discovery() -> None:
    config = parse_config(service_yaml("    endpoints: []\n    dns: {name: web.test, port: 80}\n"))
    assert config.services[0].dns is not None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            '    endpoints: ["10.0.0.1:80"]\n    dns: {name: web.test, port: 80}\n',
            'config.yaml:5: services[0].dns: a service takes its pods from one of "endpoints", '
            '"dns" or "kubernetes"; "endpoints" is also given (line 4)',
        ),
        (
            "    dns: {name: web.test, port: 80}\n    kubernetes: {service: web}\n",
            "config.yaml:5: services[0].kubernetes: a service takes its pods from one of "
            '"endpoints", "dns" or "kubernetes"; "dns" is also given (line 4)',
        ),
        (
            "    dns: {name: web.test}\n",
            'config.yaml:4: services[0].dns: missing required key "port"',
        ),
        (
            "    dns: {name: web.test, port: 70000}\n",
            "config.yaml:4: services[0].dns.port: must be at most 65535, got 70000",
        ),
        (
            "    dns: {name: web.test, port: 80, interval: 0s}\n",
            'config.yaml:4: services[0].dns.interval: must be greater than 0, got "0s"',
        ),
        (
            '    dns: {name: "bad name", port: 80}\n',
            'config.yaml:4: services[0].dns.name: "bad name" is not a valid DNS name or IPv4 '
            "address",
        ),
        (
            "    dns: {name: web.test, port: 80, ttl: 5}\n",
            "config.yaml:4: services[0].dns.ttl: unknown key; expected one of: name, port, "
            "interval",
        ),
        (
            "    kubernetes: {namespace: default}\n",
            'config.yaml:4: services[0].kubernetes: missing required key "service"',
        ),
        (
            "    kubernetes: {service: Web}\n",
            'config.yaml:4: services[0].kubernetes.service: invalid name "Web": use lowercase '
            'letters, digits and "-", starting and ending with a letter or digit, at most 63 '
            "characters",
        ),
        (
            "    kubernetes: {service: web, namespce: default}\n",
            'config.yaml:4: services[0].kubernetes.namespce: unknown key; did you mean "namespace"?',
        ),
        (
            "    kubernetes: {service: web, port: 0}\n",
            "config.yaml:4: services[0].kubernetes.port: must be greater than 0, got 0",
        ),
        (
            "    kubernetes: {service: web, port: HTTP_2}\n",
            'config.yaml:4: services[0].kubernetes.port: expected a port name like "http" or a '
            'number (1-65535), got "HTTP_2"',
        ),
        (
            "    kubernetes: web\n",
            'config.yaml:4: services[0].kubernetes: expected a mapping, got "web"',
        ),
    ],
)
def test_errors_name_the_line_and_key(body: str, message: str) -> None:
    assert error_of(service_yaml(body)) == message
