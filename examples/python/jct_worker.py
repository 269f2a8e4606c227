#!/usr/bin/env python3
"""A DevOps Control Tower worker in plain Python (standard library only).

It registers with the server, long-polls for tasks of the types it serves, streams log
lines, posts an artifact, heartbeats while a task runs (and stops it when the server says
it was cancelled), and reports each task's end. Copy it and replace `run_task` with your
own work.

    JCT_SERVER_URL=http://127.0.0.1:8000 JCT_API_KEY=... python3 jct_worker.py --types py-echo,py-sleep,py-fail

The protocol, route by route, is in the README ("Write a worker in any language").
"""

import argparse
import base64
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request


class ServerError(Exception):
    """The server answered with an error body: {"error": code, "message": sentence}."""

    def __init__(self, status, body):
        self.status = status
        self.code = body.get("error", "unknown") if isinstance(body, dict) else "unknown"
        self.message = body.get("message", "") if isinstance(body, dict) else str(body)
        super().__init__(f"{status} {self.code}: {self.message}")


class Client:
    def __init__(self, server, api_key=None):
        self.server = server.rstrip("/")
        self.api_key = api_key

    def call(self, method, path, body=None, timeout=60):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.server + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if self.api_key:
            request.add_header("Authorization", "Bearer " + self.api_key)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                text = response.read().decode()
                return json.loads(text) if text else None
        except urllib.error.HTTPError as e:
            text = e.read().decode()
            try:
                body = json.loads(text)
            except ValueError:
                body = {"message": text}
            raise ServerError(e.code, body) from None


class Cancelled(Exception):
    """The server said the task was cancelled (or our lease is gone): stop working on it."""


class Attempt:
    """One claimed task: its lease token, log numbering and a heartbeat thread."""

    def __init__(self, client, task, heartbeat_every):
        self.client = client
        self.task = task
        self.id = task["task_id"]
        self.token = task["lease_token"]
        self.seq = 0
        self.cancelled = threading.Event()
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, args=(heartbeat_every,), daemon=True)
        self._beat.start()

    def _heartbeat(self, every):
        while not self._stop.wait(every):
            try:
                answer = self.client.call("POST", f"/tasks/{self.id}/heartbeat", {"lease_token": self.token})
                if answer.get("cancel_requested"):
                    self.cancelled.set()
                    return
            except ServerError as e:
                if e.code == "lease_lost":
                    self.cancelled.set()
                    return
            except OSError:
                pass  # the server is briefly away; the next beat tries again

    def check(self):
        if self.cancelled.is_set():
            raise Cancelled()

    def _call(self, path, body):
        # lease_lost on any call means the same as a cancel seen by the heartbeat: the task
        # was cancelled, or our lease ended and someone else may run it. Stop working on it.
        try:
            return self.client.call("POST", f"/tasks/{self.id}/{path}", dict(body, lease_token=self.token))
        except ServerError as e:
            if e.code == "lease_lost":
                self.cancelled.set()
                raise Cancelled() from None
            raise

    def log(self, *lines):
        self.seq += 1
        self._call("log", {"seq": self.seq, "lines": list(lines)})

    def artifact(self, name, kind, content, media_type="text/plain"):
        body = {"name": name, "type": kind, "media_type": media_type, "content_base64": base64.b64encode(content).decode()}
        return self._call("artifacts", body)

    def complete(self, result):
        return self._call("complete", {"result": result})

    def fail(self, message, retryable=True):
        return self._call("fail", {"error": {"message": message, "kind": "example"}, "retryable": retryable})

    def close(self):
        self._stop.set()
        self._beat.join(timeout=5)


def run_task(attempt):
    """The work itself, by task type. Replace this with yours."""
    task = attempt.task
    payload = task.get("payload") or {}
    if task["type"] == "py-echo":
        attempt.log("hello from python", f"payload has {len(payload)} keys")
        attempt.artifact("echo.json", "report", json.dumps(payload).encode(), "application/json")
        return {"echo": payload}
    if task["type"] == "py-sleep":
        seconds = float(payload.get("seconds", 1))
        deadline = time.monotonic() + seconds
        step = 0
        while time.monotonic() < deadline:
            attempt.check()
            step += 1
            attempt.log(f"working, step {step}")
            time.sleep(0.1)
        return {"slept": seconds}
    if task["type"] == "py-fail":
        raise RuntimeError(payload.get("message", "failing on purpose"))
    raise RuntimeError(f"this worker cannot run {task['type']!r}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=os.environ.get("JCT_SERVER_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--types", default="py-echo,py-sleep,py-fail")
    parser.add_argument("--name", default="python-example")
    parser.add_argument("--wait-ms", type=int, default=5000, help="how long each claim may wait")
    parser.add_argument("--exit-when-idle", action="store_true", help="stop after a claim finds nothing")
    args = parser.parse_args()

    client = Client(args.server, os.environ.get("JCT_API_KEY"))
    worker = client.call("POST", "/workers", {"name": args.name, "types": args.types.split(","), "max_slots": 1})
    worker_id = worker["worker_id"]
    every = float(worker["heartbeat_interval_s"])
    print(f"registered {worker_id}", flush=True)
    try:
        while True:
            claimed = client.call("POST", "/tasks/claim", {"worker_id": worker_id, "max": 1, "wait_ms": args.wait_ms})
            if not claimed["tasks"]:
                if args.exit_when_idle:
                    break
                continue
            for task in claimed["tasks"]:
                # The claim's own lease is short; beat at least every second in this example.
                attempt = Attempt(client, task, min(every, 1.0))
                try:
                    result = run_task(attempt)
                    attempt.complete(result)
                    print(f"completed {attempt.id}", flush=True)
                except Cancelled:
                    print(f"cancelled {attempt.id}", flush=True)
                except ServerError as e:
                    print(f"server refused {attempt.id}: {e}", flush=True)
                except Exception as e:  # the task failed: report it, keep working
                    try:
                        attempt.fail(str(e), retryable=False)
                        print(f"failed {attempt.id}: {e}", flush=True)
                    except Cancelled:
                        print(f"cancelled {attempt.id}", flush=True)
                finally:
                    attempt.close()
    finally:
        client.call("DELETE", f"/workers/{worker_id}")
        print("deregistered", flush=True)


if __name__ == "__main__":
    sys.exit(main())
