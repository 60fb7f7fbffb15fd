"""How a column of hashes was made: the schema metadata a run writes beside the hashes it outputs
(``HASHED_AS``), read back wherever hashes come from a column, so that hashes of another
algorithm, hash size or hash version are never matched against this run's. Of the same width they
would match nothing, or the wrong images, without a word."""
from __future__ import annotations

import json
from typing import Any, Dict, Optional

import pyarrow as pa

from beam_phash._native import HASH_VERSION

#: The key of the schema metadata: JSON of the hash column's name (``field``) and how it was
#: hashed (``algorithm``, ``hash_size``, ``hash_version``).
HASHED_AS = b"beam_phash.hashed_as"


def made(algorithm: str, hash_size: int) -> Dict[str, Any]:
    """How this build hashes with ``algorithm`` at ``hash_size``, as ``hashed_as`` reads it back."""
    return {"algorithm": algorithm, "hash_size": hash_size, "hash_version": HASH_VERSION}


def hashed_as(schema: pa.Schema, column: str) -> Optional[Dict[str, Any]]:
    """How ``column``'s hashes were made, when the writer said so (``HASHED_AS``), else None."""
    raw = (schema.metadata or {}).get(HASHED_AS)
    if raw is None:
        return None
    try:
        found = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(found, dict) or found.get("field") != column:
        return None
    return {k: found.get(k) for k in ("algorithm", "hash_size", "hash_version")}


def unlike(said: Dict[str, Any], algorithm: str, hash_size: int,
           retune: str = "set the algorithm and hash size they were made with") -> Optional[str]:
    """Why hashes made as ``said`` cannot be compared with this build's at ``algorithm`` and
    ``hash_size``, or None when they can. ``retune`` says how the caller sets the algorithm and
    hash size, for hashes of another kind."""
    here = made(algorithm, hash_size)
    if said == here:
        return None
    same_kind = (said.get("algorithm"), said.get("hash_size")) == (algorithm, hash_size)
    return (f"{said.get('algorithm')} {said.get('hash_size')} hashes of hash version {said.get('hash_version')} "
            f"(its schema metadata says so), where this run makes {algorithm} {hash_size} hashes of version "
            f"{HASH_VERSION}: " + ("hash the images again with this version" if same_kind else
                                   f"{retune}, or hash the images again"))
