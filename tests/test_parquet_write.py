"""The job's Parquet writer: every row once, every output readable (empty ones too), nothing of a
failed attempt published, and a finalize step that is safe to run again."""
import glob
import random

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines.parquet_write import FinalizeDoFn, WriteParquet, _PartWriter

SCHEMAS = {
    "kept": pa.schema([("id", pa.string()), ("n", pa.int64())]),
    "failed": pa.schema([("id", pa.string()), ("error", pa.string())]),
}


def read(directory, name):
    files = sorted(glob.glob(f"{directory}/{name}/*.parquet"))
    assert files, f"no file in {name}/"
    tables = [pq.read_table(f) for f in files]
    assert all(t.schema == SCHEMAS[name] for t in tables)
    return [row for t in tables for row in t.to_pylist()], files


def test_rows_written_once_and_empty_outputs_readable(tmp_path):
    rows = [{"id": f"r{i}", "n": i, "ignored": "x"} for i in range(2500)]
    random.Random(3).shuffle(rows)
    with TestPipeline() as p:
        kept = p | "Kept" >> beam.Create(rows)
        failed = p | "Failed" >> beam.Create([]).with_output_types(dict)
        written = {"kept": kept, "failed": failed} | WriteParquet(str(tmp_path), SCHEMAS)
        assert_that(written, equal_to([("kept", 2500), ("failed", 0)]))
    got, files = read(tmp_path, "kept")
    assert sorted(got, key=lambda r: r["n"]) == [{"id": f"r{i}", "n": i} for i in range(2500)]
    n = len(files)
    assert files == [f"{tmp_path}/kept/part-{i:05d}-of-{n:05d}.parquet" for i in range(n)]
    assert read(tmp_path, "failed")[0] == []
    assert not glob.glob(f"{tmp_path}/.tmp-*")


def test_finalize_publishes_reported_parts_only_and_is_idempotent(tmp_path):
    tmp = tmp_path / ".tmp-run"
    tmp.mkdir()

    def part(name, ids):
        w = _PartWriter(str(tmp), name, SCHEMAS[name])
        for i in ids:
            w.add({"id": i, "n": 1} if name == "kept" else {"id": i, "error": "bad"})
        return w.close()

    parts = [part("kept", ["a", "b"]), part("kept", ["c"]), part("failed", ["f"])]
    orphan = part("kept", ["from-a-failed-attempt"])
    dofn = FinalizeDoFn(str(tmp_path), str(tmp), SCHEMAS)
    assert sorted(dofn.process(None, parts)) == [("failed", 1), ("kept", 3)]
    assert sorted(r["id"] for r in read(tmp_path, "kept")[0]) == ["a", "b", "c"]
    assert [r["id"] for r in read(tmp_path, "failed")[0]] == ["f"]
    assert not tmp.exists() and orphan.path.startswith(str(tmp))
    before = {f: open(f, "rb").read() for f in glob.glob(f"{tmp_path}/*/*.parquet")}
    assert sorted(dofn.process(None, parts)) == [("failed", 1), ("kept", 3)]  # a retried finalize
    assert {f: open(f, "rb").read() for f in glob.glob(f"{tmp_path}/*/*.parquet")} == before
