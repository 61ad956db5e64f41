#!/usr/bin/python3
"""Writes the general runtime's benchmark models, with random weights (speed, not
accuracy, is measured; correctness is tests/tensor's job): cnn.onnx, a small CNN over
[N, 3, 32, 32] images (three 3x3 convolutions with ReLU and max pooling, global average
pooling, a dense head), and transformer.onnx, a 2-layer transformer encoder over
[N, 32, 64] token embeddings (4 heads, feed-forward 256 with GELU, layer norms,
mean pooling, a dense head), as PyTorch exports them (opset 17). Usage:
tensor_models.py OUTDIR; tensor_models.py --convs OUTDIR writes the CNN's convolutions
alone, and a layer norm and a batch norm (bench/onednn_bench.sh)."""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(20261203)
inits = []


def weight(name, *shape, scale=None):
    scale = scale or 1.0 / np.sqrt(np.prod(shape[1:]) if len(shape) > 1 else shape[0])
    inits.append(numpy_helper.from_array((rng.normal(size=shape) * scale).astype(np.float32), name))
    return name


def const(name, values, dtype=np.int64):
    inits.append(numpy_helper.from_array(np.array(values, dtype=dtype), name))
    return name


def save(path, nodes, x, y):
    graph = helper.make_graph(nodes, os.path.basename(path), [x], [y], initializer=list(inits))
    model = helper.make_model(graph, producer_name="runnel-bench", opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    inits.clear()


def cnn(path):
    n = []
    src, channels = "x", 3
    for i, out in enumerate([16, 32, 64]):
        n.append(helper.make_node("Conv", [src, weight(f"w{i}", out, channels, 3, 3), weight(f"b{i}", out)],
                                  [f"c{i}"], pads=[1, 1, 1, 1]))
        n.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        src, channels = f"r{i}", out
        if i < 2:
            n.append(helper.make_node("MaxPool", [src], [f"p{i}"], kernel_shape=[2, 2], strides=[2, 2]))
            src = f"p{i}"
    n.append(helper.make_node("GlobalAveragePool", [src], ["gap"]))
    n.append(helper.make_node("Flatten", ["gap"], ["flat"]))
    n.append(helper.make_node("Gemm", ["flat", weight("head", 10, 64), weight("head_b", 10)], ["y"], transB=1))
    save(path, n, helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10]))


def encoder_layer(n, src, i, d=64, heads=4, seq=32, ff=256):
    p = f"l{i}_"

    def node(op, inputs, out, **attrs):
        n.append(helper.make_node(op, inputs, [p + out], **attrs))
        return p + out

    ln1 = node("LayerNormalization", [src, weight(p + "g1", d, scale=1), weight(p + "be1", d)], "ln1", axis=-1)
    split = const(p + "split", [-1, seq, heads, d // heads])
    qkv = []
    for name in "qkv":
        m = node("MatMul", [ln1, weight(p + "w" + name, d, d)], name + "m")
        a = node("Add", [m, weight(p + "b" + name, d)], name + "a")
        r = node("Reshape", [a, split], name + "r")
        qkv.append(node("Transpose", [r], name + "t", perm=[0, 2, 1, 3] if name != "k" else [0, 2, 3, 1]))
    scores = node("MatMul", [qkv[0], qkv[1]], "scores")
    scaled = node("Div", [scores, const(p + "sqrt", np.sqrt(d // heads), np.float32)], "scaled")
    probs = node("Softmax", [scaled], "probs", axis=-1)
    ctx = node("MatMul", [probs, qkv[2]], "ctx")
    ctx_t = node("Transpose", [ctx], "ctx_t", perm=[0, 2, 1, 3])
    merged = node("Reshape", [ctx_t, const(p + "merge", [-1, seq, d])], "merged")
    proj = node("Add", [node("MatMul", [merged, weight(p + "wo", d, d)], "om"), weight(p + "bo", d)], "proj")
    res1 = node("Add", [src, proj], "res1")
    ln2 = node("LayerNormalization", [res1, weight(p + "g2", d, scale=1), weight(p + "be2", d)], "ln2", axis=-1)
    h = node("Add", [node("MatMul", [ln2, weight(p + "w1", d, ff)], "f1m"), weight(p + "b1", ff)], "f1")
    # GELU as PyTorch exports it before opset 20: 0.5 * x * (1 + erf(x / sqrt(2)))
    erf = node("Erf", [node("Div", [h, const(p + "r2", np.sqrt(2.0), np.float32)], "hd")], "erf")
    gelu = node("Mul", [node("Mul", [h, node("Add", [erf, const(p + "one", 1.0, np.float32)], "e1")], "hm"),
                        const(p + "half", 0.5, np.float32)], "gelu")
    f2 = node("Add", [node("MatMul", [gelu, weight(p + "w2", ff, d)], "f2m"), weight(p + "b2", d)], "f2")
    return node("Add", [res1, f2], "out")


def transformer(path):
    n = []
    src = "x"
    for i in range(2):
        src = encoder_layer(n, src, i)
    n.append(helper.make_node("ReduceMean", [src], ["pooled"], axes=[1], keepdims=0))
    n.append(helper.make_node("Gemm", ["pooled", weight("head", 4, 64), weight("head_b", 4)], ["y"], transB=1))
    save(path, n, helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 32, 64]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4]))


def convs(out):
    """The CNN's three convolutions alone (3x3, pads 1, bias, Relu), one model each, for
    bench/onednn_bench.sh: conv3x32to16.onnx, conv16x16to32.onnx, conv32x8to64.onnx."""
    for channels, size, filters in [(3, 32, 16), (16, 16, 32), (32, 8, 64)]:
        name = f"conv{channels}x{size}to{filters}"
        n = [helper.make_node("Conv", ["x", weight("w", filters, channels, 3, 3), weight("b", filters)], ["c"],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"])]
        save(os.path.join(out, name + ".onnx"), n,
             helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", channels, size, size]),
             helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", filters, size, size]))


def norms(out):
    """The transformer's layer norm ([N, 32, 64] over its last axis, scale and bias) and
    a batch norm over the CNN's first feature maps ([N, 16, 32, 32], inference), alone,
    for bench/onednn_bench.sh: layernorm.onnx, batchnorm.onnx."""
    n = [helper.make_node("LayerNormalization", ["x", weight("g", 64), weight("b", 64)], ["y"], axis=-1,
                          epsilon=1e-5)]
    save(os.path.join(out, "layernorm.onnx"), n, helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 32, 64]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 32, 64]))
    var = numpy_helper.from_array((rng.uniform(0.5, 2.0, size=16)).astype(np.float32), "var")
    n = [helper.make_node("BatchNormalization", ["x", weight("s", 16), weight("b", 16), weight("m", 16), "var"],
                          ["y"], epsilon=1e-5)]
    inits.append(var)
    save(os.path.join(out, "batchnorm.onnx"), n,
         helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16, 32, 32]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16, 32, 32]))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--convs"]:
        convs(sys.argv[2])
        norms(sys.argv[2])
        sys.exit(0)
    cnn(os.path.join(sys.argv[1], "cnn.onnx"))
    transformer(os.path.join(sys.argv[1], "transformer.onnx"))
