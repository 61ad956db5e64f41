// ONNX Runtime (the npm package onnxruntime-node), one intra-op thread, on the bench
// forest, measured as bench/trees_bench.cpp measures Runnel: rows/s at batch 1, 16 and
// 256 over input.csv in turn, each size for at least a second. Prints
// "onnxruntime rf500 batch=<b> <rows/s>". Usage: node trees_ort.mjs DIR (with
// onnxruntime-node resolvable, e.g. NODE_PATH=.../node_modules).
import { createRequire } from "module";
import { readFileSync } from "fs";
const require = createRequire(process.cwd() + "/");
const ort = require("onnxruntime-node");

const dir = process.argv[2];
const lines = readFileSync(dir + "/input.csv", "utf8").trim().split("\n");
const width = lines[0].split(",").length;
const input = Float32Array.from(lines.flatMap((l) => l.split(",").map(Number)));
const rows = input.length / width;
const session = await ort.InferenceSession.create(dir + "/rf500.onnx", {
  intraOpNumThreads: 1, interOpNumThreads: 1, executionMode: "sequential", graphOptimizationLevel: "all",
});
for (const batch of [1, 16, 256]) {
  let done = 0, at = 0;
  const start = process.hrtime.bigint();
  let seconds = 0;
  while (seconds < 1.0) {
    for (let k = 0; k < 64; ++k) {
      if (at + batch > rows) at = 0;
      const x = new ort.Tensor("float32", input.subarray(at * width, (at + batch) * width), [batch, width]);
      await session.run({ X: x });
      at += batch;
      done += batch;
    }
    seconds = Number(process.hrtime.bigint() - start) / 1e9;
  }
  console.log(`onnxruntime rf500 batch=${batch} ${Math.round(done / seconds)}`);
}
