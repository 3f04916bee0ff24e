// A strict little XML reader for tests: it throws on unbalanced or misnested tags, unquoted or
// repeated attributes, a raw "<" or a bad "&" in text, and anything after the root. Enough to
// hold generated SVG to well-formedness without a DOM or a package.

/** An element with its attributes and children; `text` is its own character data, decoded. */
export interface XmlElement {
  /** Tag name. */
  name: string;
  /** Attributes, values decoded. */
  attrs: Record<string, string>;
  /** Child elements in order. */
  children: XmlElement[];
  /** Character data directly inside it (not its children's), decoded. */
  text: string;
}

const NAME = /^[A-Za-z_:][\w.:-]*/;
const ENTITIES: Record<string, string> = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'" };

/** Parses `src`, returning the root element; throws with the offset of the first problem. */
export function parseXml(src: string): XmlElement {
  let i = 0;
  const fail = (why: string): never => {
    throw new Error(`XML at ${i}: ${why} near ${JSON.stringify(src.slice(i, i + 40))}`);
  };
  const skipMisc = () => {
    for (;;) {
      while (/\s/.test(src[i] ?? "")) i++;
      if (src.startsWith("<?", i)) {
        const end = src.indexOf("?>", i);
        if (end < 0) fail("unterminated declaration");
        i = end + 2;
      } else if (src.startsWith("<!--", i)) {
        const end = src.indexOf("-->", i);
        if (end < 0) fail("unterminated comment");
        i = end + 3;
      } else return;
    }
  };
  const decode = (raw: string): string =>
    raw.replace(/&([^;]*);?/g, (all, body: string) => {
      if (!all.endsWith(";")) fail(`"&" without ";"`);
      if (body in ENTITIES) return ENTITIES[body];
      const m = /^#(x[0-9a-fA-F]+|\d+)$/.exec(body);
      if (!m) return fail(`unknown entity &${body};`);
      return String.fromCodePoint(m[1][0] === "x" ? parseInt(m[1].slice(1), 16) : Number(m[1]));
    });
  const element = (): XmlElement => {
    if (src[i] !== "<") fail("expected <");
    i++;
    const name = NAME.exec(src.slice(i))?.[0] ?? fail("bad tag name");
    i += name.length;
    const attrs: Record<string, string> = {};
    for (;;) {
      const space = /^\s*/.exec(src.slice(i))![0].length;
      i += space;
      if (src.startsWith("/>", i)) {
        i += 2;
        return { name, attrs, children: [], text: "" };
      }
      if (src[i] === ">") {
        i++;
        break;
      }
      if (!space) fail("attributes need white space between them");
      const key = NAME.exec(src.slice(i))?.[0] ?? fail("bad attribute name");
      i += key.length;
      if (src[i] !== "=") fail(`attribute ${key} has no value`);
      const quote = src[++i];
      if (quote !== '"' && quote !== "'") fail(`attribute ${key} is not quoted`);
      const end = src.indexOf(quote, i + 1);
      if (end < 0) fail("unterminated attribute");
      const raw = src.slice(i + 1, end);
      if (raw.includes("<")) fail(`"<" in attribute ${key}`);
      if (key in attrs) fail(`attribute ${key} repeated`);
      attrs[key] = decode(raw);
      i = end + 1;
    }
    const children: XmlElement[] = [];
    let text = "";
    for (;;) {
      const next = src.indexOf("<", i);
      if (next < 0) fail(`<${name}> is never closed`);
      text += decode(src.slice(i, next));
      i = next;
      if (src.startsWith("</", i)) {
        i += 2;
        const close = NAME.exec(src.slice(i))?.[0];
        if (close !== name) fail(`</${close}> closes <${name}>`);
        i += name.length;
        while (/\s/.test(src[i] ?? "")) i++;
        if (src[i++] !== ">") fail("bad closing tag");
        return { name, attrs, children, text };
      }
      if (src.startsWith("<!--", i)) {
        const end = src.indexOf("-->", i);
        if (end < 0) fail("unterminated comment");
        i = end + 3;
        continue;
      }
      children.push(element());
    }
  };
  skipMisc();
  const root = element();
  skipMisc();
  if (i !== src.length) fail("content after the root element");
  return root;
}

/** Every element of the tree, depth first, the root included. */
export function allElements(root: XmlElement): XmlElement[] {
  return [root, ...root.children.flatMap(allElements)];
}

/** All character data of an element and its descendants (its own first, then each child's). */
export function textContent(e: XmlElement): string {
  return e.text + e.children.map(textContent).join("");
}
