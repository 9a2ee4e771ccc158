// The status page: everything it shows comes from /api/v1 with the bearer
// token, which it takes from the address's fragment (#token=…, never sent
// to the server in a URL) or a form, and keeps in this tab only. Text is
// put in the page with textContent, never as HTML.
"use strict";
(function () {
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.get("token")) {
    sessionStorage.setItem("er-token", hash.get("token"));
    history.replaceState(null, "", location.pathname);
  }
  let token = sessionStorage.getItem("er-token");
  const app = document.getElementById("app");
  const status = document.getElementById("status");

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return e;
  }
  function table(head, rows, cls) {
    const t = el("table", cls ? { class: cls } : {});
    t.append(el("thead", {}, el("tr", {}, ...head.map((h) => el("th", {}, h)))));
    const body = el("tbody");
    for (const r of rows) body.append(r);
    t.append(body);
    return t;
  }
  function left(seconds) {
    if (seconds <= 0) return "lifted";
    const d = Math.floor(seconds / 86400), h = Math.floor((seconds % 86400) / 3600);
    const m = Math.floor((seconds % 3600) / 60), s = Math.floor(seconds % 60);
    const two = (n) => String(n).padStart(2, "0");
    return (d ? d + "d " : "") + two(h) + ":" + two(m) + ":" + two(s);
  }
  async function api(path) {
    const r = await fetch(path, { headers: { Authorization: "Bearer " + token }, cache: "no-store" });
    if (r.status === 401) throw new Error("unauthorized");
    if (!r.ok) throw new Error("HTTP " + r.status);
    return r.json();
  }
  function login() {
    const form = document.getElementById("login");
    form.hidden = false;
    status.textContent = "A bearer token is needed.";
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      token = document.getElementById("token").value.trim();
      sessionStorage.setItem("er-token", token);
      form.hidden = true;
      render();
    });
  }
  async function render() {
    let data;
    try {
      data = await api("/api/v1/lists");
    } catch (e) {
      if (String(e.message) === "unauthorized") return login();
      status.textContent = "The daemon did not answer: " + e.message;
      return;
    }
    const sections = [];
    for (const list of data.lists) {
      const s = el("section", { class: "list", "data-list": list.address });
      s.append(el("h2", {}, list.address));
      s.append(el("p", { class: "queue" }, "Queue: " + list.pending + " pending, " + list.failed + " failed"));
      const rows = list.embargoes.map((e) =>
        el("tr", { class: "embargo", "data-id": e.id, "data-state": e.state },
          el("td", {}, e.id),
          el("td", { class: "state-" + e.state }, e.state),
          el("td", {}, e.lifts_at),
          el("td", { class: "countdown", "data-lift": String(Date.now() / 1000 + e.seconds_to_lift) }, left(e.seconds_to_lift)),
          el("td", { class: "num" }, e.copies.sent),
          el("td", { class: "num" }, e.copies.pending),
          el("td", { class: "num" }, e.copies.skipped),
          el("td", { class: "num" }, e.copies.failed),
          el("td", { class: "num" }, e.acknowledged),
          el("td", {}, e.releases.map((r) => r.to + " (" + r.state + ")").join(", ") || "none")));
      s.append(el("h3", {}, "Embargoes"));
      s.append(table(["Id", "State", "Lifts (UTC)", "Time left", "Sent", "Pending", "Skipped", "Failed", "Acknowledged", "Public releases"], rows, "embargoes"));
      for (const e of list.embargoes.filter((e) => e.state === "held")) {
        const one = await api("/api/v1/lists/" + encodeURIComponent(list.address) + "/embargoes/" + encodeURIComponent(e.id));
        s.append(el("h3", {}, "Members of " + e.id));
        s.append(table(["Member", "Organization", "Copy", "Acknowledged"],
          one.members.map((m) => el("tr", { class: "member member-" + m.state, "data-member": m.address, "data-state": m.state },
            el("td", {}, m.address), el("td", {}, m.organization), el("td", {}, m.state), el("td", {}, m.acknowledged ? "yes" : "not yet"))),
          "members"));
      }
      s.append(el("h3", {}, "Key expiry"));
      s.append(table(["Member", "Organization", "Kind", "Days left"], list.key_expiry.map((k) =>
        el("tr", { class: "expiry", "data-member": k.member },
          el("td", {}, k.member), el("td", {}, k.organization), el("td", {}, k.kind),
          el("td", { class: "num" }, k.days_left === null ? "never / unusable" : k.days_left))), "expiry"));
      if (list.keys.length) {
        s.append(el("h3", {}, "Keys needing attention"));
        s.append(table(["Member", "Organization", "Problem"], list.keys.map((k) =>
          el("tr", { class: "key" + (k.unusable ? " unusable" : ""), "data-member": k.member },
            el("td", {}, k.member), el("td", {}, k.organization), el("td", {}, k.problem))), "keys"));
      }
      const audit = (await api("/api/v1/lists/" + encodeURIComponent(list.address) + "/audit?limit=200")).audit;
      const auditRow = (r) => el("tr", { class: "audit", "data-event": r.event },
        el("td", {}, r.at), el("td", {}, r.event), el("td", {}, r.embargo || ""), el("td", {}, r.member || ""), el("td", {}, r.detail));
      const rejections = audit.filter((r) => r.event === "rejected").slice(0, 20);
      if (rejections.length) {
        s.append(el("h3", {}, "Recent rejections"));
        s.append(table(["Time (UTC)", "Event", "Embargo", "Member", "Reason and peer"], rejections.map(auditRow), "rejections"));
      }
      s.append(el("h3", {}, "Audit trail (newest first)"));
      const search = el("input", { type: "search", class: "audit-search", placeholder: "Search the audit trail", "aria-label": "Search the audit trail" });
      const trail = table(["Time (UTC)", "Event", "Embargo", "Member", "Detail"], audit.map(auditRow), "audit");
      search.addEventListener("input", () => {
        const q = search.value.toLowerCase();
        for (const row of trail.querySelectorAll("tbody tr")) row.hidden = q !== "" && !row.textContent.toLowerCase().includes(q);
      });
      s.append(search, trail);
      sections.push(s);
    }
    app.replaceChildren(...sections);
    document.getElementById("updated").textContent = "updated " + new Date().toISOString().slice(0, 19) + "Z";
  }
  setInterval(() => {
    for (const c of document.querySelectorAll(".countdown")) {
      c.textContent = left(Number(c.dataset.lift) - Date.now() / 1000);
    }
  }, 1000);
  if (!token) login();
  else render();
  setInterval(() => token && render(), 30000);
})();
