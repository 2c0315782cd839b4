"""A real local HTTP server speaking OpenAI's `POST /v1/chat/completions`, scripted per test.

In a test: `with FakeOpenAIServer(responder) as server: ... server.base_url ... server.requests`.
The responder gets the request (JSON body plus `_headers`) and returns a `Reply` or a plain string
(a 200 reply with that content). Standalone, for tests that kill a client process:

    python tests/fake_openai_server.py --port-file F --script deterministic --delay 0.05

writes its port to F and plays Taboo deterministically (see `deterministic_responder`).
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Reply:
    """What the server answers to one request. `body` replaces the JSON body with these exact bytes (e.g. a
    completion whose message is null); `cut_at` sends only that many bytes of the body, with the full
    Content-Length, then closes the connection (a reply cut off in transit)."""

    content: str = ""
    status: int = 200
    delay: float = 0.0
    error_message: str = "scripted error"
    body: str | None = None
    cut_at: int | None = None


Responder = Callable[[dict], "Reply | str"]


def role_of(request: dict) -> str:
    """'describer' or 'guesser', from the system prompt of the request."""
    system = request["messages"][0]["content"].lower()
    return "describer" if "you are the describer" in system else "guesser"


def by_role(describer: list, guesser: list) -> Responder:
    """A responder that pops the next scripted reply of the role asking (Reply or str)."""
    queues = {"describer": list(describer), "guesser": list(guesser)}
    lock = threading.Lock()

    def respond(request: dict) -> Reply | str:
        with lock:
            queue = queues[role_of(request)]
            if not queue:
                return Reply(status=500, error_message=f"script for {role_of(request)} is used up")
            return queue.pop(0)

    return respond


def deterministic_responder(delay: float = 0.0) -> Responder:
    """Plays Taboo: the describer spells the target backwards ("CLUE: it reads elppa backwards"), the
    guesser reverses the last clue, except guesser models whose name contains 'wrong', which always
    guess 'nothing' (so their games end in failure)."""

    def respond(request: dict) -> Reply:
        messages = request["messages"]
        if role_of(request) == "describer":
            target = re.search(r"Target word: (.+)", messages[1]["content"]).group(1).strip()
            turn = sum(m["role"] == "assistant" for m in messages) + 1
            return Reply(f"CLUE: it reads {target[::-1]} backwards, hint {turn}", delay=delay)
        if "wrong" in request["model"]:
            return Reply("GUESS: nothing", delay=delay)
        clue = [m["content"] for m in messages if m["role"] == "user"][-1]
        word = re.search(r"reads (\S+) backwards", clue).group(1)
        return Reply(f"GUESS: {word[::-1]}", delay=delay)

    return respond


class FakeOpenAIServer:
    """A threaded HTTP server on 127.0.0.1 (port 0); records every request it receives."""

    def __init__(self, responder: Responder) -> None:
        self.responder = responder
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeOpenAIServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FakeOpenAIServer:  # noqa: PYI034 (the class is not subclassed)
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def record(self, request: dict) -> None:
        with self._lock:
            self.requests.append(request)


def _completion(request: dict, content: str, counter: int) -> dict:
    prompt_tokens = sum(len(m["content"]) for m in request.get("messages", [])) // 4 + 1
    completion_tokens = len(content) // 4 + 1
    return {
        "id": f"chatcmpl-fake-{counter}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model", "fake"),
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _handler_for(server: FakeOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        def _send(self, status: int, payload: dict | str, cut_at: int | None = None) -> None:
            body = (payload if isinstance(payload, str) else json.dumps(payload)).encode("utf-8")
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body if cut_at is None else body[:cut_at])
                if cut_at is not None:
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout) before the reply

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            request = json.loads(self.rfile.read(length) or b"{}")
            request["_headers"] = {k.lower(): v for k, v in self.headers.items()}
            request["_path"] = self.path
            server.record(request)
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
                return
            reply = server.responder(request)
            reply = Reply(reply) if isinstance(reply, str) else reply
            if reply.delay:
                time.sleep(reply.delay)
            if reply.status != 200:
                error = {"message": reply.error_message, "type": "fake_error", "code": reply.status}
                self._send(reply.status, {"error": error})
                return
            payload = reply.body if reply.body is not None else _completion(request, reply.content, len(server.requests))
            self._send(200, payload, reply.cut_at)

    return Handler


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port-file", type=Path, required=True, help="where to write the port")
    parser.add_argument("--script", choices=["deterministic"], default="deterministic")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each reply")
    args = parser.parse_args()
    server = FakeOpenAIServer(deterministic_responder(args.delay))
    tmp = args.port_file.with_name(args.port_file.name + ".tmp")
    tmp.write_text(str(server.port))
    tmp.replace(args.port_file)
    server._httpd.serve_forever()


if __name__ == "__main__":
    _main()
