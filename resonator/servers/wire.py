"""The stand-in's answers and messages, in the words the real server uses.

A workaround for resonate-sdk 0.8.1's model of the server. The stand-in's
logic is that model (``model.py``), and where a client can see it, the model
words things its own way. The Python SDK takes either; a client that checks
what it is sent against the protocol's schema, as the TypeScript SDK does,
takes only the server's (``tests/test_upstream.py::
test_the_sdks_model_answers_a_create_as_the_real_server_does`` shows it on
the model, a strict xfail; the day it passes, what it covers can go). So
each request's task versions pass through here on the way in, and each
answer and message on the way out:

- a create answers 200 (the model: 201), and a promise with no ``param`` or
  ``value`` has ``{}`` (the model: null);
- the ``data`` of an error is its message (the model: ``{"error": ...}``);
- a task's ``version`` is how many times it was handed out, as the server
  numbers it (the model adds one at each release, lapse and resume
  instead); a task record also carries ``resumes``, how many of the
  promises it awaits have settled since it last ran, and no ``promiseId``;
- the ``action`` of a ``task.fence`` answer is a whole answer, with a head;
- every message has a ``head``; an ``execute``'s names the server's URL.

``tests/test_servers.py`` sends the same requests to the stand-in and the
real server and compares what comes back, field by field.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from resonate_base import PROTOCOL_VERSION

if TYPE_CHECKING:
    from resonator.servers.model import IndexedServerState

# The requests that name a task at a version (a heartbeat names several).
VERSIONED = ("task.acquire", "task.release", "task.fulfill", "task.suspend", "task.fence")
# The real server's words where the model's answer has none: only answers to
# the requests above, about a task, say nothing.
UNSAID = {404: "Task not found", 409: "Task version mismatch or invalid state"}


def request(state: IndexedServerState, flat: Any) -> Any:
    """``flat`` with its task versions in the model's count (a copy; anything else as it is)."""
    if not isinstance(flat, dict):
        return flat
    kind = flat.get("kind")
    if kind in VERSIONED:
        return flat | {"version": version(state, flat)}
    if kind == "task.heartbeat" and isinstance(tasks := flat.get("tasks"), list):
        refs = [t | {"version": version(state, t)} if isinstance(t, dict) else t for t in tasks]
        return flat | {"tasks": refs}
    return flat


def version(state: IndexedServerState, ref: dict[str, Any]) -> Any:
    """The model's version for the one ``ref`` names: the task's own if it names the current one.

    Any other becomes -1, which no task has, so that the model refuses it.
    """
    id = ref.get("id")
    task = state.tasks.get(id) if isinstance(id, str) else None
    if task is None:
        return ref.get("version")  # the model says what is wrong
    return task.version if ref.get("version") == state.claims.get(task.id, 0) else -1


def answer(state: IndexedServerState, flat: Any, response: dict[str, Any]) -> dict[str, Any]:
    """The response envelope for the model's ``response`` to the request ``flat``."""
    status = 200 if response["status"] == 201 else response["status"]
    head = {"corrId": response["corrId"], "status": status, "version": PROTOCOL_VERSION}
    if status >= 400:
        return {"kind": response["kind"], "head": head, "data": error_message(response, status)}
    data = {k: v for k, v in response.items() if k not in ("kind", "corrId", "status")}
    if data.get("promise") is not None:
        data["promise"] = promise_record(data["promise"])
    for key in ("preload", "promises"):
        if key in data:
            data[key] = [promise_record(record) for record in data[key]]
    if data.get("task") is not None:
        data["task"] = task_record(state, data["task"])
    if "action" in data:
        data["action"] = fenced(flat, response["corrId"], data["action"]["data"]["promise"])
    data.pop("redirect", None)  # a 300 says so
    return {"kind": response["kind"], "head": head, "data": data}


def error_message(response: dict[str, Any], status: int) -> str:
    error = response.get("error")
    return error if isinstance(error, str) else UNSAID.get(status, "")


def fenced(flat: dict[str, Any], corr_id: Any, promise: dict[str, Any] | None) -> dict[str, Any]:
    """A ``task.fence``'s action answered: the answer to the request it carried, head and all."""
    status = 200 if promise is not None else 404
    head = {"corrId": corr_id, "status": status, "version": PROTOCOL_VERSION}
    data: Any = {"promise": promise_record(promise)} if promise else "Promise not found"
    return {"kind": flat["action"]["kind"], "head": head, "data": data}


def message(state: IndexedServerState, message: dict[str, Any], url: str) -> dict[str, Any]:
    """A message of the model's, as the real server sends it."""
    if message["kind"] == "execute":
        id = message["data"]["task"]["id"]
        task = {"id": id, "version": state.claims.get(id, 0)}
        return {"kind": "execute", "head": {"serverUrl": url}, "data": {"task": task}}
    promise = promise_record(message["data"]["promise"])
    return {"kind": message["kind"], "head": {}, "data": {"promise": promise}}


def promise_record(record: dict[str, Any]) -> dict[str, Any]:
    return record | {key: {} for key in ("param", "value") if record[key] is None}


def task_record(state: IndexedServerState, record: dict[str, Any]) -> dict[str, Any]:
    id = record["id"]
    resumes = len(task.resumes) if (task := state.tasks.get(id)) else 0
    kept = {k: v for k, v in record.items() if k != "promiseId"}
    return kept | {"version": state.claims.get(id, 0), "resumes": resumes}
