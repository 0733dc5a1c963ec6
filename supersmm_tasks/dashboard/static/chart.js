// A small SVG line chart: losses on the left axis, val SER (%) on the right, epochs along the bottom,
// with a dashed line where a chunk begins (orange when the run was resumed there).
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const CHART = { width: 720, height: 300, left: 56, right: 56, top: 16, bottom: 40 };

function svgElement(tag, attributes, text) {
  const element = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attributes || {})) element.setAttribute(name, value);
  if (text !== undefined) element.textContent = text;
  return element;
}

// Round tick values (1, 2, 5 times a power of ten) covering [low, high].
function niceTicks(low, high, count) {
  if (!(high > low)) high = low + 1;
  const rough = (high - low) / count;
  const power = Math.pow(10, Math.floor(Math.log10(rough)));
  const step = [1, 2, 5, 10].map((f) => f * power).find((s) => s >= rough);
  const ticks = [];
  for (let t = Math.floor(low / step) * step; t <= high + step * 1e-9; t += step) ticks.push(+t.toPrecision(12));
  if (ticks[ticks.length - 1] < high) ticks.push(+(ticks[ticks.length - 1] + step).toPrecision(12));
  return ticks;
}

function formatTick(value) {
  if (Math.abs(value) >= 10000) return `${+(value / 1000).toPrecision(3)}k`;
  return String(+value.toPrecision(3));
}

function finite(values) {
  return values.filter((v) => v !== null && Number.isFinite(v));
}

function linePath(epochs, values, x, y) {
  let path = "";
  let drawing = false;
  epochs.forEach((epoch, i) => {
    const value = values[i];
    if (value === null || !Number.isFinite(value)) { drawing = false; return; }
    path += `${drawing ? "L" : "M"}${x(epoch).toFixed(1)},${y(value).toFixed(1)}`;
    drawing = true;
  });
  return path;
}

function drawSeries(svg, epochs, values, x, y, className) {
  svg.appendChild(svgElement("path", { d: linePath(epochs, values, x, y), class: `series ${className}` }));
  if (epochs.length <= 60) {
    epochs.forEach((epoch, i) => {
      if (values[i] === null) return;
      const point = svgElement("circle", { cx: x(epoch), cy: y(values[i]), r: 3, class: `point ${className}` });
      point.appendChild(svgElement("title", {}, `epoch ${epoch}: ${formatTick(values[i])}`));
      svg.appendChild(point);
    });
  }
}

// history: {epoch: [], loss: [], val_loss: [], val_ser: [], chunk_starts: [{epoch, chunk, resumed}]}
function drawTrainingChart(container, history) {
  const { width, height, left, right, top, bottom } = CHART;
  const svg = svgElement("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart-svg", role: "img",
                                   "aria-label": "training loss and validation SER per epoch" });
  const epochs = history.epoch;
  if (epochs.length === 0) {
    svg.appendChild(svgElement("text", { x: width / 2, y: height / 2, class: "chart-empty" }, "no epoch finished yet"));
    container.replaceChildren(svg);
    return;
  }
  const firstEpoch = Math.min(...epochs, 1);
  const lastEpoch = Math.max(...epochs, firstEpoch + 1);
  const xTicks = niceTicks(firstEpoch - 1, lastEpoch, 8).filter((t) => Number.isInteger(t));
  const xMin = Math.min(firstEpoch - 1, xTicks[0]);
  const xMax = xTicks[xTicks.length - 1];
  const losses = finite(history.loss.concat(history.val_loss));
  const lossTicks = niceTicks(0, losses.length ? Math.max(...losses) : 1, 5);
  const serTicks = niceTicks(0, Math.max(1, ...finite(history.val_ser)), 5);

  const x = (epoch) => left + ((epoch - xMin) / (xMax - xMin)) * (width - left - right);
  const yLoss = (v) => height - bottom - (v / lossTicks[lossTicks.length - 1]) * (height - top - bottom);
  const ySer = (v) => height - bottom - (v / serTicks[serTicks.length - 1]) * (height - top - bottom);

  lossTicks.forEach((tick) => {
    svg.appendChild(svgElement("line", { x1: left, x2: width - right, y1: yLoss(tick), y2: yLoss(tick), class: "grid" }));
    svg.appendChild(svgElement("text", { x: left - 8, y: yLoss(tick) + 4, class: "tick loss-axis", "text-anchor": "end" }, formatTick(tick)));
  });
  serTicks.forEach((tick) => {
    svg.appendChild(svgElement("text", { x: width - right + 8, y: ySer(tick) + 4, class: "tick ser-axis" }, `${formatTick(tick)}%`));
  });
  xTicks.forEach((tick) => {
    svg.appendChild(svgElement("text", { x: x(tick), y: height - bottom + 18, class: "tick", "text-anchor": "middle" }, String(tick)));
  });
  svg.appendChild(svgElement("text", { x: (left + width - right) / 2, y: height - 6, class: "axis-label", "text-anchor": "middle" }, "epoch"));
  svg.appendChild(svgElement("line", { x1: left, x2: width - right, y1: height - bottom, y2: height - bottom, class: "axis" }));

  history.chunk_starts.forEach((start) => {
    const position = x(start.epoch - 0.5);
    const kind = start.resumed ? "resumed" : "chunk";
    const marker = svgElement("line", { x1: position, x2: position, y1: top, y2: height - bottom, class: `boundary ${kind}` });
    marker.appendChild(svgElement("title", {}, `${start.resumed ? "resumed" : "chunk"} ${start.chunk ?? ""} from epoch ${start.epoch}`));
    svg.appendChild(marker);
  });

  drawSeries(svg, epochs, history.loss, x, yLoss, "loss");
  drawSeries(svg, epochs, history.val_loss, x, yLoss, "val-loss");
  drawSeries(svg, epochs, history.val_ser, x, ySer, "val-ser");
  container.replaceChildren(svg);
}

window.drawTrainingChart = drawTrainingChart;
