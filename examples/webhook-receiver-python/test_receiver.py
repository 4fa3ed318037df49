"""Tests of receiver.py. Run: python3 -m pytest examples/webhook-receiver-python

Requests are signed the way the gateway signs them (Standard Webhooks v1,
which standardwebhooks' Webhook.sign implements), and the signatures the
gateway's Go signer produced for ../testdata/signature_vectors.json must be
reproduced here byte for byte.
"""

from __future__ import annotations

import http.client
import json
import pathlib
import threading
import time
from datetime import datetime, timezone

import pytest
import standardwebhooks.webhooks
from standardwebhooks.webhooks import Webhook

import receiver

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER_SECRET = "whsec_b3RoZXItc3Vic2NyaXB0aW9uLXNlY3JldC0xMjM0"
BODY = json.dumps(
    {
        "id": "evt_1",
        "type": "feature_view.output",
        "subscription_id": "sub_1",
        "created_at": "2026-11-24T10:00:00.123Z",
        "record": {
            "version": "1",
            "feature_view_name": "user_items_added_to_cart",
            "feature_timestamp": "2026-11-24T10:00:00Z",
            "entity_keys": {"user_id": "u1"},
        },
        "feature_vector": {"features": {"user_stats.lifetime_value": 1234.5}, "consistent": True, "attempts": 2},
    },
    separators=(",", ":"),
)
VECTORS = pathlib.Path(__file__).resolve().parent.parent / "testdata" / "signature_vectors.json"


def signed_headers(msg_id: str, ts: float, body: str, *secrets: str) -> dict[str, str]:
    """Standard Webhooks headers for one attempt, one signature per secret
    (several while a rotated secret overlaps), as the gateway sends them."""
    when = datetime.fromtimestamp(ts, tz=timezone.utc)
    return {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(ts)),
        "webhook-signature": " ".join(Webhook(s).sign(msg_id, when, body) for s in secrets),
        "outflow-attempt": "1",
    }


class Recorder:
    def __init__(self) -> None:
        self.events: list[dict] = []
        self.fail = False

    def __call__(self, event: dict, headers) -> None:
        if self.fail:
            raise RuntimeError("database down")
        self.events.append(event)


def new_receiver(**kwargs) -> tuple[receiver.Receiver, Recorder]:
    rec = Recorder()
    return receiver.Receiver(SECRET, rec, **kwargs), rec


def case(name, headers, body, status, processed=0, **kwargs):
    return pytest.param(headers, body, status, processed, kwargs, id=name)


NOW = time.time()


def _bad_signature_header():
    h = signed_headers("evt_1", NOW, BODY, SECRET)
    h["webhook-signature"] = "garbage-without-a-comma"
    return h


def _without(header):
    h = signed_headers("evt_1", NOW, BODY, SECRET)
    del h[header]
    return h


def _tampered_id():
    h = signed_headers("evt_1", NOW, BODY, SECRET)
    h["webhook-id"] = "evt_2"
    return h


@pytest.mark.parametrize(
    "headers, body, status, processed, kwargs",
    [
        case("valid", signed_headers("evt_1", NOW, BODY, SECRET), BODY.encode(), 200, 1),
        case("rotated secret", signed_headers("evt_1", NOW, BODY, OTHER_SECRET, SECRET), BODY.encode(), 200, 1),
        case("tampered body", signed_headers("evt_1", NOW, BODY, SECRET), BODY.replace("1234.5", "9999.5").encode(), 401),
        case("tampered id", _tampered_id(), BODY.encode(), 401),
        case("wrong secret", signed_headers("evt_1", NOW, BODY, OTHER_SECRET), BODY.encode(), 401),
        case("stale timestamp", signed_headers("evt_1", NOW - 600, BODY, SECRET), BODY.encode(), 401),
        case("timestamp in the future", signed_headers("evt_1", NOW + 600, BODY, SECRET), BODY.encode(), 401),
        case("no signature", _without("webhook-signature"), BODY.encode(), 401),
        case("no id", _without("webhook-id"), BODY.encode(), 401),
        case("malformed signature header", _bad_signature_header(), BODY.encode(), 401),
        case("body not UTF-8", signed_headers("evt_1", NOW, BODY, SECRET), b"\xff\xfe" + BODY.encode(), 401),
        case("signed but not JSON", signed_headers("evt_1", NOW, "not json", SECRET), b"not json", 400),
        case("oversize body", signed_headers("evt_1", NOW, BODY, SECRET), BODY.encode(), 413, max_body_bytes=64),
    ],
)
def test_handle(headers, body, status, processed, kwargs):
    r, rec = new_receiver(**kwargs)
    got, message = r.handle(headers, body)
    assert got == status, message
    assert len(rec.events) == processed
    assert "whsec_" not in message


def test_duplicates_are_processed_once():
    clock = [1000.0]
    r, rec = new_receiver(seen=receiver.SeenSet(100, 3600, clock=lambda: clock[0]))

    def send(msg_id):
        return r.handle(signed_headers(msg_id, time.time(), BODY, SECRET), BODY.encode())[0]

    # Retries of one event (new timestamp, same id) are acknowledged once
    # processed.
    assert [send("evt_1") for _ in range(3)] == [200, 200, 200]
    assert len(rec.events) == 1
    assert send("evt_2") == 200 and len(rec.events) == 2

    # A processing failure answers 500 and lets the retry through.
    rec.fail = True
    assert send("evt_3") == 500
    rec.fail = False
    assert send("evt_3") == 200 and len(rec.events) == 3

    # Past the TTL an id is forgotten.
    clock[0] += 7200
    assert send("evt_1") == 200 and len(rec.events) == 4


def test_seen_set_lru_and_ttl():
    clock = [0.0]
    s = receiver.SeenSet(3, 60, clock=lambda: clock[0])
    assert s.add("a") and not s.add("a")
    assert s.add("b") and s.add("c")
    assert not s.add("a")  # a is now the most recently seen
    assert s.add("d")  # evicts b
    assert len(s) == 3
    assert s.add("b") and not s.add("a")
    s.forget("a")
    assert s.add("a")
    clock[0] += 60
    assert s.add("a") and len(s) == 1


def test_seen_set_bounded():
    s = receiver.SeenSet(100, 3600)
    for i in range(10_000):
        s.add(f"evt_{i}")
    assert len(s) == 100


@pytest.mark.parametrize("secret", ["", "whsec_", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_!!!not base64!!!"])
def test_refuses_bad_secrets(secret):
    with pytest.raises(ValueError) as e:
        receiver.Receiver(secret)
    key = secret.removeprefix("whsec_")
    assert not key or key not in str(e.value)


# --- Cross-check with the gateway's Go signer -------------------------------


def load_vectors():
    return json.loads(VECTORS.read_text(encoding="utf-8"))["vectors"]


@pytest.fixture
def frozen_clock(monkeypatch):
    """Pins the library's clock, so a vector's fixed timestamp is fresh."""

    class Frozen(datetime):
        at = 0.0

        @classmethod
        def now(cls, tz=None):
            return datetime.fromtimestamp(cls.at, tz=tz)

    monkeypatch.setattr(standardwebhooks.webhooks, "datetime", Frozen)
    return Frozen


@pytest.mark.parametrize("vector", load_vectors(), ids=lambda v: v["name"])
def test_vector_signature_is_byte_identical(vector):
    when = datetime.fromtimestamp(vector["timestamp"], tz=timezone.utc)
    ours = [Webhook(s).sign(vector["id"], when, vector["body"]) for s in vector["secrets"]]
    assert " ".join(ours) == vector["signature"]


@pytest.mark.parametrize("vector", load_vectors(), ids=lambda v: v["name"])
def test_vector_verifies(vector, frozen_clock):
    frozen_clock.at = vector["timestamp"] + 1
    headers = {
        "webhook-id": vector["id"],
        "webhook-timestamp": str(vector["timestamp"]),
        "webhook-signature": vector["signature"],
    }
    body = vector["body"].encode("utf-8")
    for secret in vector["secrets"]:
        Webhook(secret).verify(body, headers, json_parse=False)
        with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
            Webhook(secret).verify(body + b" ", headers, json_parse=False)
        # The receiver accepts what the gateway signed.
        rec = Recorder()
        status, message = receiver.Receiver(secret, rec).handle(headers, body)
        assert (status, len(rec.events)) == (200, 1), message
    frozen_clock.at = vector["timestamp"] + 301  # past the 5-minute tolerance
    assert receiver.Receiver(vector["secrets"][0]).handle(headers, body)[0] == 401


# --- Over HTTP ---------------------------------------------------------------


@pytest.fixture
def server():
    rec = Recorder()
    srv = receiver.make_server(receiver.Receiver(SECRET, rec, max_body_bytes=4096), "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv.server_address[1], rec
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=10)


def request(port, method, path="/webhook", body=b"", headers=None, chunked=False):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def test_http(server):
    port, rec = server
    headers = signed_headers("evt_http", time.time(), BODY, SECRET)
    assert request(port, "POST", body=BODY.encode(), headers=headers)[0] == 200
    assert request(port, "POST", body=BODY.encode(), headers=headers) == (200, "duplicate\n")
    assert len(rec.events) == 1 and rec.events[0]["id"] == "evt_1"

    bad = dict(headers, **{"webhook-id": "evt_other"})
    assert request(port, "POST", body=BODY.encode(), headers=bad)[0] == 401
    big = "x" * 5000
    assert request(port, "POST", body=big.encode(), headers=signed_headers("evt_big", time.time(), big, SECRET))[0] == 413
    assert request(port, "POST", body=iter([BODY.encode()]), headers=headers, chunked=True)[0] == 411
    assert request(port, "GET")[0] == 405
    assert request(port, "POST", path="/elsewhere", body=BODY.encode(), headers=headers)[0] == 404
    assert len(rec.events) == 1


def test_main_needs_a_secret(monkeypatch, capsys):
    monkeypatch.delenv(receiver.SECRET_ENV, raising=False)
    assert receiver.main(["--port", "0"]) == 1
    assert receiver.SECRET_ENV in capsys.readouterr().err


def test_print_event(capsys):
    receiver.print_event(json.loads(BODY), {"outflow-attempt": "2"})
    assert capsys.readouterr().out == (
        'evt_1 feature_view.output subscription=sub_1 feature_view=user_items_added_to_cart '
        'entity_keys={"user_id":"u1"} consistent=true attempt=2\n'
    )
    receiver.print_event({"id": "evt_2", "record": {}}, {})
    assert "consistent=n/a" in capsys.readouterr().out
