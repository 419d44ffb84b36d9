"""A client for OpenAI-compatible chat-completions endpoints (the gpt-3.5-turbo baseline, local servers), through
the official `openai` package: `base_url` points it at any compatible server, and it retries 408, 409, 429, 5xx,
connection errors and timeouts itself, with exponential backoff or the server's Retry-After.

Responses are cached on disk under sha256(endpoint, model, prompt, parameters), so a rerun sends no request;
requests run in a small thread pool. The API key is read from the environment variable the config names and is
sent only in the Authorization header: it is never logged, cached or put in an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tunebench import files

# What the openai client retries (its _should_retry): a failure with one of these had all its retries.
RETRIED_STATUS = {408, 409, 429}
# The openai client insists on a key; for a server without authentication, this is the placeholder vLLM and
# llama.cpp document (they ignore the header).
NO_KEY = "EMPTY"


class APIError(RuntimeError):
    """A request failed for good (a 4xx other than 408/409/429, or retries exhausted)."""


class ChatClient:
    def __init__(self, base_url: str, model: str, api_key_env: str | None,
                 cache_dir: str | os.PathLike, timeout_s: float = 60.0,
                 max_retries: int = 5, concurrency: int = 4):
        import openai

        # The cache key names the endpoint as the hand-written client did, so existing caches still answer.
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self._key = os.environ.get(api_key_env, "") if api_key_env else ""
        self.cache_dir = Path(cache_dir)
        self.max_retries = max_retries
        self.concurrency = concurrency
        self.requests_sent = 0      # HTTP attempts, retries included
        self.cache_hits = 0
        self._lock = threading.Lock()
        # Every attempt, retries included, passes the request hook: that is what requests_sent counts.
        http_client = openai.DefaultHttpxClient(event_hooks={"request": [self._count_request]})
        self._openai = openai.OpenAI(base_url=base_url, api_key=self._key or NO_KEY, timeout=timeout_s,
                                     max_retries=max_retries, http_client=http_client)

    def __repr__(self) -> str:      # never show the key, even in a debugger or a traceback's locals
        return f"ChatClient(url={self.url!r}, model={self.model!r})"

    def _count_request(self, request) -> None:
        with self._lock:
            self.requests_sent += 1

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
        response = self._create(body)
        answer = response.choices[0].message.content or ""
        usage = response.usage.model_dump(exclude_none=True) if response.usage else {}
        files.write_json(path, {"url": self.url, "request": body, "answer": answer, "usage": usage})
        return answer

    def _cache_path(self, body: dict) -> Path:
        key = hashlib.sha256(json.dumps({"url": self.url, **body}, sort_keys=True).encode()).hexdigest()
        return self.cache_dir / key[:2] / f"{key}.json"

    def _create(self, body: dict):
        import openai

        try:
            return self._openai.chat.completions.create(**body)
        except openai.APIStatusError as e:
            failure = f"HTTP {e.status_code}: {self._redact(e.response.text[:300])}"
            if e.status_code in RETRIED_STATUS or e.status_code >= 500:
                raise APIError(f"{self.url}: gave up after {self.max_retries + 1} attempts; last: {failure}") from None
            raise APIError(f"{self.url}: {failure}") from None
        except openai.APIConnectionError as e:   # timeouts included (APITimeoutError)
            cause = f"{type(e).__name__}: {self._redact(str(e.__cause__ or e))}"
            raise APIError(f"{self.url}: gave up after {self.max_retries + 1} attempts; last: {cause}") from None

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text
