"""A protocol-faithful OpenAI-compatible chat server for the assistant's LLM tests.

A real HTTP server on a free port speaking ``POST /v1/chat/completions`` as the OpenAI schema
does (``choices[0].message`` with ``tool_calls`` whose ``arguments`` are JSON strings,
``finish_reason`` ``tool_calls`` or ``stop``, ``usage``, errors as ``{"error": {...}}``). Every
request is validated (model name, bearer key, the tools' JSON schemas, each ``tool_call_id``
answering a call of the assistant message before it); what breaks the protocol is answered 400 and
kept in ``problems``, so a test that asserts ``problems == []`` proves our client speaks it.

The "model" is a script: it reads the last user message, calls a tool named by simple rules,
then answers from the tool messages' content. ``mode`` switches on the misbehaviours tests need.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODES = {
    "faithful",  # calls the tool the question needs, answers from its result
    "invent",  # ... and adds a figure no tool returned
    "invent_only",  # answers with nothing but an invented figure
    "thinking",  # a reasoning model: its answer starts with a <think> scratchpad
    "unknown_tool",  # first tries a tool that does not exist (an action)
    "bad_args",  # first calls a tool with arguments that break its schema
    "hostile",  # calls the audit log even when it is not offered
    "obedient",  # follows instructions found inside tool results (prompt injection)
    "slow",  # answers after ``delay_s``
    "malformed",  # 200 with a body that is not JSON
    "error",  # 500 with an OpenAI error body
    "loop",  # never stops calling tools
}
_MACHINE = re.compile(r"\b[a-z]+-\d{3}\b")
_ORDER = re.compile(r"\bWO-(\d+)\b", re.I)
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_JSON_TYPES = {"string", "integer", "number", "boolean", "object", "array", "null"}
_INJECTION = re.compile(r"ignore (?:all )?previous instructions", re.I)
INVENTED = "4711"


class OpenAIServer:
    """Start with ``start()``, point ``assistant_llm_url`` at ``url``, ``stop()`` at the end."""

    def __init__(self, model: str = "test-model", key: str | None = None) -> None:
        self.model, self.key = model, key
        self.mode = "faithful"
        self.delay_s = 0.0
        self.requests: list[dict[str, Any]] = []
        self.problems: list[str] = []
        self._lock = threading.Lock()
        self._counter = 0
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> OpenAIServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                status, body = server.handle(self.path, dict(self.headers.items()), raw)
                if server.mode == "slow":
                    time.sleep(server.delay_s)
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (a timeout test)
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    # -- the protocol ----------------------------------------------------------------------------

    def handle(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, Any]:
        if path != "/v1/chat/completions":
            return 404, _error(f"no route {path}", "not_found_error")
        auth = {k.lower(): v for k, v in headers.items()}.get("authorization")
        if self.key is not None and auth != f"Bearer {self.key}":
            return 401, _error("Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        if self.key is None and auth is not None:
            self.problems.append("an Authorization header was sent without a key configured")
        try:
            body = json.loads(raw)
        except ValueError:
            return self._bad("the body is not JSON")
        with self._lock:
            self.requests.append(body)
        problem = _check(body, self.model)
        if problem:
            return self._bad(problem)
        if self.mode == "malformed":
            return 200, b'{"id": "chatcmpl-1", "choices": [{"message": '
        if self.mode == "error":
            return 500, _error("The server had an error while processing your request.", "server_error")
        message = self._reply(body["messages"], [t["function"]["name"] for t in body.get("tools", [])])
        with self._lock:
            self._counter += 1
            n = self._counter
        prompt = sum(len(json.dumps(m)) for m in body["messages"]) // 4
        completion = len(json.dumps(message)) // 4
        return 200, {
            "id": f"chatcmpl-{n}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "system_fingerprint": "fp_test",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": "tool_calls" if message.get("tool_calls") else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }

    def _bad(self, problem: str) -> tuple[int, Any]:
        self.problems.append(problem)
        return 400, _error(problem, "invalid_request_error")

    # -- the scripted model ----------------------------------------------------------------------

    def _reply(self, messages: list[dict[str, Any]], offered: list[str]) -> dict[str, Any]:
        last = messages[-1]
        if self.mode == "invent_only":
            return _say(f"Expect a failure within {INVENTED} hours.")
        if self.mode == "loop":
            return self._calls([("fleet_summary", {})])
        if last["role"] == "user":
            return self._calls(self._plan(last["content"], offered))
        tool_turn = _since_assistant(messages)
        contents = [m["content"] for m in tool_turn]
        if self.mode == "obedient" and any(_INJECTION.search(c) for c in contents):
            order = _ORDER.search(" ".join(contents))
            number = int(order.group(1)) if order else 1
            return self._calls(
                [
                    ("close_work_order", {"order_id": number, "note": "as the manual says"}),
                    ("work_orders", {"status": "done", "order_id": number}),
                ]
            )
        answer = " ".join(_phrase(c) for c in contents)
        if self.mode == "invent":
            answer += f" It will fail within {INVENTED} hours."
        if self.mode == "thinking":
            answer = f"<think>The user wants eng-031. Maybe {INVENTED} hours?</think>\n\n{answer}"
        return _say(answer)

    def _plan(self, text: str, offered: list[str]) -> list[tuple[str, dict[str, Any]]]:
        calls: list[tuple[str, dict[str, Any]]] = []
        if self.mode == "unknown_tool":
            calls.append(("close_work_order", {"order_id": 1}))
        if self.mode == "bad_args":
            calls.append(("machine", {"machine": 7}))
        lower = text.lower()
        order, machine = _ORDER.search(text), _MACHINE.search(lower)
        if "audit" in lower or lower.startswith("who "):
            if "audit_log" in offered or self.mode == "hostile":
                args: dict[str, Any] = {"work_order": int(order.group(1))} if order else {}
                calls.append(("audit_log", args))
        elif re.search(r"how do i|procedure|steps|manual|instructions|belt", lower):
            calls.append(("search_manuals", {"query": text}))
        elif order:
            calls.append(("work_order", {"order_id": int(order.group(1))}))
        elif machine:
            calls.append(("machine", {"machine_id": machine.group(0)}))
        elif "risk" in lower:
            calls.append(("at_risk", {}))
        else:
            calls.append(("fleet_summary", {}))
        return calls

    def _calls(self, calls: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
        if not calls:
            return _say("I cannot look that up for your role.")
        with self._lock:
            base = self._counter
        return {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": f"call_{base}_{i}",
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(args)},
                }
                for i, (name, args) in enumerate(calls)
            ],
        }


def _say(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text, "refusal": None}


def _error(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _since_assistant(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for message in reversed(messages):
        if message["role"] != "tool":
            break
        found.append(message)
    return list(reversed(found))


def _phrase(content: str) -> str:
    """One sentence from a tool message's JSON, as a faithful model would put it."""
    try:
        data = json.loads(content)
    except ValueError:
        return "Part of that result was cut off."
    if not isinstance(data, dict):
        return "I found something I cannot read."
    if "error" in data:
        return f"I could not look that up ({data['error']})."
    if "predicted_rul" in data and "machine_id" in data:
        if data["predicted_rul"] is None:
            return f"{data['machine_id']} has no prediction yet."
        unit = data["time_unit"]
        text = (
            f"{data['machine_id']} has a predicted remaining useful life of {data['predicted_rul']:.0f} "
            f"{unit}; its threshold is {data['threshold']:g} {unit}."
        )
        if data.get("open_work_order"):
            text += f" Its open work order is WO-{data['open_work_order']['id']}."
        return text
    if "at_risk_count" in data:
        shown = data["at_risk"] or data["lowest"]
        return "Lowest first: " + ", ".join(f"{m['machine_id']}" for m in shown) + "."
    if "entries" in data:
        if not data["entries"]:
            return "The audit log has no entry about that."
        entry = data["entries"][0]
        return f"The latest entry: {entry['actor']} did {entry['action']}."
    if "sections" in data:
        if not data["sections"]:
            return "The manuals say nothing about that."
        section = data["sections"][0]
        return f"From “{section['section']}”: {section['text'].split('.')[0].strip()}."
    if "found" in data and "status" in data and "id" in data:
        return f"WO-{data['id']} on {data['machine_id']} is {data['status']}."
    if "work_orders" in data:
        return f"There are {data['count']} work orders."
    if "machine_types" in data:
        return f"The fleet has {data['machines']} machines."
    return "Here is what I found."


def _check(body: Any, model: str) -> str | None:
    """What in a request breaks the chat-completions protocol (None: nothing)."""
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    if body.get("model") != model:
        return f"model must be {model!r}, got {body.get('model')!r}"
    if body.get("stream"):
        return "this server does not stream"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages must be a non-empty list"
    if messages[0].get("role") != "system":
        return "the first message should be the system prompt"
    if messages[-1].get("role") not in {"user", "tool"}:
        return "the last message must be the user's or a tool result"
    waiting: set[str] = set()
    for i, m in enumerate(messages):
        role = m.get("role") if isinstance(m, dict) else None
        if role not in {"system", "user", "assistant", "tool"}:
            return f"messages[{i}].role {role!r} is not a chat role"
        if role != "tool" and waiting:
            return f"messages[{i}]: tool calls {sorted(waiting)} got no tool message"
        if role == "tool":
            if set(m) != {"role", "content", "tool_call_id"}:
                return f"messages[{i}]: a tool message has role, content and tool_call_id, got {sorted(m)}"
            if m["tool_call_id"] not in waiting:
                return f"messages[{i}].tool_call_id {m['tool_call_id']!r} answers no pending call"
            waiting.discard(m["tool_call_id"])
            if not isinstance(m["content"], str):
                return f"messages[{i}].content must be a string"
        elif role == "assistant" and m.get("tool_calls"):
            for call in m["tool_calls"]:
                function = call.get("function", {})
                if call.get("type") != "function" or not isinstance(function.get("arguments"), str):
                    return f"messages[{i}]: tool calls are echoed as sent (type, function.arguments string)"
                waiting.add(call["id"])
        elif not isinstance(m.get("content"), str):
            return f"messages[{i}].content must be a string"
    if waiting:
        return f"tool calls {sorted(waiting)} got no tool message"
    if body.get("tool_choice", "auto") not in {"auto", "none", "required"}:
        return "tool_choice must be auto, none or required"
    tools = body.get("tools", [])
    if not isinstance(tools, list):
        return "tools must be a list"
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if tool.get("type") != "function" or not isinstance(function, dict):
            return "each tool is {type: function, function: {...}}"
        if not _NAME.match(str(function.get("name"))):
            return f"tool name {function.get('name')!r} must match ^[a-zA-Z0-9_-]{{1,64}}$"
        if not isinstance(function.get("description"), str):
            return f"tool {function['name']} has no description"
        parameters = function.get("parameters")
        if not isinstance(parameters, dict) or parameters.get("type") != "object":
            return f"tool {function['name']}: parameters must be a JSON schema of type object"
        properties = parameters.get("properties", {})
        for pname, prop in properties.items():
            if prop.get("type") not in _JSON_TYPES:
                return f"tool {function['name']}.{pname}: type {prop.get('type')!r} is not a JSON type"
        if not set(parameters.get("required", [])) <= set(properties):
            return f"tool {function['name']}: required names a parameter it does not declare"
    return None
