"""The stored corpora: one file per target under corpus/, one input per line in base64 (small,
and a diff shows what changed). The suite replays them; the fuzzer starts from them."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

CORPUS = Path(__file__).parent / "corpus"


def stored(target: str) -> list[bytes]:
    path = CORPUS / f"{target}.b64"
    if not path.exists():
        return []
    return [base64.b64decode(line) for line in path.read_text().split()]


def unpack(target: str, directory: Path) -> int:
    """Write the stored inputs into ``directory`` as libFuzzer's corpus files."""
    directory.mkdir(parents=True, exist_ok=True)
    inputs = stored(target)
    for data in inputs:
        (directory / hashlib.sha1(data).hexdigest()).write_bytes(data)
    return len(inputs)


def pack(target: str, directory: Path) -> int:
    """Store every file of a libFuzzer corpus ``directory`` as the target's corpus."""
    inputs = sorted({p.read_bytes() for p in directory.iterdir() if p.is_file()})
    CORPUS.mkdir(exist_ok=True)
    lines = [base64.b64encode(data).decode() for data in inputs]
    (CORPUS / f"{target}.b64").write_text("".join(line + "\n" for line in lines))
    return len(inputs)
