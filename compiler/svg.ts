// SVG written as text: escaped content, attributes in the order given, coordinates rounded, and a
// text-width estimate for layout. No DOM and no font files are needed, and the same input gives
// the same bytes, so a drawing can be diffed and tested like any other intermediate value.

/** Attribute values; undefined attributes are left out. */
export type Attrs = Record<string, string | number | undefined>;

/** `s` safe as XML text or attribute value: markup escaped, characters XML forbids dropped. */
export function escapeXml(s: string): string {
  let out = "";
  for (const ch of s) {
    const code = ch.codePointAt(0)!;
    // XML 1.0 allows tab, newline and carriage return below 0x20, and nothing at U+FFFE/U+FFFF.
    if ((code < 0x20 && code !== 0x9 && code !== 0xa && code !== 0xd) || code === 0xfffe) continue;
    if (code === 0xffff || (code >= 0xd800 && code <= 0xdfff)) continue;
    out += ch === "&"
      ? "&amp;"
      : ch === "<"
      ? "&lt;"
      : ch === ">"
      ? "&gt;"
      : ch === '"'
      ? "&quot;"
      : ch === "'"
      ? "&#39;"
      : ch;
  }
  return out;
}

/** A number as an attribute: at most one decimal, so output is short and stable. */
export function coord(n: number): string {
  const r = Math.round(n * 10) / 10;
  return Object.is(r, -0) ? "0" : String(r);
}

/** An element; `children` are already-built markup (use {@linkcode text} for content). */
export function el(name: string, attrs: Attrs = {}, children: string | string[] = ""): string {
  const list = Object.entries(attrs)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => ` ${k}="${typeof v === "number" ? coord(v) : escapeXml(v!)}"`)
    .join("");
  const inner = Array.isArray(children) ? children.join("") : children;
  return inner === "" ? `<${name}${list}/>` : `<${name}${list}>${inner}</${name}>`;
}

/** A `<text>` element with escaped content. */
export function text(x: number, y: number, content: string, attrs: Attrs = {}): string {
  return el("text", { x, y, ...attrs }, escapeXml(content));
}

/** A `<title>` child: the tooltip a browser shows on hover. */
export function tooltip(content: string): string {
  return el("title", {}, escapeXml(content));
}

/**
 * Rough width of `s` in pixels at font size `size` in a DejaVu/Verdana-like sans font: enough to
 * decide whether a label fits and how far a rotated label reaches, not to typeset.
 */
export function textWidth(s: string, size: number, bold = false): number {
  let units = 0;
  for (const ch of s) {
    units += /[il.,:;'|!·]/.test(ch)
      ? 0.3
      : /[ ()[\]\-–]/.test(ch)
      ? 0.38
      : /[mwMW@]/.test(ch)
      ? 0.9
      : /[A-Z0-9]/.test(ch)
      ? 0.66
      : 0.58;
  }
  return units * size * (bold ? 1.08 : 1);
}
