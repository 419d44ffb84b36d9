"""The chat-completions backend (the openai client) against a small HTTP server on 127.0.0.1: retries, timeouts,
the disk cache, and the API key never leaving the Authorization header."""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import polars as pl
import pytest
from tunebench import runner
from tunebench.modeling.api import APIError, ChatClient

SECRET = "sk-test-7Hq2SECRETvalue9"


class FakeChatServer(ThreadingHTTPServer):
    """Answers like a chat-completions endpoint. `script` is a queue of behaviours for the next requests:
    "429" (with Retry-After: 0.05 s), "500", "401" (echoing the key, as some servers do), "slow" (answers after
    `slow_s`); when it is empty, requests succeed."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), ChatHandler)
        self.requests: list[dict] = []
        self.script: list[str] = []
        self.slow_s = 1.0
        self.lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


def fake_answer(prompt: str) -> str:
    """A 'model' that reads the query (the last "Text:" block): a label word, or an unreadable answer."""
    query = prompt.rsplit("Text:", 1)[-1]
    if "profit" in query:
        return "Positive."
    if "plunge" in query or "fell" in query:
        return "The sentiment is negative"
    if "board" in query:
        return "I cannot tell."   # no label word: must come back unparsed, not as neutral
    return "neutral"


class ChatHandler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server: FakeChatServer = self.server
        with server.lock:
            server.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
            action = server.script.pop(0) if server.script else "ok"
        if action == "429":
            return self._reply(429, {"error": {"message": "rate limited"}}, {"Retry-After": "0.05"})
        if action == "500":
            return self._reply(500, {"error": {"message": "server error"}})
        if action == "401":
            return self._reply(401, {"error": {"message": f"Incorrect API key provided: {SECRET}"}})
        if action == "slow":
            time.sleep(server.slow_s)
        answer = fake_answer(body["messages"][-1]["content"])
        self._reply(200, {"choices": [{"message": {"role": "assistant", "content": answer}}],
                          "usage": {"prompt_tokens": 10, "completion_tokens": 2}})

    def _reply(self, status, payload, headers=None):
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            for k, v in {"Content-Type": "application/json", **(headers or {})}.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass   # the client gave up (timeout test)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = FakeChatServer()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def client(server, tmp_path, **kw) -> ChatClient:
    kw = {"timeout_s": 5, **kw}
    return ChatClient(server.base_url, "fake-gpt", "TUNEBENCH_TEST_KEY", tmp_path / "cache", **kw)


def test_answers_come_back_in_order_and_use_the_endpoint(server, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEBENCH_TEST_KEY", SECRET)
    prompts = ["Text: profit rose\nAnswer:", "Text: shares plunge\nAnswer:", "Text: x\nAnswer:"]
    out = client(server, tmp_path, concurrency=3).complete_all(prompts, temperature=0.0, max_tokens=5)
    assert out == ["Positive.", "The sentiment is negative", "neutral"]
    assert {r["path"] for r in server.requests} == {"/v1/chat/completions"}
    assert all(r["auth"] == f"Bearer {SECRET}" for r in server.requests)
    assert server.requests[0]["body"]["model"] == "fake-gpt"
    assert server.requests[0]["body"]["max_tokens"] == 5


def test_429_then_success(server, tmp_path):
    server.script = ["429", "500"]
    c = client(server, tmp_path)
    assert c.complete("Text: profit\nAnswer:") == "Positive."
    assert len(server.requests) == 3 and c.requests_sent == 3


def test_a_429_waits_what_its_retry_after_says(server, tmp_path):
    server.script = ["429"] * 3
    c = client(server, tmp_path)
    t0 = time.perf_counter()
    assert c.complete("Text: profit\nAnswer:") == "Positive."
    assert c.requests_sent == 4
    assert time.perf_counter() - t0 < 1.0   # 3 x 0.05 s, not the client's own backoff (0.5 s, 1 s, 2 s)


def test_timeout_is_retried(server, tmp_path):
    server.script, server.slow_s = ["slow"], 1.5
    c = client(server, tmp_path, timeout_s=0.3)
    t0 = time.perf_counter()
    assert c.complete("Text: profit\nAnswer:") == "Positive."
    assert c.requests_sent == 2
    assert time.perf_counter() - t0 < 1.4   # gave up on the slow answer instead of waiting for it


def test_retries_run_out(server, tmp_path):
    server.script = ["500"] * 5
    c = client(server, tmp_path, max_retries=2)
    with pytest.raises(APIError, match="gave up after 3 attempts; last: HTTP 500"):
        c.complete("Text: profit\nAnswer:")
    assert len(server.requests) == 3
    assert not list((tmp_path / "cache").rglob("*.json"))   # failures are not cached


def test_client_error_is_not_retried_and_hides_the_key(server, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEBENCH_TEST_KEY", SECRET)
    server.script = ["401"]
    with pytest.raises(APIError) as err:
        client(server, tmp_path).complete("Text: profit\nAnswer:")
    assert "HTTP 401" in str(err.value) and SECRET not in str(err.value)
    assert len(server.requests) == 1


def test_cache_hit_sends_no_request(server, tmp_path):
    prompts = ["Text: profit\nAnswer:", "Text: board\nAnswer:", "Text: profit\nAnswer:"]
    first = client(server, tmp_path).complete_all(prompts)
    assert len(server.requests) == 2   # the repeated prompt is sent once
    again = client(server, tmp_path)
    assert again.complete_all(prompts) == first
    assert len(server.requests) == 2 and again.requests_sent == 0 and again.cache_hits == 2
    # Other parameters are another cache entry.
    client(server, tmp_path).complete_all(prompts[:1], temperature=0.7)
    assert len(server.requests) == 3


def api_spec(make_spec, server, tmp_path, **method):
    model = {"kind": "api", "path": "fake-gpt", "base_url": server.base_url, "api_key_env": "TUNEBENCH_TEST_KEY",
             "max_length": 512}
    return make_spec(model, {"strategy": "icl", "decoding": "generate", **method},
                     extra={"api_cache_dir": str(tmp_path / "cache")})


def test_icl_through_the_api_counts_unreadable_answers_wrong(server, tmp_path, make_spec):
    spec = api_spec(make_spec, server, tmp_path, k=2, selection="random")
    record = runner.execute(spec, tmp_path / "predictions.parquet", tmp_path / "metrics.json")
    preds = pl.read_parquet(tmp_path / "predictions.parquet")
    unreadable = preds.filter(pl.col("answer") == "I cannot tell.")
    assert unreadable.height > 0 and unreadable["prediction"].is_null().all() and unreadable["unparsed"].all()
    assert record["metrics"]["unparseable_rate"] == pytest.approx(unreadable.height / preds.height)
    readable = preds.filter(~pl.col("unparsed"))
    assert (readable["prediction"] == readable["gold"]).all()   # the fake model is right when it answers
    assert record["metrics"]["accuracy"] == pytest.approx(readable.height / preds.height)
    assert record["cost"]["demonstrations_min"] == 2 and record["cost"]["device"] == "api"
    # A rerun is answered from the cache.
    sent = len(server.requests)
    record = runner.execute(spec, tmp_path / "p2.parquet", tmp_path / "m2.json")
    assert len(server.requests) == sent and record["cost"]["api_requests"] == 0


def test_api_score_decoding_is_refused(server, tmp_path, make_spec):
    spec = api_spec(make_spec, server, tmp_path, decoding="score")
    with pytest.raises(ValueError, match="use `decoding: generate`"):
        runner.execute(spec, tmp_path / "p.parquet", tmp_path / "m.json")


def test_the_key_is_never_written_or_logged(server, tmp_path, make_spec, monkeypatch, caplog, capfd):
    monkeypatch.setenv("TUNEBENCH_TEST_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    server.script = ["429", "500"]
    spec = api_spec(make_spec, server, tmp_path, k=1)
    runner.execute(spec, tmp_path / "predictions.parquet", tmp_path / "metrics.json")
    server.script = ["401"]
    with pytest.raises(APIError) as err:
        client(server, tmp_path / "other").complete("Text: a fresh prompt\nAnswer:")
    assert server.requests and all(r["auth"] == f"Bearer {SECRET}" for r in server.requests)   # it was used
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".json" for p in written)
    for path in written:
        assert SECRET.encode() not in path.read_bytes(), path
    out, errs = capfd.readouterr()
    for text in (out, errs, caplog.text, str(err.value), repr(client(server, tmp_path))):
        assert SECRET not in text
