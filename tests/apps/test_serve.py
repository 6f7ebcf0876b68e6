"""`fastconv serve`: its endpoints through a real server on a free port, its errors, threads and Ctrl-C.

The models are real: tiny `fastconv train` runs on a small generated data set. The page in a real
browser is tests/apps/test_serve_browser.py.
"""

import base64
import contextlib
import http.client
import io
import json
import queue
import re
import signal
import socket
import struct
import subprocess
import threading
import time
import zlib

import numpy as np
import pytest

from fastconv import datasets as D
from fastconv import naive
from fastconv.__main__ import main
from fastconv.apps import serve, serve_model
from fastconv.apps.train_cli import class_probabilities
from fastconv.io.child import python_module
from fastconv.io.inputs import read_image

from _helpers import popen_taking_ctrl_c
from test_datasets import write_cifar, write_learnable_set

Image = pytest.importorskip("PIL.Image", reason="fastconv serve decodes images with Pillow")

CONV_NET = "conv6x3-relu-maxpool2-fc"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Trained run folders: on a small fashion-mnist "conv" (softmax, a conv first layer) and "svm"
    (the fc net with the SVM loss: scores, no feature maps); "colour" on a small CIFAR-10; and test images."""
    root = tmp_path_factory.mktemp("serve")
    arrays = write_learnable_set(root / "data" / "fashion-mnist", np.random.default_rng(0), 300, 100)
    write_cifar(root / "data" / "cifar10", np.random.default_rng(1), n=20)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FASTCONV_DATA", str(root / "data"))
        mp.setenv("HOME", str(root / "home"))
        mp.setenv("FASTCONV_MALLOC_TUNING", "0")
        mp.setattr(D.registry, "SYSTEM_DIRS", {})
        mp.setattr(D.download, "_urlopen", lambda *a, **k: (_ for _ in ()).throw(OSError("no network in tests")))
        for name, model in (
            ("conv", ["--model", CONV_NET]),
            ("svm", ["--model", "fc", "--loss", "svm"]),
            ("colour", ["--dataset", "cifar10", "--model", "conv5x3-relu-avgpool4-fc"]),
        ):
            assert (
                main(
                    [
                        "train",
                        "--dataset",
                        "fashion-mnist",
                        *model,
                        "--epochs",
                        "1",
                        "--batch-size",
                        "32",
                        "--lr",
                        "3e-3",
                        "--out",
                        str(root / name),
                        "--no-progress",
                        "--no-plots",
                        "--threads",
                        "1",
                        "--quiet",
                    ]
                )
                == 0
            )
    return {
        "conv": root / "conv",
        "svm": root / "svm",
        "colour": root / "colour",
        "images": arrays["test_images"],
        "root": root,
    }


@contextlib.contextmanager
def serving(service, log_requests=False):
    """A real server for ``service`` on a free port of 127.0.0.1, in a thread; yields its base URL."""
    server = serve.make_server(service, "127.0.0.1", 0, log_requests=log_requests)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture(scope="module")
def conv_service(runs):
    return serve_model.ModelService(runs["conv"])


@pytest.fixture(scope="module")
def base(conv_service):
    with serving(conv_service) as url:
        yield url


def request(base, method, path, body=None, headers=None):
    """(status, headers, body bytes) of one request on a fresh connection."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def post_image(base, data):
    status, headers, body = request(base, "POST", "/predict", data, {"Content-Type": "image/png"})
    return status, json.loads(body)


def png_bytes(array, fmt="PNG", **save):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **save)
    return buf.getvalue()


def cli_predictions(capsys, run_dir, path, top=10):
    """[(class name, printed value), ...] that `fastconv predict --top` prints for the file ``path``."""
    capsys.readouterr()
    assert main(["predict", "--model", str(run_dir), str(path), "--top", str(top)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{path}: ")
    return re.findall(r"(.+?) \((?:score )?(-?[0-9.]+)\)(?:, |$)", line[len(f"{path}: ") :])


def assert_equals_predict(capsys, run_dir, path, answer, key="probability"):
    """The server's answer for the file ``path`` is `fastconv predict`'s: the same classes in the same
    order with the same printed values, and the very same float64 values."""
    printed = cli_predictions(capsys, run_dir, path, top=len(answer["predictions"]))
    assert [(p["class"], f"{p[key]:.3f}") for p in answer["predictions"]] == printed
    model = serve_model.ModelService(run_dir).model
    exact = class_probabilities(model, read_image(path, model.input_shape)[0])[0]
    assert [p[key] for p in answer["predictions"]] == [float(exact[p["index"]]) for p in answer["predictions"]]


def assert_json_error(status, headers, body, code, needle):
    assert status == code, body
    assert headers["Content-Type"] == "application/json"
    message = json.loads(body)["error"]
    assert needle in message and "Traceback" not in message
    return message


# ============================================================================ the endpoints
def test_model_description(base, runs):
    status, headers, body = request(base, "GET", "/model")
    assert status == 200 and headers["Content-Type"] == "application/json"
    info = json.loads(body)
    history = json.loads((runs["conv"] / "history.json").read_text())
    assert info["input_shape"] == [1, 28, 28] and info["layers"] == CONV_NET
    assert info["class_names"][:2] == ["T-shirt/top", "Trouser"] and len(info["class_names"]) == 10
    assert info["test_accuracy"] == history["test_accuracy"] and info["dataset"] == "fashion-mnist"
    assert info["outputs"] == "probabilities" and info["first_layer"] == "conv6x3"
    assert info["architecture"].startswith("Sequential conv6x3-relu-maxpool2-fc on (1, 28, 28)")


def test_model_without_history_has_no_accuracy(runs, tmp_path):
    for name in ("model.json", "model.npz"):
        (tmp_path / name).write_bytes((runs["conv"] / name).read_bytes())
    info = serve_model.ModelService(tmp_path).describe()
    assert info["test_accuracy"] is None and info["dataset"] is None and info["class_names"][1] == "Trouser"


def test_page_files(base):
    status, headers, page = request(base, "GET", "/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert b'<canvas id="pad"' in page and b'src="/app.js"' in page and b'href="/style.css"' in page
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    for path, kind in (("/app.js", "text/javascript"), ("/style.css", "text/css"), ("/?from=test", "text/html")):
        status, headers, body = request(base, "GET", path)
        assert status == 200 and headers["Content-Type"].startswith(kind), path
        # nothing loaded from elsewhere (no CDN): no URL of another host, no CSS import
        assert not re.search(rb"""(src|href|url\()\s*=?\s*["']?(https?:)?//|@import|fetch\(["']http""", body), path


@pytest.mark.parametrize(
    "path",
    [
        "/index.html",
        "/web/index.html",
        "/../serve.py",
        "/%2e%2e/README.md",
        "//etc/passwd",
        "/app.js/",
        "/favicon.ico",
    ],
)
def test_only_the_page_files_are_served(base, path):
    assert_json_error(*request(base, "GET", path), 404, "no such page")


def test_png_prediction_equals_fastconv_predict(base, runs, capsys, tmp_path):
    for i in (0, 7):
        path = tmp_path / f"img{i}.png"
        path.write_bytes(png_bytes(runs["images"][i]))
        status, answer = post_image(base, path.read_bytes())
        assert status == 200, answer
        assert len(answer["predictions"]) == 10 and answer["seconds"] >= 0
        assert_equals_predict(capsys, runs["conv"], path, answer)


@pytest.mark.parametrize("kind", ["jpeg", "rgb-png", "16-bit-png", "grey-alpha-png"])
def test_other_encodings_equal_fastconv_predict(base, runs, capsys, tmp_path, kind):
    x = runs["images"][3]
    data = {
        "jpeg": lambda: png_bytes(x, "JPEG", quality=90),
        "rgb-png": lambda: png_bytes(np.stack([x, x // 2, 255 - x], axis=-1)),
        "16-bit-png": lambda: png_bytes(x.astype(np.uint16) * 257),
        "grey-alpha-png": lambda: png_bytes(np.stack([x, np.full_like(x, 128)], axis=-1)),
    }[kind]()
    path = tmp_path / f"img.{'jpg' if kind == 'jpeg' else 'png'}"
    path.write_bytes(data)
    status, answer = post_image(base, data)
    assert status == 200, answer
    assert_equals_predict(capsys, runs["conv"], path, answer)


def test_feature_maps_are_the_first_conv_layer_output(base, runs, conv_service):
    x = runs["images"][5]
    status, answer = post_image(base, png_bytes(x))
    assert status == 200
    maps = answer["feature_maps"]
    assert maps["layer"] == "conv6x3" and maps["shape"] == [6, 28, 28] and maps["shown"] == 6
    # the reference: the naive loop convolution of the preprocessed image, each map scaled to 0-255
    model = conv_service.model
    out, _ = naive.conv_forward(model.prepare(x[None, None]), model.params["W1"], model.params["b1"], pad=1)
    for picture, m in zip(maps["images"], out[0].astype(np.float64)):
        assert picture.startswith("data:image/png;base64,")
        img = Image.open(io.BytesIO(base64.b64decode(picture.split(",", 1)[1])))
        assert img.mode == "P" and img.size == (28, 28)
        expected = np.round((m - m.min()) * 255 / (m.max() - m.min()))
        assert np.max(np.abs(np.asarray(img, dtype=np.float64) - expected)) <= 1  # fast and naive round apart


def test_feature_maps_are_capped(runs, monkeypatch):
    monkeypatch.setattr(serve_model, "MAX_FEATURE_MAPS", 2)
    maps = serve_model.ModelService(runs["conv"]).predict(png_bytes(runs["images"][0]))["feature_maps"]
    assert maps["shape"] == [6, 28, 28] and maps["shown"] == 2 and len(maps["images"]) == 2


def test_constant_feature_map_is_dark():
    pictures = serve_model.feature_map_pictures(np.full((1, 3, 4), 2.5))
    img = Image.open(io.BytesIO(base64.b64decode(pictures[0].split(",", 1)[1])))
    assert np.all(np.asarray(img) == 0)


def test_svm_fc_model_gives_scores_and_no_maps(runs, capsys, tmp_path):
    service = serve_model.ModelService(runs["svm"])
    assert service.describe()["outputs"] == "scores" and service.describe()["first_layer"] == "fc500"
    path = tmp_path / "img.png"
    path.write_bytes(png_bytes(runs["images"][2]))
    with serving(service) as url:
        status, answer = post_image(url, path.read_bytes())
    assert status == 200 and answer["feature_maps"] is None
    assert "probability" not in answer["predictions"][0]
    assert_equals_predict(capsys, runs["svm"], path, answer, key="score")


def test_colour_model(runs, capsys, tmp_path):
    service = serve_model.ModelService(runs["colour"])
    info = service.describe()
    assert info["input_shape"] == [3, 32, 32] and info["dataset"] == "cifar10" and info["class_names"][0] == "airplane"
    rgb = np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    path = tmp_path / "colour.png"
    path.write_bytes(png_bytes(rgb))
    with serving(service) as url:
        status, answer = post_image(url, path.read_bytes())
        assert status == 200 and answer["feature_maps"]["shape"] == [5, 32, 32]
        assert_equals_predict(capsys, runs["colour"], path, answer)
        # a grey picture of the right size is read as colour (R = G = B), as `fastconv predict` reads it
        grey = tmp_path / "grey.png"
        grey.write_bytes(png_bytes(rgb[..., 0]))
        status, answer = post_image(url, grey.read_bytes())
        assert status == 200
        assert_equals_predict(capsys, runs["colour"], grey, answer)
        assert_json_error(
            *request(url, "POST", "/predict", png_bytes(runs["images"][0])),
            400,
            "the image is 28x28 pixels; the model takes 32x32 (colour)",
        )


# ============================================================================ bad requests
def png_declaring(width, height):
    """A PNG whose header declares width x height pixels, with no pixel data behind it."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    "case, needle",
    [
        ("text", "not a PNG or JPEG image"),
        ("gif", "not a PNG or JPEG image"),
        ("bmp", "not a PNG or JPEG image"),
        ("truncated-png", "not a readable image"),
        ("wrong-size", "the image is 56x28 pixels; the model takes 28x28"),
        pytest.param(
            "huge-declared-size",
            "the image is 10000x10000 pixels",  # Pillow warns, the server refuses
            marks=pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning"),
        ),
        ("decompression-bomb", "decompression bomb"),
        ("empty", "not a PNG or JPEG image (0 bytes)"),
    ],
)
def test_bad_images_are_400(base, runs, case, needle):
    x = runs["images"][0]
    body = {
        "text": lambda: b"hello, not an image",
        "gif": lambda: png_bytes(x, "GIF"),
        "bmp": lambda: png_bytes(x, "BMP"),
        "truncated-png": lambda: png_bytes(np.random.default_rng(0).integers(0, 256, (28, 28), np.uint8))[:-60],
        "wrong-size": lambda: png_bytes(np.hstack([x, x])),
        "huge-declared-size": lambda: png_declaring(10000, 10000),
        "decompression-bomb": lambda: png_declaring(40000, 40000),
        "empty": lambda: b"",
    }[case]()
    assert_json_error(*request(base, "POST", "/predict", body), 400, needle)


def test_body_limit(base, conv_service):
    limit = conv_service.max_body_bytes
    assert limit == serve_model.body_limit((1, 28, 28)) >= 4 * 28 * 28
    # at the limit the body is read (and is no image); one byte more is refused before it is sent
    assert_json_error(*request(base, "POST", "/predict", b"x" * limit), 400, "not a PNG or JPEG image")
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.putrequest("POST", "/predict")
    conn.putheader("Content-Length", str(10**12))
    conn.endheaders()  # no body follows: the answer must not wait for it
    response = conn.getresponse()
    assert_json_error(response.status, response.headers, response.read(), 413, "more than this model's limit")
    conn.close()
    assert_json_error(*request(base, "POST", "/predict", b"x" * (limit + 1)), 413, f"limit of {limit}")


def raw_exchange(base, data, shut_write=True):
    """Send ``data`` as it is on a new connection; the whole answer as (status, headers, body)."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(data)
        if shut_write:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("latin1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize(
    "case, code, needle",
    [
        ("no-length", 411, "Content-Length is required"),
        ("chunked", 411, "no chunked encoding"),
        ("bad-length", 400, "bad Content-Length"),
        ("negative-length", 400, "bad Content-Length"),
        ("short-body", 400, "the body ended after 10 of 100 bytes"),
        ("bad-version", 400, "Bad request version"),
        ("unknown-method", 501, "Unsupported method"),
        ("get-predict", 405, "POST an image to /predict"),
        ("post-model", 405, "/model answers GET only"),
        ("post-elsewhere", 404, "no such page"),
    ],
)
def test_bad_requests_get_json_errors(base, case, code, needle):
    data = {
        "no-length": b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "chunked": (
            b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        ),
        "bad-length": b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 12abc\r\n\r\n",
        "negative-length": b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -5\r\n\r\n",
        "short-body": b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n0123456789",
        "bad-version": b"GET / HTTQ/1.1\r\n\r\n",
        "unknown-method": b"DELETE /model HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "get-predict": b"GET /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "post-model": b"POST /model HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n",
        "post-elsewhere": b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n",
    }[case]
    status, headers, body = raw_exchange(base, data)
    assert_json_error(status, headers, body, code, needle)
    assert headers.get("Connection") == "close"


def test_unexpected_failure_is_a_json_500(runs, capsys):
    service = serve_model.ModelService(runs["conv"])
    service.predict = lambda body: 1 / 0
    with serving(service) as url:
        status, headers, body = request(url, "POST", "/predict", png_bytes(runs["images"][0]))
    assert_json_error(status, headers, body, 500, "internal error: ZeroDivisionError")
    assert "Traceback" in capsys.readouterr().err  # in the server's log, not in the answer


@pytest.mark.parametrize("log_requests", [False, True])
def test_request_log(runs, capsys, log_requests):
    with serving(serve_model.ModelService(runs["conv"]), log_requests=log_requests) as url:
        capsys.readouterr()
        assert request(url, "GET", "/model")[0] == 200 and request(url, "GET", "/nope")[0] == 404
    log = capsys.readouterr().err
    assert '"GET /nope HTTP/1.1" 404' in log  # errors always
    assert ('"GET /model HTTP/1.1" 200' in log) == log_requests


def test_a_silent_connection_is_closed(runs, monkeypatch):
    monkeypatch.setattr(serve, "REQUEST_TIMEOUT", 0.5)
    with serving(serve_model.ModelService(runs["conv"])) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and nothing more
            start = time.monotonic()
            assert sock.recv(100) == b""  # closed by the server, not by our 10 s timeout
            assert time.monotonic() - start < 5


# ============================================================================ threads
def test_concurrent_requests(base, runs):
    images = [png_bytes(runs["images"][i]) for i in range(8)]
    expected = [post_image(base, data)[1]["predictions"] for data in images]
    results, errors = {}, []

    def client(t):
        try:
            for k in range(5):
                i = (t + k) % len(images)
                status, answer = post_image(base, images[i])
                assert status == 200
                results[t, k] = answer["predictions"] == expected[i]
        except Exception as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(results) == 40 and all(results.values())


def test_a_slow_request_does_not_hold_up_the_others(runs):
    service = serve_model.ModelService(runs["conv"])
    entered, release = threading.Event(), threading.Event()
    predict = service.predict

    def held_predict(body):
        entered.set()
        release.wait(30)
        return predict(body)

    service.predict = held_predict
    with serving(service) as url:
        answers = []
        slow = threading.Thread(target=lambda: answers.append(post_image(url, png_bytes(runs["images"][0]))))
        slow.start()
        assert entered.wait(30)
        status, _, body = request(url, "GET", "/model")  # answered while the prediction is held
        assert status == 200 and json.loads(body)["input_shape"] == [1, 28, 28]
        assert not answers
        release.set()
        slow.join(30)
    assert answers[0][0] == 200


# ============================================================================ the command
class _Child:
    """`fastconv serve ...` in a child process, its output lines read as they come."""

    def __init__(self, *args):
        self.proc = popen_taking_ctrl_c(
            python_module("fastconv", "serve", *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines = queue.Queue()
        for stream in (self.proc.stdout, self.proc.stderr):
            threading.Thread(target=lambda s=stream: [self.lines.put(line) for line in s], daemon=True).start()
        self.seen = []

    def wait_for(self, pattern, timeout=60):
        """The match of ``pattern`` in a line of stdout or stderr, already seen or still to come."""
        for line in self.seen:
            if re.search(pattern, line):
                return re.search(pattern, line)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                assert self.proc.poll() is None, f"exited {self.proc.returncode}: {''.join(self.seen)}"
                continue
            self.seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match
        raise AssertionError(f"no line matching {pattern!r} in {timeout} s: {''.join(self.seen)}")

    def interrupt(self, timeout=30):
        """SIGINT, as Ctrl-C sends it; the exit code and all the output."""
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout)
        time.sleep(0.1)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return code, "".join(self.seen)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()  # our own child, by its handle
            self.proc.wait(10)


def test_ctrl_c_stops_the_server_cleanly(runs):
    child = _Child("--model", str(runs["conv"]), "--port", "0")
    try:
        url = child.wait_for(r"open (http://127\.0\.0\.1:\d+)/ \(Ctrl-C stops\)")[1]
        host, port = url.removeprefix("http://").split(":")
        idle = http.client.HTTPConnection(host, int(port), timeout=30)  # a kept-alive connection stays open
        idle.request("GET", "/model")
        assert idle.getresponse().read().startswith(b'{"architecture"')
        assert post_image(url, png_bytes(runs["images"][0]))[0] == 200
        code, output = child.interrupt()
        idle.close()
    finally:
        child.kill()
    assert code == 0, output
    assert "fastconv serve: stopped" in output and "Traceback" not in output and "warning" not in output
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=5).close()


def test_listening_beyond_this_machine_warns(runs):
    child = _Child("--model", str(runs["conv"]), "--host", "0.0.0.0", "--port", "0")
    try:
        child.wait_for(r"warning: listening on 0\.0\.0\.0 port \d+, beyond this machine")
        child.wait_for(r"open http://0\.0\.0\.0:\d+/")
        code, output = child.interrupt()
    finally:
        child.kill()
    assert code == 0, output


def test_command_line_errors(runs, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert main(["serve", "--model", str(runs["conv"]), "--port", str(taken.getsockname()[1])]) == 1
    assert "fastconv serve: error:" in capsys.readouterr().err
    assert main(["serve", "--model", str(runs["root"] / "nothing")]) == 1
    assert "no such model file" in capsys.readouterr().err

    def unresolvable(*args, **kwargs):  # no name look-up leaves this machine in a test
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(serve.socket, "getaddrinfo", unresolvable)
        assert main(["serve", "--model", str(runs["conv"]), "--host", "nowhere.invalid", "--port", "0"]) == 1
    assert "--host nowhere.invalid: not an address or a name that resolves" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["serve", "--model", str(runs["conv"]), "--port", "70000"])
    assert info.value.code == 2 and "expected a port number 0-65535, got 70000" in capsys.readouterr().err
