"""File digests: one streaming SHA-256 for every place fvt checks that a file is what it was
(download pins, shard checksums, export records, the audit's relabel template). Plain Python, so the
commands that only check files import no torch."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Union

_CHUNK = 1 << 20


def file_sha256(path: Union[str, Path]) -> str:
    """The hex SHA-256 of a file, read in 1 MiB blocks (memory stays flat for any file size)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()
