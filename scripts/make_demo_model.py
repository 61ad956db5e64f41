#!/usr/bin/python3
"""Generates examples/needs/model/demo_model.h5, the model `runnel demo` serves.

A small MLP (9 -> 16 relu -> 8 relu -> 1) trained with numpy on synthetic clients drawn
from the reference generator's ranges, preprocessed exactly as
examples/needs/pipeline.toml says. The target is an invented, plausible risk
propensity (it rises with financial education, wealth and investment appetite); this
is a demo model, not a financial one. Written in the Keras 2 legacy HDF5 layout
(model_config attribute, model_weights/<layer>/<layer>/{kernel:0,bias:0}) with h5py,
so Runnel loads it through the same code as real Keras files.

usage: scripts/make_demo_model.py [OUTPUT]   (Debian: python3-numpy python3-h5py)
"""
import json
import sys

import h5py
import numpy as np

LAMBDA_INCOME = 0.3026418664067109
LAMBDA_WEALTH = 0.1336735055366279
MEANS = np.array([55.2534, 0.492, 2.5106, 0.41912250425, 7.664003606794818, 5.650795740523163,
                  0.3836, 0.5132, 1.7884450179129336])
SCALES = np.array([11.970496582849016, 0.49993599590347565, 0.7617661320904205, 0.15136821202756753,
                   2.4818937424620633, 1.5813522545815777, 0.4862623160393987, 0.49982572962983807,
                   0.8569630982206199])
WIDTHS = [9, 16, 8, 1]


def clients(rng, n):
    age = rng.integers(18, 91, n)
    gender = rng.integers(0, 2, n)
    family = rng.integers(0, 6, n)
    education = rng.uniform(0.036, 0.903, n)
    income = rng.uniform(1.54, 365.3, n)
    wealth = rng.uniform(1.06, 2233.2, n)
    income_inv = rng.integers(0, 2, n)
    accumulation_inv = rng.integers(0, 2, n)
    return age, gender, family, education, income, wealth, income_inv, accumulation_inv


def features(age, gender, family, education, income, wealth, income_inv, accumulation_inv):
    status = education * np.log(wealth)
    x = np.stack([age, gender, family, education,
                  (income ** LAMBDA_INCOME - 1) / LAMBDA_INCOME,
                  (wealth ** LAMBDA_WEALTH - 1) / LAMBDA_WEALTH,
                  income_inv, accumulation_inv, status], axis=1).astype(np.float64)
    return (x - MEANS) / SCALES


def target(age, gender, family, education, income, wealth, income_inv, accumulation_inv):
    z = 1.6 * (education - 0.45) + 0.25 * np.log(wealth / 300) - 0.012 * (age - 50) \
        + 0.2 * accumulation_inv - 0.05 * family
    return 1 / (1 + np.exp(-z))


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "examples/needs/model/demo_model.h5"
    rng = np.random.default_rng(20261121)
    raw = clients(rng, 20000)
    x, y = features(*raw), target(*raw)[:, None]
    weights = [(rng.normal(0, np.sqrt(2 / a), (a, b)), np.zeros(b)) for a, b in zip(WIDTHS, WIDTHS[1:])]
    m = [(np.zeros_like(w), np.zeros_like(b)) for w, b in weights]
    v = [(np.zeros_like(w), np.zeros_like(b)) for w, b in weights]
    step = 0
    for epoch in range(60):  # Adam, batch 256, mean squared error
        order = rng.permutation(len(x))
        for start in range(0, len(x), 256):
            idx = order[start:start + 256]
            acts = [x[idx]]
            for i, (w, b) in enumerate(weights):
                h = acts[-1] @ w + b
                acts.append(np.maximum(h, 0) if i < len(weights) - 1 else h)
            grad = 2 * (acts[-1] - y[idx]) / len(idx)
            step += 1
            for i in reversed(range(len(weights))):
                w, b = weights[i]
                gw, gb = acts[i].T @ grad, grad.sum(0)
                if i > 0:
                    grad = (grad @ w.T) * (acts[i] > 0)
                for j, g in enumerate((gw, gb)):
                    m[i][j][...] = 0.9 * m[i][j] + 0.1 * g
                    v[i][j][...] = 0.999 * v[i][j] + 0.001 * g * g
                    mhat = m[i][j] / (1 - 0.9 ** step)
                    vhat = v[i][j] / (1 - 0.999 ** step)
                    weights[i][j][...] -= 0.003 * mhat / (np.sqrt(vhat) + 1e-8)
    h = x
    for i, (w, b) in enumerate(weights):
        h = h @ w + b
        h = np.maximum(h, 0) if i < len(weights) - 1 else h
    print(f"training MSE {float(np.mean((h - y) ** 2)):.6f}", file=sys.stderr)

    names = [f"dense_{i + 1}" for i in range(len(weights))]
    layers = [{"class_name": "InputLayer",
               "config": {"batch_input_shape": [None, 9], "dtype": "float32", "name": "demo_input"}}]
    for i, name in enumerate(names):
        layers.append({"class_name": "Dense", "config": {
            "name": name, "units": WIDTHS[i + 1], "use_bias": True,
            "activation": "relu" if i < len(names) - 1 else "linear"}})
    config = {"class_name": "Sequential", "config": {"name": "runnel_demo", "layers": layers}}
    with h5py.File(out, "w") as f:
        f.attrs["model_config"] = json.dumps(config)
        f.attrs["keras_version"] = "2.15.0"
        f.attrs["backend"] = "runnel-demo (numpy)"
        group = f.create_group("model_weights")
        for name, (w, b) in zip(names, weights):
            layer = group.create_group(name)
            layer.attrs["weight_names"] = [f"{name}/kernel:0".encode(), f"{name}/bias:0".encode()]
            layer.create_dataset(f"{name}/kernel:0", data=w.astype(np.float32))
            layer.create_dataset(f"{name}/bias:0", data=b.astype(np.float32))
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
