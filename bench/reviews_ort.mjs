// ONNX Runtime (onnxruntime-node, one intra-op thread) on the reviews transformer: the
// reviews' token ids (reviews_ids.json, by the Python tokenizer: ORT has none) padded
// per batch with an attention mask, at batch 1 and 32, each for at least a second.
// Prints "onnxruntime reviews batch=<b> <texts/s>". Usage: node reviews_ort.mjs DIR
import fs from 'node:fs';
import { createRequire } from 'node:module';
const require = createRequire(process.cwd() + '/');  // run from the directory holding node_modules
const ort = require('onnxruntime-node');

const dir = process.argv[2];
const ids = JSON.parse(fs.readFileSync(`${dir}/reviews_ids.json`, 'utf8'));
const session = await ort.InferenceSession.create(`${dir}/reviews_model.onnx`,
                                                  {intraOpNumThreads: 1, interOpNumThreads: 1});
const PAD = 1;  // <pad>

function feeds(rows) {
  const seq = Math.max(...rows.map((r) => r.length));
  const input = new BigInt64Array(rows.length * seq).fill(BigInt(PAD));
  const mask = new BigInt64Array(rows.length * seq);
  rows.forEach((r, i) => r.forEach((id, j) => { input[i * seq + j] = BigInt(id); mask[i * seq + j] = 1n; }));
  return {input_ids: new ort.Tensor('int64', input, [rows.length, seq]),
          attention_mask: new ort.Tensor('int64', mask, [rows.length, seq])};
}

for (const batch of [1, 32]) {
  let done = 0, at = 0;
  const start = process.hrtime.bigint();
  let seconds = 0;
  while (seconds < 1.0) {
    if (at + batch > ids.length) at = 0;
    await session.run(feeds(ids.slice(at, at + batch)));
    at += batch;
    done += batch;
    seconds = Number(process.hrtime.bigint() - start) / 1e9;
  }
  console.log(`onnxruntime reviews batch=${batch} ${(done / seconds).toFixed(0)}`);
}
