/*
 * The gateway's chat page: one WebSocket to /ws/v1/chat/ (protocol: docs/websocket.md).
 *
 * Safety rule: model output is never parsed as HTML. Markdown is rendered by building
 * DOM nodes whose text goes through textContent / createTextNode, which escapes by
 * construction; nothing here assigns innerHTML. The page's Content-Security-Policy
 * (script-src 'self') is the second line of defence.
 */
(function () {
  "use strict";

  var STORE_KEY = "gateway.chat.v1";
  var KEY_STORE = "gateway.chat.key";
  var TENANT_STORE = "gateway.chat.tenant";
  var MAX_CONVERSATIONS = 50;

  function $(id) { return document.getElementById(id); }

  var page = document.body;
  var sessionUser = page.dataset.sessionUser || "";

  var state = {
    ws: null,
    authed: false,
    lastError: null,
    queue: [],
    seq: 0,
    models: [],
    pending: new Map(), // request id -> {conversationId, message, el, text, tokens, timer}
    store: loadStore(),
  };

  // --- storage -------------------------------------------------------------------
  function loadStore() {
    try {
      var raw = localStorage.getItem(STORE_KEY);
      var data = raw ? JSON.parse(raw) : null;
      if (data && Array.isArray(data.conversations)) return data;
    } catch (e) { /* a corrupt store starts afresh */ }
    return { conversations: [], currentId: null };
  }

  function saveStore() {
    var store = state.store;
    store.conversations.sort(function (a, b) { return b.updatedAt - a.updatedAt; });
    store.conversations = store.conversations.slice(0, MAX_CONVERSATIONS);
    try {
      localStorage.setItem(STORE_KEY, JSON.stringify(store));
    } catch (e) {
      setStatus("Could not save conversations: " + e.name);
    }
  }

  function storedKey() {
    return sessionStorage.getItem(KEY_STORE) || localStorage.getItem(KEY_STORE) || "";
  }

  function storeKey(key, remember) {
    forgetKey();
    (remember ? localStorage : sessionStorage).setItem(KEY_STORE, key);
  }

  function forgetKey() {
    sessionStorage.removeItem(KEY_STORE);
    localStorage.removeItem(KEY_STORE);
  }

  function newConversation() {
    var conversation = {
      id: "c" + Date.now().toString(36) + Math.random().toString(36).slice(2, 7),
      title: "New chat",
      model: $("model-select").value || null,
      system: "",
      messages: [],
      totals: { prompt: 0, completion: 0, cost: 0 },
      updatedAt: Date.now(),
    };
    state.store.conversations.unshift(conversation);
    state.store.currentId = conversation.id;
    saveStore();
    return conversation;
  }

  function current() {
    var store = state.store;
    var found = store.conversations.find(function (c) { return c.id === store.currentId; });
    return found || newConversation();
  }

  function byId(id) {
    return state.store.conversations.find(function (c) { return c.id === id; }) || null;
  }

  // --- connection ------------------------------------------------------------------
  function setStatus(text) { $("status").textContent = text; }

  function showAuth(message) {
    $("auth-panel").hidden = false;
    $("auth-message").textContent = message || "";
    updateControls();
  }

  function hideAuth() { $("auth-panel").hidden = true; }

  function canAuthenticate() { return Boolean(storedKey() || sessionUser); }

  function connect() {
    var ws = state.ws;
    if (ws && (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING)) return;
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    ws = new WebSocket(scheme + location.host + page.dataset.wsPath);
    state.ws = ws;
    state.authed = false;
    state.lastError = null;
    setStatus("Connecting…");
    ws.addEventListener("open", function () {
      var key = storedKey();
      if (key) {
        ws.send(JSON.stringify({ type: "auth", api_key: key }));
      }
      setStatus("Signing in…");
    });
    ws.addEventListener("message", function (event) {
      var frame;
      try { frame = JSON.parse(event.data); } catch (e) { return; }
      if (ws === state.ws) handleFrame(frame);
    });
    ws.addEventListener("close", function (event) {
      if (ws === state.ws) onClose(event);
    });
  }

  function onClose(event) {
    state.authed = false;
    state.pending.forEach(function (pending, rid) {
      finishPending(rid, { state: "error", error: "Connection lost before the answer finished." });
    });
    var reason = state.lastError ? state.lastError.message : "";
    if (event.code === 4401) {
      forgetKey();
      showAuth("Sign-in failed: " + (reason || "the key was rejected") + ".");
      setStatus("Not signed in");
    } else if (event.code === 4403) {
      showAuth("Not allowed: " + (reason || "forbidden") + ".");
      setStatus("Not signed in");
    } else if (event.code === 4408) {
      showAuth("Sign-in timed out: choose a tenant or paste an API key.");
      setStatus("Not signed in");
    } else if (event.code === 4000) {
      setStatus("Idle: reconnects when you send");
    } else {
      setStatus("Disconnected (" + event.code + "): reconnects when you send");
    }
    updateControls();
  }

  function send(frame) {
    var ws = state.ws;
    if (ws && ws.readyState === WebSocket.OPEN && (state.authed || frame.type === "auth")) {
      ws.send(JSON.stringify(frame));
      return;
    }
    state.queue.push(frame);
    if (canAuthenticate()) connect();
  }

  function flushQueue() {
    var queued = state.queue;
    state.queue = [];
    queued.forEach(send);
  }

  // --- frames from the server --------------------------------------------------------
  function handleFrame(frame) {
    switch (frame.type) {
      case "auth.ok": return onAuthOk(frame);
      case "auth.required": return onAuthRequired(frame);
      case "models": return onModels(frame);
      case "chat.delta": return onDelta(frame);
      case "chat.done": return onDone(frame);
      case "error": return onError(frame);
      default: return undefined;
    }
  }

  function onAuthOk(frame) {
    state.authed = true;
    hideAuth();
    var who = frame.principal === "key" ? "key " + frame.key_prefix : frame.user;
    setStatus("Signed in as " + who + " · tenant " + frame.tenant);
    $("key-forget").hidden = frame.principal !== "key";
    fillTenants(frame.principal === "session" ? frame.tenants || [] : [], frame.tenant);
    state.ws.send(JSON.stringify({ type: "models.list" }));
    flushQueue();
    updateControls();
  }

  function onAuthRequired(frame) {
    var tenants = frame.tenants || [];
    if (storedKey()) return; // the key's auth frame is already on its way
    if (!tenants.length) {
      showAuth("Your account belongs to no tenant: paste an API key.");
      setStatus("Not signed in");
      return;
    }
    var remembered = localStorage.getItem(TENANT_STORE);
    fillTenants(tenants, remembered);
    if (remembered && tenants.indexOf(remembered) >= 0) {
      state.ws.send(JSON.stringify({ type: "auth", tenant: remembered }));
    } else {
      setStatus("Choose a tenant");
      $("tenant-select").value = "";
    }
  }

  function fillTenants(tenants, selected) {
    var select = $("tenant-select");
    select.replaceChildren();
    $("tenant-picker").hidden = tenants.length < 2;
    if (!selected) select.appendChild(option("", "— choose —"));
    tenants.forEach(function (name) { select.appendChild(option(name, name)); });
    if (selected) select.value = selected;
  }

  function option(value, label) {
    var el = document.createElement("option");
    el.value = value;
    el.textContent = label;
    return el;
  }

  function onModels(frame) {
    state.models = (frame.data || []).map(function (m) { return m.id; });
    var select = $("model-select");
    var wanted = current().model || select.value;
    select.replaceChildren();
    state.models.forEach(function (id) { select.appendChild(option(id, id)); });
    if (wanted && state.models.indexOf(wanted) >= 0) select.value = wanted;
    updateControls();
  }

  function onDelta(frame) {
    var pending = state.pending.get(frame.id);
    if (!pending || frame.index) return;
    var content = frame.delta && frame.delta.content;
    if (typeof content === "string" && content) {
      pending.text += content;
      pending.tokens += 1;
      scheduleRender(pending);
    }
  }

  function onDone(frame) {
    finishPending(frame.id, {
      state: frame.finish_reason === "cancelled" ? "cancelled" : "done",
      usage: frame.usage,
      cost: frame.cost_usd,
      finish: frame.finish_reason,
      model: frame.model,
    });
  }

  function onError(frame) {
    var error = frame.error || {};
    if (frame.id && state.pending.has(frame.id)) {
      finishPending(frame.id, { state: "error", error: error.message || "error" });
      return;
    }
    state.lastError = error;
    setStatus("Error: " + (error.message || "unknown"));
  }

  // --- conversation flow -------------------------------------------------------------
  function startRequest() {
    var text = $("composer").value;
    if (!text.trim() || !state.authed) return;
    var conversation = current();
    if (conversationPending(conversation.id)) return;
    var model = $("model-select").value;
    if (!model) { setStatus("Choose a model first"); return; }
    conversation.model = model;
    conversation.system = $("system-prompt").value;
    if (!conversation.messages.length) conversation.title = text.trim().slice(0, 40);
    var history = [];
    if (conversation.system.trim()) history.push({ role: "system", content: conversation.system });
    conversation.messages.forEach(function (m) {
      if (!m.error && m.content) history.push({ role: m.role, content: m.content });
    });
    history.push({ role: "user", content: text });
    conversation.messages.push({ role: "user", content: text });
    var message = { role: "assistant", content: "", model: model };
    conversation.messages.push(message);
    conversation.updatedAt = Date.now();
    saveStore();
    $("composer").value = "";

    var rid = "r" + Date.now().toString(36) + "-" + (++state.seq);
    var pending = { conversationId: conversation.id, message: message, el: null, text: "", tokens: 0, timer: null };
    state.pending.set(rid, pending);
    renderConversation();
    send({ type: "chat.request", id: rid, model: model, messages: history });
    updateControls();
  }

  function stopRequest() {
    var id = state.store.currentId;
    state.pending.forEach(function (pending, rid) {
      if (pending.conversationId === id) send({ type: "chat.cancel", id: rid });
    });
  }

  function conversationPending(conversationId) {
    var found = false;
    state.pending.forEach(function (pending) {
      if (pending.conversationId === conversationId) found = true;
    });
    return found;
  }

  function finishPending(rid, outcome) {
    var pending = state.pending.get(rid);
    if (!pending) return;
    state.pending.delete(rid);
    clearTimeout(pending.timer);
    var message = pending.message;
    message.content = pending.text;
    message.state = outcome.state;
    if (outcome.error) {
      message.error = outcome.error;
    }
    if (outcome.usage) {
      message.usage = outcome.usage;
      message.cost = outcome.cost;
      var conversation = byId(pending.conversationId);
      if (conversation) {
        conversation.totals.prompt += outcome.usage.prompt_tokens || 0;
        conversation.totals.completion += outcome.usage.completion_tokens || 0;
        conversation.totals.cost += parseFloat(outcome.cost || "0") || 0;
        conversation.updatedAt = Date.now();
      }
      $("last-usage").textContent = "Last answer: " + (outcome.usage.prompt_tokens || 0) + " in · " +
        (outcome.usage.completion_tokens || 0) + " out" + (outcome.usage.estimated ? " (estimated)" : "") +
        " · $" + (parseFloat(outcome.cost || "0") || 0).toFixed(6) +
        (outcome.finish ? " · " + outcome.finish : "");
    }
    saveStore();
    if (pending.conversationId === state.store.currentId) renderConversation();
    updateControls();
  }

  // --- rendering -------------------------------------------------------------------
  function scheduleRender(pending) {
    if (pending.timer) return;
    pending.timer = setTimeout(function () {
      pending.timer = null;
      if (pending.el && pending.el.isConnected) {
        renderMarkdown(pending.text, pending.el);
        pending.el.parentElement.dataset.chars = String(pending.text.length);
      }
      var live = $("live-tokens");
      if (live) live.textContent = "~" + pending.tokens + " tokens";
      scrollDown();
    }, 30);
  }

  function scrollDown() {
    var box = $("messages");
    box.scrollTop = box.scrollHeight;
  }

  function renderConversation() {
    var conversation = current();
    var box = $("messages");
    box.replaceChildren();
    conversation.messages.forEach(function (message) {
      box.appendChild(renderMessage(message));
    });
    state.pending.forEach(function (pending) {
      if (pending.conversationId !== conversation.id) return;
      var el = box.lastElementChild;
      if (!el) return;
      el.dataset.state = "streaming";
      pending.el = el.querySelector(".content");
      renderMarkdown(pending.text, pending.el);
      var meta = el.querySelector(".meta");
      var live = document.createElement("span");
      live.id = "live-tokens";
      live.textContent = "streaming…";
      meta.appendChild(live);
    });
    $("system-prompt").value = conversation.system || "";
    if (conversation.model && state.models.indexOf(conversation.model) >= 0) {
      $("model-select").value = conversation.model;
    }
    var totals = conversation.totals;
    $("counter-tokens").textContent = totals.prompt + " in · " + totals.completion + " out tokens";
    $("counter-cost").textContent = "$" + totals.cost.toFixed(6);
    renderList();
    scrollDown();
  }

  function renderMessage(message) {
    var el = document.createElement("article");
    el.className = "msg " + message.role;
    el.dataset.state = message.state || "done";
    var role = document.createElement("div");
    role.className = "role";
    role.textContent = message.role === "user" ? "You" : message.model || "assistant";
    var content = document.createElement("div");
    content.className = "content";
    if (message.role === "assistant") {
      renderMarkdown(message.content || "", content);
    } else {
      content.classList.add("plain");
      content.textContent = message.content;
    }
    var meta = document.createElement("div");
    meta.className = "meta";
    if (message.usage) {
      meta.textContent = (message.usage.completion_tokens || 0) + " tokens · $" +
        (parseFloat(message.cost || "0") || 0).toFixed(6) +
        (message.state === "cancelled" ? " · stopped" : "");
    }
    if (message.error) {
      var err = document.createElement("div");
      err.className = "error";
      err.textContent = message.error;
      content.appendChild(err);
    }
    el.append(role, content, meta);
    return el;
  }

  function renderList() {
    var list = $("conversation-list");
    list.replaceChildren();
    state.store.conversations.forEach(function (conversation) {
      var item = document.createElement("li");
      if (conversation.id === state.store.currentId) item.className = "active";
      var open = document.createElement("button");
      open.type = "button";
      open.className = "open";
      open.textContent = conversation.title || "New chat";
      open.addEventListener("click", function () {
        state.store.currentId = conversation.id;
        saveStore();
        renderConversation();
        updateControls();
      });
      var remove = document.createElement("button");
      remove.type = "button";
      remove.className = "remove";
      remove.title = "Delete this conversation";
      remove.textContent = "×";
      remove.addEventListener("click", function () {
        state.store.conversations = state.store.conversations.filter(function (c) {
          return c.id !== conversation.id;
        });
        if (state.store.currentId === conversation.id) state.store.currentId = null;
        saveStore();
        renderConversation();
        updateControls();
      });
      item.append(open, remove);
      list.appendChild(item);
    });
  }

  function updateControls() {
    var busy = conversationPending(state.store.currentId);
    $("send").disabled = !state.authed || busy || !$("model-select").value;
    $("stop").disabled = !busy;
  }

  // --- Markdown, the safe subset ------------------------------------------------------
  // Blocks: fenced code, headings, lists, quotes, paragraphs. Inline: code, bold,
  // italics, http(s) links. Every piece of text becomes a text node.
  var FENCE = /^\s*```\s*([\w+#.-]*)\s*$/;
  var HEADING = /^(#{1,6})\s+(.*)$/;
  var BULLET = /^\s*[-*+]\s+(.*)$/;
  var NUMBERED = /^\s*\d+[.)]\s+(.*)$/;
  var QUOTE = /^\s*>\s?(.*)$/;

  function renderMarkdown(text, container) {
    container.replaceChildren();
    var lines = text.split("\n");
    var i = 0;
    while (i < lines.length) {
      var line = lines[i];
      var match;
      if ((match = line.match(FENCE))) {
        var code = [];
        i += 1;
        while (i < lines.length && !FENCE.test(lines[i])) { code.push(lines[i]); i += 1; }
        i += 1; // the closing fence (or the end of a stream still in progress)
        container.appendChild(codeBlock(code.join("\n"), match[1]));
      } else if ((match = line.match(HEADING))) {
        var heading = document.createElement("h" + Math.min(6, match[1].length + 2));
        inline(heading, match[2]);
        container.appendChild(heading);
        i += 1;
      } else if (BULLET.test(line) || NUMBERED.test(line)) {
        var ordered = !BULLET.test(line);
        var pattern = ordered ? NUMBERED : BULLET;
        var list = document.createElement(ordered ? "ol" : "ul");
        while (i < lines.length && (match = lines[i].match(pattern))) {
          var item = document.createElement("li");
          inline(item, match[1]);
          list.appendChild(item);
          i += 1;
        }
        container.appendChild(list);
      } else if (QUOTE.test(line)) {
        var quote = document.createElement("blockquote");
        var quoted = [];
        while (i < lines.length && (match = lines[i].match(QUOTE))) { quoted.push(match[1]); i += 1; }
        inlineLines(quote, quoted);
        container.appendChild(quote);
      } else if (!line.trim()) {
        i += 1;
      } else {
        var paragraph = [];
        while (i < lines.length && lines[i].trim() && !isBlockStart(lines[i])) {
          paragraph.push(lines[i]);
          i += 1;
        }
        var p = document.createElement("p");
        inlineLines(p, paragraph);
        container.appendChild(p);
      }
    }
  }

  function isBlockStart(line) {
    return FENCE.test(line) || HEADING.test(line) || BULLET.test(line) ||
      NUMBERED.test(line) || QUOTE.test(line);
  }

  function inlineLines(parent, lines) {
    lines.forEach(function (line, index) {
      if (index) parent.appendChild(document.createElement("br"));
      inline(parent, line);
    });
  }

  function codeBlock(text, language) {
    var wrapper = document.createElement("div");
    wrapper.className = "code";
    var pre = document.createElement("pre");
    var code = document.createElement("code");
    if (language) {
      code.dataset.language = language;
      var label = document.createElement("span");
      label.className = "lang";
      label.textContent = language;
      wrapper.appendChild(label);
    }
    code.textContent = text;
    pre.appendChild(code);
    var copy = document.createElement("button");
    copy.type = "button";
    copy.className = "copy";
    copy.textContent = "Copy";
    copy.addEventListener("click", function () {
      if (navigator.clipboard) navigator.clipboard.writeText(text);
    });
    wrapper.append(copy, pre);
    return wrapper;
  }

  // Underscores emphasise only at word boundaries (as in CommonMark): snake_case stays.
  var INLINE = /`([^`]+)`|\*\*([^*]+)\*\*|(?<!\w)__([^_]+)__(?!\w)|\*([^*\s][^*]*)\*|(?<!\w)_([^_\s][^_]*)_(?!\w)|\[([^\]]+)\]\(([^)\s]+)\)/g;

  function inline(parent, text) {
    var last = 0;
    var match;
    INLINE.lastIndex = 0;
    var found = [];
    while ((match = INLINE.exec(text))) found.push(match);
    found.forEach(function (m) {
      if (m.index > last) parent.appendChild(document.createTextNode(text.slice(last, m.index)));
      last = m.index + m[0].length;
      var el;
      if (m[1] !== undefined) {
        el = document.createElement("code");
        el.textContent = m[1];
      } else if (m[2] !== undefined || m[3] !== undefined) {
        el = document.createElement("strong");
        inline(el, m[2] !== undefined ? m[2] : m[3]);
      } else if (m[4] !== undefined || m[5] !== undefined) {
        el = document.createElement("em");
        inline(el, m[4] !== undefined ? m[4] : m[5]);
      } else if (/^https?:\/\//i.test(m[7])) {
        el = document.createElement("a");
        el.href = m[7];
        el.rel = "noopener noreferrer nofollow";
        el.target = "_blank";
        el.textContent = m[6];
      } else {
        el = document.createTextNode(m[0]); // not a web link: shown as typed
      }
      parent.appendChild(el);
    });
    if (last < text.length) parent.appendChild(document.createTextNode(text.slice(last)));
  }

  // --- wiring ------------------------------------------------------------------------
  $("key-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var key = $("key-input").value.trim();
    if (!key) return;
    storeKey(key, $("key-remember").checked);
    $("key-input").value = "";
    if (state.ws && state.ws.readyState === WebSocket.OPEN) {
      state.ws.send(JSON.stringify({ type: "auth", api_key: key }));
    } else {
      connect();
    }
  });

  $("key-forget").addEventListener("click", function () {
    forgetKey();
    $("key-forget").hidden = true;
    if (state.ws) state.ws.close(1000);
    state.ws = null;
    state.authed = false;
    if (sessionUser) connect(); else { showAuth("Paste an API key."); setStatus("Not signed in"); }
  });

  $("tenant-select").addEventListener("change", function (event) {
    var tenant = event.target.value;
    if (!tenant) return;
    localStorage.setItem(TENANT_STORE, tenant);
    if (state.ws && state.ws.readyState === WebSocket.OPEN) {
      state.ws.send(JSON.stringify({ type: "auth", tenant: tenant }));
    } else {
      connect(); // the server's auth.required is answered with the remembered tenant
    }
  });

  $("composer-form").addEventListener("submit", function (event) {
    event.preventDefault();
    startRequest();
  });

  $("composer").addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      startRequest();
    }
  });

  $("stop").addEventListener("click", stopRequest);

  $("new-chat").addEventListener("click", function () {
    newConversation();
    renderConversation();
    updateControls();
  });

  $("model-select").addEventListener("change", function (event) {
    var conversation = current();
    conversation.model = event.target.value;
    saveStore();
    updateControls();
  });

  $("system-prompt").addEventListener("change", function (event) {
    var conversation = current();
    conversation.system = event.target.value;
    saveStore();
  });

  renderConversation();
  if (canAuthenticate()) {
    connect();
  } else {
    setStatus("Not signed in");
    showAuth("Paste an API key to start.");
  }
})();
