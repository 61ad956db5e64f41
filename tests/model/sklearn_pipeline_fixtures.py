#!/usr/bin/python3
"""Trains scikit-learn pipelines (Debian's python3-sklearn) and writes each as the ONNX
graph skl2onnx makes of it, with the classic operators of the ai.onnx.ml domain
(Imputer, Scaler, Normalizer, ArrayFeatureExtractor, OneHotEncoder, FeatureVectorizer,
LinearRegressor, LinearClassifier, a tree ensemble, ZipMap). skl2onnx is not in
Debian, so each conversion is spelled out with python3-onnx's helpers as skl2onnx
writes it, and checked by ONNX's own checker. Beside each NAME.onnx: NAME.input.csv
and NAME.expected.csv, what scikit-learn's predict() then predict_proba() answer (a
string label as its index in classes_). The expectations of
tests/model/onnx_loader_test.cpp come from scikit-learn, never from Runnel.

Usage: sklearn_pipeline_fixtures.py OUTDIR. Exit 77 when sklearn or onnx is missing."""
import os
import sys

try:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler
except ImportError:
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sklearn_onnx_fixtures import classifier_node, classifier_outputs, write  # noqa: E402

SEED = 20261204
ML = "ai.onnx.ml"


def floats(values):
    return [float(v) for v in np.asarray(values, dtype=np.float64).ravel()]


def scaler(name, source, offset, scale):
    return helper.make_node("Scaler", [source], [name], domain=ML, offset=floats(offset), scale=floats(scale))


def standard_scaler(step, source, name):
    return scaler(name, source, step.mean_, 1.0 / step.scale_)


def minmax_scaler(step, source, name):
    # x * scale_ + min_  ==  (x - offset) * scale with offset = -min_ / scale_
    return scaler(name, source, -step.min_ / step.scale_, step.scale_)


def zipmap(labels):
    key = {"classlabels_strings": labels} if isinstance(labels[0], str) else {"classlabels_int64s": labels}
    return helper.make_node("ZipMap", ["probabilities"], ["output_probability"], domain=ML, **key)


def label_attr(labels):
    return {"classlabels_strings": labels} if isinstance(labels[0], str) else {"classlabels_ints": labels}


def logistic_nodes(model, source, labels):
    """LinearClassifier as skl2onnx writes a LogisticRegression: a binary model as two
    rows (-w, w), a one-vs-rest model's probabilities normalized by Normalizer L1."""
    coef, intercept = model.coef_, model.intercept_
    multinomial = len(labels) > 2 and model.multi_class == "multinomial"
    if len(labels) == 2:
        coef, intercept = np.vstack([-coef, coef]), np.concatenate([-intercept, intercept])
    post = "SOFTMAX" if multinomial else "LOGISTIC"
    scores = "probabilities" if multinomial or len(labels) == 2 else "raw"
    nodes = [helper.make_node("LinearClassifier", [source], ["label", scores], domain=ML, coefficients=floats(coef),
                              intercepts=floats(intercept), multi_class=0, post_transform=post, **label_attr(labels))]
    if scores == "raw":
        nodes.append(helper.make_node("Normalizer", ["raw"], ["probabilities"], domain=ML, norm="L1"))
    return nodes + [zipmap(labels)]


def save(out, name, nodes, features, labels=None, initializers=()):
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, features])
    if labels is not None:
        outputs = classifier_outputs(labels)
    else:
        outputs = [helper.make_tensor_value_info("variable", TensorProto.FLOAT, [None, 1])]
    graph = helper.make_graph(nodes, name, [x], outputs, initializer=list(initializers))
    model = helper.make_model(graph, producer_name="skl2onnx-like", producer_version="test",
                              opset_imports=[helper.make_opsetid("", 15), helper.make_opsetid(ML, 1)])
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(out, name + ".onnx"))


def classified(model, test):
    """predict() (a string label as its index in classes_), then predict_proba()."""
    predicted = model.predict(test)
    if predicted.dtype.kind in "US":
        predicted = np.searchsorted(model.classes_, predicted)
    return np.column_stack([predicted, model.predict_proba(test)])


def main(out):
    rng = np.random.default_rng(SEED)
    features = 4
    x = (rng.normal(size=(1200, features)) * [1, 10, 0.1, 3] + [0, 50, 1, -2]).astype(np.float32)
    test = (rng.normal(size=(200, features)) * [1, 10, 0.1, 3] + [0, 50, 1, -2]).astype(np.float32)
    signal = x[:, 0] - (x[:, 1] - 50) / 10 + (x[:, 2] - 1) * 10
    binary = (signal > 0).astype(np.int64)
    three = np.digitize(signal, [-1.0, 1.0])

    # StandardScaler + binary LogisticRegression
    pipe = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, binary)
    save(out, "scaled_logistic",
         [standard_scaler(pipe[0], "X", "scaled")] + logistic_nodes(pipe[1], "scaled", [0, 1]), features, [0, 1])
    write(out, "scaled_logistic", test, classified(pipe, test))

    # SimpleImputer + StandardScaler + multinomial LogisticRegression, string labels,
    # inputs with missing values
    holes = x.copy()
    holes[rng.random(holes.shape) < 0.1] = np.nan
    test_holes = test.copy()
    test_holes[rng.random(test_holes.shape) < 0.1] = np.nan
    named = np.array(["high", "low", "mid"])[three]
    pipe = make_pipeline(SimpleImputer(strategy="mean"), StandardScaler(),
                         LogisticRegression(multi_class="multinomial", max_iter=500)).fit(holes, named)
    labels = [str(c) for c in pipe[-1].classes_]
    imputer = helper.make_node("Imputer", ["X"], ["imputed"], domain=ML, imputed_value_floats=floats(pipe[0].statistics_),
                               replaced_value_float=float("nan"))
    save(out, "imputed_multinomial",
         [imputer, standard_scaler(pipe[1], "imputed", "scaled")] + logistic_nodes(pipe[2], "scaled", labels),
         features, labels)
    write(out, "imputed_multinomial", test_holes, classified(pipe, test_holes))

    # One-vs-rest LogisticRegression: LOGISTIC scores normalized (Normalizer L1)
    ovr = LogisticRegression(multi_class="ovr", max_iter=500).fit(x, three)
    save(out, "ovr_logistic", logistic_nodes(ovr, "X", [0, 1, 2]), features, [0, 1, 2])
    write(out, "ovr_logistic", test, classified(ovr, test))

    # MinMaxScaler + Ridge: Scaler then LinearRegressor
    pipe = make_pipeline(MinMaxScaler(), Ridge(alpha=0.5)).fit(x, signal)
    regressor = helper.make_node("LinearRegressor", ["scaled"], ["variable"], domain=ML,
                                 coefficients=floats(pipe[1].coef_), intercepts=[float(pipe[1].intercept_)])
    save(out, "minmax_ridge", [minmax_scaler(pipe[0], "X", "scaled"), regressor], features)
    write(out, "minmax_ridge", test, pipe.predict(test))

    # StandardScaler + RandomForestClassifier: a tree ensemble after other operators
    pipe = make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=15, max_depth=7, random_state=3))
    pipe.fit(x, three)
    forest = pipe[1]
    nodes = classifier_node([(t, None) for t in forest.estimators_], [0, 1, 2], "NONE", [], 1.0 / len(forest.estimators_))
    nodes[0].input[0] = "scaled"
    save(out, "scaled_forest", [standard_scaler(pipe[0], "X", "scaled")] + nodes, features, [0, 1, 2])
    write(out, "scaled_forest", test, classified(pipe, test))

    # A category column one-hot encoded beside scaled numbers, then Ridge (not plain
    # least squares: one-hot columns and an intercept are collinear):
    # ArrayFeatureExtractor, Cast, OneHotEncoder, Reshape, Scaler, FeatureVectorizer.
    cats = rng.integers(0, 3, size=len(x)).astype(np.float32)
    test_cats = rng.integers(0, 3, size=len(test)).astype(np.float32)
    xc = np.column_stack([cats, x[:, 1:]])
    tc = np.column_stack([test_cats, test[:, 1:]])
    target = signal + np.array([0.0, 5.0, -3.0])[cats.astype(int)]
    pipe = make_pipeline(ColumnTransformer([("cat", OneHotEncoder(), [0]), ("num", StandardScaler(), [1, 2, 3])]),
                         Ridge(alpha=1.0)).fit(xc.astype(np.float64), target)
    encoder, standard = pipe[0].named_transformers_["cat"], pipe[0].named_transformers_["num"]
    categories = [int(c) for c in encoder.categories_[0]]
    cat_index = helper.make_tensor("cat_index", TensorProto.INT64, [1], [0])
    num_index = helper.make_tensor("num_index", TensorProto.INT64, [3], [1, 2, 3])
    flat = helper.make_tensor("flat", TensorProto.INT64, [2], [-1, len(categories)])
    nodes = [
        helper.make_node("ArrayFeatureExtractor", ["X", "cat_index"], ["cat_col"], domain=ML),
        helper.make_node("Cast", ["cat_col"], ["cat_int"], to=TensorProto.INT64),
        helper.make_node("OneHotEncoder", ["cat_int"], ["onehot3"], domain=ML, cats_int64s=categories, zeros=1),
        helper.make_node("Reshape", ["onehot3", "flat"], ["onehot"]),
        helper.make_node("ArrayFeatureExtractor", ["X", "num_index"], ["num_cols"], domain=ML),
        standard_scaler(standard, "num_cols", "num_scaled"),
        helper.make_node("FeatureVectorizer", ["onehot", "num_scaled"], ["features"], domain=ML,
                         inputdimensions=[len(categories), 3]),
        helper.make_node("LinearRegressor", ["features"], ["variable"], domain=ML,
                         coefficients=floats(pipe[1].coef_), intercepts=[float(pipe[1].intercept_)]),
    ]
    save(out, "onehot_linear", nodes, features, initializers=[cat_index, num_index, flat])
    write(out, "onehot_linear", tc, pipe.predict(tc))

    # A table's columns as separate named inputs, as skl2onnx converts a pipeline fitted
    # on a DataFrame: "region" (int64), "income", "age" (float), each [None, 1]; the
    # region one-hot encoded, the numbers scaled, then a binary LogisticRegression.
    # input.csv holds the columns in the graph's input order; the pipeline test feeds
    # them by name from features in another order ([model] inputs, output_from).
    region = rng.integers(0, 4, size=len(x))
    test_region = rng.integers(0, 4, size=len(test))
    xr = np.column_stack([region, x[:, 1], x[:, 0]]).astype(np.float64)
    tr = np.column_stack([test_region, test[:, 1], test[:, 0]]).astype(np.float64)
    approved = ((x[:, 0] - (x[:, 1] - 50) / 10 + np.array([1.0, -1.0, 0.5, 0.0])[region]) > 0).astype(np.int64)
    pipe = make_pipeline(ColumnTransformer([("cat", OneHotEncoder(), [0]), ("num", StandardScaler(), [1, 2])]),
                         LogisticRegression()).fit(xr, approved)
    encoder, standard = pipe[0].named_transformers_["cat"], pipe[0].named_transformers_["num"]
    categories = [int(c) for c in encoder.categories_[0]]
    flat = helper.make_tensor("flat", TensorProto.INT64, [2], [-1, len(categories)])
    nodes = [
        helper.make_node("OneHotEncoder", ["region"], ["onehot3"], domain=ML, cats_int64s=categories, zeros=1),
        helper.make_node("Reshape", ["onehot3", "flat"], ["onehot"]),
        helper.make_node("Concat", ["income", "age"], ["numbers"], axis=1),
        standard_scaler(standard, "numbers", "numbers_scaled"),
        helper.make_node("Concat", ["onehot", "numbers_scaled"], ["features"], axis=1),
    ] + logistic_nodes(pipe[1], "features", [0, 1])
    inputs = [helper.make_tensor_value_info("region", TensorProto.INT64, [None, 1]),
              helper.make_tensor_value_info("income", TensorProto.FLOAT, [None, 1]),
              helper.make_tensor_value_info("age", TensorProto.FLOAT, [None, 1])]
    graph = helper.make_graph(nodes, "column_inputs", inputs, classifier_outputs([0, 1]), initializer=[flat])
    model = helper.make_model(graph, producer_name="skl2onnx-like", producer_version="test",
                              opset_imports=[helper.make_opsetid("", 15), helper.make_opsetid(ML, 1)])
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(out, "column_inputs.onnx"))
    write(out, "column_inputs", tr, classified(pipe, tr))


if __name__ == "__main__":
    main(sys.argv[1])
