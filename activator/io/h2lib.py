"""The HTTP/2 state machine of client connections: python-hyper's ``h2``, or ``jh2`` - a fork with the
same API and a compiled HPACK codec.

``ACTIVATOR_H2=h2`` or ``ACTIVATOR_H2=jh2`` forces one; the default takes jh2 when importable because it
measured faster (see loadtest/RESULTS.md). Both are used through the same names: ``h2.events``,
``h2.connection`` and so on. Pod connections do not use either state machine (see
:mod:`activator.io.pod_h2`), only jh2's compiled HPACK codec.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING

import hpack
from hpack.table import HeaderTable

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

    def compression_failure(exc: BaseException) -> BaseException:
        error: BaseException = exceptions.ProtocolError(f"Error decoding header block: {exc}")
        error.error_code = compression_error  # type: ignore[attr-defined]
        return error

    def _decode_headers(decoder: object, block: bytes) -> object:
        if type(decoder) is StrictDecoder:
            try:
                return decoder.decode(block, raw=True)
            except hpack.OversizedHeaderListError as exc:
                raise exceptions.DenialOfServiceError(f"Oversized header block: {exc}") from exc
            except (hpack.HPACKError, IndexError, TypeError, UnicodeDecodeError) as exc:
                raise compression_failure(exc) from exc
        try:
            return decode(decoder, block)
        except exceptions.DenialOfServiceError:
            raise
        except exceptions.ProtocolError as exc:
            raise compression_failure(exc) from exc

    connection._decode_headers = _decode_headers


# HPACK's static table (RFC 7541 Appendix A) as hpack holds it; dynamic entries follow it (§2.3.3).
_STATIC_TABLE: tuple[tuple[bytes, bytes], ...] = HeaderTable.STATIC_TABLE
_STATIC_LENGTH = len(_STATIC_TABLE)
_DYNAMIC_FIRST = _STATIC_LENGTH + 1

# Decoded "literal without indexing" fields with a static-table name, by their encoded bytes (shared by
# every client connection of the process; bounded in count and, by the one-byte length, in size).
_LITERALS: dict[bytes, tuple[bytes, bytes]] = {}
_LITERALS_MAX = 4096


class StrictDecoder(hpack.Decoder):
    """The reference HPACK decoder (python-hyper's hpack, which h2 uses), with a leaner main loop.

    jh2's compiled decoder accepts a few invalid encodings RFC 7541 says to reject (a table size
    update after the first field, one above the SETTINGS limit, Huffman padding that is not an EOS
    prefix); the client-facing side decodes with this one so every peer gets the RFC's answer. Pods
    are decoded with the compiled one.

    hpack's own loop wraps every field twice (HeaderTuple, then a copy as bytes) and slices a
    memoryview per field; here a one-byte indexed field (RFC 7541 §6.1: the usual case once a
    client's table is warm) is a table lookup, and every other representation still goes through
    hpack's own methods, so what is accepted or rejected is unchanged. Fields come out as plain
    ``(name, value)`` tuples, except never-indexed ones: ``hpack.NeverIndexedHeaderTuple``, which the
    activator forwards as never-indexed (RFC 7541 §7.1.3).
    """

    def decode(self, data: bytes, raw: bool = True) -> list[tuple[bytes, bytes]]:  # type: ignore[override]
        table = self.header_table
        get_by_index = table.get_by_index
        limit = self.max_header_list_size
        headers: list[tuple[bytes, bytes]] = []
        append = headers.append
        view = memoryview(data)
        size = 0
        pos = 0
        end = len(data)
        while pos < end:
            first = data[pos]
            if first & 0x80:
                if first != 0xFF:  # the index fits the 7-bit prefix
                    index = first & 0x7F
                    # hpack's get_by_index, inlined for the usual case (index 0, or one past the
                    # dynamic table, still goes through it and raises, as it must)
                    if 0 < index <= _STATIC_LENGTH:
                        name, value = _STATIC_TABLE[index - 1]
                    elif 0 <= index - _DYNAMIC_FIRST < len(table.dynamic_entries):
                        name, value = table.dynamic_entries[index - _DYNAMIC_FIRST]
                    else:
                        name, value = get_by_index(index)
                    pos += 1
                else:
                    (name, value), used = self._decode_indexed(view[pos:])
                    pos += used
            elif first & 0x40:
                (name, value), used = self._decode_literal_index(view[pos:])
                pos += used
            elif first & 0x20:
                if headers:  # RFC 7541 §4.2
                    raise hpack.HPACKDecodingError("table size update after a header field")
                pos += self._update_encoding_context(view[pos:])
                continue
            else:  # literal without indexing, or never indexed (RFC 7541 §6.2.2, §6.2.3)
                (name, value), used = self._literal(data, view, pos)
                pos += used
            if type(name) is not bytes:
                name = bytes(name)
            if type(value) is not bytes:
                value = bytes(value)
            size += len(name) + len(value) + 32
            if size > limit:
                raise hpack.OversizedHeaderListError(f"a header list larger than {limit} bytes")
            if first & 0xF0 == 0x10:  # never indexed (RFC 7541 §6.2.3): must stay so downstream
                append(hpack.NeverIndexedHeaderTuple(name, value))
            else:
                append((name, value))
        self._assert_valid_table_size()
        return headers

    def _literal(self, data: bytes, view: memoryview, pos: int) -> tuple[tuple[bytes, bytes], int]:
        # A literal without indexing whose name is in the static table is a pure function of its
        # bytes, so a repeat (nghttp2 clients - curl, h2load - send :path this way on every request)
        # is looked up instead of Huffman-decoded in Python again. Only one-byte lengths qualify;
        # never-indexed fields (0x1_) are never stored.
        first = data[pos]
        length = data[pos + 1] & 0x7F if pos + 1 < len(data) else 0x7F
        if not 0 < first < 0x0F or length == 0x7F:
            field, used = self._decode_literal_no_index(view[pos:])
            return field, used
        key = data[pos : pos + 2 + length]
        known = _LITERALS.get(key)
        if known is None:
            (name, value), used = self._decode_literal_no_index(view[pos:])
            known = (bytes(name), bytes(value))
            if len(_LITERALS) >= _LITERALS_MAX:
                _LITERALS.clear()
            _LITERALS[key] = known
        return known, 2 + length


class SizeUpdateKeepingEncoder(hpack.Encoder):
    """python-hyper's HPACK encoder (which h2 uses), keeping a table size change it owes the peer.

    h2 sets ``header_table_size`` at every SETTINGS that carries SETTINGS_HEADER_TABLE_SIZE, even
    with the value already in force, and hpack's setter then forgets a change still to be signalled
    (RFC 7541 §4.2, §6.3): after 0, then 64 twice, the peer's table would stay at 0 while entries
    are indexed for it. The same value again changes nothing here. jh2's compiled encoder does
    not need this.
    """

    @property
    def header_table_size(self) -> int:
        return int(self.header_table.maxsize)

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        if value != self.header_table.maxsize:
            hpack.Encoder.header_table_size.fset(self, value)  # type: ignore[attr-defined]


def strict_decoder(table_size: int) -> hpack.Decoder:
    """A fresh RFC 7541-strict HPACK decoder for a client connection whose SETTINGS_HEADER_TABLE_SIZE
    is ``table_size`` (the limit the peer's dynamic table size updates must respect)."""
    decoder = StrictDecoder(max_header_list_size=1 << 20)
    decoder.max_allowed_table_size = table_size
    return decoder


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

# The field type the chosen library's encoder keeps out of its compression context (RFC 7541 §7.1.3):
# what a pod's never-indexed response field is handed to the client connection as.
never_indexed: Callable[[bytes, bytes], tuple[bytes, bytes]] = (
    importlib.import_module(f"{NAME}.stream").NeverIndexedHeaderTuple
    if NAME == "jh2"
    else hpack.NeverIndexedHeaderTuple
)

__all__ = ["NAME", "h2", "never_indexed"]
