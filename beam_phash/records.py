"""Records: reading image bytes and ids out of input records, the record type every dedup path
consumes (:class:`Hashed`), and the verdict: how a backend's answer becomes a kept record or a
duplicate (:func:`emit`, :func:`keeper_label`), the same for every path.

Input records are dicts. The image field holds ``bytes``, ``bytearray`` or ``memoryview``, or a
dict with a ``"bytes"`` key (the Hugging Face datasets image layout, also what Parquet structs from
img2dataset/LAION exports decode to).
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, List, Mapping, NamedTuple, Optional

if TYPE_CHECKING:
    from beam_phash.metrics import DedupMetrics

#: Output tags of ImagePhashDedup(...).with_outputs().
KEPT = "kept"
DUPLICATES = "duplicates"
FAILED = "failed"

#: Fields added to output records.
DUPLICATE_OF_FIELD = "duplicate_of"
#: Near-duplicate dedup: Hamming distance of a duplicate to the record it names.
DISTANCE_FIELD = "distance"
ERROR_FIELD = "error"
#: What a duplicate matched: "input" (a record kept in this run), "state" (one kept by an earlier
#: run with the same state directory, near-duplicate mode) or "reference" (the reference set).
#: Exact mode sets it only for "reference": its backends do not tell this run's keepers from
#: earlier runs'.
MATCHED_FIELD = "matched"
#: How much the picture has to hash, 0-100 (``PHash.quality``), on records hashed from images.
QUALITY_FIELD = "image_quality"
#: Every field the transform adds to output records.
WRITTEN_FIELDS = (DUPLICATE_OF_FIELD, DISTANCE_FIELD, MATCHED_FIELD, ERROR_FIELD, QUALITY_FIELD)
#: The fields that say what a run decided about a record. An input record that carries them (an
#: earlier run's output fed back) does not pass them on: its outputs say what this run decided.
VERDICT_FIELDS = (DUPLICATE_OF_FIELD, DISTANCE_FIELD, MATCHED_FIELD, ERROR_FIELD)

#: Prefix of the owner id used for records that have no id (see surrogate_owner): one no id
#: given as text would start with (content-addressed ids such as "sha256:..." are common), and
#: one that ranks after every id (U+10FFFF, the last code point, is also last in UTF-8's byte
#: order), so near-duplicate dedup keeps a record with an id over one without.
SURROGATE_PREFIX = "\U0010ffffsha256:"

BYTES_LIKE = (bytes, bytearray, memoryview)


class BadRecord(ValueError):
    """A record that cannot be hashed; the message is the reason stored in ``error``."""


def not_a_record(record: Any) -> Optional[str]:
    """The reason a value is no record (records are dicts, or any Mapping), or None."""
    return None if isinstance(record, Mapping) else f"record is a {type(record).__name__}, expected a dict"


def image_bytes(record: Any, image_field: str):
    """Return the record's image as a bytes-like object, without copying it."""
    reason = not_a_record(record)
    if reason is not None:
        raise BadRecord(reason)
    if image_field not in record:
        raise BadRecord(f"missing field {image_field!r}")
    value = record[image_field]
    if isinstance(value, Mapping):
        if "bytes" not in value:
            raise BadRecord(f"field {image_field!r} is a dict without a 'bytes' key")
        if value["bytes"] is None:  # the Hugging Face layout may hold a path instead: not read
            path = value.get("path")
            raise BadRecord(f"field {image_field!r} has 'bytes' None"
                            + (f" (its 'path' {path!r} is not read)" if path else ""))
        value = value["bytes"]
    if value is None:
        raise BadRecord(f"field {image_field!r} is None")
    if not isinstance(value, BYTES_LIKE):
        raise BadRecord(f"field {image_field!r} is a {type(value).__name__}, expected bytes")
    if len(value) == 0:
        raise BadRecord(f"field {image_field!r} is empty")
    return value


def field_of(record: Any, name: str) -> Any:
    """A record's value of ``name``: None when it has none, or is no record (``not_a_record``)."""
    return record.get(name) if isinstance(record, Mapping) else None


def record_id(record: Any, id_field: Optional[str]) -> Optional[str]:
    """A record's id as text (``str`` of its value), or None when it has none. Raises BadRecord
    when that text is not UTF-8: a lone surrogate, as Python decodes a file name that is not
    UTF-8 (``os.listdir``, ``pathlib``), which no output can write and Beam's coders refuse."""
    if not id_field:
        return None
    value = field_of(record, id_field)
    if value is None:
        return None
    text = str(value)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise BadRecord(f"{id_field} '{printable_id(text)}' is not UTF-8 text (it holds a lone surrogate, "
                            "as a file name that is not UTF-8 decodes to): give ids that are") from None
    return text


def printable_id(text: str) -> str:
    """An id with its lone surrogates written as ``\\udcff``: what can be said of an id that is not
    UTF-8 text."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def surrogate_owner(data) -> str:
    """Owner id for a record without an id: a digest of its image bytes.

    A retried record gets the same surrogate, so retries stay idempotent. The price: byte-identical
    copies without ids cannot be told from a retry, and are all kept. Give records ids to have
    them deduplicated too.
    """
    return SURROGATE_PREFIX + hashlib.sha256(data).hexdigest()


def keeper_label(owner: str) -> str:
    """What a duplicate reports as its keeper: the keeper's id, or "" when it had none."""
    return "" if owner.startswith(SURROGATE_PREFIX) else owner


def encodable_image(record: dict, image_field: str) -> dict:
    """Beam's coders cannot encode a memoryview: an output record carries such an image as bytes
    (the one copy this makes; bytes and bytearray images are passed on as they are)."""
    value = record.get(image_field)
    if isinstance(value, memoryview):
        record[image_field] = value.tobytes()
    elif isinstance(value, Mapping) and isinstance(value.get("bytes"), memoryview):
        record[image_field] = {**value, "bytes": value["bytes"].tobytes()}
    return record


def with_fields(record: Any, **fields) -> dict:
    """A shallow copy of the record (image bytes are shared, not copied) with fields set, and
    without the verdict of an earlier run (``VERDICT_FIELDS``) that it may carry."""
    out = dict(record) if isinstance(record, Mapping) else {"record": record}
    for name in VERDICT_FIELDS:
        out.pop(name, None)
    out.update(fields)
    return out


class Hashed(NamedTuple):
    """A record that hashed: its raw hash, the id that claims it, and the output record."""

    hash: bytes
    owner: str
    record: dict
    pixels: int = 0  # width x height of the upright image
    variants: tuple = ()  # the 8 dihedral hashes, with dihedral=True
    flat: bool = False  # quality under FLAT_QUALITY: near-duplicate dedup matches it exactly only


def hash_bytes(bits: int) -> int:
    """Bytes of one packed hash of ``bits`` bits (the last byte's spare bits are zero)."""
    return (bits + 7) // 8


def check_hashes(batch: List[Hashed], hash_bytes: int, variants: int, step: str) -> None:
    """ValueError unless every hash of ``batch`` is ``hash_bytes`` wide, with ``variants``
    dihedral variants: a dedup step built for other hashes than its input's (a ``HashConfig``
    that is not the one the records were hashed with) would compare unlike hashes."""
    for h in batch:
        if len(h.hash) != hash_bytes or len(h.variants) != variants:
            raise ValueError(
                f"{step} was built for {hash_bytes}-byte hashes{' with their 8 dihedral variants' if variants else ''}, "
                f"and received a {len(h.hash)}-byte hash with {len(h.variants)} variants (id {h.owner!r}): give "
                "it the HashConfig the records were hashed with")


def emit(record: dict, keeper: Optional[str], metrics: DedupMetrics, **fields):
    """``keeper`` is the backend's answer: None where this record is its hash's keeper (its first
    claimant, or a retry of it), else the keeper's id ("" for a keeper without an id). A
    duplicate also gets ``fields``."""
    if keeper is None:
        metrics.kept.inc()
        return record
    metrics.duplicates.inc()
    matched = fields.get(MATCHED_FIELD)
    if matched == "reference":
        metrics.reference_matches.inc()
    elif matched == "state":
        metrics.state_matches.inc()
    from apache_beam.pvalue import TaggedOutput  # here: Ray actors import this module, not Beam

    return TaggedOutput(DUPLICATES, with_fields(record, **{DUPLICATE_OF_FIELD: keeper or None}, **fields))
