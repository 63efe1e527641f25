"""``activator serve | check-config | demo | pod | version``."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from activator import __version__
from activator.config import (
    Config,
    ConfigError,
    TLSConfig,
    config_from_upstreams,
    load_config,
    parse_duration,
)


def _run(coro: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop where available (Linux): it roughly halves the event loop's own cost."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
        return
    uvloop.run(coro)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def build_config(args: argparse.Namespace) -> Config:
    """The configuration from ``--config`` or from ``--upstream`` flags, with flags overriding."""
    if args.config:
        config = load_config(args.config)
        replace: dict[str, Any] = {}
        if args.listen:
            replace["listen"] = args.listen
        if args.admin:
            replace["admin"] = args.admin
        if replace:
            config = dataclasses.replace(config, **replace)
        if args.upstream:
            raise ConfigError("--upstream cannot be combined with --config", source="--upstream")
    else:
        config = config_from_upstreams(
            args.upstream or [],
            listen=args.listen or "127.0.0.1:8080",
            admin=args.admin or "127.0.0.1:9090",
        )
    if args.busy_poll is not None:
        try:
            busy_poll = parse_duration(args.busy_poll)
        except ValueError as exc:
            raise ConfigError(str(exc), source="--busy-poll") from None
        config = dataclasses.replace(config, busy_poll=busy_poll)
    if args.tls_listen:
        if not (args.tls_cert and args.tls_key):
            raise ConfigError("--tls-listen needs --tls-cert and --tls-key", source="--tls-listen")
        # The flags' listener replaces the file's: its errors have no line in the file.
        lines = {k: v for k, v in config.lines.items() if k != "tls" and not k.startswith("tls.")}
        config = dataclasses.replace(
            config,
            tls=TLSConfig(listen=args.tls_listen, cert=args.tls_cert, key=args.tls_key),
            lines=lines,
        )
    return config


def _raise_fd_limit() -> None:
    """Every client and pod connection is a descriptor: take the hard limit, not the default 1024."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass


def _serve(args: argparse.Namespace) -> int:
    from activator.io.app import Activator
    from activator.io.tls import check_tls_files

    try:
        config = build_config(args)
        check_tls_files(
            config,
            tls_source=args.config if args.config and not args.tls_listen else "--tls-cert",
            services_source=args.config or "--upstream",
        )
    except ConfigError as exc:
        print(f"activator: {exc}", file=sys.stderr)
        return 2
    _raise_fd_limit()
    if args.own_process_group:
        os.setpgid(0, 0)
    if args.workers > 1:
        from activator.io.workers import serve_with_workers

        return serve_with_workers(
            config,
            workers=args.workers,
            drain_timeout=args.drain_timeout,
            log_level=args.log_level,
        )
    _setup_logging(args.log_level)
    activator = Activator(config, drain_timeout=args.drain_timeout)
    try:
        _run(activator.run())
    except OSError as exc:
        print(f"activator: cannot listen: {exc}", file=sys.stderr)
        return 1
    return 0


def _check_config(args: argparse.Namespace) -> int:
    from activator.io.tls import check_tls_files

    try:
        config = load_config(args.file)
        check_tls_files(config, tls_source=args.file, services_source=args.file)
    except ConfigError as exc:
        print(f"activator: {exc}", file=sys.stderr)
        return 2
    names = ", ".join(s.name for s in config.services) or "none"
    print(f"{args.file}: ok ({len(config.services)} services: {names})")
    return 0


def _demo(args: argparse.Namespace) -> int:
    """Two demo pods on loopback and the activator in front of them, in one process."""
    from activator.demopod import DemoPod, PodBehaviour
    from activator.io.app import Activator

    _setup_logging(args.log_level)

    async def main() -> None:
        pods = [DemoPod(PodBehaviour(name=f"demo-{i}")) for i in (1, 2)]
        for pod in pods:
            await pod.start()
        config = config_from_upstreams(
            [f"h2c://127.0.0.1:{pod.port}" for pod in pods], listen=args.listen, admin=args.admin
        )
        activator = Activator(config, drain_timeout=5.0)
        print(
            f"activator demo: two pods behind http://{args.listen}/\n"
            f"  curl --http2-prior-knowledge http://{args.listen}/\n"
            f"  curl http://{args.listen}/delay/100\n"
            f"  curl http://{args.admin}/v1/services\n"
            "Ctrl-C stops.",
            file=sys.stderr,
        )
        try:
            await activator.run()
        finally:
            for pod in pods:
                await pod.stop()

    _run(main())
    return 0


def _pod(argv: Sequence[str]) -> int:
    from activator.demopod import main as pod_main

    status: int = pod_main(list(argv))
    return status


def _worker_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"at least 1 worker, got {count}")
    return count


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="activator", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the activator in the foreground")
    serve.add_argument("--config", help="YAML configuration file")
    serve.add_argument("--listen", help="host:port for h2c and HTTP/1.1 (default 127.0.0.1:8080)")
    serve.add_argument("--admin", help="host:port for the admin API (default 127.0.0.1:9090)")
    serve.add_argument(
        "--upstream",
        action="append",
        metavar="URL",
        help="pod URL (h2c://, http:// or https://), repeatable; forms the default service",
    )
    serve.add_argument("--tls-listen", help="host:port for TLS (ALPN h2, http/1.1)")
    serve.add_argument("--tls-cert", help="certificate chain (PEM) for --tls-listen")
    serve.add_argument("--tls-key", help="private key (PEM) for --tls-listen")
    serve.add_argument("--drain-timeout", type=float, default=30.0, help="seconds to drain on stop")
    serve.add_argument(
        "--busy-poll",
        metavar="DURATION",
        help='keep polling this long (e.g. "20ms") after the last read instead of sleeping: '
        "lower latency at low rates for a core's worth of CPU while traffic flows (overrides "
        "the config's busy_poll; default off)",
    )
    serve.add_argument(
        "--workers",
        type=_worker_count,
        default=1,
        metavar="N",
        help="worker processes sharing the ports (SO_REUSEPORT), under one supervisor that "
        "serves the admin API for all of them (default 1: a single process)",
    )
    serve.add_argument("--log-level", default="info", help="debug, info, warning, error")
    serve.add_argument(
        "--own-process-group",
        action="store_true",
        help="start a new process group (so a supervisor can signal the activator and its workers)",
    )
    serve.set_defaults(func=_serve)

    check = sub.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("file")
    check.set_defaults(func=_check_config)

    demo = sub.add_parser("demo", help="run two demo pods with the activator in front")
    demo.add_argument("--listen", default="127.0.0.1:8080")
    demo.add_argument("--admin", default="127.0.0.1:9090")
    demo.add_argument("--log-level", default="info")
    demo.set_defaults(func=_demo)

    sub.add_parser("pod", help="run a demo pod (see `activator pod --help`)", add_help=False)
    sub.add_parser("version", help="print the version")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["pod"]:
        return _pod(argv[1:])
    if argv[:1] == ["version"]:
        print(f"activator {__version__}")
        return 0
    args = parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
