"""Runs on two gloo processes, started by torchrun, against the same run on one process."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

import torch

from headstart.data.sampling import ClassBalancedSampler, SharedShuffleSampler
from headstart.features import Codes
from headstart.pipeline import join_shares
from tests.conftest import write_class_folders

TINY = ["--backbone", "tiny", "--engine", "torch", "--no-diagnostics"]
FINETUNE = ["--strategy", "finetune_top", "--epochs", "2", "--augmentation", "none", "--set", "batch_size=8", "--set", "precision=fp32", "--set", "dropout=0"]


def headstart(*argv, nproc: int = 1, timeout: float = 240, env: dict | None = None) -> subprocess.CompletedProcess:
    """``headstart -q ...`` in a fresh process, under torchrun when ``nproc`` > 1."""
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"] if nproc > 1 else []
    command = [sys.executable, *launcher, "-m", "headstart", "-q", *map(str, argv)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def head_of(run: Path) -> dict:
    return load_file(run / "model.safetensors")


@pytest.fixture
def noisy_splits(tmp_path) -> Path:
    """Colour classes that overlap, so a head and a test accuracy have something to get wrong."""
    colours = {"grey": (128, 128, 128), "red": (133, 128, 128), "green": (128, 133, 128), "blue": (128, 128, 133)}  # ~75% apart
    write_class_folders(tmp_path / "data" / "train", per_class=10, colours=colours, seed=1)
    write_class_folders(tmp_path / "data" / "test", per_class=5, colours=colours, seed=2)
    return tmp_path / "data"


def test_two_processes_fit_the_linear_head_one_process_fits(noisy_splits, tmp_path):
    one = headstart("fit", noisy_splits, "-o", tmp_path / "one", "--strategy", "linear", *TINY)
    two = headstart("fit", noisy_splits, "-o", tmp_path / "two", "--strategy", "linear", *TINY, nproc=2)
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-2000:]
    a, b = head_of(tmp_path / "one"), head_of(tmp_path / "two")
    np.testing.assert_array_equal(a["mean"], b["mean"])  # codes identical: the statistics are too
    np.testing.assert_array_equal(a["coef"], b["coef"])  # scikit-learn's head is rank 0's, handed over
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert metrics["run"] == {"world_size": 2, "backend": "gloo", "device": "cpu"}
    assert json.loads((tmp_path / "one" / "model.json").read_text())["run"]["world_size"] == 1
    assert json.loads((tmp_path / "two" / "model.json").read_text())["run"]["backend"] == "gloo"
    assert metrics["evaluation"]["accuracy"] == json.loads((tmp_path / "one" / "metrics.json").read_text())["evaluation"]["accuracy"]


SHARED_HEAD = """
import sys
import numpy as np
from headstart import distributed
from headstart.strategies import minibatch
from tests.test_distributed import separable_codes

minibatch.MIN_SHARED_STEP = 0  # every step shared out, however small
minibatch.STEPS = 300
world = distributed.start("cpu")
(_, _, coef, _), _ = minibatch.fit_minibatch(*separable_codes(), Cs=(1.0,), balanced=False)  # one C: no search
if world.main:
    np.save(sys.argv[1], coef)
distributed.stop()
"""


def separable_codes() -> tuple[np.ndarray, np.ndarray]:
    y = np.repeat(np.arange(4), 30)
    return (np.random.default_rng(0).normal(size=(120, 8)) + y[:, None]).astype(np.float32), y


def test_the_mini_batch_head_shared_out_between_two_processes_is_one_processs_head(tmp_path, monkeypatch):
    from headstart.strategies import minibatch

    monkeypatch.setattr(minibatch, "STEPS", 300)
    (_, _, one, _), _ = minibatch.fit_minibatch(*separable_codes(), Cs=(1.0,), balanced=False)
    (tmp_path / "head.py").write_text(SHARED_HEAD)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(tmp_path / "head.py"), str(tmp_path / "two.npy")]
    root = str(Path(__file__).parents[1])  # where the script imports tests.test_distributed from
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": root})
    assert done.returncode == 0, done.stderr[-2000:]
    # each process computes half of every batch, so its bf16 products round in other places
    np.testing.assert_allclose(np.load(tmp_path / "two.npy"), one, rtol=0, atol=0.02 * np.abs(one).max())


def test_fine_tuning_on_two_processes_ends_within_one_image_of_one(noisy_splits, tmp_path):
    one = headstart("fit", noisy_splits, "-o", tmp_path / "one", *FINETUNE, *TINY)
    temporary = tmp_path / "temporary"
    temporary.mkdir()
    two = headstart("fit", noisy_splits, "-o", tmp_path / "two", *FINETUNE, *TINY, "--nproc", "2", env={"TMPDIR": str(temporary)})  # the shorthand
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-2000:]
    assert not [p.name for p in temporary.iterdir() if p.name.startswith(("torchelastic_", "headstart-"))]  # nothing left behind
    assert "OMP_NUM_THREADS" not in two.stderr  # --nproc shares the cores itself: torchrun's banner stays away under -q
    accuracy = [json.loads((tmp_path / run / "metrics.json").read_text())["evaluation"] for run in ("one", "two")]
    assert abs(accuracy[0]["accuracy"] - accuracy[1]["accuracy"]) * accuracy[0]["n_images"] <= 1
    history = json.loads((tmp_path / "two" / "history.json").read_text())
    assert len(history["records"]) == 2 and (tmp_path / "two" / "checkpoints").is_dir()
    # --resume under torchrun: every rank loads rank 0's checkpoint (here: of the finished run, so
    # nothing is left to train) and the run ends as it did
    resumed = headstart("fit", noisy_splits, "-o", tmp_path / "two", *FINETUNE, *TINY, "--resume", nproc=2)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((tmp_path / "two" / "history.json").read_text()) == history
    assert json.loads((tmp_path / "two" / "metrics.json").read_text())["evaluation"] == accuracy[1]


def test_bad_input_under_nproc_is_said_in_one_line(noisy_splits, tmp_path):
    # refused before any process starts
    missing = headstart("fit", tmp_path / "nowhere", "-o", tmp_path / "run", *TINY, "--nproc", "2")
    assert missing.returncode == 2
    assert missing.stderr.splitlines() == [f"error: {tmp_path / 'nowhere'} does not exist; give a folder of class folders or a CSV of path,label rows."]
    # found by the ranks: rank 0 says it, and torchrun's logs and failure table stay away
    (noisy_splits / "train" / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    temporary = tmp_path / "temporary"
    temporary.mkdir()
    strict = headstart("fit", noisy_splits, "-o", tmp_path / "run", "--strategy", "linear", "--strict", *TINY, "--nproc", "2", env={"TMPDIR": str(temporary)})
    assert strict.returncode == 2
    assert len(strict.stderr.splitlines()) == 1 and strict.stderr.startswith("error: --strict: 1 unreadable") and "broken.png" in strict.stderr
    assert not [p.name for p in temporary.iterdir() if p.name.startswith(("torchelastic_", "headstart-"))]  # torchrun's logs went with the launcher's folder


def test_a_process_the_launcher_started_fits_on_the_images_the_launcher_found(noisy_splits, tmp_path, monkeypatch):
    from headstart.cli import FOUND_VARIABLE, main
    from headstart.data import load_dataset

    found = load_dataset(noisy_splits)
    found.records = [r for r in found.records if r.label != "blue"]  # unlike the folder: a rank that searched again would differ
    (tmp_path / "found.json").write_text(found.to_json())
    monkeypatch.setenv(FOUND_VARIABLE, str(tmp_path / "found.json"))
    assert main(["-q", "fit", str(noisy_splits), "-o", str(tmp_path / "run"), "--strategy", "linear", *TINY]) == 0
    assert json.loads((tmp_path / "run" / "model.json").read_text())["classes"] == ["green", "grey", "red"]


def test_processes_torchrun_started_by_hand_fit_on_the_images_rank_0_found(noisy_splits, tmp_path, monkeypatch):
    import argparse

    from headstart import cli, distributed
    from headstart.data import load_dataset

    found = load_dataset(noisy_splits)
    found.records = [r for r in found.records if r.label != "blue"]  # unlike the folder: a rank that searched itself would differ

    class SecondOfTwo(distributed.World):  # rank 1: what rank 0 found reaches it by broadcast
        def from_main(self, make, patient=False):
            assert patient  # a search takes as long as the folder needs, past the collective timeout
            return found

    monkeypatch.setattr(distributed, "current", lambda: SecondOfTwo(rank=1, size=2))
    args = argparse.Namespace(output=tmp_path / "run", data=str(noisy_splits), test_size=None, seed=0, allow_outside=False, show_progress=False)
    assert sorted({r.label for r in cli._fit_data(args).records}) == ["green", "grey", "red"]


def test_a_patient_hand_over_outlasts_the_collective_timeout(tmp_path):
    # rank 0's search of a large folder takes minutes; the others wait for it past the 2 s timeout
    script = tmp_path / "hand_over.py"
    script.write_text(
        "import sys, time\n"
        "from headstart import distributed\n"
        "world = distributed.start('cpu')\n"
        "found = world.from_main(lambda: time.sleep(4) or 'found by rank 0', patient=True)\n"
        "open(sys.argv[1] + f'/rank{world.rank}', 'w').write(found)\n"
        "distributed.stop()\n"
    )
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(script), str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env={**os.environ, "HEADSTART_COLLECTIVE_TIMEOUT": "2"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert [(tmp_path / f"rank{rank}").read_text() for rank in (0, 1)] == ["found by rank 0"] * 2


def test_strict_has_each_process_decode_its_share_and_every_one_name_all_unreadable(noisy_splits, monkeypatch):
    from headstart import distributed, workflow
    from headstart.data import load_dataset

    found = load_dataset(noisy_splits)
    paths = [r.path for r in found.records]
    decoded = []

    def unreadable(share):
        decoded.extend(share)
        return {path: "unreadable (truncated)" for path in share if path.name == "03.png"}

    class SecondOfTwo(distributed.World):  # rank 1; rank 0 found its share's 03.png files unreadable
        def gather(self, part):
            return [[(i, "unreadable (truncated)") for i in range(0, len(paths), 2) if paths[i].name == "03.png"], part]

    monkeypatch.setattr(workflow, "unreadable_files", unreadable)
    monkeypatch.setattr(distributed, "current", lambda: SecondOfTwo(rank=1, size=2))
    with pytest.raises(workflow.DataError) as said:
        workflow._check_every_image(found, None)
    assert decoded == paths[1::2]  # its share alone
    named = [str(path) for path in paths if path.name == "03.png"]
    assert f"--strict: {len(named)} unreadable" in str(said.value) and all(name in str(said.value) for name in named[:10])


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _rank_of(pid: int) -> int | None:
    environ = dict(item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0") if "=" in item)
    return int(environ["RANK"]) if "RANK" in environ else None


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for its parent."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("how", ["killed", "hung"])
def test_a_rank_that_dies_or_hangs_ends_the_job_non_zero(noisy_splits, tmp_path, how):
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "headstart", "-q", "fit",
        str(noisy_splits), "-o", str(tmp_path / "run"), *FINETUNE[:3], "200", *FINETUNE[4:], *TINY,
    ]
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "HEADSTART_COLLECTIVE_TIMEOUT": "15"})
    deadline = time.monotonic() + 120
    while not (tmp_path / "run" / "checkpoints").exists():  # training has started
        assert job.poll() is None and time.monotonic() < deadline, job.stderr.read()[-2000:] if job.poll() is not None else "no checkpoint"
        time.sleep(0.5)
    ranks = {_rank_of(pid): pid for pid in _children(job.pid)}
    victim = ranks[1]
    os.kill(victim, signal.SIGKILL if how == "killed" else signal.SIGSTOP)
    started = time.monotonic()
    try:
        if how == "hung":
            # Once rank 0 has left, torchrun sends the hung rank SIGTERM, which a stopped process
            # only receives when it continues (else torchrun waits 30 s, then sends SIGKILL): a
            # rank hung in a collective is not stopped, so it is let go on here.
            while _alive(ranks[0]) and time.monotonic() - started < 60:
                time.sleep(0.2)
            os.kill(victim, signal.SIGCONT)
        _, err = job.communicate(timeout=90)
    finally:
        if job.poll() is None:
            job.kill()
        if how == "hung":
            subprocess.run(["kill", "-9", str(victim)], capture_output=True)
    assert job.returncode != 0
    assert time.monotonic() - started < 60
    # rank 0 says it lost the others in one line, and leaves without a second collective (torchrun's own traceback stays)
    assert not re.search(r'headstart/\w+\.py", line', err), err[-3000:]
    if how == "hung":  # rank 0 waited one collective timeout, then said why
        assert "lost the other processes" in err


def test_the_balanced_sampler_shares_one_draw_between_ranks():
    labels = np.repeat(np.arange(5), [50, 20, 10, 5, 2])  # 87: two shares of 44, as one process drawing 88
    whole = ClassBalancedSampler(labels, 88, seed=3)
    shares = [ClassBalancedSampler(labels, seed=3, num_replicas=2, rank=r) for r in range(2)]
    for epoch in (0, 1):
        for sampler in (whole, *shares):
            sampler.set_epoch(epoch)
        drawn = whole.draw()
        np.testing.assert_array_equal(shares[0].draw(), drawn[0::2])
        np.testing.assert_array_equal(shares[1].draw(), drawn[1::2])
    assert len(shares[0]) == len(shares[1]) == 44 and len(ClassBalancedSampler(labels)) == 87
    assert not np.array_equal(whole.draw(), (whole.set_epoch(0), whole.draw())[1])  # reseeded every epoch


def test_the_shared_shuffle_is_one_process_shuffle_split_between_ranks():
    def epochs(loader, n=3):
        return [torch.cat([batch for batch in loader]).tolist() for _ in range(n)]

    data = torch.arange(10)
    seeded = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    plain = seeded()  # what fine-tuning on one process always did: DataLoader(shuffle=True, generator=g)
    reference = epochs(torch.utils.data.DataLoader(data, batch_size=4, shuffle=True, generator=plain))
    one = seeded()
    assert epochs(torch.utils.data.DataLoader(data, batch_size=4, sampler=SharedShuffleSampler(10, one), generator=one)) == reference
    assert one.get_state().equal(plain.get_state())  # the generator moved alike: a resumed run continues alike
    shares = []
    for rank in range(2):
        g = seeded()
        shares.append(epochs(torch.utils.data.DataLoader(data, batch_size=2, sampler=SharedShuffleSampler(10, g, num_replicas=2, rank=rank), generator=g)))
    for epoch in range(3):  # step k of the two ranks together holds the images of one process's step k
        for step in range(3):
            together = shares[0][epoch][2 * step : 2 * step + 2] + shares[1][epoch][2 * step : 2 * step + 2]
            assert sorted(together) == sorted(reference[epoch][4 * step : 4 * step + 4])
    odd = [list(SharedShuffleSampler(9, seeded(), num_replicas=2, rank=rank)) for rank in range(2)]
    assert len(odd[0]) == len(odd[1]) == 5 and set(odd[0] + odd[1]) == set(range(9))  # padded to equal shares


def test_shares_of_codes_join_back_in_order():
    codes = np.arange(14, dtype=np.float32).reshape(7, 2)
    full = Codes(codes, [f"h{i}" for i in range(7)], np.arange(7, dtype=np.uint64), failures={4: "unreadable"}, computed=7)
    parts = [full.subset(np.arange(r, 7, 3)) for r in range(3)]
    joined = join_shares(parts, 3)
    np.testing.assert_array_equal(joined.codes, codes)
    assert joined.content_hashes == full.content_hashes and joined.failures == {4: "unreadable"}


def test_dropout_masks_and_augmentation_do_not_depend_on_how_the_batch_is_split(monkeypatch):
    from headstart import distributed
    from headstart.data.augment import augmentation_transform
    from headstart.backbones import get_backbone
    from headstart.strategies.finetune import ImageDataset
    from headstart.strategies.layers import BatchDropout

    codes = torch.ones(8, 6)

    def masks(size: int) -> list[torch.Tensor]:
        shares = []
        for rank in range(size):
            monkeypatch.setattr(distributed, "current", lambda rank=rank: distributed.World(rank=rank, size=size))
            dropout = BatchDropout(0.5, seed=3).train()
            dropout.set_epoch(2)
            shares.append(torch.stack([dropout(codes[: 8 // size]) for _ in range(3)]))  # three steps
        return shares

    whole, (even, odd) = masks(1)[0], masks(2)
    assert torch.equal(whole[:, 0::2], even) and torch.equal(whole[:, 1::2], odd)  # rank r holds every 2nd image from r
    assert not torch.equal(whole[0], whole[1]) and set(whole.unique().tolist()) == {0.0, 2.0}

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (40, 40, 3), dtype=np.uint8) for _ in range(4)]
    dataset = ImageDataset(images, [0, 1, 0, 1], augmentation_transform("objects", get_backbone("tiny").preprocessing), seed=7)
    first = [dataset[i][0] for i in (3, 2, 1, 0)][::-1]
    assert all(torch.equal(dataset[i][0], first[i]) for i in range(4))  # the same draw in any order, on any process
    dataset.set_epoch(1)
    assert not torch.equal(dataset[0][0], first[0])  # and a new one every epoch
