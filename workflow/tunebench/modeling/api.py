"""A client for OpenAI-compatible chat-completions endpoints (the gpt-3.5-turbo baseline, local servers).

Standard library only. Responses are cached on disk under sha256(endpoint, model, prompt, parameters), so a
rerun sends no request. 429, 5xx, connection errors and timeouts are retried with exponential backoff (or the
server's Retry-After); requests run in a small thread pool. The API key is read from the environment variable
the config names and is sent only in the Authorization header: it is never logged, cached or put in an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tunebench import files

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
MAX_BACKOFF_S = 60.0


class APIError(RuntimeError):
    """A request failed for good (a 4xx other than 429, or retries exhausted)."""


class ChatClient:
    def __init__(self, base_url: str, model: str, api_key_env: str | None,
                 cache_dir: str | os.PathLike, timeout_s: float = 60.0,
                 max_retries: int = 5, concurrency: int = 4, backoff_s: float = 1.0):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self._key = os.environ.get(api_key_env, "") if api_key_env else ""
        self.cache_dir = Path(cache_dir)
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.concurrency = concurrency
        self.backoff_s = backoff_s
        self.requests_sent = 0      # HTTP attempts, retries included
        self.cache_hits = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:      # never show the key, even in a debugger or a traceback's locals
        return f"ChatClient(url={self.url!r}, model={self.model!r})"

    def complete_all(self, prompts: list[str], temperature: float = 0.0, max_tokens: int = 8) -> list[str]:
        """The answer text for every prompt, in order (from the cache where possible). Repeated prompts are
        sent once (two threads must not write the same cache file)."""
        unique = list(dict.fromkeys(prompts))
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            answers = dict(zip(unique, pool.map(lambda p: self.complete(p, temperature, max_tokens), unique)))
        return [answers[p] for p in prompts]

    def complete(self, prompt: str, temperature: float = 0.0, max_tokens: int = 8) -> str:
        body = {"model": self.model, "messages": [{"role": "user", "content": prompt}],
                "temperature": temperature, "max_tokens": max_tokens}
        path = self._cache_path(body)
        if path.exists():
            with self._lock:
                self.cache_hits += 1
            return json.loads(path.read_text())["answer"]
        response = self._post(body)
        answer = response["choices"][0]["message"].get("content") or ""
        files.write_json(path, {"url": self.url, "request": body, "answer": answer,
                              "usage": response.get("usage", {})})
        return answer

    def _cache_path(self, body: dict) -> Path:
        key = hashlib.sha256(json.dumps({"url": self.url, **body}, sort_keys=True).encode()).hexdigest()
        return self.cache_dir / key[:2] / f"{key}.json"

    def _post(self, body: dict) -> dict:
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        for attempt in range(self.max_retries + 1):
            with self._lock:
                self.requests_sent += 1
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as e:
                detail = self._redact(e.read().decode(errors="replace")[:300])
                if e.code not in RETRY_STATUS:
                    raise APIError(f"{self.url}: HTTP {e.code}: {detail}") from None
                failure, retry_after = f"HTTP {e.code}: {detail}", _seconds(e.headers.get("Retry-After"))
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                failure, retry_after = f"{type(e).__name__}: {self._redact(str(e))}", None
            if attempt < self.max_retries:
                wait = self.backoff_s * 2 ** attempt if retry_after is None else retry_after
                time.sleep(min(wait, MAX_BACKOFF_S))
        raise APIError(f"{self.url}: gave up after {self.max_retries + 1} attempts; last: {failure}")

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None   # an HTTP date: fall back to our own backoff
