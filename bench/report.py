#!/usr/bin/python3
"""Prints the side-by-side table of docs/performance.md from model_bench's JSON output
and pytorch_baseline.py's lines. usage: report.py BENCH.json TORCH.jsonl"""
import json
import sys

bench = {b["name"]: b for b in json.load(open(sys.argv[1]))["benchmarks"]}
torch = {}
for line in open(sys.argv[2]):
    line = line.strip()
    if line:
        item = json.loads(line)
        torch[item["name"]] = item

peak = bench["BM_PeakFma"]["GFLOPS"] / 1e9
print(f"Measured FP32 FMA peak of one core: {peak:.1f} GFLOP/s\n")
print("| batch | Runnel rows/s | % of FMA peak | reference kernels rows/s | PyTorch rows/s | Runnel / PyTorch |")
print("|---:|---:|---:|---:|---:|---:|")
for batch in (1, 16, 256, 1024):
    ours = bench[f"BM_Needs/{batch}"]
    reference = bench.get(f"BM_NeedsReference/{batch}")
    theirs = torch[f"torch/{batch}"]["rows_per_second"]
    ref = f"{reference['items_per_second']:,.0f}" if reference else "-"
    print(f"| {batch} | {ours['items_per_second']:,.0f} | {100 * ours['GFLOPS'] / 1e9 / peak:.0f}% | {ref} | "
          f"{theirs:,.0f} | {ours['items_per_second'] / theirs:.1f}x |")
lat = bench["BM_NeedsLatency/iterations:200000"]
tl = torch["torch/latency"]
print(f"\nBatch-1 latency: Runnel p50 {lat['p50_ns'] / 1000:.2f} µs, p99 {lat['p99_ns'] / 1000:.2f} µs; "
      f"PyTorch p50 {tl['p50_ns'] / 1000:.1f} µs, p99 {tl['p99_ns'] / 1000:.1f} µs")
