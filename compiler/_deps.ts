// The one place that names platform modules (node: built-ins and npm packages), so that switching
// to Deno std once JSR is reachable is a one-file change.

export { parseArgs, styleText } from "node:util";
export * as path from "node:path";
export { default as assert } from "node:assert/strict";
