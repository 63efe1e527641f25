"""Tests for configuration loading, validation and error reporting."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from activator.config import (
    AutoscalerConfig,
    Config,
    ConfigError,
    LimitsConfig,
    ProbeConfig,
    QueueConfig,
    ServiceConfig,
    TimeoutsConfig,
    TLSConfig,
    UpstreamTLSConfig,
    config_from_upstreams,
    dump_config,
    format_hostport,
    load_config,
    parse_config,
    parse_duration,
    parse_hostport,
    parse_size,
)

FULL = """\
listen: 127.0.0.1:8080
admin: 127.0.0.1:9090
tls: {listen: 127.0.0.1:8443, cert: cert.pem, key: key.pem}
limits: {max_header_bytes: 32KiB, max_concurrent_streams: 100, replay_buffer: 1MiB, max_replays: 2,
         client_idle_timeout: 10m, client_header_timeout: 0s, premature_reset_streams: 0,
         premature_reset_lifetime: 250ms}
services:
  - name: hello
    hosts: [hello.example.com, "*.hello.example.com"]
    upstream: h2c
    endpoints: [127.0.0.1:9001, "[::1]:9002", localhost:9003]
    container_concurrency: 4
    queue: {max_requests: 50, max_bytes: 10MB, timeout: 1m30s}
    probe: {path: /ready}
    timeouts: {response_start: 300ms, idle: 0s, max_duration: 1h}
  - name: world
    hosts: ["*"]
    upstream: http1
  - name: secure
    hosts: [secure.example.com]
    upstream: https
    upstream_tls: {ca: pods-ca.pem, server_name: secure.default.svc}
autoscaler:
  push_url: http://127.0.0.1:9999/v1/stats
  interval: 2s
busy_poll: 20ms
"""

FULL_EXPECTED = Config(
    listen="127.0.0.1:8080",
    admin="127.0.0.1:9090",
    tls=TLSConfig(listen="127.0.0.1:8443", cert="cert.pem", key="key.pem"),
    limits=LimitsConfig(
        max_header_bytes=32 * 1024,
        max_concurrent_streams=100,
        replay_buffer=1024 * 1024,
        max_replays=2,
        client_idle_timeout=600.0,
        client_header_timeout=0.0,
        premature_reset_streams=0,
        premature_reset_lifetime=0.25,
    ),
    services=(
        ServiceConfig(
            name="hello",
            hosts=("hello.example.com", "*.hello.example.com"),
            upstream="h2c",
            endpoints=("127.0.0.1:9001", "[::1]:9002", "localhost:9003"),
            container_concurrency=4,
            queue=QueueConfig(max_requests=50, max_bytes=10_000_000, timeout=90.0),
            probe=ProbeConfig(path="/ready"),
            timeouts=TimeoutsConfig(response_start=0.3, idle=0.0, max_duration=3600.0),
        ),
        ServiceConfig(name="world", hosts=("*",), upstream="http1"),
        ServiceConfig(
            name="secure",
            hosts=("secure.example.com",),
            upstream="https",
            upstream_tls=UpstreamTLSConfig(ca="pods-ca.pem", server_name="secure.default.svc"),
        ),
    ),
    autoscaler=AutoscalerConfig(push_url="http://127.0.0.1:9999/v1/stats", interval=2.0),
    busy_poll=0.02,
)


def error_of(text: str, source: str = "config.yaml") -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_config(textwrap.dedent(text), source)
    return caught.value


# -- good files ----------------------------------------------------------------------------


class TestGoodFiles:
    def test_full_file(self) -> None:
        assert parse_config(FULL) == FULL_EXPECTED

    def test_empty_file_gives_defaults(self) -> None:
        assert parse_config("") == Config()
        assert parse_config("# nothing here\n") == Config()

    def test_defaults(self) -> None:
        config = parse_config("services:\n  - {name: a, hosts: [a.example.com]}\n")
        service = config.services[0]
        assert service == ServiceConfig(name="a", hosts=("a.example.com",))
        assert service.upstream == "h2c"
        assert service.upstream_tls is None
        assert service.endpoints == ()
        assert service.container_concurrency == 0
        assert service.queue == QueueConfig(max_requests=1000, max_bytes=64 * 1024**2, timeout=30)
        assert service.probe is None
        assert service.timeouts == TimeoutsConfig(response_start=300, idle=0, max_duration=0)
        assert config.limits == LimitsConfig(
            max_header_bytes=65536,
            max_concurrent_streams=250,
            replay_buffer=65536,
            max_replays=3,
            client_idle_timeout=3600.0,
            client_header_timeout=30.0,
            premature_reset_streams=500,
            premature_reset_lifetime=1.0,
        )
        assert config.autoscaler == AutoscalerConfig(push_url=None, interval=1.0)
        assert config.tls is None
        assert (config.listen, config.admin) == ("127.0.0.1:8080", "127.0.0.1:9090")
        assert config.busy_poll == 0.0  # off

    def test_empty_values_take_defaults(self) -> None:
        text = """\
        listen:
        limits:
        autoscaler:
        services:
          - name: a
            hosts: [a]
            queue:
            probe:
            endpoints:
        """
        config = parse_config(textwrap.dedent(text))
        assert config.listen == Config().listen
        assert config.services == (ServiceConfig(name="a", hosts=("a",)),)

    def test_empty_probe_mapping_enables_default_probe(self) -> None:
        config = parse_config("services: [{name: a, hosts: [a], probe: {}}]")
        assert config.services[0].probe == ProbeConfig(path="/healthz")

    def test_numbers_for_sizes_and_durations(self) -> None:
        config = parse_config(
            "services: [{name: a, hosts: [a], queue: {max_bytes: 4096, timeout: 2.5}}]"
        )
        assert config.services[0].queue == QueueConfig(max_bytes=4096, timeout=2.5)

    def test_port_zero_is_allowed_for_listeners(self) -> None:
        config = parse_config("listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\n")
        assert config.listen == "127.0.0.1:0"

    def test_https_push_url(self) -> None:
        config = parse_config("autoscaler: {push_url: 'https://scaler.local:8443/stats'}")
        assert config.autoscaler.push_url == "https://scaler.local:8443/stats"

    def test_configs_are_frozen(self) -> None:
        config = parse_config(FULL)
        with pytest.raises(AttributeError):
            config.listen = "x"  # type: ignore[misc]

    def test_load_config_from_file(self, tmp_path: Path) -> None:
        path = tmp_path / "activator.yaml"
        path.write_text(FULL, encoding="utf-8")
        assert load_config(path) == FULL_EXPECTED
        assert load_config(str(path)) == FULL_EXPECTED


class TestRoundTrip:
    def test_full_file_round_trips(self) -> None:
        assert parse_config(dump_config(FULL_EXPECTED)) == FULL_EXPECTED

    def test_defaults_round_trip(self) -> None:
        assert parse_config(dump_config(Config())) == Config()

    @given(
        services=st.lists(
            st.builds(
                ServiceConfig,
                name=st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True),
                hosts=st.just(("placeholder",)),
                upstream=st.sampled_from(["h2c", "http1", "https"]),
                endpoints=st.lists(
                    st.integers(1, 65535).map(lambda port: f"127.0.0.1:{port}"),
                    unique=True,
                    max_size=3,
                ).map(tuple),
                container_concurrency=st.integers(0, 1000),
                queue=st.builds(
                    QueueConfig,
                    max_requests=st.integers(0, 10**6),
                    max_bytes=st.integers(0, 2**40),
                    timeout=st.floats(0.001, 1e6),
                ),
                upstream_tls=st.one_of(
                    st.none(),
                    st.builds(
                        UpstreamTLSConfig,
                        ca=st.sampled_from([None, "ca.pem", "/etc/pods ca/ca.pem"]),
                        server_name=st.sampled_from([None, "pods.default.svc", "10.0.0.7"]),
                    ),
                ),
                probe=st.one_of(st.none(), st.builds(ProbeConfig, path=st.just("/p/q"))),
                timeouts=st.builds(
                    TimeoutsConfig,
                    response_start=st.floats(0, 1e6),
                    idle=st.floats(0, 1e6),
                    max_duration=st.floats(0, 1e6),
                ),
            ),
            unique_by=lambda service: service.name,
            max_size=4,
        ),
        interval=st.floats(0.001, 3600),
        busy_poll=st.one_of(st.just(0.0), st.floats(0.0, 60)),
    )
    def test_generated_configs_round_trip(
        self, services: list[ServiceConfig], interval: float, busy_poll: float
    ) -> None:
        from dataclasses import replace

        services = [
            replace(
                service,
                hosts=(f"{service.name}.example.com", f"*.{service.name}.test"),
                # upstream_tls belongs to https services only (an error elsewhere).
                upstream_tls=service.upstream_tls if service.upstream == "https" else None,
            )
            for service in services
        ]
        config = Config(
            services=tuple(services),
            autoscaler=AutoscalerConfig(interval=interval),
            busy_poll=busy_poll,
        )
        assert parse_config(dump_config(config)) == config


# -- errors --------------------------------------------------------------------------------


class TestErrors:
    def test_bad_duration_names_file_line_and_key(self) -> None:
        error = error_of(
            """\
            listen: 127.0.0.1:8080
            services:
              - name: hello
                hosts: [hello.example.com]
                queue:
                  max_requests: 10
                  timeout: soon
            """
        )
        assert str(error) == (
            'config.yaml:7: services[0].queue.timeout: expected a duration like "30s", got "soon"'
        )
        assert (error.source, error.line, error.path) == (
            "config.yaml",
            7,
            "services[0].queue.timeout",
        )

    def test_unknown_top_level_key_suggests(self) -> None:
        error = error_of("admin: 127.0.0.1:9090\nlistn: 127.0.0.1:8080\n")
        assert str(error) == 'config.yaml:2: listn: unknown key; did you mean "listen"?'

    def test_unknown_service_key_suggests(self) -> None:
        error = error_of(
            """\
            services:
              - name: a
                hosts: [a]
                endpoint: [127.0.0.1:1]
            """
        )
        assert str(error) == (
            'config.yaml:4: services[0].endpoint: unknown key; did you mean "endpoints"?'
        )

    def test_unknown_key_without_close_match_lists_known_keys(self) -> None:
        error = error_of("limits:\n  banana: 1\n")
        assert error.line == 2
        assert error.path == "limits.banana"
        assert error.message == (
            "unknown key; expected one of: max_header_bytes, max_concurrent_streams, "
            "replay_buffer, max_replays, client_idle_timeout, client_header_timeout, "
            "premature_reset_streams, premature_reset_lifetime"
        )

    def test_duplicate_key(self) -> None:
        error = error_of("listen: 127.0.0.1:1\nadmin: 127.0.0.1:2\nlisten: 127.0.0.1:3\n")
        assert str(error) == "config.yaml:3: listen: duplicate key (first set on line 1)"

    def test_missing_required_key(self) -> None:
        error = error_of(
            """\
            services:
              - name: a
                hosts: [a]
              - upstream: h2c
                endpoints: []
            """
        )
        assert str(error) == 'config.yaml:4: services[1]: missing required key "name"'

    def test_missing_hosts(self) -> None:
        error = error_of("services:\n  - name: a\n")
        assert str(error) == 'config.yaml:2: services[0]: missing required key "hosts"'

    def test_empty_hosts(self) -> None:
        error = error_of("services:\n  - name: a\n    hosts: []\n")
        assert str(error) == "config.yaml:3: services[0].hosts: must list at least one host"

    def test_hosts_not_a_list(self) -> None:
        error = error_of("services:\n  - name: a\n    hosts: a.example.com\n")
        assert (
            str(error) == 'config.yaml:3: services[0].hosts: expected a list, got "a.example.com"'
        )

    def test_invalid_host_pattern(self) -> None:
        error = error_of(
            """\
            services:
              - name: a
                hosts:
                  - ok.example.com
                  - a.*.example.com
            """
        )
        assert error.line == 5
        assert error.path == "services[0].hosts[1]"
        assert "'*' may only be the whole first label" in error.message

    def test_duplicate_service_name(self) -> None:
        error = error_of(
            """\
            services:
              - name: a
                hosts: [a.example.com]
              - name: b
                hosts: [b.example.com]
              - name: a
                hosts: [c.example.com]
            """
        )
        assert str(error) == (
            'config.yaml:6: services[2].name: duplicate service name "a" '
            "(also services[0] on line 2)"
        )

    def test_host_claimed_by_two_services(self) -> None:
        error = error_of(
            """\
            services:
              - name: first
                hosts:
                  - a.example.com
                  - "*.example.com"
              - name: second
                hosts:
                  - b.example.com
                  - "*.Example.com."
            """
        )
        assert str(error) == (
            'config.yaml:9: services[1].hosts[1]: host "*.Example.com." is already claimed by '
            'service "first" (services[0].hosts[1] on line 5)'
        )

    def test_two_catch_alls(self) -> None:
        error = error_of('services:\n  - {name: a, hosts: ["*"]}\n  - {name: b, hosts: ["*"]}\n')
        assert error.line == 3
        assert error.path == "services[1].hosts[0]"
        assert 'already claimed by service "a"' in error.message

    def test_duplicate_host_in_one_service(self) -> None:
        error = error_of("services:\n  - name: a\n    hosts: [x.com, X.com]\n")
        assert str(error) == (
            'config.yaml:3: services[0].hosts[1]: duplicate host "X.com" '
            "(also services[0].hosts[0] on line 3)"
        )

    def test_invalid_service_name(self) -> None:
        error = error_of("services:\n  - name: Hello_World\n    hosts: [a]\n")
        assert error.line == 2
        assert error.path == "services[0].name"
        assert error.message.startswith('invalid service name "Hello_World"')

    def test_service_name_too_long(self) -> None:
        error = error_of(f"services:\n  - name: {'a' * 64}\n    hosts: [a]\n")
        assert error.path == "services[0].name"

    def test_bad_upstream_suggests(self) -> None:
        error = error_of("services:\n  - name: a\n    hosts: [a]\n    upstream: http\n")
        assert str(error) == (
            'config.yaml:4: services[0].upstream: expected one of "h2c", "http1", "https", '
            'got "http"; did you mean "http1"?'
        )

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            ("-1", "must be at least 0, got -1"),
            ("many", 'expected a whole number, got "many"'),
            ("true", "expected a whole number, got true"),
            ("1.5", "expected a whole number, got 1.5"),
            ("[1]", "expected a single value, got a list"),
        ],
    )
    def test_bad_container_concurrency(self, value: str, message: str) -> None:
        error = error_of(
            f"services:\n  - name: a\n    hosts: [a]\n    container_concurrency: {value}\n"
        )
        assert str(error) == f"config.yaml:4: services[0].container_concurrency: {message}"

    def test_bad_size(self) -> None:
        error = error_of("limits:\n  replay_buffer: 64 potatoes\n")
        assert str(error) == (
            'config.yaml:2: limits.replay_buffer: expected a size like "64KiB" or a number of '
            'bytes, got "64 potatoes"'
        )

    def test_size_must_be_positive(self) -> None:
        error = error_of("limits:\n  max_header_bytes: 0\n")
        assert str(error) == "config.yaml:2: limits.max_header_bytes: must be greater than 0, got 0"

    def test_max_concurrent_streams_range(self) -> None:
        error = error_of("limits: {max_concurrent_streams: 4294967296}\n")
        assert error.line == 1
        assert error.path == "limits.max_concurrent_streams"
        assert error.message.startswith("must be at most 2147483647")
        error = error_of("\nlimits: {max_concurrent_streams: 0}\n")
        assert error.line == 2
        assert error.message == "must be greater than 0, got 0"

    def test_negative_max_replays(self) -> None:
        error = error_of("limits: {max_replays: -1}")
        assert str(error) == "config.yaml:1: limits.max_replays: must be at least 0, got -1"

    def test_queue_timeout_must_be_positive(self) -> None:
        error = error_of("services:\n- name: a\n  hosts: [a]\n  queue: {timeout: 0s}\n")
        assert str(error) == (
            'config.yaml:4: services[0].queue.timeout: must be greater than 0, got "0s"'
        )

    def test_negative_duration(self) -> None:
        error = error_of("services:\n- name: a\n  hosts: [a]\n  timeouts:\n    idle: -1s\n")
        assert str(error) == (
            'config.yaml:5: services[0].timeouts.idle: expected a duration like "30s", got "-1s"'
        )

    def test_client_timeouts_name_the_key_and_line(self) -> None:
        error = error_of("limits:\n  client_idle_timeout: -1s\n")
        assert str(error) == (
            'config.yaml:2: limits.client_idle_timeout: expected a duration like "30s", got "-1s"'
        )
        error = error_of("limits:\n  max_replays: 1\n  client_header_timeout: soon\n")
        assert str(error).startswith("config.yaml:3: limits.client_header_timeout: expected")

    def test_upstream_tls_needs_an_https_upstream(self) -> None:
        error = error_of(
            "services:\n- name: a\n  hosts: [a]\n  upstream: h2c\n  upstream_tls: {ca: ca.pem}\n"
        )
        assert str(error) == (
            "config.yaml:5: services[0].upstream_tls: verifies TLS to the pods, so it needs "
            '"upstream: https" (this service uses "h2c")'
        )
        # The default upstream (h2c) counts too.
        error = error_of("services:\n- name: a\n  hosts: [a]\n  upstream_tls: {}\n")
        assert "config.yaml:4: services[0].upstream_tls:" in str(error)

    def test_upstream_tls_errors_name_the_key_and_line(self) -> None:
        head = "services:\n- name: a\n  hosts: [a]\n  upstream: https\n  upstream_tls:\n"
        error = error_of(head + "    server_name: 'not a name'\n")
        assert str(error) == (
            "config.yaml:6: services[0].upstream_tls.server_name: "
            '"not a name" is not a valid DNS name or IPv4 address'
        )
        error = error_of(head + "    ca: ''\n")
        assert str(error) == "config.yaml:6: services[0].upstream_tls.ca: must not be empty"
        error = error_of(head + "    ca_file: ca.pem\n")
        assert str(error) == (
            "config.yaml:6: services[0].upstream_tls.ca_file: unknown key; "
            "expected one of: ca, server_name"
        )
        error = error_of(head + "    servername: pods.svc\n")
        assert 'did you mean "server_name"?' in str(error)

    def test_upstream_tls_may_be_empty(self) -> None:
        # Verify against the system's CA store and the pod's address.
        config = parse_config(
            "services:\n- {name: a, hosts: [a], upstream: https, upstream_tls: {}}\n"
        )
        assert config.services[0].upstream_tls == UpstreamTLSConfig(ca=None, server_name=None)
        assert parse_config(dump_config(config)) == config

    def test_rapid_reset_limit_errors_name_the_key_and_line(self) -> None:
        error = error_of("limits:\n  max_replays: 1\n  premature_reset_streams: -3\n")
        assert str(error) == (
            "config.yaml:3: limits.premature_reset_streams: must be at least 0, got -3"
        )
        error = error_of("limits:\n  premature_reset_lifetime: 0s\n")
        assert str(error) == (
            'config.yaml:2: limits.premature_reset_lifetime: must be greater than 0, got "0s"'
        )
        error = error_of("limits: {premature_reset_streams: many}\n")
        assert str(error) == (
            'config.yaml:1: limits.premature_reset_streams: expected a whole number, got "many"'
        )

    def test_every_key_keeps_its_line_for_later_checks(self) -> None:
        config = parse_config(FULL)
        assert config.lines["tls"] == 3
        assert config.lines["limits.premature_reset_lifetime"] == 6
        assert config.lines["services[2].upstream_tls"] == 22
        assert config.lines["services[2].upstream_tls.ca"] == 22
        assert config.lines["busy_poll"] == 26
        lines = FULL.splitlines()
        for path, line in config.lines.items():
            key = path.rsplit(".", 1)[-1].split("[")[0]
            assert key + ":" in lines[line - 1], (path, line)
        # Lines are not part of the value: the same settings from flags compare equal.
        assert config == FULL_EXPECTED
        assert FULL_EXPECTED.lines == {}

    def test_busy_poll_errors_name_the_key_and_line(self) -> None:
        error = error_of("listen: 127.0.0.1:8080\nbusy_poll: -5\n")
        assert str(error) == "config.yaml:2: busy_poll: must not be negative"
        error = error_of("listen: 127.0.0.1:8080\nbusy_poll: often\n")
        assert str(error) == 'config.yaml:2: busy_poll: expected a duration like "30s", got "often"'
        error = error_of("busy_pol: 1s\n")
        assert 'did you mean "busy_poll"' in str(error)

    def test_negative_number_duration(self) -> None:
        error = error_of("services:\n- name: a\n  hosts: [a]\n  timeouts:\n    idle: -1\n")
        assert str(error) == "config.yaml:5: services[0].timeouts.idle: must not be negative"

    @pytest.mark.parametrize(
        ("endpoint", "message"),
        [
            ("localhost", 'expected "host:port", got "localhost"'),
            ("'[::1]'", 'expected "[ipv6]:port", got "[::1]"'),
            ("'::1:80'", 'IPv6 addresses need brackets, as in "[::1]:80", got "::1:80"'),
            ("127.0.0.1:0", 'port 0 is not a valid destination in "127.0.0.1:0"'),
            ("127.0.0.1:70000", "port 70000 is out of range (0-65535)"),
            ("'bad host:80'", '"bad host" is not a valid host name or IPv4 address'),
            ("1234", 'expected "host:port" like "127.0.0.1:8080", got 1234'),
        ],
    )
    def test_bad_endpoint(self, endpoint: str, message: str) -> None:
        error = error_of(
            f"services:\n  - name: a\n    hosts: [a]\n    endpoints:\n      - 10.0.0.1:80\n"
            f"      - {endpoint}\n"
        )
        assert str(error) == f"config.yaml:6: services[0].endpoints[1]: {message}"

    def test_duplicate_endpoint(self) -> None:
        error = error_of(
            "services:\n  - name: a\n    hosts: [a]\n    endpoints:\n"
            "      - LOCALHOST:80\n      - localhost:80\n"
        )
        assert str(error) == (
            'config.yaml:6: services[0].endpoints[1]: duplicate endpoint "localhost:80" '
            "(also services[0].endpoints[0] on line 5)"
        )

    def test_bad_listen(self) -> None:
        error = error_of("\n\nlisten: 8080\n")
        assert str(error) == (
            'config.yaml:3: listen: expected "host:port" like "127.0.0.1:8080", got 8080'
        )

    def test_listen_and_admin_clash(self) -> None:
        error = error_of("listen: 127.0.0.1:8080\nadmin: 127.0.0.1:8080\n")
        assert str(error) == ('config.yaml:2: admin: "127.0.0.1:8080" is also the listen address')

    def test_tls_listen_clash(self) -> None:
        error = error_of(
            "admin: 127.0.0.1:9000\ntls:\n  cert: c.pem\n  key: k.pem\n  listen: 127.0.0.1:9000\n"
        )
        assert str(error) == (
            'config.yaml:5: tls.listen: "127.0.0.1:9000" is also the admin address'
        )

    def test_tls_missing_key(self) -> None:
        error = error_of("tls:\n  listen: 127.0.0.1:8443\n  cert: c.pem\n")
        assert str(error) == 'config.yaml:2: tls: missing required key "key"'

    def test_tls_empty_cert(self) -> None:
        error = error_of("tls: {listen: '127.0.0.1:8443', cert: '', key: k.pem}")
        assert str(error) == "config.yaml:1: tls.cert: must not be empty"

    @pytest.mark.parametrize(
        ("url", "message"),
        [
            ("ftp://host/x", 'expected an http:// or https:// URL, got "ftp://host/x"'),
            ("http:///path", 'URL "http:///path" has no host'),
            ("http://host:99999/", 'invalid URL "http://host:99999/": Port out of range 0-65535'),
        ],
    )
    def test_bad_push_url(self, url: str, message: str) -> None:
        error = error_of(f"autoscaler:\n  push_url: '{url}'\n")
        assert str(error) == f"config.yaml:2: autoscaler.push_url: {message}"

    def test_autoscaler_interval_must_be_positive(self) -> None:
        error = error_of("autoscaler:\n  interval: 0\n")
        assert str(error) == "config.yaml:2: autoscaler.interval: must be greater than 0, got 0"

    def test_probe_path_must_be_absolute(self) -> None:
        error = error_of("services:\n- name: a\n  hosts: [a]\n  probe:\n    path: healthz\n")
        assert str(error) == (
            'config.yaml:5: services[0].probe.path: expected an absolute path like "/healthz", '
            'got "healthz"'
        )

    def test_services_not_a_list(self) -> None:
        error = error_of("services:\n  name: a\n")
        assert str(error) == "config.yaml:2: services: expected a list, got a mapping"

    def test_service_not_a_mapping(self) -> None:
        error = error_of("services:\n  - hello\n")
        assert str(error) == 'config.yaml:2: services[0]: expected a mapping, got "hello"'

    def test_top_level_not_a_mapping(self) -> None:
        error = error_of("- a\n- b\n")
        assert str(error) == "config.yaml:1: expected a mapping, got a list"

    def test_yaml_syntax_error_has_a_line(self) -> None:
        error = error_of("listen: 127.0.0.1:8080\nservices: [\n  {name: a\n")
        assert error.source == "config.yaml"
        assert error.line is not None
        assert error.message.startswith("invalid YAML:")

    def test_yaml_syntax_error_exact_line(self) -> None:
        error = error_of("listen: 127.0.0.1:8080\nadmin: 127.0.0.1:9090\n  bad: indent\n")
        assert error.line == 3
        assert error.message.startswith("invalid YAML:")

    def test_several_documents(self) -> None:
        error = error_of("listen: 127.0.0.1:1\n---\nlisten: 127.0.0.1:2\n")
        assert error.line == 2
        assert "single document" in error.message

    def test_non_string_key(self) -> None:
        error = error_of("limits:\n  1: 2\n")
        assert str(error) == "config.yaml:2: limits: keys must be strings, got 1"

    def test_load_config_names_the_file(self, tmp_path: Path) -> None:
        path = tmp_path / "bad.yaml"
        path.write_text("limits: {max_replays: x}\n", encoding="utf-8")
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        assert str(caught.value) == (
            f'{path}:1: limits.max_replays: expected a whole number, got "x"'
        )

    def test_missing_file(self, tmp_path: Path) -> None:
        path = tmp_path / "missing.yaml"
        with pytest.raises(ConfigError, match="cannot read the file: No such file"):
            load_config(path)

    def test_not_utf8(self, tmp_path: Path) -> None:
        path = tmp_path / "latin1.yaml"
        path.write_bytes(b"listen: \xff\n")
        with pytest.raises(ConfigError, match="not UTF-8"):
            load_config(path)

    def test_config_error_is_a_value_error(self) -> None:
        error = ConfigError("boom", source="--upstream")
        assert isinstance(error, ValueError)
        assert str(error) == "--upstream: boom"


# -- scalar syntaxes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        (0, 0),
        (512, 512),
        ("512", 512),
        ("64KiB", 65536),
        ("64kib", 65536),
        ("64MiB", 64 * 1024**2),
        ("1GiB", 1024**3),
        ("1TiB", 1024**4),
        ("10MB", 10_000_000),
        ("1KB", 1000),
        ("2GB", 2_000_000_000),
        ("1.5KiB", 1536),
        ("1.1KB", 1100),
        ("3 B", 3),
        (1024.0, 1024),
    ],
)
def test_parse_size(text: int | float | str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "KiB", "-1", "1.5", "0.3KiB", "10 potatoes", "1e3", "64k"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"size|whole number"):
        parse_size(text)


@pytest.mark.parametrize("value", [-1, 1.5, -2.0, True])
def test_parse_size_rejects_numbers(value: int | float) -> None:
    with pytest.raises(ValueError, match=r"negative|whole|size"):
        parse_size(value)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (0, 0.0),
        (30, 30.0),
        (2.5, 2.5),
        ("0s", 0.0),
        ("300ms", 0.3),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1m30s", 90.0),
        ("1h0m0.5s", 3600.5),
        ("1.5s", 1.5),
        ("45", 45.0),
    ],
)
def test_parse_duration(text: int | float | str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "-1s", "1d", "s", "1 s", "1.s", "5sec", "1m-5s"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match='expected a duration like "30s"'):
        parse_duration(text)


@pytest.mark.parametrize("value", [-1, -0.5, math.inf, math.nan, True])
def test_parse_duration_rejects_numbers(value: float) -> None:
    with pytest.raises(ValueError, match=r"negative|finite|duration"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("127.0.0.1:80", ("127.0.0.1", 80)),
        ("[::1]:80", ("::1", 80)),
        ("[fe80::1%eth0]:80", ("fe80::1%eth0", 80)),
        ("localhost:80", ("localhost", 80)),
        ("my-svc.default.svc.cluster.local:8080", ("my-svc.default.svc.cluster.local", 8080)),
        ("host.:1", ("host.", 1)),
        ("a:0", ("a", 0)),
        ("a:65535", ("a", 65535)),
    ],
)
def test_parse_hostport(text: str, parsed: tuple[str, int]) -> None:
    assert parse_hostport(text) == parsed


@pytest.mark.parametrize(
    "text",
    [
        "",
        "localhost",
        ":80",
        "localhost:",
        "localhost:http",
        "localhost:-1",
        "localhost:+80",
        "localhost:65536",
        "::1:80",
        "[::1]",
        "[::1]80",
        "[not-ipv6]:80",
        "[127.0.0.1]:80",
        "bad host:80",
        "-leading.dash:80",
        "999.1.1.1:80",
        "a..b:80",
        "http://a:80",
        "localhost:\uff18\uff10",  # full-width digits
    ],
)
def test_parse_hostport_rejects(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the messages vary by cause
        parse_hostport(text)


def test_format_hostport() -> None:
    assert format_hostport("::1", 80) == "[::1]:80"
    assert format_hostport("127.0.0.1", 80) == "127.0.0.1:80"
    assert parse_hostport(format_hostport("::1", 80)) == ("::1", 80)


# -- command-line mode ---------------------------------------------------------------------


class TestConfigFromUpstreams:
    def test_h2c_upstreams(self) -> None:
        config = config_from_upstreams(
            ["h2c://127.0.0.1:9001", "h2c://[::1]:9002/"],
            listen="127.0.0.1:8080",
            admin="127.0.0.1:9090",
        )
        assert config == Config(
            listen="127.0.0.1:8080",
            admin="127.0.0.1:9090",
            services=(
                ServiceConfig(
                    name="default",
                    hosts=("*",),
                    upstream="h2c",
                    endpoints=("127.0.0.1:9001", "[::1]:9002"),
                    probe=None,
                ),
            ),
        )

    def test_http_means_http1(self) -> None:
        config = config_from_upstreams(
            ["http://localhost:8000"], listen="127.0.0.1:0", admin="127.0.0.1:0"
        )
        assert config.services[0].upstream == "http1"
        assert config.services[0].endpoints == ("localhost:8000",)

    def test_default_ports(self) -> None:
        https = config_from_upstreams(["HTTPS://Example.com"], listen="a:1", admin="a:2")
        assert https.services[0].upstream == "https"
        assert https.services[0].endpoints == ("example.com:443",)
        plain = config_from_upstreams(["h2c://example.com"], listen="a:1", admin="a:2")
        assert plain.services[0].endpoints == ("example.com:80",)

    def test_mixed_schemes_name_the_flag(self) -> None:
        with pytest.raises(ConfigError) as caught:
            config_from_upstreams(
                ["h2c://127.0.0.1:1", "http://127.0.0.1:2"], listen="a:1", admin="a:2"
            )
        assert str(caught.value) == (
            '--upstream: all upstreams must use the same scheme, got "h2c://127.0.0.1:1" '
            'and "http://127.0.0.1:2"'
        )

    @pytest.mark.parametrize(
        ("url", "reason"),
        [
            ("ftp://a:1", "expected an h2c://, http:// or https:// URL"),
            ("127.0.0.1:80", "expected an h2c://, http:// or https:// URL"),
            ("h2c://", "no host"),
            ("h2c://a:1/path", "only scheme, host and port are allowed"),
            ("h2c://a:1?x=1", "only scheme, host and port are allowed"),
            ("h2c://user@a:1", "user information is not supported"),
            ("h2c://a:0", "port 0 is not a valid destination"),
            ("h2c://a:99999", "Port out of range 0-65535"),
            ("h2c://bad_host!:1", '"bad_host!" is not a valid host name or IPv4 address'),
        ],
    )
    def test_bad_upstream(self, url: str, reason: str) -> None:
        with pytest.raises(ConfigError) as caught:
            config_from_upstreams([url], listen="a:1", admin="a:2")
        assert str(caught.value) == f'--upstream: invalid upstream "{url}": {reason}'

    def test_no_upstreams(self) -> None:
        with pytest.raises(ConfigError, match=r"^--upstream: at least one upstream"):
            config_from_upstreams([], listen="a:1", admin="a:2")

    def test_duplicate_upstream(self) -> None:
        with pytest.raises(ConfigError, match=r'^--upstream: upstream "h2c://a:1/" is given twice'):
            config_from_upstreams(["h2c://a:1", "h2c://a:1/"], listen="a:1", admin="a:2")

    def test_bad_listen_and_admin_name_their_flags(self) -> None:
        with pytest.raises(ConfigError, match=r"^--listen: "):
            config_from_upstreams(["h2c://a:1"], listen="nope", admin="a:2")
        with pytest.raises(ConfigError, match=r"^--admin: "):
            config_from_upstreams(["h2c://a:1"], listen="a:1", admin="[::1]")
