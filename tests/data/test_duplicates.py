import numpy as np

from headstart.data import find_duplicates


def test_exact_near_and_distinct():
    hashes = ["a", "a", "b", "c"]
    phashes = np.array([0b1111, 0b1111, 0b1110, 0xFFFF_FFFF_0000_0000], dtype=np.uint64)
    pairs = {(p.first, p.second): p for p in find_duplicates(hashes, phashes)}
    assert pairs[(0, 1)].kind == "exact"
    assert pairs[(0, 2)].kind == "near" and pairs[(0, 2)].distance == 1
    assert (0, 3) not in pairs and (2, 3) not in pairs


def test_blocks_give_the_same_pairs_as_one_pass():
    rng = np.random.default_rng(0)
    phashes = rng.integers(0, 2**63, 300, dtype=np.uint64)
    phashes[150] = phashes[3] ^ np.uint64(0b101)
    hashes = [str(i) for i in range(300)]
    small = find_duplicates(hashes, phashes, chunk=7)
    assert [(p.first, p.second) for p in small] == [(p.first, p.second) for p in find_duplicates(hashes, phashes)]
    assert (3, 150) in [(p.first, p.second) for p in small]
