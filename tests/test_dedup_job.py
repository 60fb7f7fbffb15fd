"""The main job on the bundled sample: outputs, summary, and one-line configuration errors."""
import glob
import json

import pyarrow.parquet as pq
import pytest

from pipelines import dedup_images


def read(out, name):
    return pq.read_table(glob.glob(f"{out}/{name}/*.parquet")).to_pylist()


@pytest.mark.parametrize("extra", [[], ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]],
                         ids=["in-process", "multi-process"])
def test_sample_dataset(tmp_path, capsys, extra):
    out = tmp_path / "out"
    assert dedup_images.main(["--output", str(out), "--backend", "state", *extra]) == 0
    kept, dups, failed = read(out, "kept"), read(out, "duplicates"), read(out, "failed")
    name = lambda r: r["id"].rsplit("/", 1)[-1]  # noqa: E731
    assert sorted(map(name, failed)) == ["broken_truncated.jpg", "not_an_image.jpg"]
    assert all(r["error"] for r in failed)
    assert len(kept) == 7 and len({r["image_phash"] for r in kept}) == 7
    pairs = {frozenset((name(r), r["duplicate_of"].rsplit("/", 1)[-1])) for r in dups}
    assert pairs == {frozenset(p) for p in [("skagen.jpg", "skagen_copy.jpg"),
                                            ("sunset.jpg", "sunset_as_png.png"),
                                            ("jesper.jpg", "jesper_recompressed.jpg")]}
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["inputs"], summary["kept"], summary["duplicates"], summary["failed"]) == (12, 7, 3, 2)
    assert summary["adds_up"] and summary["bits"] == 256 and summary["images_per_second"] > 0
    assert "12 images: 7 kept, 3 duplicates, 2 failed (adds up)" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--input", "/nonexistent/dir/*.jpg"], "matched no files"),
    (["--output", "/proc/forbidden"], "is not writable"),
    (["--hash-size", "2"], "hash_size must be between"),
])
def test_configuration_errors_are_one_line(tmp_path, capsys, args, message):
    argv = ["--output", str(tmp_path / "o"), *args]
    assert dedup_images.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
