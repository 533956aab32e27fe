/* OpenMaaS console: copy buttons, confirmations and daily charts (uPlot). No framework. */
(function () {
  "use strict";

  // A table wider than the screen scrolls in its box: make that box reachable by keyboard.
  document.querySelectorAll(".table-wrap").forEach(function (box) {
    if (box.scrollWidth > box.clientWidth) {
      var heading = box.closest("section, figure");
      heading = heading && heading.querySelector("h2, figcaption");
      box.setAttribute("tabindex", "0");
      box.setAttribute("role", "region");
      box.setAttribute("aria-label", (heading ? heading.textContent.trim() : "Table") + " (scrolls sideways)");
    }
  });

  document.querySelectorAll("[data-print]").forEach(function (button) {
    button.addEventListener("click", function () { window.print(); });
  });

  document.querySelectorAll("[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      var field = document.getElementById(button.getAttribute("data-copy"));
      var status = button.parentElement.querySelector("[data-copied]");
      field.select();
      var done = function () { if (status) status.textContent = "Copied."; };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(field.value).then(done, function () { document.execCommand("copy"); done(); });
      } else {
        document.execCommand("copy");
        done();
      }
    });
  });

  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
    });
  });

  // The LLM playground: the conversation is kept in the page and sent whole; the answer is read
  // as server-sent events of OpenAI chat-completion chunks and written as it comes: its text, and
  // any tool calls. A JSON schema (structured output) and a tool definition may go with it.
  var chatForm = document.querySelector("[data-chat-form]");
  if (chatForm) {
    var list = document.querySelector("[data-chat]");
    var failure = document.querySelector("[data-chat-error]");
    var messages = [];
    var bubble = function (role, text) {
      var item = document.createElement("li");
      item.className = role;
      var speaker = document.createElement("span");
      speaker.className = "speaker";
      speaker.textContent = role === "user" ? "You" : "Model";
      var body = document.createElement("span");
      body.setAttribute("data-text", "");
      body.textContent = text;
      item.appendChild(speaker);
      item.appendChild(body);
      list.appendChild(item);
      return item;
    };
    var parsed = function (name, param) {
      var text = chatForm.querySelector("[name=" + name + "]").value.trim();
      if (!text) return null;
      try { return JSON.parse(text); } catch (e) { throw new Error(param + ": not valid JSON (" + e.message + ")."); }
    };
    // The schema and tool fields as the API's `response_format`, `tools` and `tool_choice`.
    var extras = function () {
      var fields = {}, schema = parsed("schema", "response_format"), tool = parsed("tool", "tools");
      if (schema !== null) fields.response_format = { type: "json_schema", json_schema: { name: "answer", schema: schema } };
      if (tool !== null) {
        fields.tools = [tool && tool.type ? tool : { type: "function", "function": tool }];
        fields.tool_choice = chatForm.querySelector("[name=tool_choice]").value;
      }
      return fields;
    };
    var drawCall = function (item, call) {
      if (!call.node) {
        call.node = document.createElement("div");
        call.node.className = "tool-call";
        call.node.setAttribute("data-tool-call", "");
        item.appendChild(call.node);
      }
      call.node.textContent = "";
      call.node.appendChild(document.createTextNode("Calls " + call.name + " with "));
      var code = document.createElement("code");
      code.textContent = call.arguments;
      call.node.appendChild(code);
    };
    chatForm.addEventListener("submit", function (event) {
      event.preventDefault();
      var field = chatForm.querySelector("[name=message]");
      var button = chatForm.querySelector("button[type=submit]");
      var text = field.value.trim();
      if (!text) return;
      failure.hidden = true;
      var options;
      try { options = extras(); } catch (error) {
        failure.textContent = error.message;
        failure.hidden = false;
        return;
      }
      messages.push({ role: "user", content: text });
      var asked = bubble("user", text);
      field.value = "";
      var answer = bubble("assistant", "");
      var target = answer.querySelector("[data-text]"), chunks = 0, reply = "", calls = [];
      answer.setAttribute("data-chunks", "0");
      button.disabled = true;
      var done = function () { button.disabled = false; answer.setAttribute("data-done", "true"); field.focus(); };
      options.messages = messages;
      options.max_tokens = Number(chatForm.querySelector("[name=max_tokens]").value) || 64;
      fetch(chatForm.getAttribute("data-url"), {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": chatForm.getAttribute("data-csrf") },
        body: JSON.stringify(options)
      }).then(function (response) {
        if (!response.ok) {
          return response.json().then(function (body) { throw new Error(body.error ? body.error.message : response.statusText); });
        }
        var reader = response.body.getReader(), decoder = new TextDecoder(), buffer = "";
        var read = function () {
          return reader.read().then(function (part) {
            if (part.done) return;
            buffer += decoder.decode(part.value, { stream: true });
            var frames = buffer.split("\n\n");
            buffer = frames.pop();
            frames.forEach(function (frame) {
              var data = frame.replace(/^data: /, "").trim();
              if (!data || data === "[DONE]") return;
              var chunk = JSON.parse(data);
              if (chunk.error) throw new Error(chunk.error.message);
              var delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
              if (!delta) return;
              if (delta.content) {
                reply += delta.content;
                target.textContent = reply;
              }
              (delta.tool_calls || []).forEach(function (part) {
                var call = calls[part.index] || (calls[part.index] = { id: part.id, name: "", arguments: "" });
                if (part.function && part.function.name) call.name = part.function.name;
                if (part.function && part.function.arguments) call.arguments += part.function.arguments;
                drawCall(answer, call);
              });
              if (delta.content || delta.tool_calls) {
                chunks += 1;
                answer.setAttribute("data-chunks", String(chunks));
              }
            });
            return read();
          });
        };
        return read();
      }).then(function () {
        if (calls.length) {
          // The playground runs no tools: each call is answered as such, so the talk can go on.
          messages.push({ role: "assistant", content: reply || null, tool_calls: calls.map(function (c) {
            return { id: c.id, type: "function", "function": { name: c.name, arguments: c.arguments } };
          }) });
          calls.forEach(function (c) {
            messages.push({ role: "tool", tool_call_id: c.id, content: "(not run: the playground has no tool results)" });
          });
        } else {
          messages.push({ role: "assistant", content: reply });
        }
        done();
      }).catch(function (error) {
        answer.remove();  // the refused turn is not kept: its text goes back in the box to retry
        asked.remove();
        messages.pop();
        field.value = text;
        failure.textContent = error.message;
        failure.hidden = false;
        done();
      });
    });
  }

  if (typeof uPlot === "undefined") return;
  var colours = ["#0b57d0", "#e8710a", "#1a7f37", "#a142f4", "#b42318", "#0e7490"];
  var plots = [];
  document.querySelectorAll("[data-chart]").forEach(function (box) {
    var data = JSON.parse(document.getElementById(box.getAttribute("data-chart")).textContent);
    var bars = uPlot.paths.bars({ size: [0.7, 48] });
    var series = [{ label: "day", value: "{YYYY}-{MM}-{DD}" }];
    data.series.forEach(function (s, i) {
      series.push({ label: s.label, stroke: colours[i % colours.length], fill: colours[i % colours.length] + "55",
        width: 1, paths: data.series.length === 1 ? bars : undefined, points: { show: data.series.length > 1 } });
    });
    var options = {
      width: Math.max(box.clientWidth, 200), height: 240,
      series: series,
      // Half a day either side, so the first and last days' bars are drawn whole.
      scales: { x: { time: true, range: function (u, min, max) { return [min - 43200, max + 43200]; } } },
      axes: [
        { label: "day (UTC)", labelSize: 20, values: "{MM}-{DD}" },
        { label: data.unit, labelSize: 20, size: 60 }
      ],
      legend: { live: true },
      cursor: { drag: { x: false, y: false } }
    };
    var columns = [data.x].concat(data.series.map(function (s) { return s.values; }));
    plots.push([box, new uPlot(options, columns, box)]);
  });
  // A job's metrics by epoch, drawn as they come: the page polls its events while the job runs.
  var live = document.querySelector("[data-live-chart]");
  if (live) {
    var state = JSON.parse(document.getElementById("live-curves").textContent);
    var curves = state.curves, after = state.live.after, names = curves.series.map(function (s) { return s.label; });
    var columns = [curves.x.slice()].concat(curves.series.map(function (s) { return s.values.slice(); }));
    var chart = null;
    var draw = function () {
      live.setAttribute("data-points", String(columns[0].length));
      if (!columns[0].length) return;
      live.parentElement.querySelector("[data-live-note]").textContent = "";
      if (chart && chart.series.length === names.length + 1) { chart.setData(columns); return; }
      if (chart) chart.destroy();
      var xLabel = byStep ? "step" : "epoch";
      var series = [{ label: xLabel }].concat(names.map(function (name, i) {
        return { label: name, stroke: colours[i % colours.length], width: 2, points: { show: !byStep || name !== "train_loss" }, spanGaps: byStep };
      }));
      chart = new uPlot({
        width: Math.max(live.clientWidth, 200), height: 260, series: series,
        scales: { x: { time: false } },
        // Whole epochs on the x axis.
        axes: [{ label: xLabel, labelSize: 20, incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000] },
               { label: state.y || "value", labelSize: 20, size: 60 }],
        cursor: { drag: { x: false, y: false } }
      }, columns, live);
      plots.push([live, chart]);
    };
    // A fine-tuning job reports by step: its training loss each step, its validation loss (or
    // whole-epoch training loss) at each epoch's last step, merged into that step's point.
    var byStep = state.x === "step";
    var stepPoint = function (data) {
      var point = {};
      if ("total_steps" in data) point.train_loss = data.train_loss;
      else if ("full_valid_loss" in data) point.valid_loss = data.full_valid_loss;
      else if ("train_loss" in data) point.epoch_train_loss = data.train_loss;
      return point;
    };
    var addStep = function (data) {
      if (typeof data.step !== "number") return;
      var point = stepPoint(data), at = columns[0].length - 1;
      Object.keys(point).forEach(function (key) {
        if (names.indexOf(key) < 0) { names.push(key); columns.push(columns[0].map(function () { return null; })); }
      });
      if (at < 0 || columns[0][at] !== data.step) {
        columns[0].push(data.step);
        names.forEach(function (name, i) { columns[i + 1].push(null); });
        at += 1;
      }
      names.forEach(function (name, i) { if (name in point) columns[i + 1][at] = point[name]; });
    };
    var add = function (events) {
      events.forEach(function (event) {
        if (event.type !== "metrics" || !event.data) return;
        if (byStep) { addStep(event.data); return; }
        Object.keys(event.data).forEach(function (key) {
          var value = event.data[key];
          if (["epoch", "total_epochs", "seconds", "step"].indexOf(key) < 0 && typeof value === "number" && names.indexOf(key) < 0) {
            names.push(key);
            columns.push(columns[0].map(function () { return null; }));
          }
        });
        columns[0].push(typeof event.data.epoch === "number" ? event.data.epoch : columns[0].length + 1);
        names.forEach(function (name, i) {
          var value = event.data[name];
          columns[i + 1].push(typeof value === "number" ? value : null);
        });
      });
    };
    var status = document.querySelector("[data-job-status]");
    var poll = function () {
      var url = state.live.url + (after !== null && after !== undefined ? "?after=" + after : "");
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (page) {
          if (!page) return;  // signed out or gone: stop
          add(page.data);
          after = page.last_id;
          draw();
          if (status.textContent !== page.job_status) status.textContent = page.job_status;
          var over = ["succeeded", "failed", "cancelled"].indexOf(page.job_status) >= 0;
          if (over && !page.has_more) { if (!state.finished) window.location.reload(); return; }
          window.setTimeout(poll, page.has_more ? 0 : 1000);
        });
    };
    draw();
    if (!state.finished || state.live.more) window.setTimeout(poll, state.live.more ? 0 : 1000);
  }

  // A deployment's load over the last hour: queue depth and latency, redrawn each sample interval.
  var loadData = document.getElementById("load-data");
  if (loadData) {
    var load = JSON.parse(loadData.textContent), loadUrl = loadData.getAttribute("data-url");
    var loadCharts = {};
    var drawLoad = function () {
      var note = document.querySelector("[data-load-note]");
      if (load.x.length) document.querySelector("[data-load-charts]").hidden = false;  // before sizing the plots
      ["depth", "latency"].forEach(function (which) {
        var box = document.querySelector('[data-load-chart="' + which + '"]');
        var chart = load[which];
        box.setAttribute("data-points", String(load.x.length));
        if (!load.x.length) return;
        var columns = [load.x].concat(chart.series.map(function (s) { return s.values; }));
        var existing = loadCharts[which];
        if (existing && existing.series.length === chart.series.length + 1) { existing.setData(columns); return; }
        if (existing) existing.destroy();
        var series = [{ label: "time (UTC)", value: "{HH}:{mm}:{ss}" }].concat(chart.series.map(function (s, i) {
          return { label: s.label, stroke: colours[i % colours.length], width: 2, spanGaps: false,
                   value: function (u, v) { return v === null || v === undefined ? "—" : (Math.round(v * 10) / 10) + " " + chart.unit; } };
        }));
        loadCharts[which] = new uPlot({
          width: Math.max(box.clientWidth, 200), height: 240, series: series, tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"); },
          // At least five minutes wide, so that a first sample or two do not stretch the axis to years.
          scales: { x: { time: true, range: function (u, min, max) { return [Math.min(min, max - 300), max + 5]; } }, y: { range: function (u, min, max) { return [0, Math.max(max || 0, 1)]; } } },
          axes: [{ label: "time (UTC)", labelSize: 20 }, { label: chart.unit, labelSize: 20, size: 60 }],
          cursor: { drag: { x: false, y: false } }
        }, columns, box);
        plots.push([box, loadCharts[which]]);
      });
      if (load.x.length && note) note.textContent = "";
    };
    var pollLoad = function () {
      fetch(loadUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (fresh) {
          if (!fresh) return;  // signed out or gone: stop
          load = fresh;
          drawLoad();
          window.setTimeout(pollLoad, load.interval_s * 1000);
        });
    };
    drawLoad();
    window.setTimeout(pollLoad, load.interval_s * 1000);
  }

  var resize = function () {
    plots.forEach(function (p) { p[1].setSize({ width: Math.max(p[0].clientWidth, 200), height: 240 }); });
  };
  window.addEventListener("resize", resize);
})();
