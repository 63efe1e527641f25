#!/usr/bin/env python3
"""Memory per idle client HTTP/2 connection.

Starts the activator in front of a demo pod, opens N client connections that complete the HTTP/2
handshake (preface + SETTINGS) and then stay idle, and reports the growth of the activator's RSS per
connection. Run: `python3 loadtest/idle_memory.py [--connections 10000]`.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import subprocess
import sys
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def wait_port(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=10_000)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.connections + 100 > hard:
        print(f"the descriptor limit ({hard}) is below {args.connections}", file=sys.stderr)
        return 2
    pod_port, listen, admin = free_port(), free_port(), free_port()
    env = dict(os.environ)
    pod = subprocess.Popen(
        [sys.executable, "-m", "activator.demopod", "--listen", f"127.0.0.1:{pod_port}"],
        stdout=subprocess.DEVNULL,
        env=env,
    )
    proxy = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "activator",
            "serve",
            "--listen",
            f"127.0.0.1:{listen}",
            "--admin",
            f"127.0.0.1:{admin}",
            "--upstream",
            f"h2c://127.0.0.1:{pod_port}",
            "--log-level",
            "warning",
        ],
        env=env,
    )
    sockets: list[socket.socket] = []
    try:
        wait_port(pod_port, time.monotonic() + 10)
        wait_port(listen, time.monotonic() + 10)
        time.sleep(0.5)
        before = rss_kib(proxy.pid)
        for _ in range(args.connections):
            sock = socket.create_connection(("127.0.0.1", listen))
            sock.sendall(PREFACE)
            sockets.append(sock)
        time.sleep(2.0)  # let the activator accept and answer every handshake
        after = rss_kib(proxy.pid)
        per = (after - before) / args.connections
        print(
            f"{args.connections} idle HTTP/2 client connections: activator RSS "
            f"{before} KiB -> {after} KiB, {per:.1f} KiB per connection"
        )
    finally:
        for sock in sockets:
            sock.close()
        for process in (proxy, pod):
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
