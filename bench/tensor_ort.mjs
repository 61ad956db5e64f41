// ONNX Runtime (the npm package onnxruntime-node), one intra-op thread, measured as
// bench/tensor_bench.cpp measures Runnel: rows/s at batch 1, 16 and 256 over random
// rows, each size for at least a second. Prints "onnxruntime <model> batch=<b>
// <rows/s>". Usage: node tensor_ort.mjs MODEL.onnx:D1xD2... (the dimensions of one
// row of the model's one input), with onnxruntime-node resolvable.
import { createRequire } from "module";
import { basename } from "path";
const require = createRequire(process.cwd() + "/");
const ort = require("onnxruntime-node");

for (const arg of process.argv.slice(2)) {
  const [file, dims] = arg.split(":");
  const row = dims.split("x").map(Number);
  const width = row.reduce((a, b) => a * b, 1);
  const rows = 512;
  const input = Float32Array.from({ length: rows * width }, () => Math.random() * 2 - 1);
  const session = await ort.InferenceSession.create(file, {
    intraOpNumThreads: 1, interOpNumThreads: 1, executionMode: "sequential", graphOptimizationLevel: "all",
  });
  const name = basename(file, ".onnx");
  for (const batch of [1, 16, 256]) {
    let done = 0, at = 0, seconds = 0;
    const start = process.hrtime.bigint();
    while (seconds < 1.0) {
      if (at + batch > rows) at = 0;
      const x = new ort.Tensor("float32", input.subarray(at * width, (at + batch) * width), [batch, ...row]);
      await session.run({ [session.inputNames[0]]: x });
      at += batch;
      done += batch;
      seconds = Number(process.hrtime.bigint() - start) / 1e9;
    }
    console.log(`onnxruntime ${name} batch=${batch} ${Math.round(done / seconds)}`);
  }
}
