#!/usr/bin/python3
"""Trains scikit-learn tree models (Debian's python3-sklearn) and writes each as the
ONNX file skl2onnx makes of it (ai.onnx.ml TreeEnsembleRegressor/Classifier, ZipMap
after a classifier; skl2onnx itself is not in Debian, so the conversion is spelled out
below with python3-onnx's helpers and ONNX's own checker), plus NAME.input.csv and
NAME.expected.csv: what scikit-learn's predict() (regressors) or predict() then
predict_proba() (classifiers; a string label as its index in classes_) answers. The
expectations of tests/model/trees_test.cpp come from scikit-learn, never from
Runnel.

Usage: sklearn_onnx_fixtures.py OUTDIR. Exit 77 when sklearn or onnx is missing."""
import os
import sys

try:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper
    from sklearn.ensemble import (GradientBoostingClassifier, GradientBoostingRegressor, RandomForestClassifier,
                                  RandomForestRegressor)
    from sklearn.tree import DecisionTreeRegressor
except ImportError:
    sys.exit(77)

SEED = 20261203


def tree_nodes(tree, tree_id, attrs):
    """The nodes_* attributes of one sklearn tree (BRANCH_LEQ, as sklearn splits)."""
    t = tree.tree_
    for node in range(t.node_count):
        leaf = t.children_left[node] == -1
        attrs["nodes_treeids"].append(tree_id)
        attrs["nodes_nodeids"].append(node)
        attrs["nodes_featureids"].append(0 if leaf else int(t.feature[node]))
        attrs["nodes_values"].append(0.0 if leaf else float(t.threshold[node]))
        attrs["nodes_modes"].append("LEAF" if leaf else "BRANCH_LEQ")
        attrs["nodes_truenodeids"].append(0 if leaf else int(t.children_left[node]))
        attrs["nodes_falsenodeids"].append(0 if leaf else int(t.children_right[node]))
        attrs["nodes_hitrates"].append(1.0)
        attrs["nodes_missing_value_tracks_true"].append(0)


def empty_nodes():
    keys = ["nodes_treeids", "nodes_nodeids", "nodes_featureids", "nodes_values", "nodes_modes",
            "nodes_truenodeids", "nodes_falsenodeids", "nodes_hitrates", "nodes_missing_value_tracks_true"]
    return {k: [] for k in keys}


def leaves(tree):
    t = tree.tree_
    return [n for n in range(t.node_count) if t.children_left[n] == -1]


def regressor_node(trees, scale, aggregate, base):
    attrs = empty_nodes()
    attrs.update(target_treeids=[], target_nodeids=[], target_ids=[], target_weights=[])
    for tree_id, tree in enumerate(trees):
        tree_nodes(tree, tree_id, attrs)
        for leaf in leaves(tree):
            attrs["target_treeids"].append(tree_id)
            attrs["target_nodeids"].append(leaf)
            attrs["target_ids"].append(0)
            attrs["target_weights"].append(float(tree.tree_.value[leaf][0][0]) * scale)
    return helper.make_node("TreeEnsembleRegressor", ["X"], ["variable"], domain="ai.onnx.ml", n_targets=1,
                            aggregate_function=aggregate, post_transform="NONE", base_values=base, **attrs)


def classifier_node(trees_by_class, labels, post, base, weight):
    """trees_by_class: [(tree, class or None)]: None adds every class's share of the leaf."""
    attrs = empty_nodes()
    attrs.update(class_treeids=[], class_nodeids=[], class_ids=[], class_weights=[])
    for tree_id, (tree, klass) in enumerate(trees_by_class):
        tree_nodes(tree, tree_id, attrs)
        for leaf in leaves(tree):
            value = tree.tree_.value[leaf][0]
            shares = [(klass, float(value[0]))] if klass is not None else \
                [(k, float(v / value.sum())) for k, v in enumerate(value)]
            for k, v in shares:
                attrs["class_treeids"].append(tree_id)
                attrs["class_nodeids"].append(leaf)
                attrs["class_ids"].append(k)
                attrs["class_weights"].append(v * weight)
    label_attr = {"classlabels_strings": labels} if isinstance(labels[0], str) else {"classlabels_int64s": labels}
    if base:
        attrs["base_values"] = base
    node = helper.make_node("TreeEnsembleClassifier", ["X"], ["label", "probabilities"], domain="ai.onnx.ml",
                            post_transform=post, **label_attr, **attrs)
    zipmap = helper.make_node("ZipMap", ["probabilities"], ["output_probability"], domain="ai.onnx.ml", **label_attr)
    return [node, zipmap]


def classifier_outputs(labels):
    """A classifier's graph outputs as skl2onnx declares them: label, then ZipMap's
    sequence of maps from label to probability."""
    key = TensorProto.STRING if isinstance(labels[0], str) else TensorProto.INT64
    zipped = onnx.TypeProto()
    zipped.sequence_type.elem_type.map_type.key_type = key
    zipped.sequence_type.elem_type.map_type.value_type.CopyFrom(helper.make_tensor_type_proto(TensorProto.FLOAT, []))
    return [helper.make_tensor_value_info("label", key, [None]), helper.make_value_info("output_probability", zipped)]


def save(out, name, nodes, features, classifier, labels=None):
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, features])
    if classifier:
        outputs = classifier_outputs(labels)
    else:
        outputs = [helper.make_tensor_value_info("variable", TensorProto.FLOAT, [None, 1])]
    graph = helper.make_graph(nodes, name, [x], outputs)
    model = helper.make_model(graph, producer_name="skl2onnx-like", producer_version="test",
                              opset_imports=[helper.make_opsetid("", 15), helper.make_opsetid("ai.onnx.ml", 1)])
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(out, name + ".onnx"))


def write(out, name, x, expected):
    np.savetxt(os.path.join(out, name + ".input.csv"), x, delimiter=",", fmt="%.9g")
    np.savetxt(os.path.join(out, name + ".expected.csv"), np.asarray(expected, dtype=np.float64).reshape(len(x), -1),
               delimiter=",", fmt="%.9g")


def main(out):
    rng = np.random.default_rng(SEED)
    features = 5
    x = rng.normal(size=(1500, features)).astype(np.float32)
    signal = x[:, 0] * 2 - x[:, 1] + x[:, 2] * x[:, 3]
    test = rng.normal(size=(300, features)).astype(np.float32)
    classes = np.digitize(signal, [-1.0, 1.0])

    tree = DecisionTreeRegressor(max_depth=6, random_state=1).fit(x, signal)
    save(out, "tree_regressor", [regressor_node([tree], 1.0, "SUM", [0.0])], features, False)
    write(out, "tree_regressor", test, tree.predict(test))

    forest = RandomForestRegressor(n_estimators=20, max_depth=8, random_state=1).fit(x, signal)
    save(out, "forest_regressor", [regressor_node(forest.estimators_, 1.0, "AVERAGE", [0.0])], features, False)
    write(out, "forest_regressor", test, forest.predict(test))

    gbr = GradientBoostingRegressor(n_estimators=50, max_depth=3, random_state=1).fit(x, signal)
    base = float(gbr._raw_predict_init(x[:1])[0][0])
    save(out, "boosted_regressor",
         [regressor_node(gbr.estimators_[:, 0], gbr.learning_rate, "SUM", [base])], features, False)
    write(out, "boosted_regressor", test, gbr.predict(test))

    rf = RandomForestClassifier(n_estimators=20, max_depth=8, random_state=1).fit(x, classes)
    save(out, "forest_classifier",
         classifier_node([(t, None) for t in rf.estimators_], [0, 1, 2], "NONE", [], 1.0 / len(rf.estimators_)),
         features, True, [0, 1, 2])
    write(out, "forest_classifier", test, np.column_stack([rf.predict(test), rf.predict_proba(test)]))

    named = np.array(["high", "low", "mid"])[classes]  # classes_ sorts them: high, low, mid
    rfs = RandomForestClassifier(n_estimators=10, max_depth=6, random_state=2).fit(x, named)
    labels = [str(c) for c in rfs.classes_]
    save(out, "string_labels",
         classifier_node([(t, None) for t in rfs.estimators_], labels, "NONE", [], 1.0 / len(rfs.estimators_)),
         features, True, labels)
    index = np.searchsorted(rfs.classes_, rfs.predict(test))
    write(out, "string_labels", test, np.column_stack([index, rfs.predict_proba(test)]))

    binary = (signal > 0).astype(np.int64)
    gbc = GradientBoostingClassifier(n_estimators=40, max_depth=3, random_state=1).fit(x, binary)
    base = float(gbc._raw_predict_init(x[:1])[0][0])
    save(out, "boosted_binary",
         classifier_node([(t, 0) for t in gbc.estimators_[:, 0]], [0, 1], "LOGISTIC", [base], gbc.learning_rate),
         features, True, [0, 1])
    write(out, "boosted_binary", test, np.column_stack([gbc.predict(test), gbc.predict_proba(test)]))

    gbm = GradientBoostingClassifier(n_estimators=20, max_depth=3, random_state=1).fit(x, classes)
    base = [float(b) for b in gbm._raw_predict_init(x[:1])[0]]
    trees = [(gbm.estimators_[i, k], k) for i in range(gbm.n_estimators_) for k in range(3)]
    save(out, "boosted_multiclass", classifier_node(trees, [0, 1, 2], "SOFTMAX", base, gbm.learning_rate),
         features, True, [0, 1, 2])
    write(out, "boosted_multiclass", test, np.column_stack([gbm.predict(test), gbm.predict_proba(test)]))


if __name__ == "__main__":
    main(sys.argv[1])
