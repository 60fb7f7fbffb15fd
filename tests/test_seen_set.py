"""beam_phash.SeenSet against a Python dict oracle: first claimant wins, retries are idempotent,
owners come as numpy arrays, array('Q') or lists, and bad input is a ValueError."""
import array
import random
import re

import numpy as np
import pytest

import beam_phash


def oracle_claims(pairs):
    first = {}
    out = []
    for h, owner in pairs:
        out.append(first.setdefault(h, owner) == owner)
    return out


def test_matches_a_dict_oracle_on_shuffled_claims_with_retries():
    rng = random.Random(3)
    hashes = [rng.randbytes(32) for _ in range(3000)]
    # Each hash claimed by 1-4 owners, some owners claiming twice (a retried bundle).
    pairs = [(h, rng.getrandbits(64)) for h in hashes for _ in range(rng.randint(1, 4))]
    pairs += rng.sample(pairs, 500)
    rng.shuffle(pairs)
    s = beam_phash.SeenSet(32)
    got = []
    for start in range(0, len(pairs), 777):
        chunk = pairs[start:start + 777]
        got += s.check_and_insert(b"".join(h for h, _ in chunk),
                                  np.array([o for _, o in chunk], dtype=np.uint64))
    assert got == oracle_claims(pairs)
    assert len(s) == len(set(hashes))
    # Everything again: only the first claimants win.
    firsts = {}
    for h, o in pairs:
        firsts.setdefault(h, o)
    again = s.check_and_insert(b"".join(hashes), [firsts[h] for h in hashes])
    assert all(again) and len(s) == len(set(hashes))
    assert s.owners_of(b"".join(hashes[:3]) + bytes(32)) == [firsts[h] for h in hashes[:3]] + [None]


@pytest.mark.parametrize("owners", [np.array([7, 8], dtype=np.uint64), array.array("Q", [7, 8]), [7, 8],
                                    np.array([7, 8], dtype=">u8"), np.array([7, 0, 8], dtype=np.uint64)[::2]],
                         ids=["numpy", "array", "list", "big-endian", "strided"])
def test_owner_containers(owners):
    """Each container gives the owners' values, whatever their byte order or stride."""
    s = beam_phash.SeenSet(8)
    assert s.check_and_insert(bytearray(b"a" * 8 + b"b" * 8), owners) == [True, True]
    assert s.check_and_insert(memoryview(b"a" * 8), [9]) == [False]
    assert s.owners_of(b"a" * 8 + b"b" * 8) == [7, 8]


def test_claim_entries_gives_each_keeper_s_place_in_insertion_order():
    s = beam_phash.SeenSet(4, keep_labels=True)
    answers, entries = s.claim_entries(b"aaaabbbbaaaa", [1, 2, 3], ["id-1", "id-2", "id-3"])
    assert answers == [None, None, "id-1"] and np.frombuffer(entries, "<i8").tolist() == [-1, -1, 0]
    answers, entries = s.claim_entries(b"ccccbbbbbbbb", [4, 2, 5], ["id-4", "id-2", "id-5"])
    assert answers == [None, None, "id-2"] and np.frombuffer(entries, "<i8").tolist() == [-1, -1, 1]
    assert s.claim_entries(b"cccc", [6], ["x"])[1] == (2).to_bytes(8, "little")


def test_claim_returns_the_keepers_label():
    s = beam_phash.SeenSet(4, keep_labels=True)
    assert s.claim(b"aaaabbbbaaaa", [1, 2, 3], ["id-1", "id-2", "id-3"]) == [None, None, "id-1"]
    assert s.claim(b"aaaa", [1], ["id-1"]) == [None]  # the keeper again: a retry
    with pytest.raises(ValueError, match="keep_labels=True"):
        beam_phash.SeenSet(4).claim(b"aaaa", [1], ["x"])


@pytest.mark.parametrize("hashes, owners, message", [
    (b"x" * 31, [1], "multiple of 32 bytes"),
    (b"x" * 64, [1], "2 hashes but 1 owners"),
])
def test_bad_lengths_are_value_errors(hashes, owners, message):
    with pytest.raises(ValueError, match=message):
        beam_phash.SeenSet(32).check_and_insert(hashes, owners)


def test_bad_owner_values_and_width():
    for bad in (-1, 2**64, "1", None):  # a ValueError naming the argument, not PyO3's OverflowError
        with pytest.raises(ValueError, match=f"owners must be ints from 0 to 2\\*\\*64 - 1, got {re.escape(repr(bad))}"):
            beam_phash.SeenSet(8).check_and_insert(b"x" * 8, [bad])
    for hash_bytes in (0, -1, 1025, 2**64):  # not PyO3's OverflowError for the last
        with pytest.raises(ValueError, match=f"hash_bytes must be between 1 and 1024, got {hash_bytes}"):
            beam_phash.SeenSet(hash_bytes)


def test_entries_rebuild_the_set():
    s = beam_phash.SeenSet(4, keep_labels=True)
    s.claim(b"aaaabbbbcccc", [1, 2, 3], ["id-1", "id-2", ""])
    hashes, owners, labels = s.entries()
    assert (hashes, labels) == (b"aaaabbbbcccc", ["id-1", "id-2", ""])
    copy = beam_phash.SeenSet(4, keep_labels=True)
    copy.claim(hashes, np.frombuffer(owners, dtype="<u8"), labels)
    assert copy.entries() == s.entries()
    assert copy.claim(b"bbbb", [9], ["late"]) == ["id-2"]
