"""pipelines.hash_samples prints every hash and the closest pairs."""
from conftest import DATA
from pipelines import hash_samples


def test_prints_hashes_and_closest_pairs(capsys):
    assert hash_samples.main([str(DATA / "pool.jpg"), str(DATA / "pool.jpg"), str(DATA / "snow.jpg")]) == 0
    out = capsys.readouterr().out
    assert "3 images, phash at hash_size 16 = 256 bits" in out
    assert "052cffc505528244dd84ca4e310ddba508ce99a835e466c24728e915416b1595" in out
    assert "     0  pool.jpg ~ pool.jpg" in out
