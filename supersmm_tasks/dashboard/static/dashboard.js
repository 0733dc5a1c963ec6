// The dashboard page: polls the JSON API every few seconds and redraws, without reloading.
// Every text from the server goes in through textContent, never as HTML.
"use strict";

let refreshSeconds = 3;
let selectedRun = null;

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

async function getJson(url) {
  const response = await fetch(url, { cache: "no-store" });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

function formatNumber(value, digits) {
  return value === null || value === undefined ? "–" : value.toFixed(digits);
}

function formatAge(isoTime) {
  if (!isoTime) return "–";
  const seconds = Math.max(0, (Date.now() - Date.parse(isoTime)) / 1000);
  if (seconds < 90) return `${Math.round(seconds)} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} days ago`;
}

function formatEta(isoTime) {
  if (!isoTime) return "–";
  const when = new Date(isoTime);
  if (Number.isNaN(when.getTime())) return "–";
  const minutes = (when.getTime() - Date.now()) / 60000;
  const clock = when.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  if (minutes <= 0) return clock;
  const left = minutes < 90 ? `${Math.round(minutes)} min` : `${(minutes / 60).toFixed(1)} h`;
  return `${clock} (in ${left})`;
}

function statusBadge(status, stale) {
  const badge = element("span", `status status-${status.replace(/[^a-z]/g, "")}`, status);
  if (stale) {
    badge.classList.add("stale");
    badge.textContent = `${status} · stale`;
    badge.title = "running, but nothing has been written for a while: the worker may be gone";
  }
  return badge;
}

function progressCell(run) {
  const cell = element("td", "progress-column");
  const text = `${run.epoch ?? 0} / ${run.max_total_epochs ?? "?"}`;
  cell.appendChild(element("span", "epochs", text));
  const bar = element("div", "bar");
  const fill = element("div", "fill");
  const fraction = run.max_total_epochs ? Math.min(1, (run.epoch ?? 0) / run.max_total_epochs) : 0;
  fill.style.width = `${(fraction * 100).toFixed(1)}%`;
  bar.appendChild(fill);
  cell.appendChild(bar);
  return cell;
}

function runRow(run) {
  const row = element("tr");
  row.dataset.run = run.name;
  if (run.name === selectedRun) row.classList.add("selected");
  if (run.stale) row.classList.add("stale-row");
  row.appendChild(element("td", "name", run.name));
  row.appendChild(element("td", null, run.dataset ?? "–"));
  const status = element("td");
  status.appendChild(statusBadge(run.status, run.stale));
  row.appendChild(status);
  row.appendChild(progressCell(run));
  row.appendChild(element("td", "number", run.best_val_ser === null ? "–" : `${formatNumber(run.best_val_ser, 2)} %`));
  row.appendChild(element("td", "number", formatNumber(run.samples_per_sec, 1)));
  row.appendChild(element("td", null, formatEta(run.eta)));
  row.appendChild(element("td", "worker", run.worker ?? "–"));
  const updated = element("td", null, formatAge(run.last_update));
  updated.title = run.last_update ?? "";
  row.appendChild(updated);
  return row;
}

// Rows stay in place across refreshes and only changed cells are swapped, so a click that lands
// while the table refreshes still reaches its row.
function updateRow(row, fresh) {
  row.className = fresh.className;
  const cells = Array.from(fresh.children);
  cells.forEach((cell, i) => {
    const current = row.children[i];
    if (!current) row.appendChild(cell);
    else if (!current.isEqualNode(cell)) current.replaceWith(cell);
  });
  while (row.children.length > cells.length) row.lastElementChild.remove();
}

function showProblem(text) {
  const banner = document.getElementById("problem");
  banner.hidden = !text;
  banner.textContent = text || "";
}

function renderRuns(data) {
  const body = document.querySelector("#runs tbody");
  const existing = new Map(Array.from(body.rows, (row) => [row.dataset.run, row]));
  data.runs.forEach((run, position) => {
    const fresh = runRow(run);
    const row = existing.get(run.name);
    if (row) updateRow(row, fresh);
    const shown = row ?? fresh;
    if (body.rows[position] !== shown) body.insertBefore(shown, body.rows[position] ?? null);
    existing.delete(run.name);
  });
  existing.forEach((row) => row.remove());
  document.getElementById("no-runs").hidden = data.runs.length > 0;
  document.getElementById("runs").hidden = data.runs.length === 0;
  showProblem(data.problem);
  const names = data.runs.map((run) => run.name);
  if ((!selectedRun || !names.includes(selectedRun)) && names.length) selectRun(names[0], false);
}

function renderConfig(detail) {
  const list = document.getElementById("run-config");
  const entries = { ...detail.config, ...detail.state };
  const shown = Object.entries(entries).filter(([, value]) => value !== null && value !== "" && typeof value !== "object");
  list.replaceChildren(...shown.flatMap(([key, value]) => [element("dt", null, key), element("dd", null, String(value))]));
}

function renderLog(text, problem) {
  const log = document.getElementById("log");
  const following = log.scrollTop + log.clientHeight >= log.scrollHeight - 20;
  const shown = text || problem || "(no log yet)";
  if (log.textContent !== shown) log.textContent = shown;
  if (following) log.scrollTop = log.scrollHeight;
}

function renderDetail(detail) {
  document.getElementById("run-detail").hidden = false;
  document.getElementById("run-name").textContent = detail.summary.name;
  document.getElementById("run-status").replaceWith(
    Object.assign(statusBadge(detail.summary.status, detail.summary.stale), { id: "run-status" }));
  window.drawTrainingChart(document.getElementById("chart"), detail.history);
  renderConfig(detail);
  renderLog(detail.log_tail, detail.log_problem);
}

function tokenLine(label, diff, side) {
  const line = element("div", "tokens");
  line.appendChild(element("span", "label", label));
  diff.forEach((part) => {
    part[side].forEach((token) => {
      const kind = part.op === "equal" ? "same" : (side === "truth" ? "missed" : "wrong");
      line.appendChild(element("span", `token ${kind}`, token));
    });
  });
  if (line.childElementCount === 1) line.appendChild(element("span", "muted", "(nothing)"));
  return line;
}

function previewCard(image) {
  const card = element("figure", "preview");
  const picture = element("img", "scan");
  picture.src = image.image_url;
  picture.alt = `validation image ${image.id}`;
  card.appendChild(picture);
  const caption = element("figcaption");
  caption.appendChild(element("span", "sample-id", image.id));
  caption.appendChild(element("span", image.errors ? "errors" : "errors perfect",
    `${image.errors} token error${image.errors === 1 ? "" : "s"} / ${image.truth_length}`));
  card.appendChild(caption);
  card.appendChild(tokenLine("truth", image.diff, "truth"));
  card.appendChild(tokenLine("read", image.diff, "prediction"));
  card.appendChild(element("div", "label", "what the model read, engraved again"));
  if (image.engraving_url) {
    const engraving = element("img", "engraving");
    engraving.src = image.engraving_url;
    engraving.alt = "the prediction engraved again by Verovio";
    card.appendChild(engraving);
  } else {
    card.appendChild(element("div", "muted not-engraved", image.engraving_problem));
  }
  if (image.score_url) {
    const download = element("a", "download-score", "download MusicXML");
    download.href = image.score_url;
    download.download = `${image.id}.musicxml`;
    card.appendChild(download);
  } else {
    card.appendChild(element("div", "muted no-score", image.score_problem));
  }
  return card;
}

function renderPreviews(data) {
  const status = {
    "ready": "",
    "computing": "(predicting with the latest checkpoint…)",
    "no checkpoint": "(no checkpoint yet)",
  }[data.status] ?? "";
  document.getElementById("previews-status").textContent = data.error ? `(failed: ${data.error})` : status;
  const container = document.getElementById("previews");
  const signature = JSON.stringify(data.images);
  if (container.dataset.signature === signature) return;
  container.dataset.signature = signature;
  container.replaceChildren(...data.images.map(previewCard));
}

async function refreshDetail() {
  if (!selectedRun) return;
  const name = encodeURIComponent(selectedRun);
  const [detail, previews] = await Promise.all([
    getJson(`/api/runs/${name}`),
    getJson(`/api/runs/${name}/previews`),
  ]);
  renderDetail(detail);
  renderPreviews(previews);
}

function selectRun(name, redraw = true) {
  if (name !== selectedRun) document.getElementById("previews").replaceChildren();
  selectedRun = name;
  history.replaceState(null, "", `#run=${encodeURIComponent(name)}`);
  document.querySelectorAll("#runs tbody tr").forEach((row) => row.classList.toggle("selected", row.dataset.run === name));
  if (redraw) refreshDetail().catch(reportFailure);
}

function reportFailure(error) {
  document.getElementById("refreshed").textContent = `update failed: ${error.message}`;
  document.getElementById("refreshed").classList.add("failed");
}

async function refresh() {
  try {
    renderRuns(await getJson("/api/runs"));
    await refreshDetail();
    const refreshed = document.getElementById("refreshed");
    refreshed.textContent = `updated ${new Date().toLocaleTimeString()}`;
    refreshed.classList.remove("failed");
  } catch (error) {
    reportFailure(error);
  } finally {
    setTimeout(refresh, refreshSeconds * 1000);
  }
}

function renderLinks(links) {
  const nav = document.getElementById("links");
  const named = { flower: "Flower", tensorboard: "TensorBoard" };
  nav.replaceChildren(...Object.entries(links).filter(([, url]) => url).map(([key, url]) => {
    const link = element("a", null, named[key] ?? key);
    link.href = url;
    link.target = "_blank";
    link.rel = "noopener noreferrer";
    return link;
  }));
}

async function start() {
  document.querySelector("#runs tbody").addEventListener("click", (event) => {
    const row = event.target.closest("tr[data-run]");
    if (row) selectRun(row.dataset.run);
  });
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("run");
  if (fromHash) selectedRun = fromHash;
  try {
    const config = await getJson("/api/config");
    refreshSeconds = config.refresh_seconds;
    renderLinks(config.links);
  } catch (error) {
    reportFailure(error);
  }
  refresh();
}

document.addEventListener("DOMContentLoaded", start);
