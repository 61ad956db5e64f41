#!/usr/bin/python3
"""The tree models of `make bench-trees` (docs/performance.md, "Tree ensembles"), in
OUTDIR: xgb100.json, 100 trees of depth 6 (XGBoost, binary:logistic, 20 features);
rf500.onnx, a 500-tree scikit-learn random forest (max depth 12, 3 classes) as skl2onnx
writes it but without ZipMap (so ONNX Runtime's Node binding can return tensors);
input.csv, 4,096 rows to score."""
import importlib.util
import os
import sys

import numpy as np
import xgboost as xgb
from sklearn.ensemble import RandomForestClassifier

here = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("fixtures", os.path.join(here, "..", "tests", "model",
                                                                        "sklearn_onnx_fixtures.py"))
fixtures = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fixtures)


def main(out):
    rng = np.random.default_rng(7)
    features = 20
    x = rng.normal(size=(20000, features)).astype(np.float32)
    signal = x[:, 0] * 2 - x[:, 1] + x[:, 2] * x[:, 3] + np.sin(x[:, 4] * 3) + 0.3 * rng.normal(size=len(x))
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 6, "eta": 0.1, "nthread": 2, "seed": 7},
                        xgb.DMatrix(x, label=(signal > 0).astype(np.float32)), num_boost_round=100)
    booster.save_model(os.path.join(out, "xgb100.json"))
    classes = np.digitize(signal, [-1.0, 1.0])
    rf = RandomForestClassifier(n_estimators=500, max_depth=12, n_jobs=2, random_state=7).fit(x, classes)
    nodes = fixtures.classifier_node([(t, None) for t in rf.estimators_], [0, 1, 2], "NONE", [],
                                     1.0 / len(rf.estimators_))[:1]  # no ZipMap
    from onnx import TensorProto, helper
    import onnx
    graph = helper.make_graph(nodes, "rf500", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, features])],
                              [helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
                               helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 3])])
    model = helper.make_model(graph, producer_name="bench", opset_imports=[helper.make_opsetid("", 15),
                                                                            helper.make_opsetid("ai.onnx.ml", 1)])
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(out, "rf500.onnx"))
    test = rng.normal(size=(4096, features)).astype(np.float32)
    np.savetxt(os.path.join(out, "input.csv"), test, delimiter=",", fmt="%.9g")


if __name__ == "__main__":
    main(sys.argv[1])
