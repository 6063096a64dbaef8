"""A streaming terminal chat against an OpenAI-compatible server (what `infercloud chat` runs)."""

from __future__ import annotations

import json
import sys

import httpx


def stream_reply(client: httpx.Client, url: str, payload: dict) -> str:
    """POST a streamed chat request; print content deltas as they arrive; return the whole reply."""
    reply = []
    with client.stream("POST", url, json=payload) as response:
        if response.status_code != 200:
            response.read()
            message = response.json().get("error", {}).get("message", response.text)
            raise RuntimeError(f"server answered {response.status_code}: {message}")
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            for choice in json.loads(line[6:]).get("choices", []):
                piece = choice.get("delta", {}).get("content") or ""
                print(piece, end="", flush=True)
                reply.append(piece)
    print()
    return "".join(reply)


def chat_loop(base_url: str, model: str, system: str | None, max_tokens: int, temperature: float,
              api_key: str | None, stdin=sys.stdin) -> int:
    messages = [{"role": "system", "content": system}] if system else []
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    interactive = stdin.isatty()
    with httpx.Client(timeout=httpx.Timeout(600.0, connect=5.0), headers=headers) as client:
        while True:
            if interactive:
                print("you> ", end="", flush=True)
            line = stdin.readline()
            if not line or not line.strip():
                return 0
            messages.append({"role": "user", "content": line.strip()})
            try:
                reply = stream_reply(client, f"{base_url.rstrip('/')}/chat/completions",
                                     {"model": model, "messages": messages, "max_tokens": max_tokens,
                                      "temperature": temperature, "stream": True})
            except (httpx.HTTPError, RuntimeError) as exc:
                print(f"infercloud: error: {exc}", file=sys.stderr)
                return 1
            messages.append({"role": "assistant", "content": reply})
