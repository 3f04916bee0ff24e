// A small line chart as standalone SVG: x on a log₂ axis (context length), one line per series.

/** One line of the chart. */
export interface Series {
  /** Legend label. */
  name: string;
  /** Points (x > 0). */
  points: { x: number; y: number }[];
}

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2"];

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** An SVG line chart with a log₂ x axis labelled by `xLabel(x)`. */
export function lineChart(
  title: string,
  yTitle: string,
  series: Series[],
  xLabel: (x: number) => string,
): string {
  const W = 720, H = 420, L = 70, R = 170, T = 50, B = 60;
  const xs = [...new Set(series.flatMap((s) => s.points.map((p) => p.x)))].sort((a, b) => a - b);
  const ys = series.flatMap((s) => s.points.map((p) => p.y)).filter(Number.isFinite);
  const yMax = Math.max(1, ...ys) * 1.1;
  const lx = (x: number) => Math.log2(x);
  const [x0, x1] = [lx(xs[0] ?? 1), lx(xs[xs.length - 1] ?? 2)];
  const px = (x: number) => L + (x1 === x0 ? 0.5 : (lx(x) - x0) / (x1 - x0)) * (W - L - R);
  const py = (y: number) => H - B - (y / yMax) * (H - T - B);
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="24" text-anchor="middle" font-size="15">${esc(title)}</text>`,
    `<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="black"/>`,
    `<line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="black"/>`,
    `<text x="18" y="${(T + H - B) / 2}" transform="rotate(-90 18 ${
      (T + H - B) / 2
    })" text-anchor="middle">${esc(yTitle)}</text>`,
  ];
  const step = yMax > 20 ? 5 : yMax > 8 ? 2 : yMax > 3 ? 1 : 0.5;
  for (let y = 0; y <= yMax; y += step) {
    out.push(
      `<line x1="${L}" y1="${py(y)}" x2="${W - R}" y2="${py(y)}" stroke="#ddd"/>`,
      `<text x="${L - 6}" y="${py(y) + 4}" text-anchor="end">${y}</text>`,
    );
  }
  for (const x of xs) {
    out.push(`<text x="${px(x)}" y="${H - B + 18}" text-anchor="middle">${esc(xLabel(x))}</text>`);
  }
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const pts = s.points.filter((p) => Number.isFinite(p.y)).sort((a, b) => a.x - b.x);
    if (pts.length > 1) {
      const d = pts.map((p, j) => `${j ? "L" : "M"}${px(p.x).toFixed(1)},${py(p.y).toFixed(1)}`);
      out.push(`<path d="${d.join(" ")}" fill="none" stroke="${color}" stroke-width="2"/>`);
    }
    for (const p of pts) {
      out.push(`<circle cx="${px(p.x)}" cy="${py(p.y)}" r="3.5" fill="${color}"/>`);
    }
    const ly = T + 10 + i * 20;
    out.push(
      `<line x1="${W - R + 15}" y1="${ly}" x2="${
        W - R + 40
      }" y2="${ly}" stroke="${color}" stroke-width="2"/>`,
      `<text x="${W - R + 46}" y="${ly + 4}">${esc(s.name)}</text>`,
    );
  });
  out.push("</svg>");
  return out.join("\n");
}
