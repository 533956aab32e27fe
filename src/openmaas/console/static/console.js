/* OpenMaaS console: copy buttons, confirmations and daily charts (uPlot). No framework. */
(function () {
  "use strict";

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

  if (typeof uPlot === "undefined") return;
  var colours = ["#0b57d0", "#e8710a", "#1a7f37", "#a142f4"];
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
  var resize = function () {
    plots.forEach(function (p) { p[1].setSize({ width: Math.max(p[0].clientWidth, 200), height: 240 }); });
  };
  window.addEventListener("resize", resize);
})();
