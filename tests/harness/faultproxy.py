#!/usr/bin/env python3
"""A fault-injecting HTTP/1.1 proxy for tests (test infrastructure only).

Sits between a client and a cleartext HTTP server on loopback and, per request whose target
matches --path, answers with an injected status, delays the request, cuts the response body
after N bytes, never answers at all (a black hole), trickles the whole response out a byte
at a time (a drip), or sends a 2xx body chunked and then bytes without end (endless: a
registry that never stops sending). Each fault applies to the first K matching requests it is chosen for
(default: all); later requests pass through untouched, so a client that retries or resumes
succeeds.
Keep-alive is kept on both sides: request and response bodies are framed by Content-Length,
chunked encoding, or (responses only) the upstream closing the connection.
"""

import argparse
import http
import ipaddress
import os
import re
import socket
import sys
import threading
import time

MAX_HEAD = 64 * 1024
MAX_CONNECTIONS = 128
IO_TIMEOUT = 120
BUF = 64 * 1024

log_lock = threading.Lock()


def log(msg):
    with log_lock:
        sys.stderr.write(f"faultproxy: {msg}\n")
        sys.stderr.flush()


class Closed(Exception):
    """The peer closed the connection (or broke the protocol); drop this connection."""


class NotHTTP(Closed):
    """The client speaks something else (say, a TLS handshake probing for https)."""


class Dropped(Exception):
    """The injected cut happened."""


class Reader:
    """Buffered reads from a socket: heads, lines and byte runs."""

    def __init__(self, sock):
        self.sock, self.buf = sock, bytearray()

    def _fill(self):
        data = self.sock.recv(BUF)
        if not data:
            raise Closed("connection closed")
        self.buf += data

    def head(self):
        """The bytes up to and including the blank line, or None on a clean close before any."""
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                head, self.buf = bytes(self.buf[: end + 4]), self.buf[end + 4 :]
                return head
            if len(self.buf) > MAX_HEAD:
                raise Closed("head too large")
            if self.buf and not (65 <= self.buf[0] <= 90):  # methods start with A-Z
                raise NotHTTP("not an HTTP request")
            try:
                self._fill()
            except Closed:
                if not self.buf:
                    return None
                raise

    def line(self):
        while b"\r\n" not in self.buf:
            if len(self.buf) > MAX_HEAD:
                raise Closed("line too long")
            self._fill()
        end = self.buf.index(b"\r\n") + 2
        line, self.buf = bytes(self.buf[:end]), self.buf[end:]
        return line

    def some(self, limit):
        """Up to limit bytes; None at end of stream."""
        if not self.buf:
            try:
                self._fill()
            except Closed:
                return None
        data, self.buf = bytes(self.buf[:limit]), self.buf[limit:]
        return data


class Sink:
    """Writes to a socket (or nowhere), raising Dropped once `limit` bytes have gone out, and
    pacing the bytes to at most `rate` bytes a second when given; with `step`, the bytes go out
    `step` at a time (a drip sends one byte, then waits)."""

    def __init__(self, sock, limit=None, rate=None, step=None):
        self.sock, self.limit, self.sent, self.rate, self.step = sock, limit, 0, rate, step
        self.started = time.monotonic()

    def write(self, data):
        if self.limit is not None:
            data = data[: self.limit - self.sent]
        if self.step:
            for i in range(0, len(data), self.step):
                self._send(data[i : i + self.step])
        elif data:
            self._send(data)
        if self.limit is not None and self.sent >= self.limit:
            raise Dropped()

    def _send(self, data):
        if self.sock is not None:
            self.sock.sendall(data)
        self.sent += len(data)
        if self.rate:
            ahead = self.sent / self.rate - (time.monotonic() - self.started)
            if ahead > 0:
                time.sleep(ahead)


def parse_head(head):
    lines = head.decode("latin-1").split("\r\n")[:-2]
    start, headers = lines[0], {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return start, lines, headers


def tokens(headers, name):
    return {t.strip().lower() for v in headers.get(name, []) for t in v.split(",")}


def body_framing(headers):
    if "chunked" in tokens(headers, "transfer-encoding"):
        return "chunked", 0
    if "content-length" in headers:
        return "length", int(headers["content-length"][0])
    return "none", 0


def relay(reader, sink, framing, length=0):
    """Copies one body from reader to sink; returns False if the stream ended early."""
    if framing == "length":
        while length > 0:
            data = reader.some(min(length, BUF))
            if data is None:
                return False
            length -= len(data)
            sink.write(data)
    elif framing == "chunked":
        while True:
            line = reader.line()
            sink.write(line)
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, up to the blank line
                    line = reader.line()
                    sink.write(line)
                    if line == b"\r\n":
                        return True
            if not relay(reader, sink, "length", size + 2):
                return False
    elif framing == "close":
        while (data := reader.some(BUF)) is not None:
            sink.write(data)
    return True


class ChunkSink:
    """Writes each piece as one chunk of a chunked body to another sink."""

    def __init__(self, sink):
        self.sink = sink

    def write(self, data):
        if data:
            self.sink.write(b"%x\r\n" % len(data) + bytes(data) + b"\r\n")


def relay_payload(reader, sink, framing, length=0):
    """Copies one body's payload (chunk framing removed) from reader to sink; returns False if
    the stream ended early."""
    if framing != "chunked":
        return relay(reader, sink, framing, length)
    while True:
        size = int(reader.line().split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while reader.line() != b"\r\n":  # trailers
                pass
            return True
        if not relay(reader, sink, "length", size):
            return False
        reader.line()  # the CRLF after the chunk


FLIP = bytes(b ^ 0xFF for b in range(256))


class Corrupt:
    """Flips every bit of the payload written through it: a body of the same length whose
    digest is wrong (a registry serving damaged blobs)."""

    def __init__(self, sink):
        self.sink = sink

    def write(self, data):
        self.sink.write(bytes(data).translate(FLIP))


class Chosen:
    """The faults one request gets."""

    def __init__(self, blackhole=False, status=None, delay_ms=0, drop=None, drip=None,
                 endless=False, corrupt=False):
        self.blackhole, self.status, self.delay_ms = blackhole, status, delay_ms
        self.drop, self.drip, self.endless = drop, drip, endless
        self.corrupt = corrupt


class Faults:
    """Decides, thread-safely, which faults the next matching request gets."""

    def __init__(self, args):
        self.args, self.lock = args, threading.Lock()
        self.path = re.compile(args.path) if args.path else None
        self.used = {"blackhole": 0, "status": 0, "delay": 0, "drop": 0, "drip": 0,
                     "endless": 0, "corrupt": 0}

    def _take(self, kind, enabled, count):
        if not enabled or (count is not None and self.used[kind] >= count):
            return False
        self.used[kind] += 1
        return True

    def matches(self, target):
        return not self.path or bool(self.path.search(target))

    def choose(self, target):
        a = self.args
        if self.path and not self.path.search(target):
            return Chosen()
        with self.lock:
            if self._take("blackhole", a.blackhole, a.blackhole_count):
                return Chosen(blackhole=True)
            if self._take("status", a.status is not None, a.status_count):
                return Chosen(status=a.status)
            delay = a.delay_ms if self._take("delay", a.delay_ms > 0, a.delay_count) else 0
            drop = a.drop_after if self._take("drop", a.drop_after is not None, a.drop_count) else None
            drip = a.drip if self._take("drip", a.drip is not None, a.drip_count) else None
            if self._take("endless", a.endless, a.endless_count):
                return Chosen(delay_ms=delay, endless=True)
            corrupt = self._take("corrupt", a.corrupt, a.corrupt_count)
            return Chosen(delay_ms=delay, drop=drop, drip=drip, corrupt=corrupt)


def status_reply(code, retry_after, keep_alive):
    try:
        reason = http.HTTPStatus(code).phrase
    except ValueError:
        reason = "Injected"
    error = {429: "TOOMANYREQUESTS", 503: "UNAVAILABLE"}.get(code, "UNKNOWN")
    body = f'{{"errors":[{{"code":"{error}","message":"injected by faultproxy"}}]}}'.encode()
    head = [f"HTTP/1.1 {code} {reason}", "Content-Type: application/json",
            f"Content-Length: {len(body)}"]
    if retry_after is not None:
        head.append(f"Retry-After: {retry_after}")
    if not keep_alive:
        head.append("Connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class Session:
    """One client connection: requests are handled one after another."""

    def __init__(self, client, peer, args, faults):
        self.client, self.peer, self.args, self.faults = client, peer, args, faults
        self.creader = Reader(client)
        self.upstream = self.ureader = None

    def connect(self):
        if self.upstream is None:
            self.upstream = socket.create_connection(self.args.target, timeout=IO_TIMEOUT)
            self.ureader = Reader(self.upstream)

    def close_upstream(self):
        if self.upstream is not None:
            self.upstream.close()
            self.upstream = self.ureader = None

    def run(self):
        try:
            while self.one_request():
                pass
        except NotHTTP as e:
            # Answer at once, as an HTTP server does, so that a TLS client fails fast instead
            # of waiting for a ServerHello (skopeo probes https before falling back to http).
            log(f"{self.peer}: {e}")
            try:
                self.client.sendall(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n"
                                    b"Content-Length: 0\r\n\r\n")
            except OSError:
                pass
        except (Closed, OSError, ValueError) as e:
            log(f"{self.peer}: connection ended: {e}")
        finally:
            self.close_upstream()
            self.client.close()

    def one_request(self):
        """Handles one request; True if the client connection stays open for another."""
        head = self.creader.head()
        if head is None:
            return False
        start, lines, headers = parse_head(head)
        method, target, version = (start.split(" ") + ["", ""])[:3]
        framing, length = body_framing(headers)
        conn = tokens(headers, "connection")
        keep_alive = "close" not in conn and (version == "HTTP/1.1" or "keep-alive" in conn)
        expect = "100-continue" in tokens(headers, "expect") and framing != "none"
        chosen = self.faults.choose(target)
        status, delay_ms, drop, drip = chosen.status, chosen.delay_ms, chosen.drop, chosen.drip
        what = f"{self.peer} {method} {target}"
        if "range" in headers:  # resumed downloads show in the log
            what += f" [range {','.join(headers['range'])}]"

        if chosen.blackhole:
            self.hold(what)
            return False

        if status is not None:
            # The body is read and discarded unless the client waits for 100 before sending it.
            if expect:
                keep_alive = False
            elif not relay(self.creader, Sink(None), framing, length):
                raise Closed("request body cut short")
            self.client.sendall(status_reply(status, self.args.retry_after, keep_alive))
            log(f"{what} -> {status} (injected)")
            return keep_alive

        if delay_ms:
            time.sleep(delay_ms / 1000)
        try:
            self.connect()
        except OSError as e:
            self.client.sendall(status_reply(502, None, False))
            log(f"{what} -> 502 (upstream unreachable: {e})")
            return False
        if expect:
            self.client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            lines = [l for l in lines if not l.lower().startswith("expect:")]
        self.upstream.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if not relay(self.creader, Sink(self.upstream), framing, length):
            raise Closed("request body cut short")

        while True:  # 1xx interim answers are not forwarded: the proxy sent its own 100
            rhead = self.ureader.head()
            if rhead is None:
                raise Closed("upstream closed before answering")
            rstart, _, rheaders = parse_head(rhead)
            code = int(rstart.split(" ")[1])
            if code >= 200 or code == 101:
                break
        rframing, rlength = body_framing(rheaders)
        if method == "HEAD" or code in (204, 304) or 100 <= code < 200:
            rframing = "none"
        elif rframing == "none":
            rframing = "close"
        upstream_close = rframing == "close" or "close" in tokens(rheaders, "connection")

        note = f" (delayed {delay_ms} ms)" if delay_ms else ""
        if chosen.endless and method == "GET" and 200 <= code < 300:
            return self.endless(what, rhead, rframing, rlength)
        if drip:
            note += f" (dripped at {drip} B/s)"
            log(f"{what} -> {code}: dripping the answer at {drip} B/s")
            Sink(self.client, None, drip, 1).write(rhead)
        else:
            self.client.sendall(rhead)
        try:
            if drop == 0:
                raise Dropped()
            rate = drip or (self.args.rate if self.faults.matches(target) else None)
            sink = Sink(self.client, drop, rate, 1 if drip else None)
            if chosen.corrupt and method == "GET" and 200 <= code < 300:
                note += " (body corrupted)"
                if rframing == "chunked":
                    complete = relay_payload(self.ureader, Corrupt(ChunkSink(sink)), rframing)
                    if complete:
                        sink.write(b"0\r\n\r\n")
                else:
                    complete = relay(self.ureader, Corrupt(sink), rframing, rlength)
            else:
                complete = relay(self.ureader, sink, rframing, rlength)
        except Dropped:
            log(f"{what} -> {code}{note} (dropped after {drop} body bytes)")
            self.client.shutdown(socket.SHUT_RDWR)
            return False
        log(f"{what} -> {code}{note}")
        if upstream_close or not complete:
            self.close_upstream()
            return False
        return keep_alive


    def endless(self, what, rhead, rframing, rlength):
        """Sends the upstream's answer with chunked framing (no Content-Length), its body, and
        then chunks of junk without end: until the client leaves, --endless-bytes extra bytes
        went out, or the proxy's lifetime ends. The connection is closed afterwards."""
        lines = rhead.decode("latin-1").split("\r\n")[:-2]
        kept = [l for l in lines[1:] if l.split(":")[0].strip().lower() not in
                ("content-length", "transfer-encoding", "connection")]
        head = [lines[0]] + kept + ["Transfer-Encoding: chunked", "Connection: close"]
        self.client.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        sink = ChunkSink(Sink(self.client, None, self.args.rate))
        if not relay_payload(self.ureader, sink, rframing, rlength):
            raise Closed("upstream body cut short")
        self.close_upstream()
        junk, extra = b"\xa5" * (16 * 1024), 0
        limit = self.args.endless_bytes
        log(f"{what} -> body sent; now sending bytes without end")
        try:
            if self.args.endless_after_ms:
                time.sleep(self.args.endless_after_ms / 1000)
            while limit is None or extra < limit:
                sink.write(junk)
                extra += len(junk)
        except OSError as e:
            log(f"{what} -> endless: the client left after {extra} extra bytes ({e})")
            return False
        log(f"{what} -> endless: stopped after --endless-bytes {extra} extra bytes")
        self.client.shutdown(socket.SHUT_RDWR)
        return False

    def hold(self, what):
        """The black hole: the request was read and is never answered; the connection stays
        open (whatever the client sends is read and dropped) until the client leaves or the
        proxy's lifetime ends."""
        log(f"{what} -> black hole (never answered)")
        started = time.monotonic()
        self.client.settimeout(1)
        while True:
            try:
                if not self.client.recv(BUF):
                    break
            except socket.timeout:
                continue
            except OSError:
                break
        log(f"{what} -> black hole: the client left after {time.monotonic() - started:.1f} s")


def address(value, what):
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        if not sep or not ipaddress.ip_address(host).is_loopback:
            raise ValueError
        return host, int(port)
    except ValueError:
        sys.exit(f"faultproxy: {what} must be a loopback HOST:PORT, not {value!r}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", required=True, help="upstream HOST:PORT (loopback only)")
    p.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to listen on (loopback only)")
    p.add_argument("--port-file", help="write the listen HOST:PORT here once ready")
    p.add_argument("--path", help="regex searched in the request target; default: every request")
    p.add_argument("--drop-after", type=int, help="close after BYTES bytes of the response body")
    p.add_argument("--drop-count", type=int, help="drop only the first K matching requests")
    p.add_argument("--delay-ms", type=int, default=0, help="wait MS before forwarding a request")
    p.add_argument("--rate", type=int, help="send response bodies at most BYTES a second")
    p.add_argument("--delay-count", type=int, help="delay only the first K matching requests")
    p.add_argument("--status", type=int, help="answer CODE at once instead of forwarding")
    p.add_argument("--status-count", type=int, help="answer CODE only to the first K requests")
    p.add_argument("--retry-after", help="Retry-After header value sent with --status")
    p.add_argument("--blackhole", action="store_true",
                   help="read the request, never answer, keep the connection open")
    p.add_argument("--blackhole-count", type=int, help="black-hole only the first K requests")
    p.add_argument("--drip", type=int, metavar="BYTES_PER_SEC",
                   help="send response head and body one byte at a time, BYTES_PER_SEC a second")
    p.add_argument("--drip-count", type=int, help="drip only the first K matching requests")
    p.add_argument("--endless", action="store_true",
                   help="send 2xx GET answers chunked, then bytes without end after the body")
    p.add_argument("--endless-count", type=int, help="endless only for the first K requests")
    p.add_argument("--endless-bytes", type=int,
                   help="stop an endless body after this many extra bytes (default: never)")
    p.add_argument("--endless-after-ms", type=int, default=0,
                   help="pause MS between an endless body's real bytes and the extra ones")
    p.add_argument("--corrupt", action="store_true",
                   help="flip every bit of the body of 2xx answers to GETs (same length)")
    p.add_argument("--corrupt-count", type=int, help="corrupt only the first K matching requests")
    p.add_argument("--lifetime", type=float, default=600, help="exit after SECONDS")
    args = p.parse_args()
    if args.drip is not None and args.drip <= 0:
        sys.exit("faultproxy: --drip must be a positive number of bytes a second")
    args.target = address(args.target, "--target")
    listen = address(args.listen, "--listen")

    family = socket.AF_INET6 if ":" in listen[0] else socket.AF_INET
    server = socket.socket(family, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(listen)
    server.listen(64)
    server.settimeout(0.2)
    host, port = server.getsockname()[:2]
    ready = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as f:
            f.write(ready + "\n")
        os.replace(args.port_file + ".tmp", args.port_file)
    print(ready, flush=True)

    faults = Faults(args)
    slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
    deadline = time.monotonic() + args.lifetime

    def serve(client, peer):
        try:
            Session(client, peer, args, faults).run()
        finally:
            slots.release()

    while time.monotonic() < deadline:
        if not slots.acquire(timeout=0.2):
            continue
        try:
            client, peer = server.accept()
        except socket.timeout:
            slots.release()
            continue
        client.settimeout(IO_TIMEOUT)
        threading.Thread(target=serve, args=(client, f"{peer[0]}:{peer[1]}"), daemon=True).start()
    server.close()
    log(f"lifetime of {args.lifetime:g} s over; exiting")


if __name__ == "__main__":
    main()
