"""`headstart serve`: real HTTP calls to a server on a free loopback port (in this process, or as
the command in a subprocess for the signals), and the page in headless Chromium."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from PIL import Image

from headstart import DataError, TransferClassifier, fit_folder
from headstart.cli import main
from headstart.export import export_onnx
from headstart.serve import Settings, create_app, load_served
from headstart.serve.server import bind
from tests.conftest import browser_needed, write_class_folders
from tests.test_estimator import FAST_FINETUNE, colour_data, tiny


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A linear run on the tiny backbone, with a report and a novelty detector (no model.onnx: the
    server exports the graph itself)."""
    root = tmp_path_factory.mktemp("serve")
    write_class_folders(root / "data" / "train", per_class=10, seed=1)
    write_class_folders(root / "data" / "test", per_class=3, seed=2)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HEADSTART_CACHE", str(root / "cache"))
        fit_folder(root / "data", root / "colours", backbone="tiny", engine="torch", strategy="linear")
    return root / "colours"


@pytest.fixture(scope="module")
def served(run):
    """The run loaded for serving once (its graph exported and checked): apps share it."""
    return load_served(run, "colours")


@pytest.fixture(scope="module")
def exported_run(run, tmp_path_factory) -> Path:
    """A copy of the run with RUN/model.onnx, which the server reads instead of exporting."""
    copy = tmp_path_factory.mktemp("exported") / "colours"
    shutil.copytree(run, copy)
    export_onnx(TransferClassifier.load(copy), copy / "model.onnx")
    return copy


def held_images(run: Path) -> list[Path]:
    return sorted((run.parent / "data" / "test").rglob("*.png"))


@contextmanager
def running(app):
    """``app`` on uvicorn in a thread, on a port the system picked; yields its base URL."""
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def served_app(model, **settings):
    return create_app({"colours": model}, Settings(**settings))


async def post_all(url: str, bodies: list[bytes], **options) -> list[httpx.Response]:
    """Every body POSTed at once, as that many concurrent clients would."""
    async with httpx.AsyncClient(timeout=30, **options) as client:
        return await asyncio.gather(*(client.post(url, content=body) for body in bodies))


def test_the_server_answers_what_predict_answers_and_leaves_the_run_as_it_was(run, served):
    before = sorted(p.name for p in run.iterdir())
    images = held_images(run)
    expected = TransferClassifier.load(run)
    probabilities = expected.predict_proba(images)
    with running(served_app(served)) as url:
        raw = [httpx.post(f"{url}/v1/models/colours/predict?top_k=3", content=path.read_bytes()).json()["predictions"][0] for path in images]
        files = [("image", (path.name, path.read_bytes(), "image/png")) for path in images]
        multipart = httpx.post(f"{url}/v1/models/colours/predict", files=files).json()["predictions"]
    assert [p["label"] or "unknown" for p in raw] == expected.predict(images).tolist()  # JSON's null is predict's marker
    np.testing.assert_allclose([p["novelty"] for p in raw], expected.novelty_score(images), atol=1e-4)
    for answer, row in zip(raw, probabilities):
        top = {t["label"]: t["probability"] for t in answer["top"]}
        np.testing.assert_allclose([top[c] for c in expected.classes_], row, atol=1e-4)  # ONNX Runtime's graph = PyTorch's
        assert answer["unknown"] == (answer["novelty"] > answer["threshold"]) and answer["nearest"] == answer["top"][0]["label"]
    assert [p["file"] for p in multipart] == [path.name for path in images]
    assert [p["label"] for p in multipart] == [p["label"] for p in raw]
    assert sorted(p.name for p in run.iterdir()) == before  # the graph was exported in memory, nothing written


def test_a_fine_tuned_ensemble_is_served_as_it_predicts(tmp_path):
    X, y = colour_data(per_class=24)  # enough held-out images for the network's novelty detector
    model = tiny(strategy="finetune_top", finetune=FAST_FINETUNE).fit(X, y)
    model.save(tmp_path / "tuned")
    assert model.fitted_.ensembled and model.fitted_.novelty is not None
    images, _ = colour_data(per_class=2, seed=9)
    bodies = []
    for image in images:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        bodies.append(buffer.getvalue())
    with running(create_app({"tuned": load_served(tmp_path / "tuned")})) as url:
        answers = [httpx.post(f"{url}/v1/models/tuned/predict?top_k=3", content=body).json()["predictions"][0] for body in bodies]
    expected = model.predict_proba(images)
    for answer, row in zip(answers, expected):
        top = {t["label"]: t["probability"] for t in answer["top"]}
        np.testing.assert_allclose([top[c] for c in model.classes_], row, atol=1e-4)
    np.testing.assert_allclose([a["novelty"] for a in answers], model.novelty_score(images), atol=1e-4)


def test_models_health_and_prometheus_metrics(run, served):
    with running(served_app(served)) as url:
        models = httpx.get(f"{url}/v1/models").json()["models"]
        httpx.post(f"{url}/v1/models/colours/predict", content=held_images(run)[0].read_bytes())
        health = httpx.get(f"{url}/healthz").json()
        metrics = httpx.get(f"{url}/metrics").text
        report = httpx.get(f"{url}{models[0]['report']}")
        page = httpx.get(f"{url}/").text
        docs = httpx.get(f"{url}/openapi.json").json()
        swagger = httpx.get(f"{url}/docs").text
        assets = [httpx.get(url + asset).status_code for asset in re.findall(r'(?:src|href)="(/[^"]+\.(?:js|css))"', swagger)]
    (model,) = models
    assert model["name"] == "colours" and model["classes"] == ["blue", "green", "red"]
    assert model["strategy"] == "linear" and model["engine"] == "onnxruntime" and model["novelty"]["method"]
    assert model["metrics"]["split"] == "test" and 0 <= model["metrics"]["accuracy"] <= 1
    assert health == {"status": "ok", "models": ["colours"], "queue": 0}
    assert re.search(r'headstart_http_requests_total\{path="/v1/models/\{name\}/predict",status="200"\} 1\.0', metrics)
    assert "headstart_batch_size_count 1.0" in metrics and "headstart_queue_images 0.0" in metrics
    assert report.status_code == 200 and 'id="verdict"' in report.text
    assert 'id="files"' in page and "/v1/models" in page
    assert "multipart/form-data" in docs["paths"]["/v1/models/{name}/predict"]["post"]["requestBody"]["content"]  # /docs can upload
    assert len(assets) == 2 and assets == [200, 200]  # /docs works offline: Swagger UI from the package, not a CDN


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims width x height pixels: a decompression bomb's signature."""
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    header = b"IHDR" + struct.pack(">II", width, height) + bytes(data[24:29])
    data[12:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(header))
    return bytes(data)


def test_every_bad_request_is_a_4xx_with_a_one_line_reason(run, served):
    png = held_images(run)[0].read_bytes()
    bad = {
        "not an image": ("/v1/models/colours/predict", b"hello, I am a text file", 400, "not a recognised image format"),
        "truncated": ("/v1/models/colours/predict", png[: len(png) // 2], 400, "truncated"),
        "bomb": ("/v1/models/colours/predict", png_claiming(30_000, 30_000), 400, "decompression bomb"),
        "over the limit": ("/v1/models/colours/predict", png + bytes(60_000), 413, "over the 0.0476837 MB limit"),
        "empty": ("/v1/models/colours/predict", b"", 400, "empty request"),
        "no such model": ("/v1/models/../../etc/passwd/predict", png, 404, "Not Found"),
        "unknown name": ("/v1/models/nope/predict", png, 404, "no model named 'nope'"),
        "bad top_k": ("/v1/models/colours/predict?top_k=0", png, 422, "top_k"),
    }
    with running(served_app(served, max_upload=50_000)) as url:
        answers = {case: httpx.post(url + path, content=body) for case, (path, body, _, _) in bad.items()}
        multipart = httpx.post(f"{url}/v1/models/colours/predict", data={"note": "no file"}, files={})
        json_body = httpx.post(f"{url}/v1/models/colours/predict", json={"instances": [{"b64": "iVBORw0KGgo="}]})
        too_many = httpx.post(f"{url}/v1/models/colours/predict", files=[("image", (f"{i}.png", png_claiming(8, 8), "image/png")) for i in range(65)])
        good = httpx.post(f"{url}/v1/models/colours/predict", content=png)
    for case, (_, _, status, reason) in bad.items():
        answer = answers[case]
        assert answer.status_code == status, case
        assert reason in answer.json()["error"] and "\n" not in answer.json()["error"], case
    assert multipart.status_code == 400 and "error" in multipart.json()
    assert json_body.status_code == 415 and "curl --data-binary @FILE" in json_body.json()["error"]
    assert too_many.status_code == 400 and "Maximum number of files is 64" in too_many.json()["error"]
    assert good.status_code == 200  # bad requests leave the server serving


def test_a_token_guards_the_api_and_is_required_beyond_loopback(run, served, capsys):
    with running(served_app(served, token="s3cret")) as url:
        missing = httpx.get(f"{url}/v1/models")
        wrong = httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer nope"})
        right = httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer s3cret"})
        health = httpx.get(f"{url}/healthz")
    assert missing.status_code == wrong.status_code == 401 and "Authorization: Bearer" in missing.json()["error"]
    assert right.status_code == 200 and health.status_code == 200
    assert main(["serve", str(run), "--host", "0.0.0.0"]) == 2
    assert "give --token" in capsys.readouterr().err
    busy = bind("127.0.0.1", 0)
    assert main(["serve", str(run), "--port", str(busy.getsockname()[1])]) == 2  # said before any model loads
    assert "cannot listen on 127.0.0.1" in capsys.readouterr().err
    busy.close()
    # values that would refuse or time out every request, or that the socket would die on, are said first
    for flag, value in (("--port", "-1"), ("--max-upload-mb", "-1"), ("--timeout", "0"), ("--max-wait-ms", "-3"), ("--queue", "0"), ("--batch-size", "0")):
        assert main(["serve", str(run), flag, value]) == 2
        err = capsys.readouterr().err
        assert " must be " in err and flag in err, err
    # checked where they are made, so a Python user's settings are too
    for bad in ({"max_batch": 0}, {"max_wait": -0.003}, {"timeout": 0}, {"device": "gpu"}):
        with pytest.raises(DataError, match=f"^serve setting {next(iter(bad))} must be "):
            Settings(**bad)


def batches_run(metrics: str) -> float:
    return float(re.search(r"^headstart_batch_size_count (\S+)$", metrics, re.M).group(1))


def test_concurrent_requests_share_batches_a_full_queue_answers_429_and_a_slow_one_503(run, served):
    png = held_images(run)[0].read_bytes()
    with running(served_app(served, max_wait=0.2)) as url:  # a batch waits 200 ms for company
        answers = asyncio.run(post_all(f"{url}/v1/models/colours/predict", [png] * 8))
        batches = batches_run(httpx.get(f"{url}/metrics").text)
    assert [a.status_code for a in answers] == [200] * 8
    assert batches < 8  # eight requests, fewer runs of the model
    with running(served_app(served, max_wait=5.0)) as url:
        started = time.monotonic()
        alone = httpx.post(f"{url}/v1/models/colours/predict", content=png)
        waited = time.monotonic() - started
    assert alone.status_code == 200 and waited < 2.5  # nothing else on its way: no 5 s wait for company

    def slow(batch):
        time.sleep(0.3)
        return served.runner(batch)

    app = create_app({"colours": replace(served, runner=slow)}, Settings(max_queue=2, max_batch=1, max_wait=0))
    with running(app) as url:
        answers = asyncio.run(post_all(f"{url}/v1/models/colours/predict", [png] * 6))
    statuses = sorted(a.status_code for a in answers)
    assert set(statuses) == {200, 429} and statuses.count(200) >= 2
    assert all("busy" in a.json()["error"] and a.headers["retry-after"] for a in answers if a.status_code == 429)
    with running(create_app({"colours": replace(served, runner=slow)}, Settings(timeout=0.1))) as url:
        late = httpx.post(f"{url}/v1/models/colours/predict", content=png)
        health = httpx.get(f"{url}/healthz")
    assert late.status_code == 503 and "timed out after 0.1 s" in late.json()["error"]
    assert health.status_code == 200  # the abandoned image was skipped, the server goes on


def test_a_reload_under_load_loses_no_request(run, served):
    png = held_images(run)[0].read_bytes()

    async def load_and_reload(url: str):
        async with httpx.AsyncClient(timeout=30) as client:
            before = (await client.get(f"{url}/v1/models/colours")).json()["loaded_at"]
            requests = [asyncio.create_task(client.post(f"{url}/v1/models/colours/predict", content=png)) for _ in range(40)]
            reload = await client.post(f"{url}/v1/models/colours/reload")
            requests += [asyncio.create_task(client.post(f"{url}/v1/models/colours/predict", content=png)) for _ in range(40)]
            answers = await asyncio.gather(*requests)
            after = (await client.get(f"{url}/v1/models/colours")).json()["loaded_at"]
        return before, reload, answers, after

    with running(served_app(served)) as url:
        before, reload, answers, after = asyncio.run(load_and_reload(url))
    assert reload.status_code == 200 and after > before
    assert [a.status_code for a in answers] == [200] * 80


def test_a_graph_is_exported_once_and_a_saved_one_used_only_while_newer_than_the_model(run, exported_run, monkeypatch, tmp_path):
    load_served(run)  # exports, and keeps the graph in the cache folder

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr("headstart.export.export_onnx", no_export)
    assert load_served(run).engine == "onnxruntime"  # the cached graph: same model.json, same weights
    assert load_served(exported_run).engine == "onnxruntime"  # read RUN/model.onnx
    weights = exported_run / "model.safetensors"
    later = (exported_run / "model.onnx").stat().st_mtime + 10
    os.utime(weights, (later, later))  # a refit after the export: the saved graph is stale
    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "empty"))  # and no graph of this model is cached
    with pytest.raises(AssertionError, match="exported again"):
        load_served(exported_run)
    os.utime(weights, (later - 20, later - 20))


def test_the_command_drains_requests_on_sigterm_and_reloads_on_sighup(run, exported_run):
    command = [sys.executable, "-m", "headstart", "-q", "serve", str(exported_run), "--port", "0", "--max-wait-ms", "400"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ | {"HEADSTART_CACHE": str(run.parent / "cache")})
    try:
        line = server.stdout.readline()
        url = re.search(r"at (http://\S+)/ ", line).group(1)
        before = httpx.get(f"{url}/v1/models/colours").json()["loaded_at"]
        server.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while httpx.get(f"{url}/v1/models/colours").json()["loaded_at"] == before:
            assert time.monotonic() < deadline, "SIGHUP did not reload the model"
            time.sleep(0.2)
        answers = []
        png = held_images(run)[0].read_bytes()
        # One client made beforehand: httpx.post makes one (and its SSL context) per call, which on
        # a slow 2-core machine kept some of the six from reaching the server within the 0.15 s.
        with httpx.Client(timeout=30) as http:
            clients = [threading.Thread(target=lambda: answers.append(http.post(f"{url}/v1/models/colours/predict", content=png))) for _ in range(6)]
            for client in clients:
                client.start()
            time.sleep(0.15)  # the requests are in the batcher's 400 ms wait when SIGTERM arrives
            server.send_signal(signal.SIGTERM)
            for client in clients:
                client.join(timeout=30)
        assert server.wait(timeout=30) == 0
    finally:
        server.kill()
        stderr = server.stderr.read()
        server.stdout.close()
        server.stderr.close()
    assert [a.status_code for a in answers] == [200] * 6, stderr
    assert "Traceback" not in stderr
    assert all(json.loads(a.text)["predictions"][0]["label"] in ("blue", "green", "red") for a in answers)


def test_ctrl_c_twice_stops_the_server_at_once_and_says_so(run, exported_run):
    # uvicorn's forced exit cancels the app's lifespan and logged its CancelledError as an ERROR
    # traceback; the server then said the requests in flight "were answered"
    command = [sys.executable, "-m", "headstart", "serve", str(exported_run), "--port", "0"]
    server = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ | {"HEADSTART_CACHE": str(run.parent / "cache")},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as a terminal's foreground job has it
    )
    try:
        url = re.search(r"at (http://\S+)/ ", server.stdout.readline()).group(1)
        assert httpx.get(f"{url}/healthz").status_code == 200  # serving: uvicorn holds the signals
        host, port = url.removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port))) as upload:  # a request in flight: half its body sent
            upload.sendall(b"POST /v1/models/colours/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
            time.sleep(0.3)
            server.send_signal(signal.SIGINT)  # the server waits for the upload to finish...
            time.sleep(0.5)
            server.send_signal(signal.SIGINT)  # ...until a second Ctrl+C
            out, err = server.communicate(timeout=30)
    finally:
        server.kill()
    assert "stopped at once (Ctrl+C twice)" in out and "were answered" not in out
    assert "Traceback" not in err and "CancelledError" not in err, err


@browser_needed
def test_the_page_classifies_an_uploaded_image(run, served, browser):
    from selenium.webdriver.support.ui import WebDriverWait

    image = held_images(run)[-1]
    expected = TransferClassifier.load(run).predict([image])[0]
    with running(served_app(served)) as url:
        browser.get(url + "/")
        WebDriverWait(browser, 20).until(lambda b: b.find_element("id", "classes").text)
        assert [chip.text for chip in browser.find_elements("css selector", "#classes span")] == ["blue", "green", "red"]
        browser.find_element("id", "files").send_keys(str(image))
        label = WebDriverWait(browser, 20).until(lambda b: b.find_elements("css selector", ".top-label"))[0]
        bars = browser.find_elements("css selector", ".bar")
        errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert label.text == expected
    assert len(bars) == 3 and bars[0].text.startswith(expected)
    assert errors == []
