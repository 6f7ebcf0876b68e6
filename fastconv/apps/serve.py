"""``fastconv serve --model RUN_DIR``: try a trained model in the browser, on this machine.

The tutorials' "Test online" page for any model ``fastconv train`` wrote: draw on a canvas or
upload a picture, see the classes the network gives it and its first layer's feature maps. One
process, the model loaded once (``fastconv.apps.serve_model.ModelService``). Routes:

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
size or declares a huge one (400), a head over ``MAX_HEAD_BYTES`` (431), a ``Host`` that is not a
name of this server or a request from another site (403: DNS rebinding and cross-site requests,
``_Names``). An unexpected failure is a 500 with the same JSON, its traceback in the server's log
only. The server binds 127.0.0.1 unless ``--host`` says otherwise and warns when it listens beyond
this machine; Ctrl-C stops it.

Connections (``Server``): one thread, the loop, accepts (a listen backlog of ``LISTEN_BACKLOG``),
reads every connection until its request is whole and writes every answer, all without blocking
(``selectors``); only whole requests reach the ``WORKERS`` threads that answer them, through a queue
of at most ``QUEUED_REQUESTS``. So a slow client costs a file descriptor and a few kilobytes, never a
thread. A request must have arrived whole within ``REQUEST_TIMEOUT`` seconds of the connection's
opening (or of its previous answer), and its answer must be taken within as long. At most
``max_connections`` are open (from the open-file limit); beyond that the connection that has waited
longest for its request is closed, and a full queue answers 503; out of file descriptors, the loop
closes one or pauses, it never spins. Each of these is logged, at most one line a second of a kind;
a client that went away before its answer is one line, never a traceback.
"""

from __future__ import annotations

import email.utils
import errno
import http.server
import io
import ipaddress
import json
import os
import queue
import re
import selectors
import socket
import sys
import threading
import time
import traceback
from importlib import resources

from ..io.inputs import quiet_pillow_size_warning
from .cli_args import argument_type, common_runtime, thread_limit
from .serve_model import BadImage, ModelService

#: The page's files: URL path -> (file in fastconv/apps/web/, content type).
PAGE_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
#: Seconds within which a whole request must arrive (from the connection's opening or its previous
#: answer), and within which an answer must be taken; a connection silent that long is closed.
REQUEST_TIMEOUT = 20
#: Connections the kernel holds for us while the loop is busy (the default of 5 dropped clients in bursts).
LISTEN_BACKLOG = 1024
#: Threads that answer whole requests (a prediction is milliseconds of numpy; more threads only queue on the cores).
WORKERS = 4
#: Whole requests waiting for a worker; more are answered 503 at once.
QUEUED_REQUESTS = 256
#: Most open connections, also when the open-file limit allows more.
MAX_CONNECTIONS = 4096
#: Most bytes of a request's line and headers.
MAX_HEAD_BYTES = 64 << 10
#: Most bytes of requests still arriving, in all connections together (each holds at most its head and body).
MAX_BUFFERED_BYTES = 64 << 20
#: File descriptors kept for everything but connections (the model's files, logs, Pillow, the loop's own).
_FD_RESERVE = 64
#: Seconds a closed-for-writing connection is drained, so that the client reads its answer, not a reset.
_LINGER = 2.0
#: The page loads nothing from elsewhere: scripts, styles and images come from this server (or data: URLs).
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_port = argument_type(int, lambda v: 0 <= v <= 65535, "a port number 0-65535")


def add_arguments(parser):
    parser.description = (
        "Serve a page on which you draw or upload an image and see what a model trained by "
        "`fastconv train` says, with its first layer's feature maps; also a JSON API "
        "(GET /model, POST /predict with a PNG or JPEG of the model's input size)."
    )
    parser.add_argument("--model", required=True, metavar="RUN_DIR", help="a folder written by `fastconv train`")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 opens the "
        "page to every machine that can reach this one)",
    )
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests addressed to NAME (their Host header), e.g. a name of "
        "this machine in your DNS; by default only the --host name, an address of the "
        "server, localhost on a loopback or wildcard address and the machine's own name "
        "on a wildcard address are answered (so a page elsewhere cannot reach the server "
        "through DNS rebinding); may be repeated",
    )
    parser.add_argument("--port", type=_port, default=8000, help="port (default 8000; 0 picks a free one)")
    parser.add_argument("--log-requests", action="store_true", help="log every request (default: errors only)")
    common_runtime(parser)


def run(args):
    _raise_open_file_limit()
    quiet_pillow_size_warning()
    with thread_limit(args.threads):
        service = ModelService(args.model, impl=args.impl)
        server = make_server(
            service, args.host, args.port, log_requests=args.log_requests, allowed_hosts=args.allow_host
        )
        host, port = server.server_address[:2]
        url_host = f"[{host}]" if ":" in host else host
        try:  # from before the address is printed: a Ctrl-C from then on is a clean stop
            if not ipaddress.ip_address(host).is_loopback:
                print(
                    f"fastconv serve: warning: listening on {host} port {port}, beyond this machine: anyone "
                    "who can reach it can use the page (the default --host 127.0.0.1 keeps it local)",
                    file=sys.stderr,
                    flush=True,
                )
            print(f"fastconv serve: {service.model.describe()}", flush=True)
            print(f"fastconv serve: open http://{url_host}:{port}/ (Ctrl-C stops)", flush=True)
            server.serve_forever()
        except KeyboardInterrupt:
            print("fastconv serve: stopped", file=sys.stderr, flush=True)
        finally:
            server.server_close()
    return 0


def _raise_open_file_limit():
    """Raise this process's soft open-file limit towards its hard one (the command owns its process):
    each connection holds a descriptor, and the common soft default of 1024 is below MAX_CONNECTIONS."""
    try:
        import resource
    except ImportError:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = MAX_CONNECTIONS + 2 * _FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(
                resource.RLIMIT_NOFILE, (want if hard == resource.RLIM_INFINITY else min(want, hard), hard)
            )
        except (ValueError, OSError):
            pass


def connection_limit():
    """Most connections this process can hold open: MAX_CONNECTIONS, or fewer when the open-file limit,
    less the descriptors already open and a reserve, allows fewer (at least 8)."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except ImportError:
        return MAX_CONNECTIONS
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    try:
        in_use = len(os.listdir("/proc/self/fd"))
    except OSError:
        in_use = _FD_RESERVE
    return max(8, min(MAX_CONNECTIONS, soft - in_use - _FD_RESERVE))


def _read_page_files():
    """{URL path: (bytes, content type)} of the page, read once from the package."""
    web = resources.files("fastconv.apps") / "web"
    return {path: (web.joinpath(name).read_bytes(), kind) for path, (name, kind) in PAGE_FILES.items()}


def make_server(service, host="127.0.0.1", port=8000, log_requests=False, allowed_hosts=(), max_connections=None):
    """A ``Server`` bound to (host, port) that answers for ``service`` (a ModelService); ``server_address``
    holds the port in use (``port=0`` picks a free one). Call ``serve_forever``."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as exc:
        raise ValueError(f"--host {host}: not an address or a name that resolves ({exc})") from None
    handler = type(
        "Handler", (_Handler,), {"service": service, "page": _read_page_files(), "log_requests": log_requests}
    )
    return Server(
        (host, port), handler, family, allowed_hosts, connection_limit() if max_connections is None else max_connections
    )


def _path(target):
    """The path of a request target, without its query string."""
    return target.split("?", 1)[0].split("#", 1)[0]


# ============================================================================ which requests are answered
def _split_authority(text):
    """(host name in lower case without a final dot, port or None) of a Host header or an origin's
    authority; None when it is no such thing."""
    match = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[^\[\]:/@\s]+)(?::([0-9]{1,5}))?", text.strip())
    if not match:
        return None
    name = match[1].lower()
    name = name[1:-1] if name.startswith("[") else name.rstrip(".")
    return name, int(match[2]) if match[2] else None


class _Names:
    """The host names a server answers to, and who may ask it.

    A page elsewhere can make the browser send requests to 127.0.0.1 under its own name (DNS
    rebinding: ``evil.example`` resolved to 127.0.0.1 becomes ``Host: evil.example``), or send blind
    cross-site POSTs. So only these ``Host`` names are answered: the ``--host`` name, the server's
    own address (any address on a wildcard address: a page cannot rebind an address, its origin is
    then that address), ``localhost`` on a loopback or wildcard address, the machine's name on a
    wildcard address, and ``--allow-host`` names;
    and a request from a browser must come from the page itself: an ``Origin`` other than the
    request's own, or ``Sec-Fetch-Site`` other than same-origin or none (typed or bookmarked), is
    refused, except following a link to the page (a navigation, whose answer the other site cannot read).
    """

    def __init__(self, host, address, allowed=()):
        self.names = {n.lower().rstrip(".") for n in allowed}
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            self.names.add(host.lower().rstrip("."))  # --host given as a name
            ip = ipaddress.ip_address(address)
        self.any_address = ip.is_unspecified
        if ip.is_loopback or ip.is_unspecified:
            self.names.add("localhost")
        if ip.is_unspecified:  # every address of the machine: its own name too (no look-up, it may be offline)
            self.names.add(socket.gethostname().lower().rstrip("."))
        self.address = ipaddress.ip_address(address)

    def answers(self, name):
        if name in self.names:
            return True
        try:
            ip = ipaddress.ip_address(name)
        except ValueError:
            return False
        return self.any_address or ip == self.address

    def refusal(self, handler):
        """None for a request that may be answered, else (code, message)."""
        headers = handler.headers
        host = headers.get("Host")
        if host is None:
            if handler.request_version == "HTTP/1.0":  # a Host header is HTTP/1.1's
                return None
            return 400, "a Host header is required"
        authority = _split_authority(host)
        if authority is None or not self.answers(authority[0]):
            return 403, (
                f"refused: this server does not answer to the Host {host[:100]!r} (a page elsewhere "
                "reaching it by DNS rebinding?); start it with --allow-host NAME to answer a name"
            )
        origin = headers.get("Origin")
        if origin is not None and (
            not origin.startswith("http://")
            or _split_authority(origin[len("http://") :]) is None
            or _with_port(_split_authority(origin[len("http://") :])) != _with_port(authority)
        ):
            return 403, f"refused: a request from another site ({origin[:100]!r})"
        site = headers.get("Sec-Fetch-Site", "same-origin").lower()
        if site not in ("same-origin", "none") and not (
            handler.command == "GET"
            and _path(handler.path) in handler.page
            and headers.get("Sec-Fetch-Mode", "").lower() == "navigate"
        ):
            return 403, f"refused: a request from another site (Sec-Fetch-Site: {site[:40]})"
        return None


def _with_port(authority):
    name, port = authority
    return name, 80 if port is None else port


# ============================================================================ the requests
class _Handler(http.server.BaseHTTPRequestHandler):
    """One request, whole in ``rfile``; the answer goes to ``wfile`` (``Server`` reads and writes the
    socket). ``service``, ``page`` and ``log_requests`` are set by ``make_server``."""

    protocol_version = "HTTP/1.1"  # keep-alive: the page asks again and again while one draws
    server_version = "fastconv-serve"
    service = page = None
    log_requests = False

    def __init__(self, server, client_address, request):
        self.server = server
        self.client_address = client_address
        self.rfile = io.BytesIO(request)
        self.wfile = io.BytesIO()
        self.close_connection = True

    def parse_request(self):
        if not super().parse_request():
            return False
        refusal = self.server.names.refusal(self)
        if refusal is not None:
            self._send_error_json(*refusal)
            return False
        return True

    def handle_expect_100(self):
        return True  # the body has come already (the loop read the whole request)

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
            self._send_error_json(
                413,
                f"the body has {length} bytes, more than this model's limit of {limit} "
                "(send a PNG or JPEG of the model's input size)",
            )
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


def _refusal(code, message, headers=()):
    """A whole answer ``code`` with JSON ``{"error": message}`` that closes the connection, made by the loop."""
    body = json.dumps({"error": message}).encode()
    lines = [
        f"HTTP/1.1 {code} {http.server.BaseHTTPRequestHandler.responses[code][0]}",
        f"Server: {_Handler.server_version}",
        f"Date: {email.utils.formatdate(usegmt=True)}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *(f"{k}: {v}" for k, v in (*_SECURITY_HEADERS.items(), *headers)),
        "Connection: close",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


_HEAD_END = re.compile(rb"\n\r?\n")


def _request_length(head, body_limit):
    """Bytes of the request whose ``head`` (its line and headers, to the empty line) has come: the head
    and the body its Content-Length gives; a body that the handler refuses unread (chunked, no or a bad
    or too large Content-Length) is not waited for."""
    end = len(head)
    length = None
    for line in bytes(head).split(b"\n")[1:]:
        name, colon, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"transfer-encoding":
            return end
        if name == b"content-length" and colon and length is None:
            length = value.strip()
    if length is None or not re.fullmatch(rb"[0-9]{1,20}", length) or int(length) > body_limit:
        return end
    return end + int(length)


# ============================================================================ connections
class _Connection:
    """A client's socket and where it is: "reading" its request, "working" (a worker answers it),
    "writing" the answer, or "draining" (answered and closed for writing; what the client still
    sends is read and dropped, so that closing does not reset the connection before it read the answer)."""

    __slots__ = (
        "sock",
        "address",
        "state",
        "inbox",
        "scanned",
        "need",
        "request",
        "outbox",
        "close_after",
        "deadline",
        "events",
    )

    def __init__(self, sock, address, deadline):
        self.sock, self.address, self.deadline = sock, address, deadline
        self.state, self.inbox, self.request, self.outbox, self.close_after, self.events = (
            "reading",
            bytearray(),
            b"",
            b"",
            False,
            0,
        )
        self.scanned, self.need = 0, None  # how far the head's end was looked for; the request's length once known

    def name(self):
        return f"{self.address[0]} port {self.address[1]}" if isinstance(self.address, tuple) else str(self.address)


class _Log:
    """The loop's notes to stderr: at most one line a second of each kind, the held-back ones counted."""

    def __init__(self):
        self._lock = threading.Lock()
        self._last, self._held = {}, {}

    def note(self, kind, line):
        with self._lock:
            now = time.monotonic()
            if now - self._last.get(kind, -1e9) >= 1.0:
                self._last[kind] = now
                held = self._held.pop(kind, 0)
                self._print(line + (f" (and {held} more like it before)" if held else ""))
            else:
                self._held[kind] = self._held.get(kind, 0) + 1

    def flush(self):
        with self._lock:
            now = time.monotonic()
            for kind, held in list(self._held.items()):
                if now - self._last.get(kind, -1e9) >= 1.0:
                    self._last[kind] = now
                    del self._held[kind]
                    self._print(f"and {held} more {kind}")

    @staticmethod
    def _print(line):
        print(f"fastconv serve: {line}", file=sys.stderr, flush=True)


class Server:
    """The HTTP server of ``fastconv serve`` (see the module docstring): ``serve_forever()`` runs the
    loop until ``shutdown()`` (from another thread) or KeyboardInterrupt; ``server_close()`` frees all."""

    def __init__(self, address, handler, family, allowed_hosts=(), max_connections=MAX_CONNECTIONS):
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart at once on the same port
            self.socket.bind(address)
            self.socket.listen(LISTEN_BACKLOG)
        except OSError:
            self.socket.close()
            raise
        self.socket.setblocking(False)
        self.server_address = self.socket.getsockname()
        self.names = _Names(address[0], self.server_address[0], allowed_hosts)
        self.Handler = handler
        self.max_connections = max_connections
        self.log = _Log()
        self._connections = {}  # _Connection -> None, oldest (longest waiting for its request) first
        self._buffered = 0  # bytes in the connections' inboxes
        self._next_sweep = 0.0
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.socket, selectors.EVENT_READ, "accept")
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._spare = open(os.devnull, "rb")  # a descriptor to give back when out of them (see _out_of_descriptors)
        self._accept_paused_until = 0.0
        self._jobs = queue.Queue(QUEUED_REQUESTS)
        self._answers = queue.SimpleQueue()
        self._stop = False
        self._stopped = threading.Event()
        self._stopped.set()
        self._workers = [
            threading.Thread(target=self._work, name=f"fastconv-serve-{i}", daemon=True) for i in range(WORKERS)
        ]
        for worker in self._workers:
            worker.start()

    # ------------------------------------------------------------ the loop
    def serve_forever(self, poll_interval=0.25):
        self._stopped.clear()
        try:
            while not self._stop:
                for key, mask in self._selector.select(self._timeout(poll_interval)):
                    try:
                        self._event(key.data, mask)
                    except Exception:  # noqa: BLE001  (one connection's trouble must not stop the server)
                        traceback.print_exc(file=sys.stderr)
                        if isinstance(key.data, _Connection):
                            self._close(key.data)
                        elif key.data == "accept":  # not at once again: that would spin
                            self._pause_accepting()
                self._take_answers()
                self._expire()
                self.log.flush()
        finally:
            self._stop = False
            self._stopped.set()

    def _event(self, what, mask):
        if what == "accept":
            self._accept()
        elif what == "wake":
            self._drain_wake()
        elif mask & selectors.EVENT_WRITE and what.state == "writing":
            self._write(what)
        elif mask & selectors.EVENT_READ:
            self._read(what)

    def shutdown(self):
        """Stop ``serve_forever`` (running in another thread) and wait until it returned."""
        self._stop = True
        self._wake()
        self._stopped.wait()

    def server_close(self):
        for conn in list(self._connections):
            self._close(conn)
        for _ in self._workers:
            try:
                self._jobs.put(None, timeout=1)
            except queue.Full:
                break
        for worker in self._workers:
            worker.join(2)
        for sock in (self.socket, self._wake_r, self._wake_w):
            sock.close()
        self._selector.close()
        if self._spare is not None:
            self._spare.close()

    def _timeout(self, poll_interval):
        if self._accept_paused_until and time.monotonic() >= self._accept_paused_until:
            self._accept_paused_until = 0.0
            self._selector.register(self.socket, selectors.EVENT_READ, "accept")
        return poll_interval

    def _wake(self):
        try:
            self._wake_w.send(b"x")
        except OSError:  # full (the loop wakes anyway) or closed
            pass

    def _drain_wake(self):
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    # ------------------------------------------------------------ accepting
    def _accept(self):
        for _ in range(64):  # a burst at a time: the connections already open get their turn too
            try:
                sock, address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._out_of_descriptors(exc)
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                    continue  # that client is gone already
                raise
            if len(self._connections) >= self.max_connections and not self._close_oldest(
                "connections closed at the limit",
                f"at the limit of {self.max_connections} connections: closed the one that waited longest",
            ):
                self.log.note(
                    "clients turned away at the limit",
                    f"at the limit of {self.max_connections} "
                    "connections, all of them being answered: turned a client away (503)",
                )
                self._turn_away(sock, "the server holds as many connections as it can; try again")
                continue
            sock.setblocking(False)
            conn = _Connection(sock, address, time.monotonic() + REQUEST_TIMEOUT)
            self._connections[conn] = None
            self._listen(conn, selectors.EVENT_READ)

    def _out_of_descriptors(self, exc):
        """accept() failed for want of a descriptor: close the connection that waited longest, else
        answer the waiting client 503 with the spare descriptor, else stop accepting for 0.1 s; the
        listening socket stays readable while a client waits, so retrying at once would spin."""
        if self._close_oldest(
            "connections closed for want of file descriptors",
            f"out of file descriptors ({exc.strerror}): closed the connection that waited longest",
        ):
            return
        self.log.note(
            "clients turned away for want of file descriptors",
            f"out of file descriptors ({exc.strerror}): turned a client away (503; raise the open-file "
            "limit, ulimit -n)",
        )
        if self._spare is not None:
            self._spare.close()
            self._spare = None
            try:
                sock, _ = self.socket.accept()
            except OSError:
                pass
            else:
                self._turn_away(sock, "the server is out of file descriptors; try again")
            try:
                self._spare = open(os.devnull, "rb")
            except OSError:
                pass
        if self._spare is None:
            self._pause_accepting()

    def _pause_accepting(self):
        """No accept() for 0.1 s (``_timeout`` resumes)."""
        if not self._accept_paused_until:
            self._selector.unregister(self.socket)
            self._accept_paused_until = time.monotonic() + 0.1

    def _turn_away(self, sock, message):
        """Answer 503 on a socket just accepted, as far as it goes without waiting, and close it (what
        the client sent already is read first: closing on unread data would reset the connection)."""
        try:
            sock.setblocking(False)
            for _ in range(4):
                if not sock.recv(65536):
                    break
        except OSError:
            pass
        try:
            sock.send(_refusal(503, message, [("Retry-After", "1")]))
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        sock.close()

    def _close_oldest(self, kind, line, with_inbox=False):
        """Close the connection that has waited longest for (or to send) its request or answer (one with
        part of a request in, if ``with_inbox``), logging ``line``; False when every one is being answered."""
        for conn in self._connections:
            if conn.state != "working" and (conn.inbox or not with_inbox):
                self.log.note(kind, f"{line} ({conn.name()})")
                self._close(conn)
                return True
        return False

    # ------------------------------------------------------------ reading
    def _listen(self, conn, events):
        """Watch ``conn`` for ``events`` (0: not at all)."""
        if events == conn.events:
            return
        if conn.events and events:
            self._selector.modify(conn.sock, events, conn)
        elif events:
            self._selector.register(conn.sock, events, conn)
        else:
            self._selector.unregister(conn.sock)
        conn.events = events

    def _read(self, conn):
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # reset while sending its request: there is no one to answer
            self._close(conn)
            return
        if conn.state == "draining":
            if not data:
                self._close(conn)
            return
        if not data:  # the client has sent all it will: answer a whole head (a short body gets its 400)
            if _HEAD_END.search(conn.inbox, 0, MAX_HEAD_BYTES):
                self._dispatch(conn, whole=True)
            else:  # no request to answer
                self._close(conn)
            return
        conn.inbox += data
        self._buffered += len(data)
        if self._buffered > MAX_BUFFERED_BYTES:
            self._close_oldest(
                "connections closed for memory",
                f"{MAX_BUFFERED_BYTES} bytes of requests arriving: closed the connection that waited longest",
                with_inbox=True,
            )
        if conn in self._connections:
            self._dispatch(conn)

    def _dispatch(self, conn, whole=False):
        """Hand the first request in ``conn.inbox`` to the workers once it is whole. The head's end is
        looked for only in what came since the last look (a byte at a time costs no rescans)."""
        if conn.need is None:
            end = _HEAD_END.search(conn.inbox, max(0, conn.scanned - 2), MAX_HEAD_BYTES)
            conn.scanned = len(conn.inbox)
            if end is not None:
                conn.need = _request_length(conn.inbox[: end.end()], self.Handler.service.max_body_bytes)
            elif len(conn.inbox) >= MAX_HEAD_BYTES:
                self._answer(conn, _refusal(431, f"the request line and headers exceed {MAX_HEAD_BYTES} bytes"), True)
                return
        if not whole and (conn.need is None or len(conn.inbox) < conn.need):
            return
        length = min(len(conn.inbox), conn.need or len(conn.inbox))
        conn.request = bytes(conn.inbox[:length])
        del conn.inbox[:length]
        self._buffered -= length
        conn.scanned, conn.need = 0, None
        try:
            self._jobs.put_nowait((conn, conn.request))
        except queue.Full:
            self.log.note(
                "requests turned away (busy)", f"{QUEUED_REQUESTS} requests are waiting: answered 503 to {conn.name()}"
            )
            self._answer(conn, _refusal(503, "the server is busy; try again", [("Retry-After", "1")]), True)
            return
        conn.state = "working"
        self._listen(conn, 0)
        if whole:
            conn.close_after = True

    # ------------------------------------------------------------ the workers
    def _work(self):
        while (job := self._jobs.get()) is not None:
            conn, request = job
            try:
                handler = self.Handler(self, conn.address, request)
                handler.handle_one_request()
                answer = (handler.wfile.getvalue(), handler.rfile.tell(), handler.close_connection)
            except BaseException:  # noqa: BLE001  (never lose a worker; the handler answered already what it could)
                traceback.print_exc(file=sys.stderr)
                answer = (_refusal(500, "internal error"), len(request), True)
            self._answers.put((conn, *answer))
            self._wake()

    def _take_answers(self):
        while True:
            try:
                conn, answer, used, close = self._answers.get_nowait()
            except queue.Empty:
                return
            if conn not in self._connections:
                continue
            conn.inbox[:0] = conn.request[used:]  # what the handler left unread comes next
            self._buffered += len(conn.request) - used
            self._answer(conn, answer, close or conn.close_after or not answer)

    # ------------------------------------------------------------ writing
    def _answer(self, conn, answer, close):
        conn.state, conn.outbox, conn.close_after = "writing", memoryview(answer), close
        conn.deadline = time.monotonic() + REQUEST_TIMEOUT
        self._write(conn)

    def _write(self, conn):
        try:
            sent = conn.sock.send(conn.outbox)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self.log.note(
                "clients gone before their answer", f"{conn.name()} went away before its answer ({exc.strerror})"
            )
            self._close(conn)
            return
        conn.outbox = conn.outbox[sent:]
        if conn.outbox:
            self._listen(conn, selectors.EVENT_WRITE)
        elif conn.close_after:
            self._drain(conn)
        else:  # kept alive: the next request, which may be here already
            conn.state, conn.deadline = "reading", time.monotonic() + REQUEST_TIMEOUT
            del self._connections[conn]
            self._connections[conn] = None
            self._listen(conn, selectors.EVENT_READ)
            if conn.inbox:
                self._dispatch(conn)

    def _drain(self, conn):
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        self._buffered -= len(conn.inbox)
        conn.state, conn.deadline, conn.inbox = "draining", time.monotonic() + _LINGER, bytearray()
        self._listen(conn, selectors.EVENT_READ)

    # ------------------------------------------------------------ closing
    def _expire(self):
        now = time.monotonic()
        if now < self._next_sweep:  # a sweep looks at every connection: a few times a second is enough
            return
        self._next_sweep = now + 0.1
        for conn in [c for c in self._connections if c.state != "working" and c.deadline <= now]:
            if conn.state == "reading" and conn.inbox:
                self.log.note(
                    "slow requests closed",
                    f"{conn.name()} did not send a whole request within {REQUEST_TIMEOUT} s: closed",
                )
            elif conn.state == "writing":
                self.log.note(
                    "slow readers closed", f"{conn.name()} did not take its answer within {REQUEST_TIMEOUT} s: closed"
                )
            self._close(conn)

    def _close(self, conn):
        if self._connections.pop(conn, False) is None:
            self._buffered -= len(conn.inbox)
        self._listen(conn, 0)
        conn.sock.close()
