"use strict";
// avbench report: sortable tables, and the provenance panel of a leaderboard row.

// A click on a header sorts the rows by that column, a second click reverses them. Numeric columns
// (th[data-type=number]) sort by each cell's data-sort value; cells without one go last either way.
for (const table of document.querySelectorAll("table.sortable")) {
  table.querySelectorAll("thead th").forEach((th, column) => {
    th.querySelector("button").addEventListener("click", () => sortBy(table, th, column));
  });
}

function sortBy(table, th, column) {
  const ascending = th.getAttribute("aria-sort") !== "ascending";
  const numeric = th.dataset.type === "number";
  const key = (row) => {
    const cell = row.cells[column];
    if (!numeric) return cell.textContent.trim();
    const value = parseFloat(cell.dataset.sort);
    return Number.isNaN(value) ? null : value;
  };
  const rows = Array.from(table.tBodies[0].rows, (row) => [key(row), row]);
  rows.sort(([a], [b]) => compare(a, b, ascending));
  for (const other of table.querySelectorAll("thead th")) other.removeAttribute("aria-sort");
  th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  table.tBodies[0].append(...rows.map(([, row]) => row));
}

function compare(a, b, ascending) {
  if (a === null || b === null) return (a === null) - (b === null);
  const order = typeof a === "number" ? a - b : a.localeCompare(b, undefined, { numeric: true });
  return ascending ? order : -order;
}

// The runs behind a leaderboard number, from the JSON the page carries.
const data = JSON.parse(document.getElementById("avbench-data").textContent);
const panel = document.getElementById("provenance");
const board = document.getElementById("leaderboard");

if (board) {
  board.tBodies[0].addEventListener("click", (event) => {
    const row = event.target.closest("tr[data-cell]");
    if (row) showProvenance(row);
  });
  board.tBodies[0].addEventListener("keydown", (event) => {
    const row = event.target.closest("tr[data-cell]");
    if (row && event.key === "Enter") showProvenance(row);
  });
}
panel.querySelector(".close").addEventListener("click", () => { panel.hidden = true; });
document.addEventListener("keydown", (event) => { if (event.key === "Escape") panel.hidden = true; });

function showProvenance(row) {
  const cell = data.cells[Number(row.dataset.cell)];
  panel.querySelector("h2").textContent = cell.title;
  const runs = panel.querySelector(".runs");
  runs.replaceChildren(...cell.runs.map((entry) => runCard(data.runs[entry.run], entry)));
  panel.hidden = false;
  panel.focus();
}

function runCard(run, entry) {
  const card = element("article");
  card.append(element("h3", `seed ${run.seed}: ${formatValue(entry)}`));
  const fields = element("dl");
  const config = element("dd");
  config.append(element("pre", JSON.stringify(run.detector_config, null, 2)));
  for (const [name, value] of [["record", run.record], ["git commit", run.git_commit ?? "unknown"],
                               ["protocol sha256", run.protocol_sha256 ?? "unknown"], ["created", run.created ?? "unknown"]]) {
    fields.append(element("dt", name), element("dd", value));
  }
  fields.append(element("dt", "detector config"), config);
  card.append(fields);
  return card;
}

function formatValue(entry) {
  const percent = (v) => (100 * v).toFixed(1);
  if (entry.value === null) return "n/a";
  const interval = entry.ci_low === null ? "" : ` [${percent(entry.ci_low)}, ${percent(entry.ci_high)}]`;
  return `${percent(entry.value)}%${interval}`;
}

function element(tag, text) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = String(text);
  return node;
}
