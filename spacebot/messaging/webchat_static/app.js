// Spacebot web chat: speaks the WebSocket protocol of docs/webchat.md. No build step; the agent's
// Markdown goes through the vendored marked (parser) and DOMPurify (sanitiser) loaded before this.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const els = {
    name: $("name"), status: $("status"), model: $("model"), fake: $("fake-label"),
    modelBanner: $("model-banner"), error: $("error"), convs: $("conversations"),
    title: $("title"), older: $("older"), messages: $("messages"), typing: $("typing"),
    form: $("form"), composer: $("composer"), send: $("send"), limit: $("limit"),
    newConv: $("new-conversation"),
  };
  els.typingLine = els.typing.querySelector(".line");
  els.work = els.typing.querySelector(".work");

  const params = new URLSearchParams(location.search);
  const hashParams = new URLSearchParams(location.hash.slice(1));
  const token = params.get("token") || hashParams.get("token") || "";

  function randomId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID().replace(/-/g, "");
    return Array.from({ length: 16 }, () => Math.floor(Math.random() * 16).toString(16)).join("");
  }

  // Each tab is one person (sessionStorage survives a reload but is not shared between tabs); the
  // display name is remembered for new tabs too.
  const state = {
    person: sessionStorage.getItem("spacebot.person") || randomId().slice(0, 16),
    name: sessionStorage.getItem("spacebot.name") || localStorage.getItem("spacebot.name")
      || "Guest-" + Math.floor(1000 + Math.random() * 9000),
    agent: "Spacebot",
    conversations: [],
    current: hashParams.get("c") || localStorage.getItem("spacebot.conversation") || "",
    messages: new Map(),      // stored id -> message
    pending: new Map(),       // client_id -> {text, conversation, error}
    streams: new Map(),       // reply_id -> text
    more: false,
    maxBytes: 16000,
    connected: false,
    noModel: "",              // first words of the no-model notice while no model is configured
    typing: "idle",
    work: [],                 // running branches/workers: {id, kind, task, status, elapsed, at}
  };
  sessionStorage.setItem("spacebot.person", state.person);
  sessionStorage.setItem("spacebot.name", state.name);
  els.name.value = state.name;

  let ws = null;
  let backoff = 500;
  let stopped = false;
  window.spacebotChat = { state, get ws() { return ws; } };

  // ---- connection -----------------------------------------------------------------------------

  function socketUrl() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const dir = location.pathname.replace(/[^/]*$/, "");
    const query = token ? "?token=" + encodeURIComponent(token) : "";
    return scheme + "//" + location.host + dir + "ws" + query;
  }

  function send(frame) {
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  function setStatus(connected) {
    state.connected = connected;
    els.status.textContent = connected ? "connected" : "reconnecting…";
    els.status.classList.toggle("ok", connected);
    updateComposer();
  }

  function connect() {
    ws = new WebSocket(socketUrl());
    ws.onopen = () => {
      backoff = 500;
      send({ type: "hello", name: state.name, person: state.person, token: token });
    };
    ws.onmessage = (ev) => {
      let frame;
      try { frame = JSON.parse(ev.data); } catch (e) { showError("unreadable frame from the server"); return; }
      handle(frame);
    };
    ws.onclose = (ev) => {
      setStatus(false);
      if (ev.code === 4401) {
        stopped = true;
        els.status.textContent = "unauthorized";
        showError("unauthorized: open the page with ?token=… (the web chat's token)");
        return;
      }
      if (!stopped) {
        setTimeout(connect, backoff);
        backoff = Math.min(backoff * 2, 5000);
      }
    };
  }

  // ---- frames from the server ---------------------------------------------------------------

  function handle(f) {
    switch (f.type) {
      case "welcome": return onWelcome(f);
      case "conversations": return renderConversations(f.items);
      case "created": return openConversation(f.conversation.id);
      case "history": return onHistory(f);
      case "ack": return onAck(f);
      case "message": return f.conversation === state.current && upsertMessage(f.message);
      case "delta": return f.conversation === state.current && onDelta(f);
      case "abort": return f.conversation === state.current && removeStream(f.reply_id);
      case "reaction": return f.conversation === state.current && onReaction(f);
      case "typing": return f.conversation === state.current && onTyping(f);
      case "cancelled": return onCancelled(f);
      case "error": return onError(f);
      default: return undefined;
    }
  }

  function onWelcome(f) {
    setStatus(true);
    state.agent = f.agent === "main" ? "Spacebot" : f.agent;
    state.maxBytes = (f.limits && f.limits.max_message_bytes) || state.maxBytes;
    const model = f.model || {};
    els.model.textContent = model.description || "";
    els.fake.hidden = !model.fake;
    els.modelBanner.hidden = !!model.configured;
    els.modelBanner.textContent = model.configured ? "" : model.hint;
    // The banner says it once; per-message notices of the same thing are shown as a short line.
    state.noModel = model.configured ? "" : (model.hint || "").split(/[.,]/)[0];
    renderConversations(f.conversations || []);
    if (state.current && state.conversations.some((c) => c.id === state.current)) {
      openConversation(state.current);
    }
    for (const [clientId, p] of state.pending) {  // resend what was never acknowledged
      if (!p.error) send({ type: "send", conversation: p.conversation, text: p.text, client_id: clientId });
    }
  }

  function renderConversations(items) {
    state.conversations = items;
    els.convs.replaceChildren();
    for (const c of items) {
      const li = document.createElement("li");
      li.className = "conversation" + (c.id === state.current ? " active" : "");
      li.dataset.id = c.id;
      li.textContent = c.title || c.id;
      li.title = c.title || c.id;
      li.onclick = () => openConversation(c.id);
      els.convs.appendChild(li);
    }
    const current = items.find((c) => c.id === state.current);
    if (current) els.title.textContent = current.title;
  }

  function openConversation(id) {
    if (id !== state.current) {
      state.current = id;
      state.messages.clear();
      state.streams.clear();
      els.messages.replaceChildren();
    }
    localStorage.setItem("spacebot.conversation", id);
    history.replaceState(null, "", "#c=" + encodeURIComponent(id) + (token ? "&token=" + encodeURIComponent(token) : ""));
    for (const li of els.convs.children) li.classList.toggle("active", li.dataset.id === id);
    const conv = state.conversations.find((c) => c.id === id);
    els.title.textContent = conv ? conv.title : id;
    send({ type: "open", conversation: id });
    updateComposer();
  }

  function onHistory(f) {
    if (f.conversation !== state.current) return;
    const older = state.messages.size && f.messages.length && f.messages[f.messages.length - 1].id < firstId();
    if (!older) {  // a fresh (re)load replaces what is shown, except messages still being sent
      state.messages.clear();
      state.streams.clear();
      els.messages.querySelectorAll(".msg:not(.pending)").forEach((n) => n.remove());
    }
    const anchor = older ? els.messages.querySelector(".msg") : null;
    for (const m of f.messages) {
      state.messages.set(m.id, m);
      const node = messageNode(m);
      if (anchor) els.messages.insertBefore(node, anchor); else insertSorted(node, m.id);
    }
    state.more = f.more;
    els.older.hidden = !f.more;
    if (!older) scrollDown();
  }

  function firstId() {
    let min = Infinity;
    for (const id of state.messages.keys()) min = Math.min(min, id);
    return min;
  }

  function onAck(f) {
    const node = els.messages.querySelector('[data-client-id="' + CSS.escape(f.client_id) + '"]');
    if (node) node.remove();
    state.pending.delete(f.client_id);
    if (f.conversation === state.current) upsertMessage(f.message);
  }

  function onDelta(f) {
    const text = (state.streams.get(f.reply_id) || "") + f.text;
    state.streams.set(f.reply_id, text);
    let node = els.messages.querySelector('.streaming[data-reply-id="' + CSS.escape(f.reply_id) + '"]');
    if (!node) {
      node = messageNode({ role: "assistant", author_name: state.agent, text: "", created_at: Date.now() / 1000, reactions: [] });
      node.classList.add("streaming");
      node.dataset.replyId = f.reply_id;
      els.messages.appendChild(node);
    }
    renderMarkdown(node.querySelector(".text"), text);
    scrollDown();
  }

  function removeStream(replyId) {
    state.streams.delete(replyId);
    const node = els.messages.querySelector('.streaming[data-reply-id="' + CSS.escape(replyId) + '"]');
    if (node) node.remove();
  }

  function onReaction(f) {
    const m = state.messages.get(f.message_id);
    if (!m) return;
    if (!m.reactions.includes(f.emoji)) m.reactions.push(f.emoji);
    const node = els.messages.querySelector('.msg[data-id="' + f.message_id + '"]');
    if (node) node.replaceWith(messageNode(m));
  }

  function onTyping(f) {
    state.typing = f.state;
    const at = performance.now();  // elapsed counts from here (no clock shared with the server)
    state.work = f.state === "idle" ? [] : (f.work || []).map((w) => Object.assign({}, w, { at: at }));
    renderTyping();
  }

  function renderTyping() {
    if (state.typing === "idle") {
      els.typing.hidden = true;
      els.work.replaceChildren();
      return;
    }
    els.typing.hidden = false;
    els.typingLine.textContent = state.agent + (state.typing === "working" ? " is working…" : " is thinking…");
    const cancelling = new Set(Array.from(els.work.querySelectorAll(".cancel:disabled"), (b) => b.dataset.id));
    els.work.replaceChildren();
    for (const w of state.work) {
      const li = document.createElement("li");
      li.className = "work-item";
      li.dataset.id = w.id;
      const task = document.createElement("span");
      task.className = "task";
      task.textContent = w.kind + ": " + w.task;
      task.title = w.task;
      const elapsed = document.createElement("span");
      elapsed.className = "elapsed";
      const cancel = document.createElement("button");
      cancel.type = "button";
      cancel.className = "cancel";
      cancel.dataset.id = w.id;
      cancel.textContent = "Cancel";
      cancel.title = "Stop this " + w.kind;
      cancel.onclick = () => cancelWork(w.id, cancel);
      if (cancelling.has(w.id)) { cancel.disabled = true; cancel.textContent = "Cancelling…"; }
      const status = document.createElement("div");
      status.className = "work-status";
      status.textContent = w.status || "started";
      li.append(task, elapsed, cancel, status);
      els.work.appendChild(li);
    }
    tick();
  }

  function age(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + String(s % 60).padStart(2, "0") + "s";
    return Math.floor(s / 3600) + "h " + String(Math.floor(s / 60) % 60).padStart(2, "0") + "m";
  }

  function tick() {
    const now = performance.now();
    for (const w of state.work) {
      const node = els.work.querySelector('.work-item[data-id="' + CSS.escape(w.id) + '"] .elapsed');
      if (node) node.textContent = age(w.elapsed + (now - w.at) / 1000);
    }
  }
  setInterval(() => { if (state.work.length) tick(); }, 1000);

  function cancelWork(id, button) {
    if (!state.current) return;
    button.disabled = true;
    button.textContent = "Cancelling…";
    send({ type: "cancel", conversation: state.current, id: id, ref: "cancel:" + id });
  }

  function onCancelled(f) {
    const button = els.work.querySelector('.cancel[data-id="' + CSS.escape(f.id) + '"]');
    if (button) button.textContent = "Cancelled";
  }

  function onError(f) {
    if (f.ref && f.ref.startsWith("cancel:")) {  // the cancel button may be pressed again
      const button = els.work.querySelector('.cancel[data-id="' + CSS.escape(f.ref.slice(7)) + '"]');
      if (button) { button.disabled = false; button.textContent = "Cancel"; }
    }
    if (f.code === "model" && f.conversation && !f.client_id) {
      // A conversation's model failure: its stored notice follows as a system message (shown
      // once, in the transcript); until it arrives, the same words stand in its place.
      if (f.conversation === state.current) {
        els.typing.hidden = true;
        state.typing = "idle";
        if (!els.messages.querySelector(".msg.transient")) {
          const node = messageNode({ role: "system", author_name: state.agent, text: f.message, reactions: [] });
          node.classList.add("transient");
          els.messages.appendChild(node);
          scrollDown();
        }
      }
      return;
    }
    if (f.client_id && state.pending.has(f.client_id)) {
      const p = state.pending.get(f.client_id);
      p.error = f.message;
      const node = els.messages.querySelector('[data-client-id="' + CSS.escape(f.client_id) + '"]');
      if (node) markFailed(node, f.client_id, f.message);
    }
    if (!f.conversation || f.conversation === state.current || f.client_id) showError(f.message);
  }

  // ---- rendering ------------------------------------------------------------------------------

  function messageNode(m) {
    const node = document.createElement("div");
    node.className = "msg" + (m.author_id === "web:" + state.person ? " own" : "");
    node.dataset.role = m.role;
    node.dataset.author = m.author_name;
    if (m.id !== undefined) node.dataset.id = String(m.id);
    const meta = document.createElement("div");
    meta.className = "meta";
    const when = new Date((m.created_at || Date.now() / 1000) * 1000);
    meta.textContent = m.author_name + " · " + when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    const text = document.createElement("div");
    text.className = "text";
    if (m.role === "assistant") {
      text.classList.add("md");
      renderMarkdown(text, m.text);
    } else if (m.role === "system" && state.noModel && m.text.startsWith(state.noModel)) {
      node.classList.add("compact");
      text.textContent = "Not answered: " + state.noModel.toLowerCase() + " (see the note at the top).";
      text.title = m.text;
    } else {
      text.textContent = m.text;
    }
    const reactions = document.createElement("div");
    reactions.className = "reactions";
    for (const e of m.reactions || []) {
      const chip = document.createElement("span");
      chip.className = "reaction";
      chip.textContent = e;
      reactions.appendChild(chip);
    }
    node.append(meta, text, reactions);
    for (const a of m.attachments || []) {
      const link = document.createElement("a");
      link.className = "attachment";
      link.href = a.url + (token ? "?token=" + encodeURIComponent(token) : "");
      link.download = a.name;
      link.textContent = "📎 " + a.name + (a.size != null ? " (" + a.size + " bytes)" : "");
      node.appendChild(link);
    }
    return node;
  }

  // ---- Markdown ---------------------------------------------------------------------------------

  const MD_TAGS = ["p", "br", "hr", "strong", "em", "del", "code", "pre", "blockquote", "ul", "ol", "li",
    "a", "h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td"];
  const md = window.marked && window.DOMPurify ? new marked.Marked({
    gfm: true,
    breaks: true,
    async: false,
    // HTML written in the model's text is shown as text, never turned into markup.
    renderer: { html(token) { return escapeHtml(token.text || token.raw || ""); } },
  }) : null;
  if (md) {
    DOMPurify.addHook("afterSanitizeAttributes", (node) => {
      if (node.tagName === "A") { node.setAttribute("target", "_blank"); node.setAttribute("rel", "noopener noreferrer nofollow"); }
    });
  }

  function escapeHtml(text) {
    return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  }

  function renderMarkdown(el, text) {
    if (!md) { el.textContent = text; return; }  // the vendored files did not load: plain text
    const html = DOMPurify.sanitize(md.parse(text), {
      ALLOWED_TAGS: MD_TAGS,
      ALLOWED_ATTR: ["href", "title", "start", "align"],
      ALLOWED_URI_REGEXP: /^(?:https?:|mailto:)/i,
    });
    el.innerHTML = html.trim();
  }

  function insertSorted(node, id) {
    for (const other of els.messages.querySelectorAll(".msg[data-id]")) {
      if (Number(other.dataset.id) > id) { els.messages.insertBefore(node, other); return; }
    }
    const firstTransient = els.messages.querySelector(".msg.pending, .msg.streaming");
    if (firstTransient) els.messages.insertBefore(node, firstTransient); else els.messages.appendChild(node);
  }

  function upsertMessage(m) {
    if (m.reply_id) removeStream(m.reply_id);
    if (m.role === "system") els.messages.querySelectorAll(".msg.transient").forEach((n) => n.remove());
    state.messages.set(m.id, m);
    const node = messageNode(m);
    const existing = els.messages.querySelector('.msg[data-id="' + m.id + '"]');
    if (existing) existing.replaceWith(node); else insertSorted(node, m.id);
    if (m.role !== "user") els.typing.hidden = m.role === "system" ? true : els.typing.hidden;
    scrollDown();
  }

  function markFailed(node, clientId, message) {
    node.classList.remove("pending");
    node.classList.add("failed");
    let failure = node.querySelector(".failure");
    if (!failure) {
      failure = document.createElement("div");
      failure.className = "failure";
      node.appendChild(failure);
    }
    failure.textContent = message;
    const retry = document.createElement("a");
    retry.textContent = "retry";
    retry.onclick = () => {
      const p = state.pending.get(clientId);
      if (!p) return;
      p.error = null;
      node.classList.remove("failed");
      node.classList.add("pending");
      failure.remove();
      send({ type: "send", conversation: p.conversation, text: p.text, client_id: clientId });
    };
    failure.appendChild(retry);
  }

  function scrollDown() {
    els.messages.scrollTop = els.messages.scrollHeight;
  }

  function showError(text) {
    els.error.querySelector(".text").textContent = text;
    els.error.hidden = false;
  }

  // ---- composing ------------------------------------------------------------------------------

  const encoder = new TextEncoder();

  function updateComposer() {
    const bytes = encoder.encode(els.composer.value).length;
    const over = bytes > state.maxBytes;
    els.limit.hidden = !over;
    els.limit.textContent = over ? "This message is " + bytes + " bytes; the limit is " + state.maxBytes + "." : "";
    const usable = state.connected && !!state.current;
    els.composer.disabled = !usable;
    els.send.disabled = !usable || over || !els.composer.value.trim();
  }

  function submit() {
    const text = els.composer.value;
    if (!text.trim() || !state.current || els.send.disabled) return;
    const clientId = randomId();
    state.pending.set(clientId, { text: text, conversation: state.current, error: null });
    const node = messageNode({ role: "user", author_id: "web:" + state.person, author_name: state.name, text: text, reactions: [] });
    node.classList.add("pending");
    node.dataset.clientId = clientId;
    els.messages.appendChild(node);
    scrollDown();
    els.composer.value = "";
    updateComposer();
    send({ type: "send", conversation: state.current, text: text, client_id: clientId });
  }

  els.form.addEventListener("submit", (ev) => { ev.preventDefault(); submit(); });
  els.composer.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); submit(); }
  });
  els.composer.addEventListener("input", updateComposer);
  els.newConv.addEventListener("click", () => send({ type: "create" }));
  els.older.addEventListener("click", () => {
    if (state.current && state.messages.size) send({ type: "open", conversation: state.current, before: firstId() });
  });
  els.error.querySelector(".close").addEventListener("click", () => { els.error.hidden = true; });
  els.name.addEventListener("change", () => {
    const name = els.name.value.trim().slice(0, 64);
    if (!name) { els.name.value = state.name; return; }
    state.name = name;
    sessionStorage.setItem("spacebot.name", name);
    localStorage.setItem("spacebot.name", name);
    send({ type: "hello", name: state.name, person: state.person, token: token });
  });
  window.addEventListener("hashchange", () => {
    const id = new URLSearchParams(location.hash.slice(1)).get("c");
    if (id && id !== state.current) openConversation(id);
  });

  setStatus(false);
  connect();
})();
