"""The job's Parquet reader: every row of every row group once, in spans of row groups, each file
read as itself whatever its name."""
import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines import parquet_read
from pipelines.input_paths import StoredFiles, literal


def _file(path, groups, prefix="r"):
    """``groups`` row groups of 3 rows each (about 1.3 kB a row group)."""
    ids = [f"{prefix}{i:03d}" for i in range(groups * 3)]
    table = pa.table({"id": ids, "blob": [i.encode() * 50 for i in ids], "n": list(range(len(ids)))})
    pq.write_table(table, path, row_group_size=3)
    return table


@pytest.mark.parametrize("span, spans", [(1, 40), (3000, 14), (1 << 30, 1)])
def test_spans_cover_every_row_group_once(tmp_path, monkeypatch, span, spans):
    _file(tmp_path / "a.parquet", 40)
    monkeypatch.setattr(parquet_read, "SPAN_BYTES", span)
    found = list(parquet_read.row_groups(str(tmp_path / "a.parquet")))
    assert [i for _, start, stop in found for i in range(start, stop)] == list(range(40))
    assert len(found) == spans


@pytest.mark.parametrize("rows", [True, False], ids=["rows", "tables"])
def test_every_row_once_with_names_that_look_like_patterns(tmp_path, monkeypatch, rows):
    """`p[1].parquet` beside `p1.parquet`: each is read as itself (Beam's parquetio, matching each
    file's name again as a pattern, read p1 twice)."""
    monkeypatch.setattr(parquet_read, "SPAN_BYTES", 3000)
    tables = [_file(tmp_path / "p1.parquet", 7, "a"), _file(tmp_path / "p[1].parquet", 5, "b")]
    expected = [(r["id"], r["n"]) for t in tables for r in t.to_pylist()]
    with TestPipeline() as p:
        read = p | parquet_read.ReadParquet([literal(str(tmp_path / "p1.parquet")),
                                             literal(str(tmp_path / "p[1].parquet"))],
                                            columns=None if rows else ["id", "n"], rows=rows)
        if rows:
            read, _ = read
        else:
            read = read | "Rows" >> beam.FlatMap(lambda table: table.to_pylist())
        assert_that(read | "Pairs" >> beam.Map(lambda r: (r["id"], r["n"])), equal_to(expected))


@pytest.mark.parametrize("binary, string", [(pa.binary(), pa.string()), (pa.large_binary(), pa.large_string())])
def test_rows_that_hold_only_a_path_get_its_bytes(tmp_path, binary, string):
    """Hugging Face's Image layout without its bytes (Dataset.to_parquet of local files): each
    row with a path and no bytes gets the file's, an absolute path as it is, a relative one in
    the Parquet file's folder; rows with bytes, a null image, a null or empty path are left as
    they are; a file that cannot be read leaves the row's bytes null and says why, by row. The
    table is read in two chunks, as row groups come."""
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.jpg").write_bytes(b"relative")
    (tmp_path / "b.jpg").write_bytes(b"absolute")
    source = str(tmp_path / "x.parquet")
    values = [{"bytes": None, "path": "img/a.jpg"}, {"bytes": b"kept", "path": "img/a.jpg"}, None,
              {"bytes": None, "path": str(tmp_path / "b.jpg")}, {"bytes": None, "path": "gone.jpg"},
              {"bytes": None, "path": ""}, {"bytes": None, "path": None}, {"bytes": None, "path": "img"}]
    kind = pa.struct([("bytes", binary), ("path", string)])
    table = pa.Table.from_batches([pa.record_batch([pa.array(values[:3], kind), pa.array(range(3))], ["image", "n"]),
                                   pa.record_batch([pa.array(values[3:], kind), pa.array(range(3, 8))], ["image", "n"])])
    filled, failed = parquet_read.with_path_images(table, "image", source, StoredFiles())
    assert filled.schema == table.schema and filled.column("n").to_pylist() == list(range(8))
    got = [v if v is None else v["bytes"] for v in filled.column("image").to_pylist()]
    assert got == [b"relative", b"kept", None, b"absolute", None, None, None, None]
    assert [v if v is None else v["path"] for v in filled.column("image").to_pylist()] == [
        v if v is None else v["path"] for v in values]
    assert sorted(failed) == [4, 7]
    assert failed[4].startswith(f"the row's image has no bytes and its path 'gone.jpg' (in the Parquet file's "
                                f"folder: {tmp_path}/gone.jpg) cannot be read: FileNotFoundError"), failed[4]
    assert failed[7].endswith(f"cannot be read: IsADirectoryError: [Errno 21] Is a directory: '{tmp_path}/img'"), failed[7]
    # A column of bytes, or of another name, is left alone
    plain = pa.table({"image": [b"x"], "n": [0]})
    assert parquet_read.with_path_images(plain, "image", source, StoredFiles()) == (plain, {})
    assert parquet_read.with_path_images(table, "other", source, StoredFiles()) == (table, {})


def test_bytes_typed_null_take_the_bytes_read_and_paths_are_normalised(tmp_path):
    """pyarrow types a column of nulls as null: a struct whose bytes are all null takes binary
    bytes when they are read. A relative path's '..' is taken away, on an object store too, whose
    key 'a/../b' would be another object."""
    (tmp_path / "a.jpg").write_bytes(b"A")
    table = pa.table({"image": [{"bytes": None, "path": "a.jpg"}, None]})
    assert table.schema.field("image").type.field("bytes").type == pa.null()
    filled, failed = parquet_read.with_path_images(table, "image", str(tmp_path / "x.parquet"), StoredFiles())
    assert filled.schema.field("image").type == pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    assert filled.column("image").to_pylist() == [{"bytes": b"A", "path": "a.jpg"}, None] and failed == {}
    assert parquet_read.image_file("../photos/p.jpg", "s3://b/data/train.parquet") == "s3://b/photos/p.jpg"
    assert parquet_read.image_file("./img/../p.jpg", "/d/e/x.parquet") == "/d/e/p.jpg"
    assert parquet_read.image_file("gs://c/../p.jpg", "/d/x.parquet") == "gs://c/../p.jpg"  # as given
    # never past the bucket (as joined), and a key's '//' kept
    assert parquet_read.image_file("../../y.jpg", "gs://b/d/x.parquet") == "gs://b/d/../../y.jpg"
    assert parquet_read.image_file("a//./c.jpg", "s3://b/d/x.parquet") == "s3://b/d/a//c.jpg"


def test_an_empty_file_or_group_has_no_rows_to_read(tmp_path):
    """A Parquet file of no rows (one row group of none, as pyarrow writes it) crashed the
    process (pyarrow's indices_nonzero on a chunked array of no chunks)."""
    kind = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    pq.write_table(pa.table({"image": pa.array([], kind)}), tmp_path / "empty.parquet")
    assert pq.ParquetFile(tmp_path / "empty.parquet").metadata.num_row_groups == 1
    out = list(parquet_read.ReadRowGroupsDoFn(None, rows=True, image_paths="image").process(
        (str(tmp_path / "empty.parquet"), 0, 1)))
    assert out == []
    chunks = pa.chunked_array([pa.array([{"bytes": None, "path": "a"}], kind), pa.array([], kind),
                               pa.array([{"bytes": b"x", "path": "b"}, {"bytes": None, "path": "c"}], kind)])
    assert parquet_read.path_rows(pa.table({"image": chunks}), "image") == [0, 2]


def test_rows_to_read_go_out_in_small_tables(tmp_path, monkeypatch):
    """A row group's path-only rows go to the workers in tables of PATH_ROWS rows (a group of a
    million paths is not read, and held, by one worker); rows with bytes stay in the main output."""
    monkeypatch.setattr(parquet_read, "PATH_ROWS", 3)
    kind = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    images = [{"bytes": b"x", "path": None} if i % 4 == 0 else {"bytes": None, "path": f"{i}.jpg"} for i in range(10)]
    pq.write_table(pa.table({"image": pa.array(images, kind), "n": list(range(10))}), tmp_path / "x.parquet")
    out = list(parquet_read.ReadRowGroupsDoFn(None, rows=True, image_paths="image").process(
        (str(tmp_path / "x.parquet"), 0, 1)))
    tables = [o.value for o in out if isinstance(o, beam.pvalue.TaggedOutput)]
    assert all(o.tag == parquet_read.TO_READ for o in out if isinstance(o, beam.pvalue.TaggedOutput))
    assert [t.num_rows for _, t in tables] == [3, 3, 1]
    assert sorted(n for _, t in tables for n in t.column("n").to_pylist()) == [1, 2, 3, 5, 6, 7, 9]
    assert sorted(r["n"] for r in out if isinstance(r, dict)) == [0, 4, 8]
