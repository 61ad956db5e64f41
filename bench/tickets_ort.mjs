// ONNX Runtime (onnxruntime-node, one intra-op thread) on the ticket model: the
// tickets of CSV (id, subject, body) in batches of 1,024, timed; prints tickets/s.
// Usage: node tickets_ort.mjs DIR CSV
import fs from 'node:fs';
import { createRequire } from 'node:module';
const require = createRequire(process.cwd() + '/');  // run from the directory holding node_modules
const ort = require('onnxruntime-node');

const [dir, file] = process.argv.slice(2);
// The CSV as build_tickets.py writes it (RFC 4180 quoting).
function parse(text) {
  const rows = [];
  let row = [], field = '', quoted = false;
  for (let i = 0; i < text.length; ++i) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { field += '"'; ++i; } else if (c === '"') quoted = false; else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') { row.push(field); field = ''; }
    else if (c === '\n') { row.push(field.replace(/\r$/, '')); rows.push(row); row = []; field = ''; }
    else field += c;
  }
  if (field || row.length) { row.push(field); rows.push(row); }
  return rows;
}
const texts = parse(fs.readFileSync(file, 'utf8')).slice(1).map((r) => r[1] + ' ' + r[2]);
const session = await ort.InferenceSession.create(`${dir}/tickets_model.onnx`,
                                                  {intraOpNumThreads: 1, interOpNumThreads: 1});
const start = process.hrtime.bigint();
for (let i = 0; i < texts.length; i += 1024) {
  const batch = texts.slice(i, i + 1024);
  // The label only: onnxruntime-node cannot return ZipMap's sequence of maps (the
  // classifier computes its probabilities all the same).
  await session.run({text: new ort.Tensor('string', batch, [batch.length])}, ['label']);
}
const seconds = Number(process.hrtime.bigint() - start) / 1e9;
console.log(`onnxruntime   ${texts.length} tickets  ${(texts.length / seconds).toFixed(0).padStart(10)} tickets/s`);
