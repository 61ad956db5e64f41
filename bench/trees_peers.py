#!/usr/bin/python3
"""XGBoost's own predictor on the bench model, one thread, measured as
bench/trees_bench.cpp measures Runnel: rows/s at batch 1, 16 and 256 over input.csv in
turn, each size for at least a second. Prints "xgboost xgb100 batch=<b> <rows/s>".
Usage: trees_peers.py DIR"""
import sys
import time

import numpy as np
import xgboost as xgb


def main(directory):
    x = np.loadtxt(directory + "/input.csv", delimiter=",", dtype=np.float32)
    booster = xgb.Booster(model_file=directory + "/xgb100.json")
    booster.set_param({"nthread": 1})
    for batch in (1, 16, 256):
        done, at, start = 0, 0, time.perf_counter()
        while time.perf_counter() - start < 1.0:
            for _ in range(64):
                if at + batch > len(x):
                    at = 0
                booster.inplace_predict(x[at:at + batch])
                at += batch
                done += batch
        print(f"xgboost xgb100 batch={batch} {done / (time.perf_counter() - start):.0f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
