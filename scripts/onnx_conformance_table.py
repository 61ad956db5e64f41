#!/usr/bin/python3
"""The conformance table of docs/tensor-runtime.md: `runnel model conformance` over
Debian's libonnx-testdata, per suite, and over the node tests whose operators are all
among those issue #17 lists (the target: 90% of them pass).

usage: scripts/onnx_conformance_table.py PATH/TO/runnel
"""
import collections
import glob
import os
import subprocess
import sys

import onnx

ROOT = "/usr/share/libonnx-testdata/data"
LISTED = set("""Add Sub Mul Div Pow Sqrt Exp Log Abs Neg Reciprocal Floor Ceil Round Sign Erf Relu LeakyRelu
Elu Selu Sigmoid HardSigmoid Tanh Softplus Softsign PRelu ThresholdedRelu HardSwish Mish Gelu MatMul Gemm Conv
ConvTranspose MaxPool AveragePool GlobalAveragePool GlobalMaxPool BatchNormalization LayerNormalization
InstanceNormalization Softmax LogSoftmax Reshape Flatten Squeeze Unsqueeze Transpose Concat Split Slice Gather
GatherElements Expand Tile Pad Shape Size ConstantOfShape Constant Range Cast Where Equal Less Greater And Or Not
Xor ReduceSum ReduceMean ReduceMax ReduceMin ReduceProd ReduceL2 ArgMax ArgMin TopK Clip Min Max Mean Sum Einsum
Dropout Identity""".split())


def verdicts(runnel, suite):
    out = subprocess.run([runnel, "model", "conformance", os.path.join(ROOT, suite)], capture_output=True,
                         text=True).stdout
    result = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in ("pass", "FAIL", "unsupported"):
            result[parts[1].rstrip(":")] = parts[0]
    return result


def main():
    runnel = sys.argv[1]
    print("| suite | tests | pass | fail | unsupported |\n|---|---|---|---|---|")
    node = {}
    for suite in ("node", "pytorch-converted", "pytorch-operator", "simple"):
        v = verdicts(runnel, suite)
        if suite == "node":
            node = v
        c = collections.Counter(v.values())
        print(f"| {suite} | {len(v)} | {c['pass']} | {c['FAIL']} | {c['unsupported']} |")
    listed = passed = 0
    for d in sorted(glob.glob(os.path.join(ROOT, "node", "*"))):
        ops = {n.op_type for n in onnx.load(os.path.join(d, "model.onnx")).graph.node}
        if ops and ops <= LISTED:
            listed += 1
            passed += node.get(os.path.basename(d)) == "pass"
    print(f"\nnode tests of the listed operators only: {passed} of {listed} pass ({100.0 * passed / listed:.1f}%)")


if __name__ == "__main__":
    main()
