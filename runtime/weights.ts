// A plan's weights from a Hugging Face checkpoint. Plan weights carry Hugging Face names, so a weight
// is looked up by its name, checked against the plan's shape, and read (streaming, in the plan's
// storage type) with NaN/Inf refused: a damaged or mismatched download then fails with the tensor and
// file named, before it can surface as wrong logits. APB's retaining heads come from their own
// checkpoint, or are seeded when none is given.

import type { WeightDecl } from "../compiler/plan.ts";
import type { StorageType } from "../wgsl/kernel.ts";
import { CheckpointError, type RetainingHeads, type TensorStore } from "./checkpoint.ts";
import type { WeightSource } from "./executor.ts";

/** Options of {@linkcode checkpointWeights}. */
export interface CheckpointWeightsOptions {
  /** Seed of the weights no checkpoint provides (retaining heads when none are given; default 0). */
  seed?: number;
  /** APB retaining heads ({@linkcode openRetainingHeads}); without them those weights are seeded. */
  retainingHeads?: RetainingHeads;
  /** Where the one note about seeded retaining heads goes (default: stderr). */
  warn?: (message: string) => void;
}

/** A {@linkcode WeightSource} reading a checkpoint, which can also check a plan's weights up front. */
export interface CheckpointWeightSource extends WeightSource {
  /**
   * Checks that every weight in `weights` exists with the plan's shape (headers only, nothing is
   * read); throws the {@linkcode CheckpointError} of the first that does not. Returns the model
   * checkpoint's tensors that no weight uses, which points at a model that does not fit the
   * checkpoint (biases the model lacks, say).
   */
  check(weights: readonly WeightDecl[]): { unused: string[] };
}

const RETAINING_WEIGHT = /(?:^|\.)layers\.(\d+)\.self_attn\.(fc[12])\.weight$/;

/**
 * The weights of `checkpoint` (an {@linkcode openCheckpoint} result) as a {@linkcode WeightSource}:
 * `load` reads the plan weight of the same name converted to the storage type. Retaining-head
 * weights (`source: "retaining"`) come from `options.retainingHeads`, or are seeded (noted once).
 */
export function checkpointWeights(
  checkpoint: TensorStore,
  options: CheckpointWeightsOptions = {},
): CheckpointWeightSource {
  const heads = options.retainingHeads;
  const warn = options.warn ?? ((message: string) => console.error(message));
  let notedSeeded = false;

  /** The store and tensor name holding `w`, or null when it is to be seeded. */
  const locate = (w: WeightDecl): { store: TensorStore; name: string } | null => {
    if (w.source === "model") return { store: checkpoint, name: w.name };
    if (!heads) return null;
    const match = RETAINING_WEIGHT.exec(w.name);
    if (!match) {
      throw new CheckpointError(
        `plan weight ${w.name} is marked as a retaining-head weight but is not named ` +
          `model.layers.{i}.self_attn.fc1/fc2.weight`,
      );
    }
    const layer = Number(match[1]);
    return { store: heads, name: match[2] === "fc1" ? heads.fc1(layer) : heads.fc2(layer) };
  };

  /** Checks `w` against the tensor at `at` (the messages name tensor, file and both shapes). */
  const expect = (w: WeightDecl, at: { store: TensorStore; name: string }): void => {
    if (!at.store.has(at.name)) {
      throw new CheckpointError(
        `${at.name} is missing from the checkpoint at ${at.store.location} (searched ` +
          `${filesOf(at.store).join(", ")}); the model needs it with shape ${showShape(w.shape)}`,
      );
    }
    at.store.expect(at.name, w.shape);
  };

  return {
    seed: options.seed ?? 0,
    check(weights) {
      const used = new Set<string>();
      for (const w of weights) {
        const at = locate(w);
        if (!at) continue;
        expect(w, at);
        if (at.store === checkpoint) used.add(at.name);
      }
      return { unused: checkpoint.names().filter((n) => !used.has(n)) };
    },
    async load(w: WeightDecl, storage: StorageType) {
      const at = locate(w);
      if (!at) {
        if (!notedSeeded) {
          notedSeeded = true;
          warn(
            "note: no retaining heads were given, so APB's retaining-head weights are seeded " +
              "random values: the passing blocks are not the trained selection",
          );
        }
        return null;
      }
      expect(w, at);
      const values = await at.store.read(at.name, {
        as: storage,
        requireFinite: true,
        ...(w.rows ? { rows: w.rows } : {}),
      });
      return new Uint8Array(values.buffer as ArrayBuffer);
    },
  };
}

/** The file names a store's tensors live in, in order. */
function filesOf(store: TensorStore): string[] {
  const files = [...new Set(store.names().map((n) => store.info(n).file))];
  return files.length ? files : ["no files"];
}

function showShape(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}
