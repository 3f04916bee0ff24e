// The one place that names platform modules (node: built-ins), so that switching to Deno std
// once JSR is reachable is a one-file change.

import * as path from "node:path";

export { parseArgs, styleText } from "node:util";
export { pathToFileURL } from "node:url";
export { path };
export { default as assert } from "node:assert/strict";
