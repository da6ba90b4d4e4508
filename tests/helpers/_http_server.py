"""A small HTTP file server on the loopback interface, for the remote-shard tests and benchmark: it
honours Range and HEAD, sends an ETag, counts the bytes it serves per request, and can inject
faults (503s, a connection reset mid-body, a short body), a per-request latency and a
bandwidth cap shared by all connections."""
from __future__ import annotations

import email.utils
import json
import os
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Faults:
    """What the next requests to a path get; each entry is used once, in order:
    ("status", 503) answers with that status; ("reset", n) sends n body bytes, then drops the
    connection; ("short", n) announces the full length but sends n bytes and closes."""

    def __init__(self):
        self.by_path: dict[str, list] = {}
        self.lock = threading.Lock()

    def add(self, path: str, *faults) -> None:
        with self.lock:
            self.by_path.setdefault(path, []).extend(faults)

    def take(self, path: str):
        with self.lock:
            queue = self.by_path.get(path)
            return queue.pop(0) if queue else None


class ShardServer:
    """Serves `folder` at http://127.0.0.1:<port>/ in a background thread (use as a context manager)."""

    def __init__(self, folder: str, latency_s: float = 0.0, bandwidth: float | None = None, simple: bool = False):
        """`simple=True`: as `python -m http.server` (and some proxies) serve: Range is ignored (200
        and the whole file), no ETag, only Last-Modified."""
        self.folder = folder
        self.simple = simple
        self.latency_s, self.bandwidth = latency_s, bandwidth
        self.faults = Faults()
        self.requests: list[tuple[str, str, int]] = []     # (method, path, body bytes sent)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)    # notified when a counted request ends
        self._in_flight = 0
        self._link_free_at = 0.0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                # As real servers do: without it, headers and body in two writes meet the client's
                # delayed ACK and every small response waits ~40 ms.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self._serve(head=True)

            def do_GET(self):
                self._serve(head=False)

            def _serve(self, head):
                if server.latency_s:
                    time.sleep(server.latency_s)
                rel = self.path.lstrip("/").split("?")[0]
                if rel in ("__stats__", "__reset__"):     # for a server run in its own process
                    if rel == "__reset__":
                        server.reset_counts()
                    body = json.dumps({"bytes": server.bytes_served(), "gets": server.gets()}).encode()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                # A client can have read the whole body before this thread records it: the counts
                # wait for requests in flight (see _settled), or a test would read them short.
                with server._lock:
                    server._in_flight += 1
                try:
                    self._serve_file(rel, head)
                finally:
                    with server._lock:
                        server._in_flight -= 1
                        server._idle.notify_all()

            def _serve_file(self, rel, head):
                path = os.path.join(server.folder, rel)
                fault = server.faults.take("/" + rel)
                if fault and fault[0] == "status":
                    self.send_response(fault[1])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    server._record(self.command, rel, 0)
                    return
                if not os.path.isfile(path):
                    self.send_error(404)
                    return
                st = os.stat(path)
                size = st.st_size
                start, end = 0, size
                status = 200
                wanted = None if server.simple else self.headers.get("Range")
                if wanted:
                    m = re.fullmatch(r"bytes=(\d+)-(\d*)", wanted.strip())
                    if not m or int(m.group(1)) >= size:
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{size}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    start = int(m.group(1))
                    end = min(size, int(m.group(2)) + 1) if m.group(2) else size
                    status = 206
                self.send_response(status)
                self.send_header("Content-Length", str(end - start))
                if not server.simple:
                    self.send_header("Accept-Ranges", "bytes")
                    self.send_header("ETag", f'"{st.st_mtime_ns:x}-{size:x}"')
                self.send_header("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
                self.end_headers()
                if head:
                    server._record("HEAD", rel, 0)
                    return
                with open(path, "rb") as f:
                    f.seek(start)
                    body = f.read(end - start)
                if fault and fault[0] in ("reset", "short"):
                    body = body[:fault[1]]
                    self.close_connection = True
                sent = 0
                chunk = 64 * 1024
                for i in range(0, len(body), chunk):
                    piece = body[i:i + chunk]
                    if server.bandwidth:
                        server._pace(len(piece))
                    try:
                        self.wfile.write(piece)
                    except (BrokenPipeError, ConnectionResetError):
                        break
                    sent += len(piece)
                server._record("GET", rel, sent)
                if fault and fault[0] == "reset":
                    self.connection.shutdown(socket.SHUT_RDWR)

        class Server(ThreadingHTTPServer):
            # A listen backlog as real servers have (nginx: 511); the default 5 drops the SYNs of a
            # burst of new connections, which then wait a second for the retransmit.
            request_queue_size = 128

            def handle_error(self, request, client_address):
                pass        # clients that drop a connection (faults, retries) are expected here

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def _pace(self, nbytes: int) -> None:
        """Waits for `nbytes` of the server's bandwidth, shared by all connections (a link's cap, not
        a per-connection one)."""
        with self._lock:
            start = max(time.perf_counter(), self._link_free_at)
            self._link_free_at = start + nbytes / self.bandwidth
            finish = self._link_free_at
        time.sleep(max(0.0, finish - time.perf_counter()))

    def _record(self, method, rel, sent):
        with self._lock:
            self.requests.append((method, rel, sent))

    def _settled(self) -> None:
        """Waits (holding the lock; at most 5 s) until no counted request is being served."""
        self._idle.wait_for(lambda: self._in_flight == 0, timeout=5.0)

    def bytes_served(self) -> int:
        with self._lock:
            self._settled()
            return sum(sent for method, _, sent in self.requests if method == "GET")

    def gets(self) -> int:
        with self._lock:
            self._settled()
            return sum(1 for method, _, _ in self.requests if method == "GET")

    def reset_counts(self) -> None:
        with self._lock:
            self._settled()
            self.requests.clear()

    def __enter__(self):
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def main(argv=None) -> None:
    """Serve a folder in this process until killed (benchmarks run the server apart from the client,
    as a real store is): prints the url, then serves; GET /__stats__ and /__reset__ for the counts."""
    import argparse
    import sys

    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--bandwidth-mbs", type=float, default=0.0)
    ap.add_argument("--simple", action="store_true", help="ignore Range and send no ETag, as python -m http.server")
    args = ap.parse_args(argv)
    server = ShardServer(args.folder, latency_s=args.latency_ms / 1000, bandwidth=args.bandwidth_mbs * 1e6 or None,
                         simple=args.simple)
    print(server.url, flush=True)
    sys.stdout.close()
    server.httpd.serve_forever()


if __name__ == "__main__":
    main()
