// Reads Parquet files with hyparquet, an implementation independent of DuckDB, and
// prints what the snapshot tests compare: per file its row count, and over all files
// the rows, the sum of one numeric column and the sorted values of another.
//   node read_parquet.mjs <hyparquet module dir> <sum column> <key column> <file>...
import { pathToFileURL } from 'node:url';
import { readFileSync } from 'node:fs';

const [moduleDir, sumColumn, keyColumn, ...files] = process.argv.slice(2);
const { parquetReadObjects } = await import(pathToFileURL(`${moduleDir}/src/index.js`).href);
let rows = 0;
let sum = 0;
const keys = [];
for (const file of files) {
  const bytes = readFileSync(file);
  const arrayBuffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
  const objects = await parquetReadObjects({ file: arrayBuffer });
  rows += objects.length;
  for (const row of objects) {
    if (row[sumColumn] !== null && row[sumColumn] !== undefined) sum += Number(row[sumColumn]);
    keys.push(Number(row[keyColumn]));
  }
}
keys.sort((a, b) => a - b);
console.log(JSON.stringify({ rows, sum, keys }));
