// The dashboard's one script (hand-written, no library): actions through the JSON API with
// the session's CSRF token, the live log tail over server-sent events, the enqueue form's
// checks, the periodic refresh of the overview and workers pages, and a running workflow's
// step colours read again from the API. Text from the server
// is only ever inserted as text (textContent), never as markup.
"use strict";

(function () {
  const body = document.body;
  const root = body.dataset.root || "./";
  const csrf = body.dataset.csrf || "";

  function flash(message, isError) {
    const el = document.getElementById("flash");
    if (!el) return;
    el.textContent = message;
    el.className = isError ? "error shown" : "ok shown";
  }

  // Calls the API; resolves with the parsed JSON body, rejects with its error message.
  async function api(method, path, payload) {
    const headers = { "Accept": "application/json" };
    if (csrf) headers["X-CSRF-Token"] = csrf;
    const init = { method: method, headers: headers, credentials: "same-origin" };
    if (payload !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(payload);
    }
    const res = await fetch(root + path, init);
    let data = null;
    try { data = await res.json(); } catch (e) { data = null; }
    if (!res.ok) {
      const msg = data && data.message ? data.message : ("HTTP " + res.status);
      throw new Error(msg);
    }
    return data;
  }

  function setStatus(status) {
    const el = document.getElementById("status");
    if (!el) return;
    el.textContent = "";
    const span = document.createElement("span");
    span.className = "status s-" + status;
    span.textContent = status;
    el.appendChild(span);
    body.dataset.status = status;
  }

  // Cancel and retry buttons on a task page.
  document.querySelectorAll("button[data-action]").forEach(function (button) {
    button.addEventListener("click", async function () {
      const action = button.dataset.action;
      button.disabled = true;
      try {
        const task = await api("POST", "tasks/" + button.dataset.id + "/" + action);
        setStatus(task.status);
        flash("Task " + (action === "cancel" ? "cancelled" : "queued again") + ".", false);
        setTimeout(function () { location.reload(); }, 1200);
      } catch (e) {
        flash(e.message, true);
        button.disabled = false;
      }
    });
  });

  // Approve and Reject on an approval step's page: the decision with the optional comment
  // and name (left out when empty).
  document.querySelectorAll("button[data-decision]").forEach(function (button) {
    button.addEventListener("click", async function () {
      const decision = button.dataset.decision;
      const payload = { decision: decision };
      const comment = document.getElementById("decision-comment");
      const by = document.getElementById("decision-by");
      if (comment && comment.value !== "") payload.comment = comment.value;
      if (by && by.value !== "") payload.by = by.value;
      document.querySelectorAll("button[data-decision]").forEach(function (b) { b.disabled = true; });
      try {
        const task = await api("POST", "tasks/" + button.dataset.id + "/decision", payload);
        setStatus(task.status);
        flash(decision === "approve" ? "Approved." : "Rejected.", false);
        setTimeout(function () { location.reload(); }, 1200);
      } catch (e) {
        flash(e.message, true);
        document.querySelectorAll("button[data-decision]").forEach(function (b) { b.disabled = false; });
      }
    });
  });

  // A button that POSTs `<resource>/<name>/<action>`, says what happened and reloads.
  function actionButtons(selector, resource, actionOf, said) {
    document.querySelectorAll(selector).forEach(function (button) {
      button.addEventListener("click", async function () {
        const action = actionOf(button);
        const name = button.dataset.name;
        button.disabled = true;
        try {
          const r = await api("POST", resource + "/" + encodeURIComponent(name) + "/" + action);
          flash(said(action, name, r), false);
          setTimeout(function () { location.reload(); }, 1200);
        } catch (e) {
          flash(e.message, true);
          button.disabled = false;
        }
      });
    });
  }

  // Pause, resume and trigger buttons on the schedules page.
  actionButtons("button[data-schedule-action]", "schedules", function (b) { return b.dataset.scheduleAction; },
    function (action, name, r) {
      return action === "trigger" ? "Fired " + name + ": task " + r.task_id + "." :
        "Schedule " + name + (action === "pause" ? " paused." : " resumed.");
    });

  // Cancel and retry buttons on a workflow's page.
  actionButtons("button[data-workflow-action]", "workflows", function (b) { return b.dataset.workflowAction; },
    function (action, name, r) {
      return action === "cancel" ? "Workflow cancelled: " + r.cancelled + " steps ended." :
        "Workflow retried: " + r.requeued + " steps queued, " + r.reopened + " waiting again.";
    });

  // Pause and resume buttons on the queues page.
  actionButtons("button[data-queue-action]", "queues", function (b) { return b.dataset.queueAction; },
    function (action, name, q) { return "Queue " + q.name + (q.paused ? " paused." : " resumed."); });

  // The limits forms on the queues page: each field is sent, an empty one as null (no
  // limit); the rate needs both of its numbers or neither. The server checks every value.
  document.querySelectorAll("form.queue-limits").forEach(function (form) {
    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      const error = form.querySelector(".error");
      error.textContent = "";
      const name = form.dataset.name || form.elements["name"].value.trim();
      if (!name) { error.textContent = "name the queue"; return; }
      const number = function (field) {
        const v = form.elements[field].value.trim();
        return v === "" ? null : Number(v);
      };
      const limit = number("rate_limit");
      const perS = number("rate_per_s");
      if ((limit === null) !== (perS === null)) {
        error.textContent = "a rate needs both its starts and its seconds (or neither)";
        return;
      }
      const change = {
        concurrency: number("concurrency"),
        key_concurrency: number("key_concurrency"),
        rate: limit === null ? null : { limit: limit, per_s: perS },
      };
      try {
        const q = await api("PUT", "queues/" + encodeURIComponent(name), change);
        flash("Queue " + q.name + " limits saved.", false);
        setTimeout(function () { location.reload(); }, 1200);
      } catch (e) {
        error.textContent = e.message;
      }
    });
  });

  // Bulk actions on the tasks page: the checked rows, or every task matching the filter
  // (that one asks for a second click to confirm).
  const selectAll = document.getElementById("select-all");
  if (selectAll) {
    selectAll.addEventListener("change", function () {
      document.querySelectorAll("input.sel").forEach(function (box) { box.checked = selectAll.checked; });
    });
  }
  const bulk = document.getElementById("bulk");
  document.querySelectorAll("button[data-bulk]").forEach(function (button) {
    button.addEventListener("click", async function () {
      const action = button.dataset.bulk;
      let request;
      if (button.dataset.scope === "ids") {
        const ids = Array.from(document.querySelectorAll("input.sel:checked")).map(function (b) { return b.value; });
        if (ids.length === 0) { flash("Select some tasks first.", true); return; }
        request = { ids: ids };
      } else {
        if (button.dataset.armed !== "1") {
          button.dataset.armed = "1";
          button.dataset.label = button.textContent;
          button.textContent = "Click again: " + action + " every matching task";
          return;
        }
        request = { filter: JSON.parse(bulk.dataset.filter || "{}") };
      }
      button.disabled = true;
      try {
        const r = await api("POST", "tasks/bulk/" + action, request);
        flash((action === "cancel" ? "Cancelled " : "Queued again ") + r.changed + " of " + r.matched + " tasks.", false);
        setTimeout(function () { location.reload(); }, 1200);
      } catch (e) {
        flash(e.message, true);
      } finally {
        button.disabled = false;
        if (button.dataset.label) { button.textContent = button.dataset.label; button.dataset.armed = ""; }
      }
    });
  });

  // The enqueue form: the payload must be JSON before anything is sent; the server checks
  // everything again.
  const form = document.getElementById("enqueue");
  if (form) {
    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      const error = document.getElementById("e-error");
      error.textContent = "";
      const type = form.elements["type"].value.trim();
      if (!type) { error.textContent = "type is required"; return; }
      let payload;
      try {
        payload = JSON.parse(form.elements["payload"].value || "{}");
      } catch (e) {
        error.textContent = "payload is not valid JSON: " + e.message;
        return;
      }
      const request = { type: type, payload: payload };
      const queue = form.elements["queue"].value.trim();
      if (queue) request.queue = queue;
      const priority = form.elements["priority"].value.trim();
      if (priority) request.priority = Number(priority);
      try {
        const task = await api("POST", "tasks/enqueue", request);
        location.href = root + "ui/tasks/" + task.task_id;
      } catch (e) {
        error.textContent = e.message;
      }
    });
  }

  // The live log of a running task: every line from the start, then new ones as written,
  // until the attempt ends.
  if (body.dataset.follow === "1") {
    const log = document.getElementById("log");
    const live = document.getElementById("live");
    const source = new EventSource(root + "tasks/" + body.dataset.task + "/log?follow=1");
    source.addEventListener("line", function (event) {
      log.appendChild(document.createTextNode(event.data + "\n"));
      log.scrollTop = log.scrollHeight;
    });
    source.addEventListener("end", async function () {
      source.close();
      if (live) { live.textContent = "ended"; live.className = "badge"; }
      try {
        const task = await api("GET", "tasks/" + body.dataset.task);
        setStatus(task.status);
      } catch (e) { /* the status stays as shown */ }
    });
    source.onerror = function () {
      if (live) live.textContent = "reconnecting";
    };
  }

  // A workflow's page: while it runs, read the workflow again every data-poll ms and
  // recolour each step in place (its graph node, its table row, the counts), until it ends.
  if (body.dataset.workflow) {
    const every = Number(body.dataset.poll) || 2000;
    const badge = function (el, status) {
      el.textContent = "";
      const span = document.createElement("span");
      span.className = "status s-" + status;
      span.textContent = status;
      el.appendChild(span);
    };
    // The page's step elements by task id, found once: a workflow may have 10,000 steps.
    const shown = {};
    document.querySelectorAll("[data-step]").forEach(function (el) {
      (shown[el.dataset.step] = shown[el.dataset.step] || []).push(el);
    });
    const paint = function (wf) {
      const counts = {};
      wf.steps.forEach(function (step) {
        counts[step.status] = (counts[step.status] || 0) + 1;
        (shown[step.task_id] || []).forEach(function (el) {
          if (el.tagName.toLowerCase() === "tr") {
            const st = el.querySelector("td.st");
            if (st) badge(st, step.status);
            const attempts = el.querySelector("td.attempts");
            if (attempts) attempts.textContent = step.attempts + "/" + step.max_attempts;
            // Times as the server writes them: 2026-11-29 09:48:07Z.
            [["td.started", step.started_at], ["td.finished", step.finished_at]].forEach(function (pair) {
              const cell = el.querySelector(pair[0]);
              if (cell) cell.textContent = pair[1] ? pair[1].replace("T", " ").slice(0, 19) + "Z" : "–";
            });
            const err = el.querySelector("td.err");
            if (err) err.textContent = step.last_error || "";
          } else {
            el.setAttribute("class", "node s-" + step.status);
            const text = el.querySelector("text.st");
            if (text) text.textContent = step.status;
          }
        });
      });
      const status = document.getElementById("wf-status");
      if (status) badge(status, wf.status);
      body.dataset.wfStatus = wf.status;
      const line = document.getElementById("wf-counts");
      if (line) {
        line.textContent = "";
        const total = document.createElement("b");
        total.textContent = String(wf.steps.length);
        line.appendChild(total);
        line.appendChild(document.createTextNode(": "));
        ["waiting", "queued", "running", "completed", "failed", "cancelled"].filter(function (s) { return counts[s]; })
          .forEach(function (s, i) {
            if (i > 0) line.appendChild(document.createTextNode(" · "));
            const span = document.createElement("span");
            span.className = "count s-" + s;
            span.dataset.status = s;
            const n = document.createElement("b");
            n.textContent = String(counts[s]);
            span.appendChild(n);
            span.appendChild(document.createTextNode(" " + s));
            line.appendChild(span);
          });
      }
    };
    const poll = async function () {
      try {
        const wf = await api("GET", "workflows/" + body.dataset.workflow);
        paint(wf);
        if (wf.status !== "running") {
          const live = document.getElementById("wf-live");
          if (live) { live.textContent = "ended"; live.className = "badge"; }
          // Nothing is left to cancel (a reload offers Retry when a step failed).
          const cancel = document.getElementById("wf-cancel");
          if (cancel) cancel.remove();
          return;
        }
      } catch (e) { /* the page stays as shown; the next read may work */ }
      setTimeout(poll, every);
    };
    if (body.dataset.wfStatus === "running") setTimeout(poll, every);
  }

  // Overview and workers: refresh the whole page now and then (nothing to lose there).
  if (body.dataset.refresh) {
    setTimeout(function () { location.reload(); }, Number(body.dataset.refresh));
  }
})();
