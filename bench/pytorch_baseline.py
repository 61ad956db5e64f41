#!/usr/bin/python3
"""The needs MLP in PyTorch (Debian's python3-torch), one thread, for side-by-side
comparison with bench/model_bench. Weights come from the same Keras .h5 file
(model_weights/<layer>/<layer>/{kernel:0,bias:0}); without a file, the same
architecture with random weights (timings do not depend on the values).

usage: bench/pytorch_baseline.py [MODEL.h5]   -> one JSON object per line
"""
import json
import os
import sys
import time

import torch

torch.set_num_threads(1)
WIDTHS = [9, 9, 32, 64, 128, 64, 32, 1]


def load_layers(path):
    import h5py
    with h5py.File(path, "r") as f:
        config = json.loads(f.attrs["model_config"])
        layers = []
        for layer in config["config"]["layers"]:
            if layer["class_name"] != "Dense":
                continue
            name = layer["config"]["name"]
            group = f["model_weights"][name][name]
            kernel = torch.tensor(group["kernel:0"][()])
            bias = torch.tensor(group["bias:0"][()])
            layers.append((kernel, bias, layer["config"]["activation"]))
        return layers


def build(path):
    modules = []
    if path and os.path.exists(path):
        specs = load_layers(path)
    else:
        torch.manual_seed(42)
        specs = [(torch.randn(a, b) * 0.2, torch.full((b,), 0.01), "relu" if i < len(WIDTHS) - 2 else "linear")
                 for i, (a, b) in enumerate(zip(WIDTHS, WIDTHS[1:]))]
    for kernel, bias, activation in specs:
        linear = torch.nn.Linear(kernel.shape[0], kernel.shape[1])
        with torch.no_grad():
            linear.weight.copy_(kernel.T)
            linear.bias.copy_(bias)
        modules.append(linear)
        if activation == "relu":
            modules.append(torch.nn.ReLU())
    return torch.nn.Sequential(*modules).eval()


def main():
    model = build(sys.argv[1] if len(sys.argv) > 1 else None)
    with torch.inference_mode():
        for batch in (1, 16, 256, 1024):
            x = torch.randn(batch, 9)
            for _ in range(200):
                model(x)
            calls, start = 0, time.perf_counter()
            while time.perf_counter() - start < 1.0:
                model(x)
                calls += 1
            elapsed = time.perf_counter() - start
            print(json.dumps({"name": f"torch/{batch}", "rows_per_second": calls * batch / elapsed}))
        x = torch.randn(1, 9)
        samples = []
        for _ in range(20000):
            start = time.perf_counter_ns()
            model(x)
            samples.append(time.perf_counter_ns() - start)
        samples.sort()
        print(json.dumps({"name": "torch/latency", "p50_ns": samples[len(samples) // 2],
                          "p99_ns": samples[len(samples) * 99 // 100]}))


if __name__ == "__main__":
    main()
