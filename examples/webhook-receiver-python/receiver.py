"""Outflow webhook receiver, standard library HTTP server plus standardwebhooks.

What a production receiver should do, in one file you can copy:

* verify every request with the Standard Webhooks reference library
  (HMAC-SHA256 over id, timestamp and body; a timestamp more than five
  minutes from now is refused, so a captured request cannot be replayed
  later); a bad or missing signature gets 401;
* bound the body (413 above --max-body-bytes; 411 without Content-Length);
* de-duplicate by ``webhook-id``, which Outflow keeps the same on every retry
  and redelivery of an event: a duplicate is answered 200, not processed again;
* answer quickly: Outflow counts anything but a 2xx within the subscription's
  timeout (10 s by default) as a failure and retries.

Usage::

    pip install -r requirements.txt
    OUTFLOW_WEBHOOK_SECRET=whsec_... python3 receiver.py --port 8000

then create a subscription whose webhook.url is http://<host>:8000/webhook.

The de-duplication set lives in memory: it forgets everything on restart and
holds at most --dedup-size ids for --dedup-ttl seconds. A production receiver
that must act exactly once records processed ids in a durable store (a unique
key written in the same transaction as the side effect), kept at least as long
as Outflow may redeliver: its retries span about a day, and a dead-lettered
event can be redelivered by the API at any time.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import typing as t
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

SECRET_ENV = "OUTFLOW_WEBHOOK_SECRET"
# Room for Outflow's largest event: a record of up to 1 MiB plus its feature
# vector and envelope.
DEFAULT_MAX_BODY_BYTES = 4 << 20
# Ids are ~30 bytes: 100k of them take a few MiB.
DEFAULT_DEDUP_SIZE = 100_000
# Outflow's retry schedule spans about a day; keep ids twice as long.
DEFAULT_DEDUP_TTL_SECONDS = 48 * 3600
# At most this much of a refused body is read and discarded before closing.
DRAIN_LIMIT_BYTES = 1 << 20

log = logging.getLogger("webhook-receiver")

Process = t.Callable[[dict, t.Mapping[str, str]], None]


class SeenSet:
    """Webhook ids seen recently: at most max_size, each for ttl seconds after
    it was last seen; least recently seen first out. Thread safe."""

    def __init__(self, max_size: int, ttl: float, clock: t.Callable[[], float] = time.monotonic):
        self._max = max_size
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: collections.OrderedDict[str, float] = collections.OrderedDict()  # oldest first

    def add(self, webhook_id: str) -> bool:
        """Record webhook_id; True when it is new (not seen within the TTL)."""
        with self._lock:
            now = self._clock()
            while self._seen:
                oldest, seen = next(iter(self._seen.items()))
                if now - seen < self._ttl:
                    break
                del self._seen[oldest]
            new = webhook_id not in self._seen
            self._seen[webhook_id] = now
            self._seen.move_to_end(webhook_id)
            while len(self._seen) > self._max:
                self._seen.popitem(last=False)
            return new

    def forget(self, webhook_id: str) -> None:
        """Remove webhook_id so its next delivery is processed."""
        with self._lock:
            self._seen.pop(webhook_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)


def print_event(event: dict, headers: t.Mapping[str, str]) -> None:
    """The example's processing: one line per new event."""
    record = event.get("record") or {}
    vector = event.get("feature_vector") or {}
    # Absent with consistency NONE, and without enrichment.
    consistent = json.dumps(vector["consistent"]) if "consistent" in vector else "n/a"
    keys = json.dumps(record.get("entity_keys"), ensure_ascii=False, separators=(",", ":"))
    print(
        f"{event.get('id')} {event.get('type')} subscription={event.get('subscription_id')} "
        f"feature_view={record.get('feature_view_name')} entity_keys={keys} "
        f"consistent={consistent} attempt={headers.get('outflow-attempt')}",
        flush=True,
    )


class Receiver:
    """Verifies, de-duplicates and processes webhook requests; no I/O of its
    own, so tests can call handle() directly."""

    def __init__(
        self,
        secret: str,
        process: Process = print_event,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        seen: SeenSet | None = None,
    ):
        # An empty key would let anyone forge signatures: refuse it.
        if not secret.startswith("whsec_") or secret == "whsec_":
            raise ValueError(f"set {SECRET_ENV} to the subscription's signing secret (whsec_...)")
        try:
            self._webhook = Webhook(secret)
        except Exception:
            # Never echo the secret, not even in a traceback's message.
            raise ValueError(f"{SECRET_ENV} is not whsec_ followed by base64") from None
        self._process = process
        self.max_body_bytes = max_body_bytes
        # Not `seen or ...`: an empty SeenSet is falsy.
        self._seen = seen if seen is not None else SeenSet(DEFAULT_DEDUP_SIZE, DEFAULT_DEDUP_TTL_SECONDS)

    def handle(self, headers: t.Mapping[str, str], body: bytes) -> tuple[int, str]:
        """Return (status, message) for one POST: 200 for a new event once
        processed and for a duplicate, 401 for a bad signature, 413 for an
        oversize body, 400 for a signed body that is not JSON, 500 when
        processing failed (Outflow retries)."""
        if len(body) > self.max_body_bytes:
            return 413, "body too large"
        headers = {k.lower(): v for k, v in headers.items()}
        # Verify before anything else, the de-duplication set included: an
        # unsigned request must not be able to mark an id as seen.
        try:
            self._webhook.verify(body, headers, json_parse=False)
        except (WebhookVerificationError, ValueError) as e:
            # ValueError: a malformed signature header, or a body that is not
            # UTF-8 (the library verifies text).
            log.warning("refused a webhook with a bad signature: id=%s reason=%s", headers.get("webhook-id"), e)
            return 401, "invalid signature"
        try:
            event = json.loads(body)
        except ValueError:
            return 400, "body is not an event"
        webhook_id = headers["webhook-id"]
        if not self._seen.add(webhook_id):
            log.info("duplicate webhook acknowledged: id=%s attempt=%s", webhook_id, headers.get("outflow-attempt"))
            return 200, "duplicate"
        try:
            self._process(event, headers)
        except Exception:
            self._seen.forget(webhook_id)  # let Outflow's retry through
            log.exception("processing failed; Outflow will retry: id=%s", webhook_id)
            return 500, "processing failed"
        return 200, "ok"


def make_handler(receiver: Receiver, path: str = "/webhook") -> type[BaseHTTPRequestHandler]:
    """An http.server request handler class serving receiver at path."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: Outflow reuses connections
        timeout = 30  # seconds a silent connection may hold its thread
        server_version = "outflow-example-receiver"
        sys_version = ""

        def do_POST(self) -> None:
            if self.path.split("?", 1)[0] != path:
                return self._answer(404, "not found")
            length = self.headers.get("content-length")
            if length is None:
                # http.server does not decode chunked bodies; Outflow always
                # sends Content-Length.
                return self._answer(411, "content-length required", close=True, unread_body=True)
            try:
                n = int(length)
            except ValueError:
                return self._answer(400, "bad content-length", close=True)
            if n < 0:
                return self._answer(400, "bad content-length", close=True)
            if n > receiver.max_body_bytes:
                # The body is left unread, so the connection cannot be reused.
                return self._answer(413, "body too large", close=True, unread_body=True)
            body = self.rfile.read(n)
            status, message = receiver.handle(dict(self.headers.items()), body)
            self._answer(status, message)

        def _reject_method(self) -> None:
            self._answer(405, "method not allowed", close=True, extra={"Allow": "POST"})

        do_GET = do_PUT = do_PATCH = do_DELETE = do_HEAD = _reject_method

        def _answer(
            self, status: int, message: str, close: bool = False, extra: dict | None = None, unread_body: bool = False
        ) -> None:
            data = (message + "\n").encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            if unread_body:
                self._linger()

        def _linger(self) -> None:
            """Half-close, then drain (bounded) what the client is still
            sending: closing a socket with unread data resets the connection,
            and the client may lose the answer before reading it."""
            try:
                self.connection.shutdown(socket.SHUT_WR)
                self.connection.settimeout(1)
                left = DRAIN_LIMIT_BYTES
                while left > 0:
                    chunk = self.rfile.read1(min(left, 64 << 10))
                    if not chunk:
                        break
                    left -= len(chunk)
            except OSError:
                pass

        def log_message(self, format: str, *args: t.Any) -> None:  # noqa: A002 (http.server's name)
            log.debug("%s %s", self.address_string(), format % args)

    return Handler


def make_server(receiver: Receiver, host: str, port: int, path: str = "/webhook") -> ThreadingHTTPServer:
    """A threading HTTP server (one thread per connection) for receiver."""
    server = ThreadingHTTPServer((host, port), make_handler(receiver, path))
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default %(default)s)")
    parser.add_argument("--path", default="/webhook", help="URL path receiving the webhooks (default %(default)s)")
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                        help="largest accepted body; larger ones get 413 (default %(default)s)")
    parser.add_argument("--dedup-size", type=int, default=DEFAULT_DEDUP_SIZE,
                        help="webhook ids remembered for de-duplication (default %(default)s)")
    parser.add_argument("--dedup-ttl", type=float, default=DEFAULT_DEDUP_TTL_SECONDS,
                        help="seconds a webhook id is remembered (default %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)

    try:
        receiver = Receiver(
            os.environ.get(SECRET_ENV, ""),
            max_body_bytes=args.max_body_bytes,
            seen=SeenSet(args.dedup_size, args.dedup_ttl),
        )
    except ValueError as e:
        print(f"webhook-receiver: {e}", file=sys.stderr)
        return 1
    server = make_server(receiver, args.host, args.port, args.path)

    def stop(signum: int, _frame: t.Any) -> None:
        # shutdown() waits for serve_forever to return: call it off the
        # main thread, which is the one serving.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    host, port = server.server_address[:2]
    log.info("receiving webhooks on http://%s:%s%s", host, port, args.path)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
