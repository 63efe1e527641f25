"""TLS contexts: the activator's own listener, and its connections to ``https`` pods."""

from __future__ import annotations

import ssl

from activator.config import Config, ConfigError, ServiceConfig, TLSConfig

__all__ = ["check_tls_files", "listener_context", "pod_context"]

_ALPN = ["h2", "http/1.1"]


def listener_context(tls: TLSConfig) -> ssl.SSLContext:
    """The TLS listener's context: its certificate chain, h2 then http/1.1 by ALPN."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert, tls.key)
    context.set_alpn_protocols(_ALPN)
    return context


def pod_context(service: ServiceConfig) -> ssl.SSLContext | None:
    """The context for a service's pod connections; None unless the service uses ``https``.

    With ``upstream_tls`` the pods' chains must lead to its ``ca`` (or the system's store) and
    carry the expected name. Without it the transport is encrypted but the pod is not
    authenticated: its identity comes from discovery alone.
    """
    if service.upstream != "https":
        return None
    tls = service.upstream_tls
    if tls is None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cafile=tls.ca)  # verifies chain and name
    context.set_alpn_protocols(_ALPN)
    return context


def check_tls_files(config: Config, *, tls_source: str, services_source: str) -> None:
    """Load every certificate, key and CA file the configuration names.

    A missing or unreadable file then stops the start with the key at fault, instead of a
    listener that cannot start or pods that all fail their handshakes.

    Raises:
        ConfigError: Naming where the key was set (``tls_source`` for the listener,
            ``services_source`` for the services), its path and, from a file, its line.
    """
    if config.tls is not None:
        try:
            listener_context(config.tls)
        except (OSError, ssl.SSLError) as exc:
            message = f"cannot load the certificate or key: {_reason(exc)}"
            line = config.lines.get("tls")
            raise ConfigError(message, source=tls_source, line=line, path="tls") from None
    for index, service in enumerate(config.services):
        try:
            pod_context(service)
        except (OSError, ssl.SSLError) as exc:
            message = f"cannot load the CA certificates: {_reason(exc)}"
            path = f"services[{index}].upstream_tls.ca"
            line = config.lines.get(path)
            raise ConfigError(message, source=services_source, line=line, path=path) from None


def _reason(exc: OSError | ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    filename = f" ({exc.filename})" if exc.filename else ""
    return f"{exc.strerror or exc}{filename}"
