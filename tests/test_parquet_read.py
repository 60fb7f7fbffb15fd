"""The job's Parquet reader: every row of every row group once, in spans of row groups, each file
read as itself whatever its name."""
import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines import parquet_read
from pipelines.input_paths import literal


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
        if not rows:
            read = read | "Rows" >> beam.FlatMap(lambda table: table.to_pylist())
        assert_that(read | "Pairs" >> beam.Map(lambda r: (r["id"], r["n"])), equal_to(expected))
