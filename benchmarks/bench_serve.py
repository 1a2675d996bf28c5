"""`headstart serve` under load, on loopback only, bounded in count and time.

    python benchmarks/bench_serve.py RUN IMAGES [--soak 10000] [--clients 1 4 16]

Starts ``headstart -q serve RUN --port 0 --token ...`` as a subprocess (the server as a user runs
it) and measures, against the same images:
1. offline batched ``predict`` (TransferClassifier.predict over the whole list): images/s;
2. throughput and p50/p99 latency with 1, 4 and 16 concurrent clients, one image per request;
   the 16-client throughput as a share of the offline rate (target >= 80%);
3. a soak of ``--soak`` requests from 16 clients, 10% of them bad (truncated, not an image, over
   the size limit, a decompression bomb, a wrong token): every status counted, no 5xx allowed, every
   bad one a 4xx with its reason, and the server's resident memory after warm-up and at the end
   (target: growth under 50 MB);
4. three reloads while 16 clients keep asking: requests lost (target 0).
The server runs with --max-upload-mb 5 so the over-size requests stay cheap to send.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine  # noqa: E402

from headstart import TransferClassifier  # noqa: E402
from headstart.data.decode import IMAGE_EXTENSIONS  # noqa: E402

TOKEN = "bench-token"
UPLOAD_MB = 5  # above every image of the shared sets
WARM_UP = 1000  # soak requests before the memory baseline


def start_server(run: Path) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "headstart", "-q", "serve", str(run), "--port", "0", "--token", TOKEN, "--max-upload-mb", str(UPLOAD_MB)]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    line = server.stdout.readline()
    match = re.search(r"at (http://\S+)/ ", line)
    if match is None:
        server.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    return server, match.group(1)


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


def bomb() -> bytes:
    """A 60-byte PNG whose header claims 30,000 x 30,000 pixels."""
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    header = b"IHDR" + struct.pack(">II", 30_000, 30_000) + bytes(data[24:29])
    data[12:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(header))
    return bytes(data)


def bad_requests(image: bytes) -> list[tuple[str, bytes, dict]]:
    """(kind, body, headers) of each kind of bad request, with the status it must get."""
    good = {"Authorization": f"Bearer {TOKEN}"}
    return [
        ("truncated", image[: len(image) // 3], good),
        ("not an image", b"%PDF-1.4 not an image at all" * 20, good),
        ("over the size limit", bytes(UPLOAD_MB * 1024 * 1024 + 1), good),
        ("bomb", bomb(), good),
        ("wrong token", image, {"Authorization": "Bearer wrong"}),
    ]


async def load(predict_url: str, requests: list[tuple[str, bytes, dict]], clients: int, during=None) -> tuple[list, float]:
    """Send ``requests`` from ``clients`` concurrent clients, each on its own keep-alive
    connection; (kind, status, body, seconds) per request, and the wall time. ``during`` runs
    alongside (the reloads)."""
    results: list = [None] * len(requests)
    cursor = iter(range(len(requests)))

    async def client(session: httpx.AsyncClient):
        for i in cursor:
            kind, body, headers = requests[i]
            started = time.perf_counter()
            try:
                response = await session.post(predict_url, content=body, headers=headers)
                results[i] = (kind, response.status_code, response.text, time.perf_counter() - started)
            except httpx.HTTPError as exc:  # a dropped connection counts as a lost request
                results[i] = (kind, 0, f"{type(exc).__name__}: {exc}", time.perf_counter() - started)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    # TCP_NODELAY, as curl and browsers set it: without it the body waits behind the headers for
    # the server's delayed ACK, 40 ms a request on a kept-alive connection (httpx leaves it off).
    transport = httpx.AsyncHTTPTransport(limits=limits, socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    async with httpx.AsyncClient(timeout=60, transport=transport) as session:
        started = time.perf_counter()
        tasks = [asyncio.create_task(client(session)) for _ in range(clients)]
        if during is not None:
            tasks.append(asyncio.create_task(during(session)))
        await asyncio.gather(*tasks)
        return results, time.perf_counter() - started


def latency_row(results: list, seconds: float, clients: int) -> tuple[float, str]:
    latencies = np.array([r[3] for r in results]) * 1000
    ok = sum(r[1] == 200 for r in results)
    for failed in [r for r in results if r[1] != 200][:3]:
        print(f"  not 200: {failed[1]} {failed[2][:200]}")
    rate = len(results) / seconds
    return rate, f"{clients:>7}  {len(results):>8}  {ok:>6}  {rate:>8.1f}  {np.percentile(latencies, 50):>7.1f}  {np.percentile(latencies, 99):>7.1f}"


def offline_rate(run: Path, paths: list[Path]) -> float:
    model = TransferClassifier.load(run)
    model.progress, model.cache = False, False  # through the network, as the server does, not from the code cache
    model.predict(paths[:32])  # warm-up: threads, allocator
    started = time.perf_counter()
    model.predict(paths)
    return len(paths) / (time.perf_counter() - started)


def soak(predict_url: str, server: subprocess.Popen, images: list[bytes], count: int) -> None:
    good = {"Authorization": f"Bearer {TOKEN}"}
    bad = bad_requests(images[0])
    requests = [(bad[i // 10 % len(bad)] if i % 10 == 9 else ("good", images[i % len(images)], good)) for i in range(count)]
    warm, _ = asyncio.run(load(predict_url, requests[:WARM_UP], 16))
    baseline = rss_mb(server.pid)
    rest, seconds = asyncio.run(load(predict_url, requests[WARM_UP:], 16))
    growth = rss_mb(server.pid) - baseline
    results = warm + rest
    kinds = sorted({r[0] for r in results})
    print(f"\nsoak: {len(results)} requests from 16 clients, {sum(r[0] != 'good' for r in results)} bad, {len(rest) / seconds:.0f} requests/s after warm-up")
    print(f"  {'kind':<22} {'count':>6}  statuses")
    for kind in kinds:
        mine = [r for r in results if r[0] == kind]
        statuses = {s: sum(r[1] == s for r in mine) for s in sorted({r[1] for r in mine})}
        print(f"  {kind:<22} {len(mine):>6}  {statuses}")
    server_errors = sum(r[1] >= 500 or r[1] == 0 for r in results)
    bad_unexplained = sum(1 for r in results if r[0] != "good" and not (400 <= r[1] < 500 and '"error"' in r[2]))
    print(f"  5xx or dropped: {server_errors} (target 0); bad requests without a 4xx and a reason: {bad_unexplained} (target 0)")
    for kind in kinds:
        if kind != "good":
            print(f"    {kind}: {next(r[2] for r in results if r[0] == kind)}")
    print(f"  server memory: {baseline:.0f} MB after {WARM_UP} requests, growth {growth:+.1f} MB over the next {len(rest)} (target < 50 MB)")


def reload_under_load(predict_url: str, images: list[bytes], count: int) -> None:
    good = {"Authorization": f"Bearer {TOKEN}"}
    requests = [("good", images[i % len(images)], good) for i in range(count)]
    reloads = []

    async def reloading(session: httpx.AsyncClient):
        for _ in range(3):
            await asyncio.sleep(0.5)
            reloads.append((await session.post(predict_url.replace("/predict", "/reload"), headers=good, timeout=120)).status_code)

    results, seconds = asyncio.run(load(predict_url, requests, 16, during=reloading))
    lost = sum(r[1] != 200 for r in results)
    print(f"\nreload under load: {len(results)} requests from 16 clients in {seconds:.1f} s, reloads answered {reloads}; requests lost {lost} (target 0)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("images", help="a folder of images (searched recursively)")
    parser.add_argument("--soak", type=int, default=10_000, help="soak requests (default 10,000)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--limit", type=int, default=400, help="images used (default 400)")
    args = parser.parse_args()
    run = Path(args.run)
    paths = sorted(p for p in Path(args.images).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)[: args.limit]
    images = [p.read_bytes() for p in paths]
    print(f"bench_serve: {run}, {len(paths)} images from {args.images}; {machine()}; {os.cpu_count()} cores shared by the server and the clients")
    offline = offline_rate(run, paths)
    print(f"offline batched predict: {offline:.1f} images/s")
    server, url = start_server(run)
    predict_url = f"{url}/v1/models/{run.resolve().name}/predict"
    try:
        good = {"Authorization": f"Bearer {TOKEN}"}
        asyncio.run(load(predict_url, [("good", images[i % len(images)], good) for i in range(64)], 4))  # warm-up
        print(f"\n{'clients':>7}  {'requests':>8}  {'200':>6}  {'images/s':>8}  {'p50 ms':>7}  {'p99 ms':>7}")
        rates = {}
        for clients in args.clients:
            requests = [("good", image, good) for image in images]
            results, seconds = asyncio.run(load(predict_url, requests, clients))
            rates[clients], row = latency_row(results, seconds, clients)
            print(row)
        if 16 in rates:
            print(f"16 clients: {rates[16] / offline:.2f}x offline batched predict ({rates[16]:.1f} against {offline:.1f} images/s; target >= 0.80)")
        if args.soak:
            soak(predict_url, server, images, args.soak)
        reload_under_load(predict_url, images, max(200, len(images)))
    finally:
        server.send_signal(signal.SIGTERM)
        print(f"\nserver stopped with status {server.wait(timeout=60)} after SIGTERM")

if __name__ == "__main__":
    main()
