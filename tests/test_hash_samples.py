"""pipelines.hash_samples prints every hash and the closest pairs."""
import pathlib

from conftest import DATA
from pipelines import hash_samples


def test_prints_hashes_and_closest_pairs(capsys):
    assert hash_samples.main([str(DATA / "pool.jpg"), str(DATA / "pool.jpg"), str(DATA / "snow.jpg")]) == 0
    out = capsys.readouterr().out
    assert "3 images, phash at hash_size 16 = 256 bits" in out
    assert "052cffc505528244dd84ca4e310ddba508ce99a835e466c24728e915416b1595" in out
    assert "     0  pool.jpg ~ pool.jpg" in out


def test_without_paths_it_hashes_the_shipped_samples_and_a_missing_path_is_an_error(capsys, tmp_path):
    """The default is the sample photos the wheel ships (``pipelines/sample_data``), not the
    source tree's tests/data, which an installed wheel does not have."""
    import pytest

    from pipelines.dedup_images import SAMPLE_DATA

    assert hash_samples.DEFAULT_INPUT.resolve() == pathlib.Path(SAMPLE_DATA).resolve()
    assert hash_samples.main(["--algorithm", "ahash", "--hash-size", "8"]) == 0
    assert "images, ahash at hash_size 8 = 64 bits" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        hash_samples.main([str(tmp_path / "nowhere")])
    assert exit_info.value.code == 2
    assert "no such file or directory" in capsys.readouterr().err
