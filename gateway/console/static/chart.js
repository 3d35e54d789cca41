// Tiny charts drawn as inline SVG: grouped bars (model metrics) and a sparkline (events/s).
const SVG = "http://www.w3.org/2000/svg";
export const PALETTE = ["#2457c5", "#d9822b", "#1c7c3c", "#8e44ad", "#b3261e", "#00838f"];

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

// groups: [{label, values: [number|null per series]}]; series: [{name, color}]
export function barChart(groups, series, { label = "chart", height = 220 } = {}) {
  const width = Math.max(320, 90 + groups.length * (series.length * 22 + 28));
  const top = 12; const bottom = 28; const left = 38; const plotH = height - top - bottom;
  const values = groups.flatMap((g) => g.values).filter((v) => typeof v === "number");
  const max = Math.max(1, ...values);
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label });
  svg.append(s("title", {}, label));
  for (let i = 0; i <= 4; i += 1) {
    const v = (max * i) / 4; const y = top + plotH - (v / max) * plotH;
    svg.append(s("line", { x1: left, x2: width - 4, y1: y, y2: y, stroke: "#e3e6ec" }),
      s("text", { x: left - 6, y: y + 4, "text-anchor": "end", "font-size": 10, fill: "#5b6474" }, v.toFixed(2)));
  }
  const groupW = (width - left - 8) / Math.max(1, groups.length);
  const barW = Math.min(22, (groupW - 16) / Math.max(1, series.length));
  groups.forEach((g, gi) => {
    const x0 = left + gi * groupW + (groupW - barW * series.length) / 2;
    g.values.forEach((v, si) => {
      if (typeof v !== "number") return;
      const hgt = (v / max) * plotH;
      const bar = s("rect", { x: x0 + si * barW + 1, y: top + plotH - hgt, width: barW - 2, height: Math.max(hgt, 0.5),
        fill: series[si].color, rx: 2 });
      bar.append(s("title", {}, `${g.label} ${series[si].name}: ${v.toFixed(4)}`));
      svg.append(bar);
    });
    svg.append(s("text", { x: left + gi * groupW + groupW / 2, y: height - 8, "text-anchor": "middle", "font-size": 12,
      fill: "#1c2330" }, g.label));
  });
  const legend = document.createElement("div");
  legend.className = "legend";
  for (const item of series) {
    const entry = document.createElement("span");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = item.color;
    entry.append(swatch, item.name);
    legend.append(entry);
  }
  const wrap = document.createElement("div");
  wrap.append(svg, legend);
  return wrap;
}

export function sparkline(points, { label = "trend", width = 240, height = 40 } = {}) {
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label,
    preserveAspectRatio: "none" });
  svg.append(s("title", {}, label));
  if (points.length < 2) return svg;
  const max = Math.max(1, ...points);
  const step = width / (points.length - 1);
  const path = points.map((p, i) => `${i ? "L" : "M"}${(i * step).toFixed(1)},${(height - 2 - (p / max) * (height - 4)).toFixed(1)}`).join(" ");
  svg.append(s("path", { d: `${path} L${width},${height} L0,${height} Z`, fill: "#dfe8fb" }),
    s("path", { d: path, fill: "none", stroke: "#2457c5", "stroke-width": 1.5 }));
  return svg;
}

// series: [{name, points: [[unix seconds, value], ...]}] drawn as lines over shared time and value axes.
export function lineChart(series, { label = "history", width = 560, height = 180 } = {}) {
  const top = 10; const bottom = 22; const left = 44; const plotW = width - left - 6; const plotH = height - top - bottom;
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label });
  svg.append(s("title", {}, label));
  const all = series.flatMap((x) => x.points).filter(([, v]) => Number.isFinite(v));
  const wrap = document.createElement("div");
  if (!all.length) {
    const none = document.createElement("p");
    none.className = "muted";
    none.textContent = "No history yet.";
    wrap.append(none);
    return wrap;
  }
  const t0 = Math.min(...all.map(([t]) => t)); const t1 = Math.max(t0 + 1, ...all.map(([t]) => t));
  const max = Math.max(1e-9, ...all.map(([, v]) => v));
  const x = (t) => left + ((t - t0) / (t1 - t0)) * plotW;
  const y = (v) => top + plotH - (v / max) * plotH;
  for (let i = 0; i <= 3; i += 1) {
    const v = (max * i) / 3;
    svg.append(s("line", { x1: left, x2: width - 6, y1: y(v), y2: y(v), stroke: "#e3e6ec" }),
      s("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end", "font-size": 10, fill: "#5b6474" },
        v >= 100 ? v.toFixed(0) : v.toFixed(2)));
  }
  const clock = (t) => new Date(t * 1000).toISOString().slice(11, 16);
  svg.append(s("text", { x: left, y: height - 6, "font-size": 10, fill: "#5b6474" }, clock(t0)),
    s("text", { x: width - 6, y: height - 6, "text-anchor": "end", "font-size": 10, fill: "#5b6474" }, `${clock(t1)} UTC`));
  const legend = document.createElement("div");
  legend.className = "legend";
  series.forEach((item, i) => {
    const color = PALETTE[i % PALETTE.length];
    const points = item.points.filter(([, v]) => Number.isFinite(v));
    if (points.length) {
      const d = points.map(([t, v], j) => `${j ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
      const line = s("path", { d, fill: "none", stroke: color, "stroke-width": 1.5 });
      line.append(s("title", {}, item.name));
      svg.append(line);
    }
    const entry = document.createElement("span");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = color;
    entry.append(swatch, item.name);
    legend.append(entry);
  });
  wrap.append(svg, legend);
  return wrap;
}
