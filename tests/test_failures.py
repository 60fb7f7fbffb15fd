"""Failure thresholds: a run whose inputs fail too often stops with a clear error, while the
failed records stay data below the threshold."""
import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that

import beam_phash
from beam_phash import ImagePhashDedup, hashing
from beam_phash.failures import FailureThreshold, Tally
from conftest import PHOTOS


def _records(broken: int):
    good = [{"id": p.stem, "image": p.read_bytes()} for p in PHOTOS]
    bad = [{"id": f"bad{i}", "image": b"not an image %d" % i} for i in range(broken)]
    return good + bad


def _run(records, dedup):
    p = TestPipeline()
    _ = p | beam.Create(records) | dedup
    p.run().wait_until_finish()


def test_decode_failures_over_the_threshold_fail_the_run():
    records = _records(broken=len(PHOTOS) + 2)  # 12 of 22 cannot be decoded
    with pytest.raises(Exception, match=r"12 of 22 inputs \(54.5%\) could not be hashed, over the failure "
                                        r"threshold of 50% \(decode\)"):
        _run(records, ImagePhashDedup(backend="state").with_failure_threshold(decode=0.5))


def test_decode_failures_are_data_by_default_and_under_the_threshold():
    records = _records(broken=4)
    for dedup in (ImagePhashDedup(backend="state"),
                  ImagePhashDedup(backend="state").with_failure_threshold(decode=0.5),
                  ImagePhashDedup(max_distance=8).with_failure_threshold(decode=0.5)):
        p = TestPipeline()
        outputs = p | beam.Create(records) | dedup.with_outputs()
        assert_that(outputs.failed | beam.Map(lambda r: r["id"]),
                    lambda ids: sorted(ids) == [f"bad{i}" for i in range(4)] or pytest.fail(str(ids)))
        p.run().wait_until_finish()


@pytest.fixture
def internal_errors(monkeypatch):
    """hash_images as it is, but an InternalError (what a caught panic gives) for images whose
    bytes start with b"PANIC"."""
    real = hashing.hash_images

    def hash_images(blobs, **kwargs):
        results = real([b"x" if bytes(b[:5]) == b"PANIC" else b for b in blobs], **kwargs)
        return [beam_phash.InternalError("internal error while hashing image: boom")
                if bytes(b[:5]) == b"PANIC" else r for b, r in zip(blobs, results)]
    monkeypatch.setattr(hashing, "hash_images", hash_images)


def test_internal_errors_fail_the_run_by_default(internal_errors):
    records = [{"id": p.stem, "image": p.read_bytes()} for p in PHOTOS] + [{"id": "boom", "image": b"PANIC!"}]
    with pytest.raises(Exception, match=r"1 of 11 inputs \(9.1%\) hit an internal error in the Rust code"):
        _run(records, ImagePhashDedup(backend="state"))


def test_internal_errors_can_be_let_through(internal_errors):
    records = [{"id": p.stem, "image": p.read_bytes()} for p in PHOTOS] + [{"id": "boom", "image": b"PANIC!"}]
    p = TestPipeline()
    outputs = p | beam.Create(records) | ImagePhashDedup(backend="state").with_failure_threshold(
        internal=None).with_outputs()
    assert_that(outputs.failed | beam.Map(lambda r: (r["id"], r["error"])),
                lambda rows: rows == [("boom", "internal error while hashing image: boom")] or pytest.fail(str(rows)))
    p.run().wait_until_finish()


@pytest.mark.parametrize("bad", [1.5, -0.1, "0.1", True])
def test_thresholds_are_fractions(bad):
    with pytest.raises(ValueError, match="fraction between 0 and 1"):
        FailureThreshold(decode=bad)
    with pytest.raises(ValueError, match="fraction between 0 and 1"):
        ImagePhashDedup().with_failure_threshold(internal=bad)


def test_the_check_counts_each_kind_apart():
    t = FailureThreshold(decode=0.5, internal=0.0)
    t.check(Tally(10, 5, 0))  # exactly at the threshold: fine
    with pytest.raises(beam_phash.failures.FailureThresholdError, match="6 of 10"):
        t.check(Tally(10, 6, 0))
    with pytest.raises(beam_phash.failures.FailureThresholdError, match="internal"):
        t.check(Tally(10, 0, 1))
    t.check(Tally(0, 0, 0))


def test_records_that_carry_a_hash_but_no_id_count_against_the_threshold():
    """hash_column input: a record without an id fails (its copies would look like retries), and
    that failure counts as a record that could not be hashed, as bad hex does."""
    records = [{"h": f"{i:064x}"} for i in range(10)]
    with pytest.raises(Exception, match="10 of 10"):
        _run(records, ImagePhashDedup(backend="state", hash_column="h").with_failure_threshold(decode=0.1))


def test_a_hash_column_that_is_the_id_field_is_refused():
    """Every record of a hash would carry the same id and be taken for a retry of its keeper:
    nothing would ever be a duplicate."""
    with pytest.raises(ValueError, match="hash_column and id_field must differ"):
        ImagePhashDedup(hash_column="h", id_field="h")
