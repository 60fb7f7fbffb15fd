"""pipelines.hash_samples prints every hash and the closest pairs."""
from conftest import DATA
from pipelines import hash_samples


def test_prints_hashes_and_closest_pairs(capsys):
    assert hash_samples.main([str(DATA / "pool.jpg"), str(DATA / "pool.jpg"), str(DATA / "snow.jpg")]) == 0
    out = capsys.readouterr().out
    assert "3 images, phash at hash_size 16 = 256 bits" in out
    assert "ebdafc00b320242089a9a7ed68ce239fa383dc240c398730e4f176fe537ee39e" in out
    assert "     0  pool.jpg ~ pool.jpg" in out
