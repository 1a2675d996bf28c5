"""Near-duplicate groups: found from hashes, kept inside one fold by every split made for choosing."""

import numpy as np

from headstart.data import describe_groups, grouped_hold_out, near_duplicate_groups, stratified_folds
from headstart.strategies import fit_linear_head


def _hashes(n: int, copies: int, rng) -> tuple[list[str], np.ndarray]:
    """``n`` distinct images, the first ``copies`` of them each with a near duplicate (1 bit off) after them."""
    base = rng.integers(0, 2**63, size=n, dtype=np.uint64)
    twins = base[:copies] ^ np.uint64(1)
    return [f"h{i}" for i in range(n + copies)], np.concatenate([base, twins])


def test_near_duplicates_share_a_group_and_others_do_not():
    hashes, phashes = _hashes(40, 10, np.random.default_rng(0))
    groups = near_duplicate_groups(hashes, phashes)
    assert all(groups[i] == groups[40 + i] for i in range(10))
    assert len(np.unique(groups)) == 40
    assert describe_groups(groups) == {"groups": 10, "images": 20, "largest": 2}


def test_groups_chain_transitively():
    # a ~ b (1 bit) and b ~ c (1 bit), a and c 2 bits apart: one group of three
    a = np.uint64(0b1010_0000)
    groups = near_duplicate_groups(["a", "b", "c", "d"], np.array([a, a ^ np.uint64(1), a ^ np.uint64(3), ~a], dtype=np.uint64))
    assert groups[0] == groups[1] == groups[2] != groups[3]


def test_every_fold_and_hold_out_keeps_a_group_on_one_side():
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1, 2], 30)
    groups = np.arange(90) // 3  # triples of near duplicates, each within a class
    for fit, held in stratified_folds(y, 5, groups=groups, random_state=0):
        assert not set(groups[fit]) & set(groups[held])
        assert set(y[held]) == {0, 1, 2}  # still stratified
    for shuffled in (groups, rng.permutation(groups)):  # groups within a class, then across classes
        fit, held = grouped_hold_out(y, 0.15, groups=shuffled, random_state=0)
        assert sorted([*fit, *held]) == list(range(90)) and not set(shuffled[fit]) & set(shuffled[held])
        assert 0.05 < len(held) / 90 < 0.25


def test_a_class_of_copies_of_one_picture_is_not_kept_in_one_fold():
    # class 1 is eight copies of one image: kept together, its fold would train on class 0 alone
    hashes = [f"h{i}" for i in range(8)] + ["copy"] * 8
    phashes = np.concatenate([np.arange(8, dtype=np.uint64) * np.uint64(0x0F0F0F0F0F), np.full(8, ~np.uint64(0), dtype=np.uint64)])
    y = np.repeat([0, 1], 8)
    assert len(np.unique(near_duplicate_groups(hashes, phashes)[8:])) == 1
    groups = near_duplicate_groups(hashes, phashes, labels=y)
    assert len(np.unique(groups[8:])) == 8 and describe_groups(groups)["groups"] == 0
    for fit, _ in stratified_folds(y, 5, groups=near_duplicate_groups(hashes, phashes), random_state=0):
        assert set(y[fit]) == {0, 1}
    _, report = fit_linear_head(np.random.default_rng(0).normal(size=(16, 4)) + y[:, None], y, groups=groups)  # raised "only one class"
    assert report.cv_folds == 5


def test_a_hold_out_with_no_stratified_split_is_drawn_plain_at_its_share():
    # 15% of 12 images is 2, fewer than the 3 classes; a class of one image: sklearn refuses to stratify either
    for y in (np.repeat([0, 1, 2], 4), np.array([0, 0, 0, 0, 1, 1, 1, 2]), np.repeat(np.arange(120), 2)):
        fit, held = grouped_hold_out(y, 0.15, random_state=0)
        assert sorted([*fit, *held]) == list(range(len(y))) and len(held) == np.ceil(0.15 * len(y))
    from sklearn.model_selection import train_test_split

    y = np.repeat([0, 1, 2], 40)  # where a stratified split exists: sklearn's, as before
    for ours, theirs in zip(grouped_hold_out(y, 0.15, random_state=0), train_test_split(np.arange(120), test_size=0.15, stratify=y, random_state=0)):
        assert (ours == theirs).all()


def test_without_groups_the_folds_are_plain_stratified_k_fold():
    from sklearn.model_selection import StratifiedKFold

    y = np.repeat([0, 1], 20)
    plain = list(StratifiedKFold(5, shuffle=True, random_state=3).split(np.zeros(40), y))
    for ours, theirs in zip(stratified_folds(y, 5, groups=np.arange(40), random_state=3), plain):
        assert (ours[0] == theirs[0]).all() and (ours[1] == theirs[1]).all()


def test_grouped_cv_does_not_score_memory():
    # Each image has an exact twin; the labels are noise. Ungrouped CV lets the head recognise the
    # twin of every held-out image; grouped CV scores it near chance.
    rng = np.random.default_rng(2)
    codes = rng.normal(size=(60, 200))
    codes = np.vstack([codes, codes + 1e-3 * rng.normal(size=codes.shape)])
    y = np.tile(rng.permutation(np.repeat([0, 1], 30)), 2)
    groups = np.tile(np.arange(60), 2)
    _, loose = fit_linear_head(codes, y, Cs=(0.01, 1.0, 100.0))
    _, grouped = fit_linear_head(codes, y, Cs=(0.01, 1.0, 100.0), groups=groups)
    assert loose.cv_score > 0.85
    assert grouped.cv_score < 0.7
    assert grouped.duplicate_groups == {"groups": 60, "images": 120, "largest": 2}


def test_given_groups_join_images_the_hashes_cannot(tmp_path):
    # four distinct images, two subjects: the given groups join what the hashes keep apart
    hashes = np.array([0x0F0F0F0F0F0F0F0F, 0xF0F0F0F0F0F0F0F0, 0x00000000FFFFFFFF, 0xFFFFFFFF00000000], dtype=np.uint64)
    groups = near_duplicate_groups(["a", "b", "c", "d"], hashes, given=["s1", "s1", "s2", "s2"])
    assert groups[0] == groups[1] != groups[2] == groups[3]


def subjects_csv(folder, columns: str, row_end) -> list[str]:
    """Eight noisy red and eight noisy blue images in ``folder`` and its labels.csv, whose rows are
    ``path,label,`` and then ``row_end(class index, image index)`` (the split, the group)."""
    from PIL import Image

    rows = [f"path,label,{columns}"]
    rng = np.random.default_rng(0)
    for c, colour in enumerate([(200, 40, 40), (40, 40, 200)]):
        for i in range(8):
            pixels = np.clip(np.array(colour) + rng.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{c}-{i}.png")
            rows.append(f"{c}-{i}.png,{'rb'[c]},{row_end(c, i)}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return rows


def test_a_csv_group_column_reaches_the_fit(tmp_path):
    from headstart import fit_folder
    from headstart.data import load_dataset

    subjects_csv(tmp_path, "group", lambda c, i: f"subject{c}-{i // 2}")
    dataset = load_dataset(tmp_path / "labels.csv", test_size=0.25)
    assert {r.group for r in dataset.records} == {f"subject{c}-{k}" for c in range(2) for k in range(4)}
    sides = {}
    for record in dataset.records:  # the held-out split made from the pool keeps each subject on one side
        sides.setdefault(record.group, set()).add(record.split)
    assert all(len(s) == 1 for s in sides.values()) and {r.split for r in dataset.records} == {"train", "test"}
    _, summary = fit_folder(tmp_path / "labels.csv", None, backbone="tiny", engine="torch", strategy="linear", diagnostics=False, test_size=0.25)
    grouped = summary.classifier["duplicate_groups"]
    assert grouped["largest"] == 2 and grouped["images"] == 2 * grouped["groups"] >= 8  # the training split's subjects, in pairs
    assert grouped["given"] is True


def test_a_group_on_both_sides_of_a_given_split_is_reported_as_leakage(tmp_path):
    """A CSV that gives the split can put one subject's images in train and in test: the held-out
    images then score the subject the model learnt (headstart keeps groups apart in its own splits)."""
    from headstart import fit_folder
    from headstart.summary import format_summary

    def split_and_subject(c, i):  # red: subject0-3 has images 6 and 7, both test; blue: subject1-5 images 5 to 7
        return f"{'test' if i >= 6 else 'train'},subject{c}-{i // 2 if c == 0 else min(i, 5)}"

    rows = subjects_csv(tmp_path, "split,group", split_and_subject)
    _, summary = fit_folder(tmp_path / "labels.csv", None, backbone="tiny", engine="torch", strategy="linear", diagnostics=False)
    assert summary.duplicates["groups"] == 10
    assert summary.duplicates["groups_across_splits"] == [{"group": "subject1-5", "splits": {"train": 1, "test": 2}}]  # subject0-3 is all test
    line = next(line for line in format_summary(summary, None).splitlines() if line.startswith("  groups "))
    assert "1 of 10 groups (the CSV's group column) have images in more than one split, e.g. subject1-5 (train 1, test 2): LEAKAGE" in line
    (tmp_path / "labels.csv").write_text("\n".join(row.rsplit(",", 2)[0] + "," + row.rsplit(",", 1)[1] for row in rows) + "\n")  # the split column left out
    _, pooled = fit_folder(tmp_path / "labels.csv", None, backbone="tiny", engine="torch", strategy="linear", diagnostics=False, test_size=0.25)
    assert pooled.duplicates["groups_across_splits"] == []  # the split headstart makes keeps each subject on one side
    assert not [line for line in format_summary(pooled, None).splitlines() if line.startswith("  groups ")]
