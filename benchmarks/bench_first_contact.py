"""What a new user waits for, from an empty cache, each in a fresh process (issue 16's targets).

    python benchmarks/bench_first_contact.py [--repeats 3] [--skip help refusals demo advise cold parity] [--input-size 224]

- ``headstart --help``: wall time (target under 0.5 s), and the seconds until ``headstart fit``
  prints its first line (target under 2 s).
- Refusals: the seconds until bad input a new user gives first (a class of one image, an output
  folder holding other files, a run folder that is none) is refused, beside ``--help``'s.
- ``headstart demo``: wall time and the fit's own seconds (targets 75 s and 60 s).
- ``headstart advise`` cold: on a few hundred brain-MRI slices (unlike ImageNet; a seeded 5% of
  alzheimer_mri4's training images per class, at least 8 each, linked under $TMPDIR) and on
  hymenoptera's training split (photos like ImageNet's). Targets 60 s and 30 s.
- A cold ``auto`` fit on hymenoptera's train split (``fit_folder(..., diagnostics=False)``, no run
  folder written) against a plain eager fp32 torchvision loop over the same images (PIL decode,
  Resize/CenterCrop/Normalize, MobileNetV2 from the same weights, batch 32), both whole processes
  including imports, alternating, the median of ``--repeats``. Target: the fit at least 2x faster.
  ``--input-size`` fixes the fit's input side (default: the fit chooses; photos like these at 288 px).
- ONNX parity: fit a linear head on hymenoptera, export it, follow model.onnx.json with Pillow and
  numpy alone on every val image, and compare with ``predict``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"
HEADSTART = [sys.executable, "-m", "headstart"]

NAIVE = """
import sys, time
from pathlib import Path
import torch
from PIL import Image
from torchvision import transforms
from headstart.backbones import get_backbone
paths = sorted(p for p in Path(sys.argv[1]).glob("*/*") if p.is_file())
prepare = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                              transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
net = get_backbone("mobilenet_v2").build().eval()
net.classifier = torch.nn.Identity()
codes = []
with torch.no_grad():
    for i in range(0, len(paths), 32):
        codes.append(net(torch.stack([prepare(Image.open(p).convert("RGB")) for p in paths[i:i + 32]])))
print(len(paths))
"""

COLD_FIT = """
import sys
from headstart import fit_folder
size = int(sys.argv[2]) if len(sys.argv) > 2 else None
_, summary = fit_folder(sys.argv[1], None, diagnostics=False, input_size=size)
print(summary.evaluation.accuracy, summary.plan["strategy"] if summary.plan else None, summary.engine)
"""


def timed(command: list[str], cache: str | None = None, **kwargs) -> tuple[float, subprocess.CompletedProcess]:
    env = {**os.environ, **({"HEADSTART_CACHE": cache} if cache else {})}
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, command))} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - start, done


def first_line_seconds(command: list[str], cache: str) -> float:
    """Seconds until the command writes its first line to standard error (it is then stopped)."""
    env = {**os.environ, "HEADSTART_CACHE": cache}
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    process.stderr.readline()
    seconds = time.perf_counter() - start
    process.kill()
    process.wait()
    return seconds


def mri_sample(root: Path) -> Path:
    """5% of alzheimer_mri4's training images per class (at least 8), seeded, as symbolic links."""
    source = SHARED / "alzheimer_mri4" / "train"
    target = root / "mri-sample"
    rng = random.Random(0)
    for class_dir in sorted(source.iterdir()):
        files = sorted(class_dir.iterdir())
        (target / class_dir.name).mkdir(parents=True)
        for file in rng.sample(files, max(8, round(len(files) * 0.05))):
            (target / class_dir.name / file.name).symlink_to(file)
    return target


def bench_help(repeats: int, tmp: Path) -> None:
    help_seconds = [timed(HEADSTART + ["--help"])[0] for _ in range(repeats + 2)]
    print(f"headstart --help: median {statistics.median(help_seconds):.2f} s (target < 0.5 s)")
    with tempfile.TemporaryDirectory(dir=tmp) as cache:
        command = HEADSTART + ["fit", str(SHARED / "hymenoptera"), "-o", str(tmp / "first-line"), "--progress"]
        firsts = [first_line_seconds(command, cache) for _ in range(repeats)]
    print(f"headstart fit, first line: median {statistics.median(firsts):.2f} s (target < 2 s)")


def bench_refusals(repeats: int, tmp: Path) -> None:
    """Seconds until bad input a new user gives first is refused (exit 2), beside --help's."""
    data, other = tmp / "one-image-class", tmp / "other-files"
    for name, count in (("ants", 3), ("bees", 1)):
        (data / name).mkdir(parents=True)
        for i in range(count):
            (data / name / f"{i}.jpg").symlink_to(sorted((SHARED / "hymenoptera" / "train" / name).iterdir())[i])
    other.mkdir()
    (other / "notes.txt").write_text("not a run")
    cases = {
        "fit, a class of one image": ["fit", str(data), "-o", str(tmp / "refused")],
        "fit --nproc 2, the same": ["fit", str(data), "-o", str(tmp / "refused"), "--nproc", "2"],
        "fit, an output folder holding other files": ["fit", str(SHARED / "hymenoptera"), "-o", str(other)],
        "predict, a run folder that is none": ["predict", str(other), str(SHARED / "hymenoptera" / "val")],
    }
    help_seconds = statistics.median(timed(HEADSTART + ["--help"])[0] for _ in range(repeats))
    for name, argv in cases.items():
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            done = subprocess.run(HEADSTART + argv, capture_output=True, text=True)
            seconds.append(time.perf_counter() - start)
            assert done.returncode == 2, done.stderr
        print(f"refused ({name}): median {statistics.median(seconds):.2f} s (--help {help_seconds:.2f} s); {done.stderr.strip()[:90]}")


def bench_demo(tmp: Path) -> None:
    with tempfile.TemporaryDirectory(dir=tmp) as cache:
        seconds, done = timed(HEADSTART + ["-q", "demo", "-o", str(tmp / "demo")], cache)
    fit = float(re.search(r"backbone \S+ at \d+ px, ([\d.]+) s", done.stdout).group(1))
    accuracy = re.search(r"test accuracy ([\d.]+%)", done.stdout).group(1)
    print(f"headstart demo from an empty cache: {seconds:.1f} s, its fit {fit:.1f} s, test {accuracy} (targets < 75 s, < 60 s)")


def bench_advise(tmp: Path) -> None:
    for name, data, target in (("brain MRI sample", mri_sample(tmp), 60), ("hymenoptera train", SHARED / "hymenoptera" / "train", 30)):
        with tempfile.TemporaryDirectory(dir=tmp) as cache:
            seconds, done = timed(HEADSTART + ["-q", "advise", str(data)], cache)
        plan = next(line for line in done.stdout.splitlines() if line.strip().startswith("plan "))
        measured = re.search(r"(\d+) images measured", done.stdout).group(1)
        print(f"headstart advise, {name} ({measured} images measured), cold: {seconds:.1f} s (target < {target} s); {plan.strip()}")


def bench_cold_fit(repeats: int, tmp: Path, input_size: int | None) -> None:
    data = str(SHARED / "hymenoptera" / "train")
    size = [str(input_size)] if input_size else []
    fits, naive = [], []
    for _ in range(repeats):
        naive.append(timed([sys.executable, "-c", NAIVE, data])[0])
        with tempfile.TemporaryDirectory(dir=tmp) as cache:
            seconds, done = timed([sys.executable, "-c", COLD_FIT, data, *size], cache)
        fits.append(seconds)
        print(f"  naive eager fp32 loop {naive[-1]:.1f} s; cold auto fit {fits[-1]:.1f} s ({done.stdout.strip()})", flush=True)
    ratio = statistics.median(naive) / statistics.median(fits)
    print(f"cold auto fit on hymenoptera/train{f' at {input_size} px' if input_size else ''}: median {statistics.median(fits):.1f} s against the naive loop's "
          f"{statistics.median(naive):.1f} s: {ratio:.2f}x as fast (target >= 2x)")


def bench_parity(tmp: Path) -> None:
    import numpy as np
    import onnxruntime

    sys.path.insert(0, str(REPO))
    from tests.test_export import follow_the_recipe

    from headstart import TransferClassifier, fit_folder
    from headstart.export import export_onnx

    with tempfile.TemporaryDirectory(dir=tmp) as cache:
        fit_folder(SHARED / "hymenoptera", tmp / "parity", strategy="linear", tap="pre_logits", cache_dir=cache, diagnostics=False)
        model = TransferClassifier.load(tmp / "parity")
        model.cache = False
        path = export_onnx(model, tmp / "parity" / "model.onnx")
        description = json.loads(path.with_name(path.name + ".json").read_text())
        files = sorted(p for p in (SHARED / "hymenoptera" / "val").glob("*/*") if p.is_file())
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outside = np.vstack([session.run(None, {"x": follow_the_recipe(f, description)[None]})[0] for f in files])
        inside = model.predict_proba(files)
    gap = np.abs(outside - inside)
    print(f"ONNX recipe parity on hymenoptera/val ({len(files)} images): largest probability difference {gap.max():.2e}, "
          f"{int((outside.argmax(1) != inside.argmax(1)).sum())} different predictions")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip", nargs="*", default=[], choices=("help", "refusals", "demo", "advise", "cold", "parity"))
    parser.add_argument("--input-size", type=int, default=None, help="the cold fit's input side (default: the fit chooses)")
    args = parser.parse_args()
    print(machine(), flush=True)
    with tempfile.TemporaryDirectory(prefix="headstart-first-contact-") as folder:
        tmp = Path(folder)
        for name, run in (("help", lambda: bench_help(args.repeats, tmp)), ("refusals", lambda: bench_refusals(args.repeats, tmp)), ("demo", lambda: bench_demo(tmp)), ("advise", lambda: bench_advise(tmp)),
                          ("cold", lambda: bench_cold_fit(args.repeats, tmp, args.input_size)), ("parity", lambda: bench_parity(tmp))):
            if name not in args.skip:
                run()
                sys.stdout.flush()


if __name__ == "__main__":
    main()
