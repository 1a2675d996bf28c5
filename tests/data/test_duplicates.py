import numpy as np

from headstart.data import find_duplicates


def test_exact_near_and_distinct():
    hashes = ["a", "a", "b", "c"]
    phashes = np.array([0b1111, 0b1111, 0b1110, 0xFFFF_FFFF_0000_0000], dtype=np.uint64)
    pairs = {(p.first, p.second): p for p in find_duplicates(hashes, phashes)}
    assert pairs[(0, 1)].kind == "exact"
    assert pairs[(0, 2)].kind == "near" and pairs[(0, 2)].distance == 1
    assert (0, 3) not in pairs and (2, 3) not in pairs


def test_multi_index_hashing_finds_every_pair_comparing_all_would():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, 40, dtype=np.uint64)
    # clusters of near copies (0 to 3 bits flipped anywhere, the same bit twice included) and loners
    flips = [np.uint64(sum(1 << int(b) for b in rng.integers(0, 64, rng.integers(0, 4)))) for _ in range(400)]
    phashes = np.concatenate([base[rng.integers(0, 40, 400)] ^ np.array(flips, dtype=np.uint64), rng.integers(0, 2**63, 200, dtype=np.uint64)])
    hashes = [str(i) for i in range(len(phashes))]
    distances = np.bitwise_count(phashes[:, None] ^ phashes[None, :])
    for bits in (0, 2, 3):
        every = {(i, j) for i, j in zip(*np.nonzero(distances <= bits)) if i < j}
        found = find_duplicates(hashes, phashes, max_bits=bits)
        assert [(p.first, p.second) for p in found] == sorted(every) and len(every) > 50
        assert all(p.distance == distances[p.first, p.second] for p in found)
