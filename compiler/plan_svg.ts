// A plan as a picture, so a person sees a strategy at a glance: one lane per host with its token
// layout and its attention mask (query rows × key sources), and beside the lanes the transfers of
// one layer as arrows between them. What to draw comes from layerView; this file only lays it out.

import type { Plan } from "./plan.ts";
import {
  type Arrow,
  type ColGroup,
  type Collective,
  type HostAttention,
  type LayerView,
  layerView,
  type MaskBlock,
  type RowGroup,
} from "./plan_view.ts";
import type { Segment } from "./strategies/strategy.ts";
import { el, text, textWidth, tooltip } from "./svg.ts";

const FONT = "DejaVu Sans, Verdana, Arial, Helvetica, sans-serif";
const PAD = 24;
/** Width of the longest host's token bar. */
const BAR_WIDTH = 380;
const BAR_HEIGHT = 32;
/** Narrowest segment in a token bar, so a few rows among thousands stay visible. */
const MIN_SEGMENT = 8;
/** Side of the largest attention matrix. */
const MATRIX = 220;
/** Narrowest row or column group of a matrix: rotated labels 22 px apart sit 15 px apart. */
const MIN_GROUP = 22;
const LABEL = 10;
const SMALL = 9;
/** Horizontal room per arrow in a transfer column. */
const TRACK = 22;
const COS45 = Math.SQRT1_2;
const TRANSFER_NOTE = "a column per phase; arrow: host → host, bytes of all its copies";

const ROLE_COLOURS: Record<string, string> = {
  anchor: "#59a14f",
  block: "#4e79a7",
  passing: "#e8740c",
  query: "#e9c236",
  pad: "#bab0ac",
};
const OTHER_ROLE = "#b07aa1";
const MASKED = "#eeeeee";
const INK = "#222222";
const MUTED = "#666666";
const LANE_SHADE = "#f6f7f9";

/** Draws `plan`'s prefill as a standalone SVG document (no external fonts, images or scripts). */
export function planSvg(plan: Plan): string {
  const view = layerView(plan);
  const g = geometry(plan, view);
  // One group per host lane (its band, token bar and matrix), then the transfers over all lanes.
  const body = [
    ...sectionTitles(g),
    ...plan.hosts.map((_, h) =>
      el("g", { class: "host", "data-host": h }, [
        ...laneBand(plan, g, h),
        el("g", { class: "token-layout" }, tokenBar(plan, g, h)),
        el("g", { class: "attention" }, matrix(plan, view, g, view.attention[h])),
      ])
    ),
    el("g", { class: "transfers" }, transfers(view, g)),
  ];
  const head = header(plan, view, g.width);
  const legendY = head.height;
  const legendMarkup = legend(plan, view, g.width, legendY);
  const shift = legendY + legendMarkup.height;
  const height = shift + g.height + footnoteHeight;
  return [
    `<?xml version="1.0" encoding="UTF-8"?>\n`,
    el("svg", {
      xmlns: "http://www.w3.org/2000/svg",
      width: g.width,
      height,
      viewBox: `0 0 ${Math.round(g.width)} ${Math.round(height)}`,
      "font-family": FONT,
      "font-size": LABEL,
      fill: INK,
    }, [
      tooltip(`${plan.model.name}: ${plan.strategy.name} on ${plan.hosts.length} host(s)`),
      el("defs", {}, arrowMarkers),
      el("rect", { x: 0, y: 0, width: g.width, height, fill: "#ffffff" }),
      ...head.markup,
      ...legendMarkup.markup,
      el("g", { transform: `translate(0 ${Math.round(shift)})` }, body),
      ...footnote(plan, shift + g.height),
    ]),
    "\n",
  ].join("");
}

/** Arrow colour by what a transfer carries, matching the matrix columns it feeds. */
const ARROW_COLOURS: Record<Arrow["carries"], string> = {
  keys: "#3b6591",
  passing: "#e8740c",
  other: "#333333",
  mixed: "#333333",
};

function markerId(carries: Arrow["carries"]): string {
  return `arrow-${carries}`;
}

// Markers take no colour from the line that uses them (SVG 1.1), so one marker per colour.
const arrowMarkers = (Object.keys(ARROW_COLOURS) as Arrow["carries"][]).map((kind) =>
  el("marker", {
    id: markerId(kind),
    viewBox: "0 0 10 10",
    refX: 9,
    refY: 5,
    markerWidth: 6,
    markerHeight: 6,
    orient: "auto-start-reverse",
  }, el("path", { d: "M0,0L10,5L0,10z", fill: ARROW_COLOURS[kind] }))
);

// ---------------------------------------------------------------------------------------------
// Geometry: every x and y decided once, before drawing.

/** Where each group of a matrix sits: offsets and sizes in pixels. */
interface Axis {
  at: number[];
  size: number[];
  total: number;
}

interface Lane {
  top: number;
  /** Top of the token bar and of the matrix. */
  bodyTop: number;
  bottom: number;
  /** Height of the token bar's centre, where transfer arrows start and end. */
  anchor: number;
  rows: Axis;
  cols: Axis;
  /** Label lines under the token bar. */
  barLabels: { x: number; left: number; line: number; text: string; centre: number }[];
}

interface PhaseColumn {
  /** The phase's name. */
  name: string;
  x: number;
  width: number;
  /** Phase name, wrapped to the column. */
  title: string[];
  /** Copies, bytes, overlap. */
  notes: string[];
  /** Track (x slot) of each arrow. */
  tracks: number[];
  /** Every host sends to every other (all-to-all): a band across the lanes reads better. */
  band: boolean;
}

interface Geometry {
  width: number;
  height: number;
  barX: number;
  barScale: number;
  matrixTitleX: number;
  matrixX: number;
  transferX: number;
  /** Top of the section titles. */
  titleY: number;
  lanes: Lane[];
  phases: PhaseColumn[];
}

function geometry(plan: Plan, view: LayerView): Geometry {
  const barX = PAD + 86;
  const barScale = BAR_WIDTH / Math.max(1, ...plan.hosts.map((h) => h.rows));
  const barWidths = plan.hosts.map((h) => segmentWidths(h.segments, barScale));
  const barsRight = barX + Math.max(...barWidths.map((w) => w.reduce((a, b) => a + b, 0)));
  const rowLabelWidth = Math.max(
    40,
    ...view.attention.flatMap((a) =>
      a.rows.map((r, i) => textWidth(rowLabel(a, r, a.empty.includes(i)), LABEL))
    ),
  );
  const matrixTitleX = Math.max(barsRight, barX + BAR_WIDTH) + 48;
  const matrixX = matrixTitleX + rowLabelWidth + 8;
  const largest = Math.max(
    1,
    ...view.attention.flatMap((
      a,
    ) => [sum(a.rows.map((r) => r.count)), sum(a.cols.map((c) => c.count))]),
  );
  const scale = MATRIX / largest;
  const axes = view.attention.map((a) => ({
    rows: axis(a.rows.map((r) => r.count), scale),
    cols: axis(a.cols.map((c) => c.count), scale),
  }));
  // Rotated column labels reach up and to the right of their column.
  const reach = view.attention.map((a, h) =>
    Math.max(
      0,
      ...a.cols.map((c, i) =>
        textWidth(colLabel(view, a, c), SMALL) * COS45 + axes[h].cols.at[i] +
        axes[h].cols.size[i] / 2
      ),
    )
  );
  const matrixRight = Math.max(
    ...view.attention.map((a, h) =>
      Math.max(reach[h] + 6, axes[h].cols.total, textWidth(caption(plan, a), SMALL))
    ),
  );
  const transferX = Math.max(matrixX + matrixRight + 36, matrixTitleX + 260);
  const phases = phaseColumns(view.collectives, plan.hosts.length, transferX + 40);
  const lastPhase = phases[phases.length - 1];
  const width = Math.max(
    (lastPhase ? lastPhase.x + lastPhase.width : transferX + 260) + PAD,
    transferX + textWidth(TRANSFER_NOTE, SMALL) + PAD,
    PAD * 2 + 640,
  );
  const titleY = 8;
  const headerLines = Math.max(0, ...phases.map((p) => p.title.length + p.notes.length));
  let y = titleY + 34 + headerLines * 12 + 6;
  const lanes = plan.hosts.map((host, h): Lane => {
    const a = view.attention[h];
    const colHeader = Math.max(
      18,
      ...a.cols.map((c) => textWidth(colLabel(view, a, c), SMALL) * COS45 + 10),
    );
    const top = y;
    const bodyTop = top + colHeader;
    const barLabels = barLabelLines(host.segments, barWidths[h], barX, barX + BAR_WIDTH);
    const lines = Math.max(0, ...barLabels.map((l) => l.line + 1));
    const barBlock = BAR_HEIGHT + 10 + lines * 13;
    const matrixBlock = axes[h].rows.total + 18 + (a.heads[1] < plan.model.config.heads ? 16 : 0);
    const bottom = bodyTop + Math.max(barBlock, matrixBlock, 40) + 14;
    y = bottom;
    return {
      top,
      bodyTop,
      bottom,
      anchor: bodyTop + BAR_HEIGHT / 2,
      rows: axes[h].rows,
      cols: axes[h].cols,
      barLabels,
    };
  });
  return {
    width,
    height: y + 8,
    barX,
    barScale,
    matrixTitleX,
    matrixX,
    transferX,
    titleY,
    lanes,
    phases,
  };
}

function sum(xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0);
}

function axis(counts: number[], scale: number): Axis {
  const at: number[] = [];
  const size: number[] = [];
  let x = 0;
  for (const n of counts) {
    at.push(x);
    size.push(Math.max(MIN_GROUP, n * scale));
    x += size[size.length - 1];
  }
  return { at, size, total: x };
}

function segmentWidths(segments: Segment[], scale: number): number[] {
  return segments.map((s) => Math.max(MIN_SEGMENT, s.count * scale));
}

/**
 * Labels of a token bar: inside a segment when they fit, else below it on the first line where
 * they do not run into an earlier label.
 */
function barLabelLines(segments: Segment[], widths: number[], x0: number, right: number) {
  const out: Lane["barLabels"] = [];
  const ends: number[] = [];
  let x = x0;
  segments.forEach((s, i) => {
    const w = widths[i];
    const [name, range] = segmentText(s);
    const inside = textWidth(name, LABEL, true) + 8 <= w && textWidth(range, SMALL) + 8 <= w;
    if (!inside) {
      const label = s.role === "pad" ? name : `${name} ${range}`;
      // Keep the label under the bars: one that would run past their end moves left.
      const left = Math.max(x0, Math.min(x + w / 2 - 4, right - textWidth(label, SMALL)));
      let line = 0;
      while ((ends[line] ?? -Infinity) > left) line++;
      ends[line] = left + textWidth(label, SMALL) + 8;
      out.push({ x, left, line, text: label, centre: x + w / 2 });
    }
    x += w;
  });
  return out;
}

/** Greedy interval colouring: arrows whose host spans overlap (or touch) get different tracks. */
function phaseColumns(collectives: Collective[], hosts: number, x0: number): PhaseColumn[] {
  let x = x0;
  return collectives.map((c) => {
    const order = c.arrows.map((_, i) => i).sort((a, b) =>
      span(c.arrows[a])[0] - span(c.arrows[b])[0] || span(c.arrows[a])[1] - span(c.arrows[b])[1]
    );
    const trackEnds: number[] = [];
    const tracks: number[] = [];
    for (const i of order) {
      const [lo, hi] = span(c.arrows[i]);
      let t = 0;
      while ((trackEnds[t] ?? -Infinity) >= lo) t++;
      trackEnds[t] = hi;
      tracks[i] = t;
    }
    const band = hosts >= 3 && c.arrows.length === hosts * (hosts - 1);
    const width = band ? 118 : Math.max(118, trackEnds.length * TRACK + 24);
    const title = wrap(c.phase, width - 8, LABEL, true);
    const notes = [
      `${copies(c)} cop${copies(c) === 1 ? "y" : "ies"}, ${bytes(c.bytes)}`,
      ...(c.local.length ? [`incl. ${c.local.length} within a host`] : []),
      ...(c.overlapPrevious ? ["overlaps prior compute"] : []),
    ];
    const column = { name: c.phase, x, width, title, notes, tracks, band };
    x += width + 10;
    return column;
  });
}

function copies(c: Collective): number {
  return sum([...c.arrows, ...c.local].map((a) => a.transfers.length));
}

function span(a: { from: number; to: number }): [number, number] {
  return [Math.min(a.from, a.to), Math.max(a.from, a.to)];
}

function wrap(s: string, width: number, size: number, bold = false): string[] {
  const lines: string[] = [];
  for (const word of s.split(" ")) {
    const last = lines[lines.length - 1];
    if (last !== undefined && textWidth(`${last} ${word}`, size, bold) <= width) {
      lines[lines.length - 1] = `${last} ${word}`;
    } else lines.push(word);
  }
  return lines;
}

// ---------------------------------------------------------------------------------------------
// Text: numbers, ranges and labels.

/** 131072 → "131,072" (fixed format, whatever the machine's locale). */
function int(n: number): string {
  return Number.isFinite(n) ? String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ",") : "?";
}

function bytes(n: number): string {
  if (!Number.isFinite(n)) return "? B";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  const digits = u === 0 || v >= 100 ? 0 : v >= 10 ? 1 : 2;
  return `${String(Number(v.toFixed(digits)))} ${units[u]}`;
}

function range(position: number | null, count: number): string {
  if (position === null) return "no position";
  if (count <= 1) return `${int(position)}`;
  return `${int(position)}–${int(position + count - 1)}`;
}

function segmentText(s: Segment): [string, string] {
  const position = s.position === "zero" ? null : s.position;
  return [
    `${s.name} (${int(s.count)})`,
    position === null ? "padding" : `pos ${range(position, s.count)}`,
  ];
}

function rowLabel(a: HostAttention, r: RowGroup, empty: boolean): string {
  const owner = r.owner === a.host ? "" : `host ${r.owner} `;
  const where = r.position === null ? "" : ` ${range(r.position, r.count)}`;
  return `${owner}${r.segment}${where}${empty ? " (zeros)" : ""}`;
}

function colLabel(view: LayerView, a: HostAttention, c: ColGroup): string {
  const base = c.source === "passing"
    ? `passing from host ${c.host}, ${int(c.count)} rows`
    : `${c.host === a.host ? "" : `host ${c.host} `}${c.segment} ${range(c.position, c.count)}`;
  if (c.steps.length === 0) return `${base} · all masked`;
  return view.steps > 1 ? `${base} · step ${c.steps.join(",")}` : base;
}

function caption(plan: Plan, a: HostAttention): string {
  const heads = plan.model.config.heads;
  const q = sum(a.rows.map((r) => r.count));
  const k = sum(a.cols.map((c) => c.count));
  const which = a.heads[1] < heads
    ? `heads ${a.heads[0]}–${a.heads[0] + a.heads[1] - 1} of ${heads}`
    : `all ${heads} heads`;
  return `${int(q)} query rows × ${int(k)} keys, ${which}`;
}

function roleColour(role: string): string {
  return ROLE_COLOURS[role] ?? OTHER_ROLE;
}

/** `hex` mixed with white: keys that live on another host. */
function tint(hex: string, amount: number): string {
  const v = parseInt(hex.slice(1), 16);
  const mix = (c: number) => Math.round(c + (255 - c) * amount).toString(16).padStart(2, "0");
  return `#${mix(v >> 16)}${mix((v >> 8) & 255)}${mix(v & 255)}`;
}

function colColour(a: HostAttention, c: ColGroup): string {
  if (c.source === "passing") return ROLE_COLOURS.passing;
  const base = roleColour(c.role);
  return c.host === a.host ? base : tint(base, 0.5);
}

// ---------------------------------------------------------------------------------------------
// Title, legend, footnote.

function header(plan: Plan, view: LayerView, width: number) {
  const s = plan.shape;
  const c = plan.model.config;
  const params = Object.entries(plan.strategy.params)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`);
  const hosts = plan.hosts.length;
  const lines = [
    `${c.layers} layers, ${c.heads} query heads over ${c.kvHeads} KV heads, head dim ${c.headDim}; ` +
    `weights ${plan.storage.weights}, KV ${plan.storage.kv}`,
    `strategy parameters: ${params.length ? params.join(", ") : "defaults"}; communication: ` +
    `${plan.strategy.communication.pattern}${
      plan.strategy.communication.overlapSteps ? " (overlapped)" : ""
    }; ${view.steps} attention step${view.steps === 1 ? "" : "s"} per layer`,
  ];
  const markup = [
    text(
      PAD,
      PAD + 14,
      `${plan.model.name} · ${plan.strategy.name} on ${hosts} host${hosts === 1 ? "" : "s"} · ` +
        `${int(s.contextTokens)} context + ${int(s.queryTokens)} query tokens`,
      { "font-size": 18, "font-weight": "bold" },
    ),
    ...lines.flatMap((line, i) =>
      wrapLine(line, width - 2 * PAD, 12).map((l, j, all) =>
        text(PAD, PAD + 36 + (i * all.length + j) * 16, l, { "font-size": 12, fill: "#444444" })
      )
    ),
  ];
  return { markup, height: PAD + 36 + lines.length * 16 + 6 };
}

function wrapLine(s: string, width: number, size: number): string[] {
  return textWidth(s, size) <= width ? [s] : wrap(s, width, size);
}

function legend(plan: Plan, view: LayerView, width: number, y0: number) {
  const roles = new Set<string>(plan.hosts.flatMap((h) => h.segments.map((s) => s.role)));
  const passing = view.attention.some((a) => a.cols.some((c) => c.source === "passing"));
  const remote = view.attention.some((a) =>
    a.cols.some((c) => c.source === "cache" && c.host !== a.host)
  );
  const embedded = plan.hosts.some((h) => h.segments.some((s) => s.source.kind === "anchor")) &&
    plan.shape.queryTokens > 0;
  const items: { icon: string; label: string; width: number }[] = [];
  const add = (icon: (x: number, y: number) => string, label: string, iconWidth = 14) =>
    items.push({
      icon: icon(0, 0),
      label,
      width: iconWidth + 6 + textWidth(label, LABEL) + 18,
    });
  const swatch = (fill: string) => (x: number, y: number) =>
    el("rect", { x, y: y - 9, width: 14, height: 11, fill, rx: 1.5 });
  for (const role of ["anchor", "block", "query", "pad"]) {
    if (roles.has(role)) add(swatch(roleColour(role)), role === "pad" ? "padding" : role);
  }
  for (const role of [...roles].filter((r) => !(r in ROLE_COLOURS)).sort()) {
    add(swatch(OTHER_ROLE), role);
  }
  if (passing) add(swatch(ROLE_COLOURS.passing), "passing rows (top-k of another host)");
  if (remote) add(swatch(tint(roleColour("block"), 0.5)), "keys of another host (lighter)");
  if (embedded) {
    add(
      (x, y) =>
        el("rect", { x, y: y - 9, width: 14, height: 11, fill: roleColour("anchor") }) +
        el("rect", { x: x + 3, y: y - 9, width: 5, height: 4, fill: roleColour("query") }),
      "query embedded in the anchor",
    );
  }
  add(
    (x, y) =>
      el("rect", { x, y: y - 9, width: 14, height: 8, fill: roleColour("block") }) +
      el("rect", { x, y: y + 1, width: 14, height: 3, fill: INK }),
    "kept as KV cache after prefill",
  );
  add(swatch(roleColour("block")), "mask: full");
  add(
    (x, y) =>
      el("rect", { x, y: y - 9, width: 14, height: 11, fill: MASKED }) +
      el("path", {
        d: `M${x},${y - 9}L${x},${y + 2}L${x + 14},${y + 2}z`,
        fill: roleColour("block"),
      }),
    "causal",
  );
  add(swatch(MASKED), "masked out");
  const kinds = new Set(view.collectives.flatMap((c) => c.arrows.map((a) => a.carries)));
  // "other" and "mixed" share a colour, so they share one entry.
  const dark = kinds.has("other") && kinds.has("mixed")
    ? "queries, results, or queries with K/V"
    : kinds.has("mixed")
    ? "queries with K/V"
    : "queries or results";
  if (kinds.has("mixed")) kinds.add("other");
  const arrowLabels: [Arrow["carries"], string][] = [
    ["keys", "transfer of cached K/V rows"],
    ["passing", "transfer of passing rows"],
    ["other", `transfer of ${dark}`],
  ];
  for (const [kind, label] of arrowLabels) {
    if (!kinds.has(kind)) continue;
    add(
      (x, y) =>
        el("line", {
          x1: x,
          y1: y - 3,
          x2: x + 20,
          y2: y - 3,
          stroke: ARROW_COLOURS[kind],
          "stroke-width": 1.8,
          "marker-end": `url(#${markerId(kind)})`,
        }),
      `${label} (bytes)`,
      22,
    );
  }
  const markup: string[] = [];
  let x = PAD;
  let line = 0;
  for (const item of items) {
    if (x + item.width > width - PAD && x > PAD) {
      x = PAD;
      line++;
    }
    const y = y0 + 14 + line * 18;
    markup.push(
      el("g", { transform: `translate(${Math.round(x)} ${Math.round(y)})` }, item.icon),
      text(x + item.width - textWidth(item.label, LABEL) - 18, y, item.label),
    );
    x += item.width;
  }
  return { markup, height: 14 + (line + 1) * 18 + 4 };
}

const footnoteHeight = 30;

function footnote(plan: Plan, y: number): string[] {
  const n = plan.programs.prefill.phases.length;
  return [
    text(
      PAD,
      y + 12,
      `Prefill of layer 0 shown; every layer runs the same attention and transfers ` +
        `(${n} prefill phase${n === 1 ? "" : "s"} in all). Decoding is not drawn: ` +
        `each host attends to its kept cache and results merge by log-sum-exp.`,
      { "font-size": SMALL, fill: MUTED },
    ),
  ];
}

// ---------------------------------------------------------------------------------------------
// The body: lanes, token bars, matrices, transfers.

function laneBand(plan: Plan, g: Geometry, h: number): string[] {
  const lane = g.lanes[h];
  return [
    el("rect", {
      x: 8,
      y: lane.top,
      width: g.width - 16,
      height: lane.bottom - lane.top,
      fill: h % 2 === 0 ? LANE_SHADE : "#ffffff",
    }),
    text(PAD, lane.anchor - 2, `host ${h}`, { "font-size": 14, "font-weight": "bold" }),
    text(PAD, lane.anchor + 13, `${int(plan.hosts[h].rows)} rows`, {
      "font-size": LABEL,
      fill: MUTED,
    }),
  ];
}

function sectionTitles(g: Geometry): string[] {
  const y = g.titleY + 12;
  const title = (x: number, main: string, sub: string) => [
    text(x, y, main, { "font-size": 13, "font-weight": "bold" }),
    text(x, y + 14, sub, { "font-size": SMALL, fill: MUTED }),
  ];
  return [
    ...title(g.barX, "Token layout", "local rows in order; width ∝ rows (numbers say how many)"),
    ...title(
      g.matrixTitleX,
      "Attention",
      "query rows × key sources; colour = where keys come from",
    ),
    ...title(g.transferX, "Transfers of layer 0", TRANSFER_NOTE),
    ...g.phases.map((p) =>
      el("g", { class: "phase", "data-phase": p.name }, [
        ...p.title.map((line, i) =>
          text(p.x, y + 34 + i * 12, line, { "font-size": LABEL, "font-weight": "bold" })
        ),
        ...p.notes.map((line, i) =>
          text(p.x, y + 34 + (p.title.length + i) * 12, line, { "font-size": SMALL, fill: MUTED })
        ),
      ])
    ),
  ];
}

function tokenBar(plan: Plan, g: Geometry, h: number): string[] {
  const host = plan.hosts[h];
  const lane = g.lanes[h];
  const widths = segmentWidths(host.segments, g.barScale);
  const out: string[] = [];
  let x = g.barX;
  const y = lane.bodyTop;
  host.segments.forEach((s, i) => {
    const w = widths[i];
    const [name, where] = segmentText(s);
    const fill = roleColour(s.role);
    out.push(
      el(
        "rect",
        { x, y, width: w, height: BAR_HEIGHT, fill, stroke: "#ffffff", "stroke-width": 1 },
        [
          tooltip(`host ${h} ${name}, ${where}${s.keep ? ", kept" : ""}`),
        ],
      ),
    );
    if (s.source.kind === "anchor" && plan.shape.queryTokens > 0) {
      // The query sits inside the anchor at its offset: a band over those rows.
      const scale = w / Math.max(1, s.count);
      out.push(el("rect", {
        x: x + s.source.queryOffset * scale,
        y,
        width: Math.max(2, Math.min(plan.shape.queryTokens, s.count) * scale),
        height: 6,
        fill: roleColour("query"),
      }));
    }
    if (s.keep) out.push(el("rect", { x, y: y + BAR_HEIGHT + 2, width: w, height: 4, fill: INK }));
    if (!lane.barLabels.some((l) => l.x === x)) {
      const textFill = s.role === "pad" || s.role === "query" ? INK : "#ffffff";
      out.push(
        text(x + 4, y + 14, name, { "font-weight": "bold", fill: textFill }),
        text(x + 4, y + 26, where, { "font-size": SMALL, fill: textFill }),
      );
    }
    x += w;
  });
  for (const l of lane.barLabels) {
    const ly = y + BAR_HEIGHT + 18 + l.line * 13;
    out.push(
      el("line", {
        x1: l.centre,
        y1: y + BAR_HEIGHT + 6,
        x2: l.centre,
        y2: ly - 8,
        stroke: MUTED,
        "stroke-width": 0.8,
      }),
      text(l.left, ly, l.text, { "font-size": SMALL }),
    );
  }
  return out;
}

function matrix(plan: Plan, view: LayerView, g: Geometry, a: HostAttention): string[] {
  const lane = g.lanes[a.host];
  const x0 = g.matrixX;
  const y0 = lane.bodyTop;
  const { rows, cols } = lane;
  const out: string[] = [];
  // Masked background, then the attending blocks, then white group separators on top.
  rows.at.forEach((ry, r) =>
    cols.at.forEach((cx, c) =>
      out.push(el("rect", {
        x: x0 + cx,
        y: y0 + ry,
        width: cols.size[c],
        height: rows.size[r],
        fill: MASKED,
      }))
    )
  );
  for (const b of a.blocks) out.push(maskBlock(a, b, x0, y0, rows, cols));
  for (const cx of cols.at.slice(1)) {
    out.push(el("line", {
      x1: x0 + cx,
      y1: y0,
      x2: x0 + cx,
      y2: y0 + rows.total,
      stroke: "#ffffff",
      "stroke-width": 1.5,
    }));
  }
  for (const ry of rows.at.slice(1)) {
    out.push(el("line", {
      x1: x0,
      y1: y0 + ry,
      x2: x0 + cols.total,
      y2: y0 + ry,
      stroke: "#ffffff",
      "stroke-width": 1.5,
    }));
  }
  out.push(el("rect", {
    x: x0,
    y: y0,
    width: cols.total,
    height: rows.total,
    fill: "none",
    stroke: "#999999",
    "stroke-width": 0.8,
  }));
  a.rows.forEach((r, i) =>
    out.push(
      text(x0 - 6, y0 + rows.at[i] + rows.size[i] / 2 + 3.5, rowLabel(a, r, a.empty.includes(i)), {
        "text-anchor": "end",
        fill: r.role === "pad" ? MUTED : INK,
      }),
    )
  );
  a.cols.forEach((c, i) => {
    const x = x0 + cols.at[i] + cols.size[i] / 2;
    const y = y0 - 5;
    out.push(
      el("rect", {
        x: x0 + cols.at[i],
        y: y - 2,
        width: cols.size[i],
        height: 3,
        fill: colColour(a, c),
      }),
      text(x - 2, y - 4, colLabel(view, a, c), {
        "font-size": SMALL,
        transform: `rotate(-45 ${Math.round((x - 2) * 10) / 10} ${Math.round((y - 4) * 10) / 10})`,
      }),
    );
  });
  const below = y0 + rows.total + 13;
  out.push(text(x0, below, caption(plan, a), { "font-size": SMALL, fill: MUTED }));
  const heads = plan.model.config.heads;
  if (a.heads[1] < heads) {
    // Which heads this host computes, one square per query head.
    const side = Math.min(9, Math.max(3, 200 / heads - 1));
    for (let i = 0; i < heads; i++) {
      const mine = i >= a.heads[0] && i < a.heads[0] + a.heads[1];
      out.push(el("rect", {
        x: x0 + i * (side + 1),
        y: below + 4,
        width: side,
        height: side,
        fill: mine ? INK : "#ffffff",
        stroke: MUTED,
        "stroke-width": 0.6,
      }));
    }
  }
  return out;
}

/** One attending block: a rectangle, or for a causal mask the rectangle cut along its diagonal. */
function maskBlock(a: HostAttention, b: MaskBlock, x0: number, y0: number, rows: Axis, cols: Axis) {
  const rg = a.rows[b.row];
  const cg = a.cols[b.col];
  const sx = cols.size[b.col] / Math.max(1, cg.count);
  const sy = rows.size[b.row] / Math.max(1, rg.count);
  const px = (c: number) => x0 + cols.at[b.col] + c * sx;
  const py = (r: number) => y0 + rows.at[b.row] + r * sy;
  const fill = colColour(a, cg);
  const tip = tooltip(
    `${rowLabel(a, rg, false)} × ${cg.source === "passing" ? "passing" : cg.segment} of host ` +
      `${cg.host}: ${b.mask}${
        b.mask === "causal" ? ` (key ≤ row + ${b.diag})` : ""
      }, step ${b.step}`,
  );
  const [r0, r1] = b.rows;
  const [c0, c1] = b.cols;
  if (b.mask === "full") {
    return el("rect", {
      x: px(c0),
      y: py(r0),
      width: px(c1) - px(c0),
      height: py(r1) - py(r0),
      fill,
    }, tip);
  }
  // Cell (r, c) attends when c ≤ r + diag; the boundary through the cells' centres is
  // x = y + diag + 0.5 (x: column, y: row, both continuous).
  const inside = (p: [number, number]) => p[1] + b.diag + 0.5 - p[0];
  const corners: [number, number][] = [[c0, r0], [c1, r0], [c1, r1], [c0, r1]];
  const poly: [number, number][] = [];
  corners.forEach((p, i) => {
    const q = corners[(i + 1) % 4];
    const fp = inside(p);
    const fq = inside(q);
    if (fp >= 0) poly.push(p);
    if ((fp >= 0) !== (fq >= 0)) {
      const t = fp / (fp - fq);
      poly.push([p[0] + (q[0] - p[0]) * t, p[1] + (q[1] - p[1]) * t]);
    }
  });
  const d = poly.map(([c, r], i) => `${i ? "L" : "M"}${round(px(c))},${round(py(r))}`).join("") +
    "z";
  return el("path", { d, fill }, tip);
}

function round(n: number): number {
  return Math.round(n * 10) / 10;
}

function transfers(view: LayerView, g: Geometry): string[] {
  const lanes = g.lanes;
  const out: string[] = [];
  for (const [h, lane] of lanes.entries()) {
    out.push(
      el("line", {
        x1: g.transferX,
        y1: lane.anchor,
        x2: g.width - PAD,
        y2: lane.anchor,
        stroke: "#bbbbbb",
        "stroke-dasharray": "3 3",
      }),
      text(g.transferX, lane.anchor - 4, `host ${h}`, { "font-size": SMALL, fill: MUTED }),
    );
  }
  if (view.collectives.length === 0) {
    out.push(
      text(g.transferX, g.titleY + 46, "none: hosts exchange nothing in prefill", {
        "font-size": LABEL,
        "font-weight": "bold",
      }),
    );
  }
  view.collectives.forEach((c, p) => {
    const column = g.phases[p];
    if (column.band) {
      out.push(...band(c, column, lanes));
      return;
    }
    c.arrows.forEach((arrow, i) => {
      const x = column.x + 8 + column.tracks[i] * TRACK;
      const y1 = lanes[arrow.from].anchor;
      const y2 = lanes[arrow.to].anchor;
      const dir = Math.sign(y2 - y1);
      const labels = arrow.transfers.map((t) => `${t.label} (${t.rows} × ${t.cols} ${t.elem})`);
      const ink = ARROW_COLOURS[arrow.carries];
      out.push(
        el("g", {}, [
          tooltip(`host ${arrow.from} → host ${arrow.to}: ${labels.join("; ")}`),
          el("circle", { cx: x, cy: y1, r: 3, fill: ink }),
          el("line", {
            x1: x,
            y1,
            x2: x,
            y2: y2 - dir * 2,
            stroke: ink,
            "stroke-width": 1.8,
            "marker-end": `url(#${markerId(arrow.carries)})`,
          }),
          text(x + 11, (y1 + y2) / 2, bytes(arrow.bytes), {
            "font-size": SMALL,
            "text-anchor": "middle",
            transform: `rotate(-90 ${round(x + 11)} ${round((y1 + y2) / 2)})`,
          }),
        ]),
      );
    });
  });
  return out;
}

/** An all-to-all as one band over every lane, with the bytes each ordered pair moves. */
function band(c: Collective, column: PhaseColumn, lanes: Lane[]): string[] {
  const x = column.x + 8;
  const top = lanes[0].anchor;
  const bottom = lanes[lanes.length - 1].anchor;
  const sizes = c.arrows.map((a) => a.bytes);
  const [lo, hi] = [Math.min(...sizes), Math.max(...sizes)];
  const each = lo === hi ? bytes(lo) : `${bytes(lo)}–${bytes(hi)}`;
  const label = `all-to-all: every host → every other, ${each} per pair`;
  const mid = (top + bottom) / 2;
  return [
    el("rect", {
      x,
      y: top - 8,
      width: 26,
      height: bottom - top + 16,
      rx: 6,
      fill: "#dde3ea",
      stroke: "#333333",
      "stroke-width": 1.2,
    }, tooltip(`${c.phase}: ${c.arrows.length} host pairs, ${each} each`)),
    ...lanes.flatMap((lane) => [
      el("line", {
        x1: x - 6,
        y1: lane.anchor,
        x2: x + 32,
        y2: lane.anchor,
        stroke: "#333333",
        "stroke-width": 1.6,
        "marker-start": `url(#${markerId("other")})`,
        "marker-end": `url(#${markerId("other")})`,
      }),
    ]),
    text(x + 17, mid, label, {
      "font-size": SMALL,
      "text-anchor": "middle",
      transform: `rotate(-90 ${round(x + 17)} ${round(mid)})`,
    }),
  ];
}
