"""The HTTP/2 state machine: python-hyper's ``h2``, or ``jh2`` - a fork with the same API and a
compiled HPACK codec - when it is installed.

``ACTIVATOR_H2=h2`` or ``ACTIVATOR_H2=jh2`` forces one; the default takes jh2 when importable because it
measured faster (see loadtest/RESULTS.md). Both are used through the same names: ``h2.events``,
``h2.connection`` and so on.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import TYPE_CHECKING

_SUBMODULES = ("config", "connection", "errors", "events", "exceptions", "settings")


def _load(name: str) -> ModuleType:
    package = importlib.import_module(name)
    for sub in _SUBMODULES:
        importlib.import_module(f"{name}.{sub}")
    return package


def _choose() -> ModuleType:
    wanted = os.environ.get("ACTIVATOR_H2", "auto")
    if wanted not in ("auto", "h2", "jh2"):
        raise ImportError(f"ACTIVATOR_H2 must be h2, jh2 or auto, not {wanted!r}")
    if wanted in ("auto", "jh2"):
        try:
            return _load("jh2")
        except ImportError:
            if wanted == "jh2":
                raise
    return _load("h2")


def _compression_errors(lib: ModuleType) -> None:
    """RFC 9113 §4.3: an undecodable field block is a connection error of type COMPRESSION_ERROR.

    h2 and jh2 report every HPACK failure as a plain ProtocolError (PROTOCOL_ERROR); their
    ``receive_data`` sends GOAWAY with the exception's ``error_code``, so raising the right code from
    the decoding step is enough. Oversized header lists stay a DenialOfServiceError.
    """
    connection = lib.connection
    decode = connection._decode_headers
    exceptions = lib.exceptions
    compression_error = lib.errors.ErrorCodes.COMPRESSION_ERROR

    def _decode_headers(decoder: object, block: bytes) -> object:
        try:
            return decode(decoder, block)
        except exceptions.DenialOfServiceError:
            raise
        except exceptions.ProtocolError as exc:
            error = exceptions.ProtocolError(str(exc))
            error.error_code = compression_error
            raise error from exc

    connection._decode_headers = _decode_headers


if TYPE_CHECKING:
    import h2
    import h2.config
    import h2.connection
    import h2.errors
    import h2.events
    import h2.exceptions
    import h2.settings
else:
    h2 = _choose()
    _compression_errors(h2)

NAME: str = h2.__name__
__all__ = ["NAME", "h2"]
