#!/usr/bin/env python3
"""A counting HTTP proxy in front of an S3 server, for the benchmarks.

    s3_count_proxy.py UPSTREAM_URL [--port N] [--port-file F] [--counts-file F]

Listens on 127.0.0.1 (port 0: the kernel picks one; written to --port-file
once listening), forwards every request byte for byte to UPSTREAM_URL
(http://HOST:PORT) and counts it by S3 operation, per bucket and per path
prefix (the first path component of the key, i.e. a remote's prefix), so
that two remotes in one bucket are counted apart. `GET /__counts` is answered
by the proxy itself with the counts as JSON; on SIGTERM or SIGINT it writes
them to --counts-file and exits.

Why a proxy and not the clients' own figures: it sees what crossed the wire
for any client (subvault and btrfs2s3 alike), retries included.

How requests pass: the request head is read and parsed, then sent upstream
with `Connection: close` in place of any Connection header (the upstream
closes after its answer, which ends the response stream; the client then sees
`Connection: close` in the answer and opens a new connection for its next
request, as tests/integration/common/proxy.rs relies on too). The body is
streamed as its framing says (Content-Length, which covers aws-chunked bodies,
or Transfer-Encoding: chunked) while the answer is streamed back, so
`Expect: 100-continue` works: the upstream's `100 Continue` reaches the client,
which then sends the body. Nothing but Python's standard library.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import signal
import socket
import socketserver
import sys
import threading
import urllib.parse

COUNTS_PATH = "/__counts"
# A DeleteObjects body names the keys it deletes; kept up to this size to
# find the remote's prefix of the keys.
KEEP_BODY = 1 << 20


class Counts:
    """Requests per operation, in total and per `bucket/prefix`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.total: collections.Counter[str] = collections.Counter()
        self.by_prefix: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )

    def add(self, where: str, op: str) -> None:
        with self._lock:
            self.total[op] += 1
            self.by_prefix[where][op] += 1

    def as_json(self) -> str:
        with self._lock:
            return json.dumps(
                {
                    "requests": sum(self.total.values()),
                    "total": dict(sorted(self.total.items())),
                    "by_prefix": {
                        w: dict(sorted(c.items())) for w, c in sorted(self.by_prefix.items())
                    },
                },
                indent=1,
            )


def classify(method: str, target: str) -> tuple[str, str, str]:
    """(operation, bucket, key) of a path-style S3 request."""
    path, _, query = target.partition("?")
    params = urllib.parse.parse_qs(query, keep_blank_values=True)
    has = lambda name: any(k.lower() == name for k in params)  # noqa: E731
    path = urllib.parse.unquote(path)
    bucket, _, key = path.lstrip("/").partition("/")
    if not bucket:
        op = {"GET": "ListBuckets"}.get(method, method)
    elif not key:
        if method == "GET" and has("list-type"):
            op = "ListObjectsV2"
        elif method == "GET" and has("uploads"):
            op = "ListMultipartUploads"
        elif method == "GET" and has("location"):
            op = "GetBucketLocation"
        elif method == "GET" and not has("versioning") and not query:
            op = "ListObjects"
        elif method == "POST" and has("delete"):
            op = "DeleteObjects"
        elif method == "PUT" and not query:
            op = "CreateBucket"
        elif method == "HEAD":
            op = "HeadBucket"
        elif method == "DELETE" and not query:
            op = "DeleteBucket"
        else:
            op = method
    elif method == "HEAD":
        op = "HeadObject"
    elif method == "GET":
        op = "ListParts" if has("uploadid") else "GetObject"
    elif method == "PUT":
        op = "UploadPart" if has("uploadid") else "PutObject"
    elif method == "POST" and has("uploads"):
        op = "CreateMultipartUpload"
    elif method == "POST" and has("uploadid"):
        op = "CompleteMultipartUpload"
    elif method == "DELETE":
        op = "AbortMultipartUpload" if has("uploadid") else "DeleteObject"
    else:
        op = method
    if not key:
        # A bucket-level request: the prefix it lists, if any.
        key = (params.get("prefix") or [""])[0]
    return op, bucket, key


def where(bucket: str, key: str) -> str:
    """`bucket/prefix`: the key's first path component (`bucket/` at the root)."""
    first, slash, _ = key.partition("/")
    return f"{bucket}/{first if slash else ''}"


class Handler(socketserver.BaseRequestHandler):
    server: Server

    def handle(self) -> None:
        client: socket.socket = self.request
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = client.recv(65536)
            if not chunk:
                return
            buf += chunk
        end = buf.index(b"\r\n\r\n") + 4
        head, rest = buf[:end], buf[end:]
        lines = head[:-4].split(b"\r\n")
        method, target, _version = lines[0].decode("latin-1").split(" ", 2)
        headers = [
            (k.strip().lower(), v.strip())
            for k, _, v in (line.decode("latin-1").partition(":") for line in lines[1:])
        ]
        if method == "GET" and target == COUNTS_PATH:
            body = self.server.counts.as_json().encode()
            client.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            return
        op, bucket, key = classify(method, target)
        kept = bytearray()
        keep = op == "DeleteObjects"
        up = socket.create_connection(self.server.upstream)
        try:
            out = [lines[0], b"Connection: close"]
            out += [line for line in lines[1:] if not line.lower().startswith(b"connection:")]
            up.sendall(b"\r\n".join(out) + b"\r\n\r\n")
            hdr = dict(headers)
            pump = threading.Thread(
                target=self._body, args=(client, up, hdr, rest, kept if keep else None)
            )
            pump.start()
            while True:
                chunk = up.recv(65536)
                if not chunk:
                    break
                client.sendall(chunk)
            pump.join()
        finally:
            up.close()
            if keep:
                found = re.search(rb"<Key>([^<]*)</Key>", kept)
                if found:
                    key = found.group(1).decode("utf-8", "replace")
            # Counted whatever became of it: a request sent is a request.
            self.server.counts.add(where(bucket, key), op)

    @staticmethod
    def _body(
        client: socket.socket,
        up: socket.socket,
        hdr: dict[str, str],
        rest: bytes,
        kept: bytearray | None,
    ) -> None:
        """Pass the request body on, as much as its framing says."""

        def send(data: bytes) -> None:
            if kept is not None and len(kept) < KEEP_BODY:
                kept.extend(data)
            up.sendall(data)

        try:
            if "chunked" in hdr.get("transfer-encoding", "").lower():
                reader = client.makefile("rb")
                # Bytes already read past the head come first.
                pending = bytearray(rest)

                def readline() -> bytes:
                    nonlocal pending
                    while b"\n" not in pending:
                        more = reader.read1(65536)
                        if not more:
                            raise EOFError
                        pending += more
                    i = pending.index(b"\n") + 1
                    line, pending = bytes(pending[:i]), pending[i:]
                    return line

                def read(n: int) -> bytes:
                    nonlocal pending
                    while len(pending) < n:
                        more = reader.read1(65536)
                        if not more:
                            raise EOFError
                        pending += more
                    data, pending = bytes(pending[:n]), pending[n:]
                    return data

                while True:
                    size_line = readline()
                    up.sendall(size_line)
                    size = int(size_line.split(b";")[0].strip(), 16)
                    if size == 0:
                        while True:  # trailers, then the empty line
                            line = readline()
                            up.sendall(line)
                            if line in (b"\r\n", b"\n"):
                                return
                    send(read(size))
                    up.sendall(read(2))
            length = int(hdr.get("content-length", "0") or 0)
            if rest:
                send(rest[:length])
                length -= min(length, len(rest))
            while length > 0:
                chunk = client.recv(min(length, 1 << 16))
                if not chunk:
                    return
                send(chunk)
                length -= len(chunk)
        except (OSError, EOFError, ValueError):
            return


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, upstream: tuple[str, int]) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.upstream = upstream
        self.counts = Counts()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("upstream", help="the S3 server, http://HOST:PORT")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", help="write the port here once listening")
    ap.add_argument("--counts-file", help="write the counts here on SIGTERM/SIGINT")
    args = ap.parse_args()
    url = urllib.parse.urlsplit(args.upstream)
    if url.scheme != "http" or not url.hostname or not url.port:
        ap.error(f"upstream {args.upstream!r}: want http://HOST:PORT")
    server = Server(args.port, (url.hostname, url.port))

    def stop(*_: object) -> None:
        if args.counts_file:
            with open(args.counts_file, "w") as f:
                f.write(server.counts.as_json() + "\n")
        # Exit from the signal handler: serve_forever() runs in this thread.
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as f:
            f.write(f"{server.server_address[1]}\n")
        os.replace(args.port_file + ".tmp", args.port_file)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
