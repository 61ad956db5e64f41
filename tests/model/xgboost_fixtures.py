#!/usr/bin/python3
"""Trains small XGBoost models with Debian's python3-xgboost and writes, per model,
NAME.json (Booster.save_model), NAME.input.csv (float32 rows, "nan" for missing) and
NAME.expected.csv (what XGBoost's own predict() answers for those rows): the
expectations of tests/model/xgboost_test.cpp come from XGBoost, never from Runnel.

Usage: xgboost_fixtures.py OUTDIR. Exit 77 when xgboost is not installed."""
import os
import sys

try:
    import numpy as np
    import xgboost as xgb
except ImportError:
    sys.exit(77)

SEED = 20261203


def data(rng, rows, features, missing):
    x = rng.normal(size=(rows, features)).astype(np.float32)
    x[rng.random(size=x.shape) < missing] = np.nan  # missing values take the default way
    return x


def write(out, name, booster, x):
    booster.save_model(os.path.join(out, name + ".json"))
    predicted = booster.predict(xgb.DMatrix(x, missing=np.nan)).astype(np.float32)
    if predicted.ndim == 1:
        predicted = predicted.reshape(-1, 1)
    np.savetxt(os.path.join(out, name + ".input.csv"), x, delimiter=",", fmt="%.9g")
    np.savetxt(os.path.join(out, name + ".expected.csv"), predicted, delimiter=",", fmt="%.9g")


def main(out):
    rng = np.random.default_rng(SEED)
    features = 6
    x = data(rng, 2000, features, 0.1)
    signal = np.nan_to_num(x[:, 0]) * 2 - np.nan_to_num(x[:, 1]) + np.nan_to_num(x[:, 2]) * np.nan_to_num(x[:, 3])
    test = data(rng, 300, features, 0.15)

    def train(params, label, rounds):
        params = dict(params, seed=SEED, nthread=1)
        return xgb.train(params, xgb.DMatrix(x, label=label, missing=np.nan), num_boost_round=rounds)

    write(out, "regression", train({"objective": "reg:squarederror", "max_depth": 4, "eta": 0.3}, signal, 40), test)
    binary = (signal > 0).astype(np.float32)
    write(out, "binary", train({"objective": "binary:logistic", "max_depth": 5, "eta": 0.2}, binary, 30), test)
    classes = np.digitize(signal, [-1.0, 1.0]).astype(np.float32)  # 3 classes
    write(out, "softprob", train({"objective": "multi:softprob", "num_class": 3, "max_depth": 3}, classes, 20), test)
    write(out, "softmax", train({"objective": "multi:softmax", "num_class": 3, "max_depth": 3}, classes, 20), test)
    counts = rng.poisson(np.exp(np.clip(signal, -2, 2) * 0.5)).astype(np.float32)
    write(out, "poisson", train({"objective": "count:poisson", "max_depth": 3}, counts, 25), test)
    write(out, "dart", train({"objective": "binary:logistic", "booster": "dart", "rate_drop": 0.2, "max_depth": 3},
                             binary, 15), test)
    write(out, "forest", train({"objective": "reg:squarederror", "num_parallel_tree": 8, "subsample": 0.7,
                                "colsample_bynode": 0.7, "eta": 1.0, "max_depth": 6}, signal, 1), test)


if __name__ == "__main__":
    main(sys.argv[1])
