"""``fastconv serve --model RUN_DIR``: try a trained model in the browser, on this machine.

The tutorials' "Test online" page for any model ``fastconv train`` wrote: draw on a canvas or
upload a picture, see the classes the network gives it and its first layer's feature maps. One
process, the standard library's ``ThreadingHTTPServer``, the model loaded once
(``fastconv._serve_model.ModelService``). Routes:

* ``GET /`` (and ``/app.js``, ``/style.css``): the page, from the package's ``web/`` folder. Only
  these files are served, read once at start; no path from a client is ever opened.
* ``GET /model``: JSON ``{"architecture", "layers", "input_shape": [C, H, W], "class_names",
  "outputs": "probabilities" | "scores", "test_accuracy" (None when the run recorded none),
  "dataset", "first_layer", "max_body_bytes"}``.
* ``POST /predict``: the body is a PNG or JPEG of exactly the model's input size (the page sends its
  canvas, scaled down to that size). The answer is JSON ``{"predictions": [{"class", "index",
  "probability"}, ...], "feature_maps": {"layer", "shape", "shown", "scaling", "images": [PNG data
  URLs]} or null}``, at most ``TOP_CLASSES`` classes, the most likely first (an SVM model gives
  "score" instead of "probability"), and equals ``fastconv predict`` on the same file.

Every refused request gets a 4xx answer with JSON ``{"error": MESSAGE}``, never a traceback: an
unknown path (404), a wrong method (405, 501), no Content-Length (411), a body over
``max_body_bytes`` (413, refused before it is read), a body that is not a PNG or JPEG, has the wrong
size or declares a huge one (400). An unexpected failure is a 500 with the same JSON, its traceback
in the server's log only. The server binds 127.0.0.1 unless ``--host`` says otherwise and warns when
it listens beyond this machine; Ctrl-C stops it.
"""
from __future__ import annotations

import http.server
import ipaddress
import json
import re
import socket
import socketserver
import sys
import time
import traceback
from importlib import resources

from ._serve_model import BadImage, ModelService
from .train_cli import _argument_type, _common_runtime, _thread_limit

#: The page's files: URL path -> (file in fastconv/web/, content type).
PAGE_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
#: Seconds a connection may stay silent (mid-request, or idle between requests) before it is closed.
CONNECTION_TIMEOUT = 30
#: The page loads nothing from elsewhere: scripts, styles and images come from this server (or data: URLs).
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_port = _argument_type(int, lambda v: 0 <= v <= 65535, "a port number 0-65535")


def add_arguments(parser):
    parser.description = ("Serve a page on which you draw or upload an image and see what a model trained by "
                          "`fastconv train` says, with its first layer's feature maps; also a JSON API "
                          "(GET /model, POST /predict with a PNG or JPEG of the model's input size).")
    parser.add_argument("--model", required=True, metavar="RUN_DIR", help="a folder written by `fastconv train`")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 opens the "
                             "page to every machine that can reach this one)")
    parser.add_argument("--port", type=_port, default=8000, help="port (default 8000; 0 picks a free one)")
    parser.add_argument("--log-requests", action="store_true", help="log every request (default: errors only)")
    _common_runtime(parser)


def run(args):
    with _thread_limit(args.threads):
        service = ModelService(args.model, impl=args.impl)
        server = make_server(service, args.host, args.port, log_requests=args.log_requests)
        host, port = server.server_address[:2]
        url_host = f"[{host}]" if ":" in host else host
        try:  # from before the address is printed: a Ctrl-C from then on is a clean stop
            if not ipaddress.ip_address(host).is_loopback:
                print(f"fastconv serve: warning: listening on {host} port {port}, beyond this machine: anyone "
                      "who can reach it can use the page (the default --host 127.0.0.1 keeps it local)",
                      file=sys.stderr, flush=True)
            print(f"fastconv serve: {service.model.describe()}", flush=True)
            print(f"fastconv serve: open http://{url_host}:{port}/ (Ctrl-C stops)", flush=True)
            server.serve_forever()
        except KeyboardInterrupt:
            print("fastconv serve: stopped", file=sys.stderr, flush=True)
        finally:
            server.server_close()
    return 0


def _read_page_files():
    """{URL path: (bytes, content type)} of the page, read once from the package."""
    web = resources.files("fastconv") / "web"
    return {path: (web.joinpath(name).read_bytes(), kind) for path, (name, kind) in PAGE_FILES.items()}


def make_server(service, host="127.0.0.1", port=8000, log_requests=False):
    """A ThreadingHTTPServer bound to (host, port) that answers for ``service`` (a ModelService);
    ``server_address`` holds the port in use (``port=0`` picks a free one). Call ``serve_forever``."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as exc:
        raise ValueError(f"--host {host}: not an address or a name that resolves ({exc})") from None

    class Server(http.server.ThreadingHTTPServer):
        address_family = family

        def server_bind(self):  # without HTTPServer's reverse DNS look-up of the host (slow offline)
            socketserver.TCPServer.server_bind(self)
            self.server_name, self.server_port = self.server_address[:2]

    handler = type("Handler", (_Handler,), {"service": service, "page": _read_page_files(),
                                            "log_requests": log_requests})
    return Server((host, port), handler)


def _path(target):
    """The path of a request target, without its query string."""
    return target.split("?", 1)[0].split("#", 1)[0]


class _Handler(http.server.BaseHTTPRequestHandler):
    """One connection; ``service``, ``page`` and ``log_requests`` are set by ``make_server``."""

    protocol_version = "HTTP/1.1"  # keep-alive: the page asks again and again while one draws
    server_version = "fastconv-serve"
    timeout = CONNECTION_TIMEOUT
    service = page = None
    log_requests = False

    # ------------------------------------------------------------ routes
    def do_GET(self):
        path = _path(self.path)
        if path == "/model":
            self._guarded(lambda: self._send_json(200, self.service.describe()))
        elif path in self.page:
            body, kind = self.page[path]
            self._send(200, body, kind)
        elif path == "/predict":
            self._send_error_json(405, "POST an image to /predict", allow="POST")
        else:
            self._send_error_json(404, f"no such page: {path[:200]}")

    def do_POST(self):
        path = _path(self.path)
        if path != "/predict":
            if path in self.page or path == "/model":
                self._send_error_json(405, f"{path} answers GET only", allow="GET")
            else:
                self._send_error_json(404, f"no such page: {path[:200]}")
            return
        body = self._read_body(self.service.max_body_bytes)
        if body is not None:
            self._guarded(lambda: self._send_json(200, self._predict(body)))

    def _predict(self, body):
        start = time.perf_counter()
        answer = self.service.predict(body)
        answer["seconds"] = time.perf_counter() - start
        return answer

    # ------------------------------------------------------------ the request body
    def _read_body(self, limit):
        """The body, if its Content-Length is given and at most ``limit``; else None, answered."""
        if self.headers.get("Transfer-Encoding"):
            self._send_error_json(411, "send the image with a Content-Length (no chunked encoding)")
            return None
        text = self.headers.get("Content-Length")
        if text is None:
            self._send_error_json(411, "a Content-Length is required")
            return None
        if not re.fullmatch(r"[0-9]{1,20}", text.strip()):
            self._send_error_json(400, f"bad Content-Length {text[:40]!r}")
            return None
        length = int(text)
        if length > limit:
            self._send_error_json(413, f"the body has {length} bytes, more than this model's limit of {limit} "
                                       "(send a PNG or JPEG of the model's input size)")
            return None
        body = self.rfile.read(length)
        if len(body) != length:
            self._send_error_json(400, f"the body ended after {len(body)} of {length} bytes")
            return None
        return body

    # ------------------------------------------------------------ answers
    def _guarded(self, answer):
        """Run ``answer()``; a BadImage becomes a 400, anything else a 500 (traceback to the log only)."""
        try:
            answer()
        except BadImage as exc:
            self._send_error_json(400, str(exc))
        except Exception as exc:  # noqa: BLE001  (the client gets JSON, the log the traceback)
            traceback.print_exc(file=sys.stderr)
            self._send_error_json(500, f"internal error: {type(exc).__name__}")

    def _send(self, code, body, kind, close=False, headers=()):
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (*_SECURITY_HEADERS.items(), *headers):
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, code, obj, close=False, headers=()):
        self._send(code, json.dumps(obj).encode(), "application/json", close=close, headers=headers)

    def _send_error_json(self, code, message, allow=None):
        # An error may leave an unread body on the connection: close it rather than read it as the next request.
        self._send_json(code, {"error": message}, close=True, headers=[("Allow", allow)] if allow else ())

    def send_error(self, code, message=None, explain=None):
        """http.server's own refusals (a malformed request line, headers too long, an unknown method)
        as JSON too, not its HTML page."""
        if self.request_version == "HTTP/0.9":  # the request line did not parse: answer with a status line
            self.request_version = "HTTP/1.0"
        self._send_error_json(code, message or self.responses.get(code, ("error",))[0])

    def version_string(self):
        return self.server_version  # not the Python version

    def log_request(self, code="-", size="-"):
        if self.log_requests or (isinstance(code, int) and code >= 400):
            super().log_request(code, size)
