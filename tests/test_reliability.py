"""Persistence and actor faults: snapshots that survive tearing, incremental dedup with --state,
and bucket actors killed in the middle of a run (recovered with a state directory, a clear
failure naming the bucket without one)."""
import glob
import json
import os
import shutil
import signal

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that

from beam_phash import ImagePhashDedup
from beam_phash.exact import ray_cluster
from beam_phash.exact.ray_cluster import NAMESPACE
from beam_phash.exact.store import BucketStore, StateError
from beam_phash.exact.ray_client import BackendError, RayDedupBackend, actor_name, get_or_create_actor
from conftest import PHOTOS
from dedup_oracle import check_outputs, make_records, oracle
from job_outputs import basename, read
from pipelines import dedup_images
from processes import left_in_session
from tagged import tagged


def _owners(*ids):
    return np.array(ids, dtype="<u8").tobytes()


# --- the on-disk format -----------------------------------------------------------------------

def test_a_bucket_whose_snapshots_are_all_gone_is_refused(tmp_path):
    """After a snapshot the logs before it are removed: with every snapshot then lost (a partial
    copy of the directory), the logs left do not reach back to the start, and loading what they
    hold would forget the claims before them."""
    store = BucketStore(str(tmp_path), 0, "bucket 0")
    store.append(4, b"aaaabbbb", _owners(1, 2), ["a", "b"])
    store.snapshot(4, b"aaaabbbb", _owners(1, 2), ["a", "b"])
    store.append(4, b"cccc", _owners(3), ["c"])
    store.snapshot(4, b"aaaabbbbcccc", _owners(1, 2, 3), ["a", "b", "c"])  # the first log goes
    store.append(4, b"dddd", _owners(4), ["d"])
    store.close()
    for path in glob.glob(str(tmp_path / "bucket-00000" / "snapshot-*")):
        os.remove(path)
    assert sorted(os.listdir(tmp_path / "bucket-00000"))[0] != "log-000000.arrows"
    reader = BucketStore(str(tmp_path), 0, "bucket 0")
    with pytest.raises(StateError, match="do not reach back to the start"):
        reader.load()
    reader.close()


def test_snapshots_and_logs_rebuild_the_bucket_and_a_torn_snapshot_is_not_used(tmp_path, caplog):
    store = BucketStore(str(tmp_path), 3, "bucket 3")
    assert store.load() == (None, [])
    store.append(4, b"aaaabbbb", _owners(1, 2), ["a", "b"])
    first = store.snapshot(4, b"aaaabbbb", _owners(1, 2), ["a", "b"])
    store.append(4, b"cccc", _owners(3), ["c"])
    second = store.snapshot(4, b"aaaabbbbcccc", _owners(1, 2, 3), ["a", "b", "c"])
    store.append(4, b"dddd", _owners(4), ["d"])
    store.close()
    assert os.path.exists(first) and os.path.exists(second)  # one generation back is kept

    def replayed():
        reader = BucketStore(str(tmp_path), 3, "bucket 3")
        width, chunks = reader.load()
        reader.close()
        assert width == 4
        return [label for _, _, labels in chunks for label in labels]

    assert replayed() == ["a", "b", "c", "d"]
    # A torn newest snapshot: the previous one and the logs after it give the same state.
    with open(second, "r+b") as f:
        f.truncate(os.path.getsize(second) // 2)
    assert replayed() == ["a", "b", "c", "d"]
    assert "is torn or unreadable" in caplog.text
    # A newer snapshot damaged in any column is refused, and the one before it with its logs used.
    second_copy = BucketStore(str(tmp_path), 3, "bucket 3")
    second_copy.load()
    third = second_copy.snapshot(4, b"aaaabbbbccccdddd", _owners(1, 2, 3, 4), ["a", "b", "c", "d"])
    second_copy.close()
    intact = open(third, "rb").read()
    table = pq.read_table(third)
    chunks = pq.ParquetFile(third).metadata.row_group(0)
    for i, name in enumerate(table.column_names):
        # Entries that Parquet reads back without complaint (a bit flipped before it was
        # written, say) but that differ from the digest: only the digest can tell.
        column = table.column(name).to_pylist()
        column[1] = {"hash": b"bbbx", "owner": 7, "label": "x"}[name]
        changed = table.set_column(i, name, pa.array(column, table.schema.field(name).type))
        pq.write_table(changed.replace_schema_metadata(table.schema.metadata), third)
        caplog.clear()
        assert replayed() == ["a", "b", "c", "d"], name
        assert "fails its row count or digest check; not used" in caplog.text, name
        # A byte of the column's stored data flipped on disk: unreadable, or off its digest.
        chunk = chunks.column(i)
        data = bytearray(intact)
        data[chunk.data_page_offset + chunk.total_compressed_size - 1] ^= 0xFF
        open(third, "wb").write(data)
        caplog.clear()
        assert replayed() == ["a", "b", "c", "d"], name
        assert "not used" in caplog.text, name
    open(third, "wb").write(intact)
    caplog.clear()
    assert replayed() == ["a", "b", "c", "d"] and "not used" not in caplog.text


def test_only_committed_runs_and_the_loader_s_own_are_replayed(tmp_path, caplog):
    """A run's claims count once it committed: those of a run that failed (in its logs, and in
    a snapshot it took mid-run, after the entries committed before it) are left out, its own are
    replayed to a restarted actor of the run, and files that name no run are committed."""
    from beam_phash.exact.store import commit_run

    def load(run=None):
        reader = BucketStore(str(tmp_path), 0, "bucket 0", run)
        width, chunks = reader.load()
        reader.close()
        labels = [label for _, _, labels in chunks for label in labels]
        own = [label for _, _, labels in chunks[reader.own_from:] for label in labels]
        return labels, own

    legacy = BucketStore(str(tmp_path), 0, "bucket 0")  # a file of a named backend, or older
    legacy.load()
    legacy.append(4, b"aaaa", _owners(1), ["a"])
    legacy.close()
    failed = BucketStore(str(tmp_path), 0, "bucket 0", "run-failed")
    failed.load()
    failed.append(4, b"bbbb", _owners(2), ["b"])
    failed.snapshot(4, b"aaaabbbb", _owners(1, 2), ["a", "b"], committed=1)  # mid-run
    failed.append(4, b"cccc", _owners(3), ["c"])
    failed.close()
    assert load() == (["a"], [])
    assert load("run-failed") == (["a", "b", "c"], ["b", "c"])  # its actor, restarted
    done = BucketStore(str(tmp_path), 0, "bucket 0", "run-done")
    assert done.load()[1] == [(b"aaaa", _owners(1), ["a"])] and done.own_from == 1
    done.append(4, b"dddd", _owners(4), ["d"])
    done.close()
    assert load() == (["a"], [])  # not committed yet
    commit_run(str(tmp_path), "run-done")
    commit_run(str(tmp_path), "run-done")  # idempotent
    assert load() == (["a", "d"], [])
    assert load("run-later") == (["a", "d"], [])
    with pytest.raises(StateError, match="already ran and committed"):  # the same built pipeline again
        load("run-done")
    # A log's run is under its batches' digests: another run's name there is damage, not a
    # failed run's claims to leave out.
    logs = sorted(glob.glob(str(tmp_path / "bucket-00000" / "log-*.arrows")))
    data = open(logs[-1], "rb").read()
    assert data.count(b"run-done") == 1
    open(logs[-1], "wb").write(data.replace(b"run-done", b"run-dome"))
    with pytest.raises(StateError, match="fails its digest"):
        load()
    open(logs[-1], "wb").write(data)
    # A snapshot's run and the row its entries start at are under its digest.
    path = glob.glob(str(tmp_path / "bucket-00000" / "snapshot-*.parquet"))[-1]
    table = pq.read_table(path)
    meta = dict(table.schema.metadata)
    meta[b"beam_phash.run_from"] = b"2"
    pq.write_table(table.replace_schema_metadata(meta), path)
    caplog.clear()
    assert load() == (["a", "d"], [])  # from the logs, which reach back to the start
    assert "fails its row count or digest check; not used" in caplog.text


def test_one_store_per_bucket_directory_at_a_time(tmp_path):
    first = BucketStore(str(tmp_path), 0, "bucket 0")
    with pytest.raises(StateError, match="in use by another backend"):
        BucketStore(str(tmp_path), 0, "bucket 0")
    first.close()
    BucketStore(str(tmp_path), 0, "bucket 0").close()


@pytest.mark.ray
def test_a_bucket_in_use_says_so_in_the_backend_s_error(ray_cluster, tmp_path):
    """An actor that cannot start (its bucket's lock held elsewhere): the error raised in it is
    the one line a user sees, not Ray's creation-task text with its terminal colours."""
    from beam_phash.exact.store import prepare_state_dir
    state = str(tmp_path / "state")
    prepare_state_dir(state, 2, "phash", 16)
    holder = BucketStore(state, 0, "bucket 0")
    client = RayDedupBackend(ray_cluster, "in-use-test", 2, state_dir=state, num_actors=1).connect()
    try:
        with pytest.raises(BackendError) as raised:
            client.claim([bytes(32)], ["a"])
        message = str(raised.value)
        assert message.startswith("buckets 0, 1 of dedup backend 'in-use-test' failed: StateError: bucket 0 "
                                  "of dedup backend 'in-use-test': "), message
        assert "bucket-00000 is in use by another backend" in message and "\x1b" not in message, message
    finally:
        client.release()
        holder.close()


def test_a_torn_log_tail_is_dropped_and_the_rest_replayed(tmp_path):
    store = BucketStore(str(tmp_path), 0, "bucket 0")
    store.load()
    store.append(4, b"aaaa", _owners(1), ["a"])
    store.append(4, b"bbbb", _owners(2), ["b"])
    store.close()
    path = os.path.join(store.path, "log-000000.arrows")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 20)  # tear the last batch
    _, chunks = BucketStore(str(tmp_path), 0, "bucket 0").load()
    assert [labels for _, _, labels in chunks] == [["a"]]


def test_a_log_damaged_before_its_end_is_an_error_not_a_torn_tail(tmp_path):
    """Only the last batch of a log can be cut short by a crash (its claims were never
    answered). A batch damaged before the end (a flipped byte in its hashes, its length, its
    framing) is an error: read as a torn tail, every answered claim after it would be forgotten
    and its hash kept again."""
    store = BucketStore(str(tmp_path), 0, "bucket 0")
    store.load()
    path = os.path.join(store.path, "log-000000.arrows")
    ends = []
    for i, label in enumerate("abc"):
        store.append(4, bytes([i + 1]) * 4, _owners(1), [label])
        ends.append(os.path.getsize(path))
    store.close()
    intact = open(path, "rb").read()

    def replayed(data: bytes):
        open(path, "wb").write(data)
        _, chunks = BucketStore(str(tmp_path), 0, "bucket 0").load()
        return [label for _, _, labels in chunks for label in labels]

    for cut in range(ends[1] + 1, ends[2]):  # anywhere inside the last batch: a torn tail
        assert replayed(intact[:cut]) == ["a", "b"], cut
    hashes_of_b = intact.index(bytes([2]) * 4, ends[0])
    for at in (hashes_of_b, ends[0], ends[0] + 5):  # b's hashes (its digest), framing, length
        damaged = bytearray(intact)
        damaged[at] ^= 0xFF
        with pytest.raises(StateError, match="log .*log-000000.arrows is damaged"):
            replayed(bytes(damaged))
    assert replayed(intact) == ["a", "b", "c"]


def test_a_log_that_cannot_be_read_is_an_error_naming_it(tmp_path):
    store = BucketStore(str(tmp_path), 0, "bucket 0")
    store.load()
    store.append(4, b"aaaa", _owners(1), ["a"])
    store.close()
    # Not a torn tail: a log that cannot be opened at all (a directory in its place; permissions
    # do not stop root). Its claims must not be forgotten silently.
    os.mkdir(os.path.join(store.path, "log-000001.arrows"))
    with pytest.raises(StateError, match="log .*log-000001.arrows cannot be read"):
        BucketStore(str(tmp_path), 0, "bucket 0").load()


def test_a_first_run_stopped_while_it_seeds_the_buckets_leaves_a_directory_the_next_finishes(tmp_path, monkeypatch):
    """Seeding many buckets takes a while; a first run stopped meanwhile has claimed nothing. The
    next run finishes the seeding instead of refusing a directory of buckets without manifest."""
    from beam_phash.exact import store as exact_store
    state = str(tmp_path / "s")
    real, seeded = exact_store._seed, []

    def stopped_after_two(*args):
        if len(seeded) == 2:
            raise KeyboardInterrupt
        seeded.append(args[1])
        real(*args)

    monkeypatch.setattr(exact_store, "_seed", stopped_after_two)
    with pytest.raises(KeyboardInterrupt):
        exact_store.prepare_state_dir(state, 8, "phash", 16)
    monkeypatch.setattr(exact_store, "_seed", real)
    ImagePhashDedup(state_dir=state, num_buckets=8)  # checked at construction: not refused
    exact_store.prepare_state_dir(state, 8, "phash", 16)
    manifest = json.loads(open(os.path.join(state, "manifest.json")).read())
    assert manifest.get("seeded") is True and "seeding" not in manifest
    assert all(exact_store._has_state(exact_store.bucket_dir(state, b), True) for b in range(8))
    exact_store.check_state_dir(state, 8, "phash", 16)


def test_state_dir_layout_is_checked_before_anything_runs(tmp_path):
    ImagePhashDedup(state_dir=str(tmp_path / "s"), num_buckets=4)  # not created yet: fine
    from beam_phash.exact.store import prepare_state_dir
    prepare_state_dir(str(tmp_path / "s"), 4, "phash", 16)
    with pytest.raises(ValueError, match="num_buckets=4 .this run: 8."):
        ImagePhashDedup(state_dir=str(tmp_path / "s"), num_buckets=8)
    with pytest.raises(ValueError, match="only to backend='ray'"):
        ImagePhashDedup(backend="state", state_dir=str(tmp_path / "s"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        ImagePhashDedup(state_dir=str(tmp_path / "file"))


def test_a_state_dir_without_its_commits_folder_is_refused(tmp_path):
    """A copy of a state directory without ``commits/`` made every run look uncommitted: the
    next run left their claims out (and its snapshot dropped them for good), so their hashes were
    kept again. The folder is made with the state and named in its manifest; without it, refused.
    A directory made before that gets the folder on its next run, as it is."""
    from beam_phash.exact.store import commit_run, committed_runs, prepare_state_dir
    state = tmp_path / "s"
    prepare_state_dir(str(state), 4, "phash", 16)
    assert (state / "commits").is_dir() and json.loads((state / "manifest.json").read_text())["commits"] is True
    commit_run(str(state), "run-0123")
    copy = tmp_path / "copy"
    shutil.copytree(state, copy, ignore=shutil.ignore_patterns("commits"))
    with pytest.raises(ValueError, match="lacks its commits/ folder"):
        ImagePhashDedup(state_dir=str(copy), num_buckets=4)
    with pytest.raises(ValueError, match="lacks its commits/ folder"):
        prepare_state_dir(str(copy), 4, "phash", 16)
    shutil.copytree(state / "commits", copy / "commits")  # restored: used again
    prepare_state_dir(str(copy), 4, "phash", 16)
    assert committed_runs(str(copy)) == {"run-0123"}
    # An earlier directory: its manifest names no folder, and it may hold one or not.
    earlier = json.loads((state / "manifest.json").read_text())
    del earlier["commits"]
    (state / "manifest.json").write_text(json.dumps(earlier))
    shutil.rmtree(state / "commits")
    ImagePhashDedup(state_dir=str(state), num_buckets=4)
    prepare_state_dir(str(state), 4, "phash", 16)
    assert (state / "commits").is_dir() and json.loads((state / "manifest.json").read_text())["commits"] is True


def test_a_state_dir_that_lost_some_bucket_folders_is_refused(tmp_path):
    """A partial copy of a state directory, or a bucket folder removed by hand: loading the
    absent bucket would start it empty, and the hashes it held would be kept again."""
    from beam_phash.exact.store import prepare_state_dir
    state = tmp_path / "s"
    prepare_state_dir(str(state), 4, "phash", 16)
    assert sorted(p.name for p in state.glob("bucket-*")) == [f"bucket-0000{b}" for b in range(4)]
    ImagePhashDedup(state_dir=str(state), num_buckets=4)
    # A folder whose files are gone (each starts with an empty snapshot, and always holds one
    # or a log after that) is refused as a missing folder is.
    for f in (state / "bucket-00001").iterdir():
        f.unlink()
    with pytest.raises(ValueError, match="lacks bucket-00001 of its 4 buckets, or their files"):
        ImagePhashDedup(state_dir=str(state), num_buckets=4)
    shutil.rmtree(state / "bucket-00002")
    with pytest.raises(ValueError, match="lacks bucket-00001, bucket-00002 of its 4 buckets"):
        ImagePhashDedup(state_dir=str(state), num_buckets=4)
    for b in (0, 1, 3):  # every bucket gone: an empty state, as a new directory would be
        shutil.rmtree(state / f"bucket-0000{b}")
    ImagePhashDedup(state_dir=str(state), num_buckets=4)
    # ... seeded again when a run starts: a run whose claims reach one bucket leaves the others'
    # folders with only their lock file, and the next run must not take them for lost ones
    prepare_state_dir(str(state), 4, "phash", 16)
    for b in range(1, 4):
        (state / f"bucket-0000{b}" / ".lock").touch()
    ImagePhashDedup(state_dir=str(state), num_buckets=4)
    # A directory written before the folders were seeded: a bucket no claim reached is empty.
    old = tmp_path / "old"
    prepare_state_dir(str(old), 2, "phash", 16)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["seeded"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    for f in (old / "bucket-00000").iterdir():
        f.unlink()
    ImagePhashDedup(state_dir=str(old), num_buckets=2)


# --- incremental dedup with the job -----------------------------------------------------------

@pytest.mark.ray
def test_a_run_that_failed_on_a_lasting_ray_can_be_rerun_on_its_state(ray_cluster, tmp_path, capsys):
    """A run that fails on a Ray that outlives it (here the test session's, given by address):
    its one-run bucket actors, detached, would hold the state directory's bucket locks, and the
    rerun would be refused ("in use by another backend"). The CLI stops them after the failure.
    The failed run never committed its claims, so the rerun keeps every record whatever ids it
    reads them under now (here the sample's files from a copy of its folder)."""
    state = str(tmp_path / "state")
    base = ["--ray-address", ray_cluster, "--state", state, "--num-buckets", "4", "--no-report"]
    failing = dedup_images.main([*base, "--output", str(tmp_path / "o1"), "--max-decode-failures", "0"])
    err = capsys.readouterr().err
    assert failing == 1 and "over the failure threshold" in err
    # it claimed hashes (logged in its buckets), and committed none of them
    assert glob.glob(os.path.join(state, "bucket-*", "log-*.arrows"))
    assert not os.listdir(os.path.join(state, "commits"))
    moved = shutil.copytree(dedup_images.SAMPLE_DATA, tmp_path / "moved")
    base += ["--input", str(moved)]
    on_state = actor_name("run", 0, 1, os.path.abspath(state)).rsplit(".", 1)[1]  # "state-<digest>"
    assert not [a for a in ray.util.list_named_actors(all_namespaces=True)
                if a["namespace"] == NAMESPACE and a["name"].endswith(on_state)]
    assert dedup_images.main([*base, "--output", str(tmp_path / "o2")]) == 0, capsys.readouterr().err
    kept = read(tmp_path / "o2", "kept")
    assert len(kept) == 13 and len(read(tmp_path / "o2", "duplicates")) == 1


def _fail_check(count):
    raise RuntimeError(f"a check after {count} records failed")


@pytest.mark.ray
def test_a_run_commits_only_once_the_steps_it_waits_on_are_done(ray_cluster, tmp_path):
    """``ExactDedup.after(step)``: a step that fails fails the run before its commit, even one
    that the runner would otherwise run after the backend's end (a shuffle further away)."""
    from beam_phash.exact.config import RayBackend
    from beam_phash.exact.transform import ExactDedup
    from beam_phash.hashing import HashConfig, HashImages

    state = str(tmp_path / "state")
    hashing = HashConfig(hash_size=8)
    with pytest.raises(Exception, match="a check after"):
        with TestPipeline() as p:
            records = p | beam.Create(make_records(seed=3))
            hashed, _ = records | HashImages(hashing)
            check = (records | "Far" >> beam.Reshuffle() | "Farther" >> beam.Reshuffle()
                     | beam.combiners.Count.Globally() | beam.Map(_fail_check))
            dedup = ExactDedup(RayBackend(num_buckets=2, ray_address=ray_cluster, state_dir=state), hashing)
            _ = hashed | dedup.after(check)
    dedup.release()
    assert glob.glob(os.path.join(state, "bucket-*", "*-*.*"))
    assert not os.listdir(os.path.join(state, "commits"))
    assert not dedup.committed()  # (the transform built, for the copy .after() made and applied)


def test_a_near_duplicate_run_commits_only_once_the_steps_it_waits_on_are_done(tmp_path):
    """``NearDedup.after(step)``, as ``ExactDedup.after``: no segment is committed."""
    from beam_phash.hashing import HashConfig, HashImages
    from beam_phash.near.config import NearConfig
    from beam_phash.near.transform import NearDedup

    state = tmp_path / "state"
    hashing = HashConfig(hash_size=8)
    with pytest.raises(Exception, match="a check after"):
        with TestPipeline() as p:
            records = p | beam.Create(make_records(seed=3))
            hashed, _ = records | HashImages(hashing)
            far = records
            for n in range(12):  # as many shuffles as the search makes, and then some
                far = far | f"Far{n}" >> beam.Reshuffle()
            check = far | beam.combiners.Count.Globally() | beam.Map(_fail_check)
            dedup = NearDedup(NearConfig(max_distance=2, state_dir=str(state)), hashing)
            _ = hashed | dedup.after(check)
    assert json.loads((state / "manifest.json").read_text())["segments"] == []
    assert not dedup.committed()
    # The same run without the failing check commits, and the transform built says so for the
    # copy that was applied.
    dedup = NearDedup(NearConfig(max_distance=2, state_dir=str(state)), hashing)
    assert not dedup.committed()  # not applied yet
    with TestPipeline() as p:
        hashed, _ = p | beam.Create(make_records(seed=3)) | HashImages(hashing)
        _ = hashed | dedup.after()
    assert json.loads((state / "manifest.json").read_text())["segments"] and dedup.committed()


@pytest.mark.ray
def test_a_run_that_failed_on_a_named_backend_says_its_claims_stay(ray_cluster, tmp_path, capsys):
    """A named backend serves many runs and commits each claim as it answers: the error says
    that a rerun keeps its records under the same ids only."""
    args = ["--ray-address", ray_cluster, "--backend-name", "kept-claims", "--num-buckets", "2", "--no-report",
            "--output", str(tmp_path / "o1"), "--max-decode-failures", "0"]
    try:
        assert dedup_images.main(args) == 1
        assert ("backend 'kept-claims' keeps what this run claimed: rerun it on the same inputs, given the "
                "same way") in capsys.readouterr().err
    finally:
        for actor in ray.util.list_named_actors(all_namespaces=True):
            if actor["name"].startswith("kept-claims."):
                ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]))


@pytest.mark.ray
def test_a_run_whose_backend_cannot_be_released_commits_nothing(ray_cluster, tmp_path, monkeypatch, capsys):
    """The backend is released before the commit: a release that fails fails the run, whose
    outputs the CLI removes, uncommitted."""
    state = tmp_path / "state"

    def refuse(self):
        raise RuntimeError("release refused")

    monkeypatch.setattr(RayDedupBackend, "release", refuse)
    args = ["--ray-address", ray_cluster, "--state", str(state), "--num-buckets", "2", "--no-report"]
    assert dedup_images.main([*args, "--output", str(tmp_path / "o1")]) == 1
    assert "release refused" in capsys.readouterr().err
    assert len(glob.glob(str(state / "bucket-*" / "snapshot-*.parquet"))) > 2  # the end's snapshots
    assert not os.listdir(state / "commits")
    monkeypatch.undo()
    for actor in ray.util.list_named_actors(all_namespaces=True):  # what the refused release left
        if actor["name"].startswith("run-"):
            ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]))


class _FailingWrite(beam.PTransform):
    """Writes nothing, and fails: a disk full, a finalize refused, after the shuffles that let
    the runner finish the dedup first."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def expand(self, outputs):
        return (outputs[0] | "Far" >> beam.Reshuffle() | "Farther" >> beam.Reshuffle()
                | beam.combiners.Count.Globally() | beam.Map(_fail_check))


@pytest.mark.ray
@pytest.mark.parametrize("mode", [[], ["--max-distance", "4"]], ids=["exact", "near"])
def test_a_run_whose_outputs_fail_to_be_written_commits_nothing(ray_cluster, tmp_path, monkeypatch, capsys, mode):
    """The job's state commits once its outputs are written: a run that fails writing them adds
    nothing, and the rerun (here of the sample copied elsewhere: other ids) keeps what a run
    without --state keeps."""
    state = tmp_path / "state"
    base = ["--state", str(state), "--no-report", *(mode or ["--ray-address", ray_cluster, "--num-buckets", "2"])]
    with monkeypatch.context() as m:
        m.setattr(dedup_images, "WriteOutputs", _FailingWrite)
        assert dedup_images.main([*base, "--output", str(tmp_path / "o1")]) == 1
    assert "a check after" in capsys.readouterr().err
    if mode:
        assert json.loads((state / "manifest.json").read_text())["segments"] == []
    else:
        assert glob.glob(str(state / "bucket-*" / "log-*.arrows")) and not os.listdir(state / "commits")
    moved = shutil.copytree(dedup_images.SAMPLE_DATA, tmp_path / "moved")
    assert dedup_images.main([*base, "--input", str(moved), "--output", str(tmp_path / "o2")]) == 0
    assert dedup_images.main([*base[2:], "--input", str(moved), "--output", str(tmp_path / "o3")]) == 0  # no state
    assert len(read(tmp_path / "o2", "kept")) == len(read(tmp_path / "o3", "kept"))
    assert not read(tmp_path / "o2", "duplicates") or all(
        r["matched"] == "input" for r in read(tmp_path / "o2", "duplicates"))


@pytest.mark.ray
@pytest.mark.parametrize("stop", ["Ctrl-C", "failure"])
@pytest.mark.parametrize("mode", [[], ["--max-distance", "4"]], ids=["exact", "near"])
def test_a_run_stopped_after_its_commit_keeps_its_outputs(ray_cluster, tmp_path, monkeypatch, capsys, mode, stop):
    """Ctrl-C, or a failure, once the run's state has committed (here: once the whole pipeline has
    run). Its outputs used to be removed as an unfinished run's are, while the state went on
    holding its keepers as kept: a rerun of the same images (here copied elsewhere: other ids)
    then made each a duplicate of a record that no output held any more. Now they stay."""
    real_run = beam.Pipeline.run

    def run_then_stop(self, *args, **kwargs):
        real_run(self, *args, **kwargs).wait_until_finish()  # written and committed
        raise KeyboardInterrupt if stop == "Ctrl-C" else RuntimeError("a failure after the commit")

    state = tmp_path / "state"
    base = ["--state", str(state), "--no-report", *(mode or ["--ray-address", ray_cluster, "--num-buckets", "2"])]
    with monkeypatch.context() as m:
        m.setattr(beam.Pipeline, "run", run_then_stop)
        if stop == "Ctrl-C":
            with pytest.raises(KeyboardInterrupt):
                dedup_images.main([*base, "--output", str(tmp_path / "o1")])
        else:
            assert dedup_images.main([*base, "--output", str(tmp_path / "o1")]) == 1
    assert "the run had committed its state" in capsys.readouterr().err
    kept1 = {r["id"] for r in read(tmp_path / "o1", "kept")}
    assert kept1 and read(tmp_path / "o1", "duplicates") and read(tmp_path / "o1", "failed")
    assert not (tmp_path / "o1" / "summary.json").exists()
    moved = shutil.copytree(dedup_images.SAMPLE_DATA, tmp_path / "moved")
    assert dedup_images.main([*base, "--input", str(moved), "--output", str(tmp_path / "o2")]) == 0
    assert not read(tmp_path / "o2", "kept")
    assert {r["duplicate_of"] for r in read(tmp_path / "o2", "duplicates") if r["matched"] == "state"} == kept1


@pytest.mark.ray
def test_second_run_drops_exactly_what_the_first_kept(ray_cluster, tmp_path):
    run1, run2, state = tmp_path / "in1", tmp_path / "in2", str(tmp_path / "state")
    run1.mkdir()
    run2.mkdir()
    old, new = PHOTOS[:5], PHOTOS[5:]
    for p in old:
        shutil.copy(p, run1 / p.name)
    shutil.copy(old[0], run1 / f"again_{old[0].name}")  # a duplicate within run 1
    for p in old[1:4]:
        shutil.copy(p, run2 / f"seen_{p.name}")  # run 1 kept these images, under other names
    for p in new:
        shutil.copy(p, run2 / p.name)
    common = ["--backend", "ray", "--num-buckets", "3", "--state", state, "--no-report"]
    out1, out2 = tmp_path / "out1", tmp_path / "out2"
    # Run 1 hosts the 3 buckets in one actor, run 2 in one actor each: the state carries over.
    assert dedup_images.main(["--input", str(run1), "--output", str(out1), *common, "--num-actors", "1"]) == 0
    # Run 2 also reads one of run 1's kept files again, under the same id: the same record.
    again = str(run1 / old[4].name)
    assert dedup_images.main(["--input", str(run2), "--input", again, "--output", str(out2), *common,
                              "--num-actors", "3"]) == 0

    kept1 = {r["image_phash"]: r["id"] for r in read(out1, "kept")}
    assert len(kept1) == 5
    kept2, dups2 = read(out2, "kept"), read(out2, "duplicates")
    # Dropped: exactly the new records whose image run 1 kept, each pointing at run 1's keeper.
    assert sorted(basename(r["id"]) for r in dups2) == sorted(f"seen_{p.name}" for p in old[1:4])
    assert all(r["duplicate_of"] == kept1[r["image_phash"]] for r in dups2)
    # ... said to be matches of the state, and counted as such; run 1's own duplicate is its input's
    assert [r["matched"] for r in dups2] == ["state"] * 3
    assert json.loads((out2 / "summary.json").read_text())["state_matches"] == 3
    assert [r["matched"] for r in read(out1, "duplicates")] == ["input"]
    # Kept: everything new once per image, and run 1's keeper read again stays its hash's keeper
    # (as a rerun of a failed job must: it may have claimed its hashes before failing).
    assert sorted(basename(r["id"]) for r in kept2) == sorted([p.name for p in new] + [old[4].name])
    assert set(kept1) & {r["image_phash"] for r in kept2} == {h for h, i in kept1.items() if i == again}
    assert sorted(os.listdir(state)) == ["bucket-00000", "bucket-00001", "bucket-00002", "commits", "manifest.json"]
    assert len(os.listdir(os.path.join(state, "commits"))) == 2  # each run committed
    assert not [a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith("run-")]


# --- actor faults -----------------------------------------------------------------------------

_killed = []


class KillActorOnce(beam.DoFn):
    """Passes records through; from the ``after``-th on, SIGKILLs the process of actor ``actor``
    of ``num_actors`` once (as the OOM killer would), as soon as that actor exists."""

    def __init__(self, backend_name: str, actor: int, num_actors: int, after: int, state_dir=None):
        self._name = actor_name(backend_name, actor, num_actors, state_dir)
        self._after = after
        self._seen = 0

    def process(self, record):
        self._seen += 1
        if not _killed and self._seen >= self._after:
            try:
                actor = ray.get_actor(self._name, namespace=ray_cluster.NAMESPACE)
            except ValueError:
                actor = None
            if actor is not None:
                pid = ray.get(actor.stats.remote())[0]["pid"]
                os.kill(pid, signal.SIGKILL)
                _killed.append(pid)
        yield record


def _run_with_a_kill(records, name, **kwargs):
    _killed.clear()
    p = TestPipeline()
    outputs = (p | beam.Create(records, reshuffle=False)
               | "KillActor0" >> beam.ParDo(KillActorOnce(name, actor=0, num_actors=2, after=8,
                                                         state_dir=kwargs.get("state_dir")))
               | ImagePhashDedup(backend="ray", backend_name=name, num_buckets=4, num_actors=2, batch_size=4,
                                 claim_batch=4, max_in_flight=2, **kwargs).with_outputs())
    assert_that(tagged(outputs), check_outputs(records))
    p.run().wait_until_finish()


@pytest.mark.ray
def test_a_killed_bucket_actor_restarts_from_its_state_and_the_output_is_exact(ray_cluster, tmp_path):
    records = make_records(seed=11)
    name = "fault-recovery-test"
    backend = RayDedupBackend(ray_cluster, name, 4, state_dir=str(tmp_path / "state"), num_actors=2)
    try:
        _run_with_a_kill(records, name, state_dir=str(tmp_path / "state"))
        assert len(_killed) == 1, "the actor was never killed"
        stats = backend.connect().stats()
        assert [s["bucket"] for s in stats] == [0, 1, 2, 3]
        assert stats[0]["pid"] == stats[2]["pid"] != _killed[0]  # Ray restarted it ...
        expected = len(oracle(records)[0])
        assert sum(s["hashes"] for s in stats) == expected  # ... holding every hash of both its buckets
        assert stats[0]["hashes"] and stats[2]["hashes"]
    finally:
        backend.release()


@pytest.mark.ray
def test_an_actor_another_client_just_created_is_not_called_lost(ray_cluster, monkeypatch):
    """Two workers start at once. One looks the actor up just before the other registers it and
    marks it created (a Flink run hit this): it must then find the actor, not report its buckets
    lost."""
    name = "creation-race-test"
    backend = RayDedupBackend(ray_cluster, name, 4, num_actors=2).connect()
    try:
        created = get_or_create_actor(name, 0, 2, 4)  # the other client: registered and marked
        real, looked_up = ray.get_actor, []

        def before_it_was_registered(actor, namespace=None):
            looked_up.append(actor)
            if len(looked_up) == 1:
                raise ValueError(f"Failed to look up actor with name '{actor}'")
            return real(actor, namespace=namespace)

        monkeypatch.setattr(ray, "get_actor", before_it_was_registered)
        assert get_or_create_actor(name, 0, 2, 4)._actor_id == created._actor_id
        assert len(looked_up) == 2
    finally:
        backend.release()


@pytest.mark.ray
def test_backends_of_one_name_with_and_without_a_state_dir_keep_apart(ray_cluster, tmp_path):
    """A backend's state directory is part of what it is (its actors' names carry it): one of
    the same name with another layout may run beside it, and releasing it leaves the other's
    records alone, so the other's dead actor is still reported lost, not recreated empty."""
    from beam_phash.exact.store import prepare_state_dir
    name = "one-name-two-backends"
    plain = RayDedupBackend(ray_cluster, name, 4, num_actors=2).connect().start_actors()
    try:
        state = str(tmp_path / "state")
        prepare_state_dir(state, 8, "phash", 16)
        stateful = RayDedupBackend(ray_cluster, name, 8, state_dir=state, num_actors=1).connect().start_actors()
        stateful.release()
        ray.kill(get_or_create_actor(name, 0, 2, 4), no_restart=True)
        with pytest.raises(BackendError, match=f"buckets 0, 2 of dedup backend '{name}' were lost"):
            get_or_create_actor(name, 0, 2, 4)
    finally:
        plain.release()


@pytest.mark.ray
def test_a_named_backend_refuses_hashes_of_another_width(ray_cluster):
    """Its first claim fixes the width, whichever buckets a later claim reaches (an empty bucket
    took hashes of any width)."""
    name = "width-test"
    first = RayDedupBackend(ray_cluster, name, 4, num_actors=2).connect()
    try:
        assert first.claim([bytes(32)], ["a"]) == [None]
        later = RayDedupBackend(ray_cluster, name, 4).connect()
        for h in (bytes([1]) * 8, bytes(8)):  # a bucket that holds nothing yet, the one that holds "a"'s
            with pytest.raises(ValueError, match=f"dedup backend '{name}' holds 32-byte hashes, this "
                                                 "pipeline claims 8-byte ones"):
                later.claim([h], ["b"])
        assert later.claim([bytes(32)], ["c"]) == ["a"]
    finally:
        first.release()
    fresh = RayDedupBackend(ray_cluster, name, 4).connect()  # released: a new backend of that name
    try:
        assert fresh.claim([bytes(8)], ["d"]) == [None]
    finally:
        fresh.release()


@ray.remote
class _EarlierBucketActor:
    """A bucket actor as the code before 2026-12-05 answered a claim: with the keepers alone."""

    def claim(self, packed, width, owners, labels, buckets):
        return [None] * len(labels)


@pytest.mark.ray
def test_a_backend_started_by_another_version_says_how_to_release_it(ray_cluster):
    """A named backend outlives the code that started it. Its actors answering in an earlier
    shape failed the claim with a bare "not enough values to unpack"."""
    name = "earlier-version-test"
    _EarlierBucketActor.options(name=actor_name(name, 0, 1, None), namespace=NAMESPACE, lifetime="detached").remote()
    client = RayDedupBackend(ray_cluster, name, 1, num_actors=1).connect()
    try:
        with pytest.raises(BackendError, match=r"bucket 0 of dedup backend 'earlier-version-test' answered as another "
                                               r"version of beam-phash does: .* \(RayDedupBackend\(address, "
                                               r"'earlier-version-test', 1\)\.connect\(\)\.release\(\)"):
            client.claim([bytes(8)], ["a"])
    finally:
        client.release()  # as the error says: the earlier actors go
    assert not [a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(name)]


@pytest.mark.ray
def test_without_state_a_killed_bucket_fails_the_run_naming_it(ray_cluster):
    records = make_records(seed=12)
    name = "fault-failure-test"
    backend = RayDedupBackend(ray_cluster, name, 4, num_actors=2).connect()
    try:
        with pytest.raises(Exception, match=r"buckets 0, 2 of dedup backend 'fault-failure-test'"):
            _run_with_a_kill(records, name)
        assert len(_killed) == 1
        # And they are never silently recreated empty.
        with pytest.raises(BackendError, match="buckets 0, 2 of dedup backend 'fault-failure-test' were lost"):
            get_or_create_actor(name, 0, 2, 4)
    finally:
        backend.release()


@pytest.mark.ray
def test_a_process_that_exits_while_its_embedded_ray_starts_leaves_no_ray_process():
    """A Ctrl-C (or any exit) while the embedded Ray is still starting: the stop at exit waits for
    the start and then stops the node, so none of its processes (the raylet's agents included,
    which left alone outlived the job by a minute) stays behind. The start is held open after
    Ray's processes are up, so the exit lands inside it every time."""
    import subprocess
    import sys

    script = """
import time
from beam_phash.exact import ray_cluster, ray_private
real = ray_private.start_lean_head
def held(params):
    node = real(params)
    time.sleep(3)  # every process is up, and the start has not returned yet
    return node
ray_private.start_lean_head = held
ray_cluster.start_local_ray_soon()
time.sleep(2)
print("starting" if not ray_cluster._head._ready.is_set() else "up", flush=True)
"""
    # A session of its own: every process it starts is in it (Ray's retitle themselves "ray::...").
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert out.split() == ["starting"], (out, err)
    left = left_in_session(proc.pid)  # a graceful stop takes a moment; left alone, agents stay a minute
    assert not left, left


_FAILING_STARTS = """
import os, sys
import ray
from ray._private.node import Node
from beam_phash.exact import ray_cluster
real, starts = Node.start_ray_processes, []
def failing(self):  # after the GCS is up on the head's port, as Ray's 30 s raylet wait fails
    starts.append(self.gcs_address)
    if len(starts) <= FAILURES:
        raise Exception("The current node timed out during startup (test)")
    return real(self)
Node.start_ray_processes = failing
address = ray_cluster.start_local_ray_soon()
try:
    ray_cluster.start_local_ray()
except Exception as e:
    print("FAILED", e, "GCS", len(ray_cluster._children(os.getpid(), ray_cluster._named("gcs_server"))), flush=True)
    sys.exit(0)
print("UP", address, ",".join(starts), ray.get(ray.remote(lambda: 7).remote()),
      len(ray_cluster._children(os.getpid(), ray_cluster._named("gcs_server"))), flush=True)
"""


@pytest.mark.ray
@pytest.mark.parametrize("failures", [1, ray_cluster.START_ATTEMPTS])
def test_a_failed_start_of_the_embedded_ray_is_tried_again_and_leaves_nothing(failures):
    """The embedded head's start fails after its GCS is up (on a loaded machine Ray's fixed 30 s
    wait for the raylet ran out once): it is started again on the same port, the address already
    handed out, with only the new start's processes running; when every start fails, the error is
    raised and no Ray process is left behind."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", f"FAILURES = {failures}\n" + _FAILING_STARTS],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    if failures < ray_cluster.START_ATTEMPTS:
        address = out.split("UP ")[1].split()[0]
        assert out.split("UP ")[1].split()[1:] == [",".join([address] * (failures + 1)), "7", "1"], (out, err)
        assert f"the embedded Ray head at {address} did not start" in err
    else:
        # and the failed starts' GCS servers were stopped at once, not at this process's exit
        assert "FAILED The current node timed out during startup (test) GCS 0" in out, (out, err)
    left = left_in_session(proc.pid)
    assert not left, left


_WORKER_DURING_A_FAILED_START = """
import os, subprocess, sys, time
import ray
from ray._private.node import Node
from beam_phash.exact import ray_cluster
real, starts = Node.start_ray_processes, []
def failing(self):  # the GCS is up and answers for a while, then the start fails
    starts.append(self.gcs_address)
    if len(starts) == 1:
        time.sleep(20)
        raise Exception("The current node timed out during startup (test)")
    return real(self)
Node.start_ray_processes = failing
address = ray_cluster.start_local_ray_soon()
worker = subprocess.Popen([sys.executable, "-c",
    "import ray, sys; from beam_phash.exact import ray_cluster; ray_cluster.connect(sys.argv[1], starting=True); "
    "print('JOINED', ray.get(ray.remote(lambda: 7).remote()), flush=True); ray.shutdown()", address],
    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
ray_cluster.start_local_ray()
out, err = worker.communicate(timeout=400)
print("STARTS", len(starts), "WORKER", worker.returncode, out.strip(), flush=True)
print(err[-3000:], file=sys.stderr)
"""


@pytest.mark.ray
def test_a_worker_that_joined_a_failed_start_of_the_embedded_ray_joins_the_next():
    """Beam's other worker processes join the embedded Ray by address as soon as its GCS answers
    (the launcher starts it). When that start fails and is tried again on the same port, a
    worker that reached the failed start's cluster joins the new one instead of failing the job."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", _WORKER_DURING_A_FAILED_START],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert "STARTS 2 WORKER 0 JOINED 7" in out, (out, err[-3000:])
    left = left_in_session(proc.pid)
    assert not left, left


def test_a_fork_not_yet_executing_its_program_is_killed_at_a_ctrl_c(monkeypatch):
    """A child Ray's start forked and that has not yet executed its program sets its
    parent-death signal only then: if this process ends first, it never does, and the GCS it
    becomes outlives the job. ``stop_before_exit`` kills such copies of this process, and no
    child that runs a program of its own."""
    import subprocess
    import sys
    import time

    fork = os.fork()
    if fork == 0:  # the copy, as between Ray's fork and its exec
        try:
            time.sleep(60)
        finally:
            os._exit(0)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        deadline = time.monotonic() + 30
        while other.pid in ray_cluster._forks_not_executed() and time.monotonic() < deadline:
            time.sleep(0.05)  # until it runs its own command line
        assert fork in ray_cluster._forks_not_executed() and other.pid not in ray_cluster._forks_not_executed()
        monkeypatch.setattr(ray_cluster, "_started_here", True)
        monkeypatch.setattr(ray_cluster, "_head", ray_cluster._head)  # (restored after)
        # (not this test process's own raylet, should a test here have started one)
        monkeypatch.setattr(ray_cluster, "_named", lambda name: lambda pid: False)
        ray_cluster.stop_before_exit()
        _, status = os.waitpid(fork, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
        try:
            os.kill(fork, signal.SIGKILL)
            os.waitpid(fork, 0)
        except (OSError, ChildProcessError):
            pass


def test_the_processes_below_a_process_are_found_whatever_their_names():
    """``stop_before_exit`` finds the raylet by name among this process's children and kills what
    is below it; /proc/PID/stat names a process in parentheses, and a name may hold both."""
    import subprocess
    import sys
    import time

    odd = "a) b (c"
    script = (f"import subprocess, sys, time; open('/proc/self/comm', 'w').write({odd!r}); "
              "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 30
        while not ray_cluster._children(os.getpid(), ray_cluster._named(odd)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ray_cluster._children(os.getpid(), ray_cluster._named(odd)) == [proc.pid]
        assert ray_cluster._parents()[proc.pid] == os.getpid()
        while len(ray_cluster._descendants([proc.pid])) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        below = ray_cluster._descendants([proc.pid])
        assert len(below) == 1 and ray_cluster._parents()[below[0]] == proc.pid
        assert proc.pid not in ray_cluster._descendants([proc.pid])
    finally:
        for pid in ray_cluster._descendants([proc.pid]):
            os.kill(pid, signal.SIGKILL)
        proc.kill()
        proc.wait()
