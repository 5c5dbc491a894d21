// The asyncmail web inbox. Message data arrives as JSON and is put in the
// page with textContent only (never innerHTML): whatever a message holds,
// it is shown as text. A message's HTML is loaded in a sandboxed iframe
// from its own URL (served with a sandboxing Content-Security-Policy).
"use strict";

const state = { version: -1, selected: null, query: "", tab: "html", remote: false };

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

async function api(path, options) {
  const response = await fetch(path, options);
  if (!response.ok) throw new Error(path + ": " + response.status);
  return response;
}

async function refreshList() {
  const query = state.query ? "?q=" + encodeURIComponent(state.query) : "";
  const data = await (await api("/api/messages" + query)).json();
  state.version = data.version;
  const list = document.getElementById("list");
  list.replaceChildren();
  for (const message of data.messages) {
    const item = el("li", { "data-id": String(message.id) });
    item.append(el("span", { class: "subject" }, message.subject || "(no subject)"));
    item.append(el("span", { class: "from" }, message.from || message.mail_from));
    item.append(document.createTextNode(" "));
    item.append(el("span", { class: "when" }, new Date(message.received * 1000).toLocaleTimeString()));
    if (message.id === state.selected) item.classList.add("selected");
    item.addEventListener("click", () => select(message.id));
    list.append(item);
  }
  document.getElementById("count").textContent = data.messages.length + " message" + (data.messages.length === 1 ? "" : "s");
  document.getElementById("empty").hidden = data.messages.length > 0;
  if (state.selected !== null && !data.messages.some((m) => m.id === state.selected)) {
    state.selected = null;
    document.getElementById("detail").hidden = true;
  }
}

function showTab(tab) {
  state.tab = tab;
  for (const name of ["html", "text", "headers", "raw"]) {
    document.getElementById("pane-" + name).hidden = name !== tab;
  }
  for (const button of document.querySelectorAll("#tabs button[data-tab]")) {
    button.classList.toggle("active", button.dataset.tab === tab);
  }
}

async function select(id) {
  state.selected = id;
  state.remote = false;
  for (const item of document.querySelectorAll("#list li")) {
    item.classList.toggle("selected", item.dataset.id === String(id));
  }
  const message = await (await api("/api/messages/" + id)).json();
  const raw = await (await api("/api/messages/" + id + "/raw")).text();
  if (state.selected !== id) return;  // another message was picked meanwhile
  document.getElementById("detail").hidden = false;
  const meta = document.getElementById("meta");
  meta.replaceChildren(
    el("h2", {}, message.subject || "(no subject)"),
    el("div", {}, "From: " + message.from),
    el("div", {}, "To: " + message.to),
    el("div", {}, "Envelope: " + message.mail_from + " \u2192 " + message.rcpt_tos.join(", ")),
  );
  document.getElementById("pane-text").textContent = message.text === null ? "(no text part)" : message.text;
  const rows = document.querySelector("#pane-headers tbody");
  rows.replaceChildren();
  for (const [name, value] of message.headers) {
    const row = el("tr");
    row.append(el("td", {}, name), el("td", {}, value));
    rows.append(row);
  }
  document.getElementById("pane-raw").textContent = raw;
  const attachments = document.getElementById("attachments");
  attachments.replaceChildren();
  for (const attachment of message.attachments) {
    const link = el("a", {
      href: "/api/messages/" + id + "/attachments/" + attachment.index,
      download: attachment.filename,
    }, attachment.filename + " (" + attachment.content_type + ", " + attachment.size + " bytes)");
    const item = el("li");
    item.append(link);
    attachments.append(item);
  }
  const preview = document.getElementById("preview");
  preview.src = message.has_html ? "/api/messages/" + id + "/html" : "about:blank";
  showTab(message.has_html ? "html" : "text");
}

async function poll() {
  try {
    const { version } = await (await api("/api/version")).json();
    if (version !== state.version) await refreshList();
  } catch (error) {
    document.getElementById("count").textContent = "server unreachable";
  }
  setTimeout(poll, 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("#tabs button[data-tab]")) {
    button.addEventListener("click", () => showTab(button.dataset.tab));
  }
  document.getElementById("remote").addEventListener("click", () => {
    if (state.selected === null) return;
    state.remote = true;
    document.getElementById("preview").src = "/api/messages/" + state.selected + "/html?remote=1";
    showTab("html");
  });
  document.getElementById("delete").addEventListener("click", async () => {
    if (state.selected === null) return;
    await api("/api/messages/" + state.selected, { method: "DELETE" });
    await refreshList();
  });
  document.getElementById("delete-all").addEventListener("click", async () => {
    await api("/api/messages", { method: "DELETE" });
    await refreshList();
  });
  let timer = null;
  document.getElementById("search").addEventListener("input", (event) => {
    clearTimeout(timer);
    timer = setTimeout(() => { state.query = event.target.value; refreshList(); }, 200);
  });
  poll();
});
