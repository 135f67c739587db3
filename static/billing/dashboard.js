/* Usage dashboard: draws the charts from the JSON the page embeds (#dashboard-data).
   Chart.js is served from /static/vendor/chart.js/; nothing is loaded from elsewhere. */
(function () {
  "use strict";

  var PALETTE = [
    "#417690", "#e07b39", "#3b9c5a", "#c94f4f", "#8a63b8",
    "#b38b2d", "#2f9aa6", "#d16aa8", "#7a7a7a"
  ];

  function color(i) { return PALETTE[i % PALETTE.length]; }

  function base(stacked, yTitle) {
    return {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      interaction: { mode: "index", intersect: false },
      plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
      scales: {
        x: { stacked: stacked, ticks: { maxRotation: 0, autoSkip: true, maxTicksLimit: 12 } },
        y: { stacked: stacked, beginAtZero: true, title: { display: !!yTitle, text: yTitle || "" } }
      }
    };
  }

  function spendChart(id, labels, series) {
    var datasets = series.map(function (s, i) {
      return { label: s.label, data: s.data, backgroundColor: color(i), borderColor: color(i), stack: "spend" };
    });
    return new window.Chart(document.getElementById(id), {
      type: "bar",
      data: { labels: labels, datasets: datasets },
      options: base(true, "USD")
    });
  }

  function percentileChart(id, labels, p50, p95) {
    return new window.Chart(document.getElementById(id), {
      type: "line",
      data: {
        labels: labels,
        datasets: [
          { label: "p50", data: p50, borderColor: color(0), backgroundColor: color(0), spanGaps: true },
          { label: "p95", data: p95, borderColor: color(1), backgroundColor: color(1), spanGaps: true }
        ]
      },
      options: base(false, "ms")
    });
  }

  function trafficChart(id, data) {
    var options = base(false, "requests");
    options.scales.rate = {
      position: "right", beginAtZero: true, suggestedMax: 5,
      title: { display: true, text: "error %" }, grid: { drawOnChartArea: false }
    };
    return new window.Chart(document.getElementById(id), {
      type: "bar",
      data: {
        labels: data.labels,
        datasets: [
          { label: "requests", data: data.requests, backgroundColor: color(0), order: 2 },
          { label: "errors", data: data.errors, backgroundColor: color(3), order: 2 },
          { label: "error rate %", data: data.error_rate, type: "line", yAxisID: "rate",
            borderColor: color(1), backgroundColor: color(1), spanGaps: true, order: 1 }
        ]
      },
      options: options
    });
  }

  function draw() {
    var node = document.getElementById("dashboard-data");
    if (!node || !window.Chart) { return; }
    var data = JSON.parse(node.textContent);
    window.gwCharts = [
      spendChart("chart-spend-model", data.labels, data.spend_by_model),
      spendChart("chart-spend-provider", data.labels, data.spend_by_provider),
      spendChart("chart-spend-tenant", data.labels, data.spend_by_tenant),
      trafficChart("chart-traffic", data),
      percentileChart("chart-latency", data.labels, data.latency_p50, data.latency_p95),
      percentileChart("chart-ttft", data.labels, data.ttft_p50, data.ttft_p95)
    ];
    document.getElementById("billing-dashboard").setAttribute("data-charts-ready", "true");
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
