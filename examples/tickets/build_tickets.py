#!/usr/bin/python3
"""The ticket workload: a real labelled text data set and the TF-IDF + logistic
regression model that routes it.

Tickets come from the machine's Debian package index (/var/lib/dpkg/status, or the
file given with --index): each package's short description is a ticket's subject, its
long description the body, its Section the queue (the 12 most common sections) and
its Priority the priority. A fixed quarter of the tickets (by a hash of the package
name) is the test split.

The model is scikit-learn's TfidfVectorizer (lower case, tokens of two or more letters,
digits or underscores, unigrams and bigrams) and a multinomial LogisticRegression
(Debian's python3-sklearn), written as the ONNX graph skl2onnx makes of such a pipeline
(skl2onnx is not in Debian, so the conversion is spelled out with python3-onnx):
StringNormalizer -> com.microsoft Tokenizer -> TfIdfVectorizer -> Normalizer (L2) ->
LinearClassifier (softmax) -> ZipMap. ONNX's checker validates it.

Writes into OUTDIR:
  tickets.csv           every ticket: id, subject, body, queue, priority, split
  tickets_model.onnx    the model; its input `text` is subject || ' ' || body
  tickets_test.csv      the test split: id, subject, body
  tickets_expected.csv  scikit-learn's answers on it: predict() as the label's index
                        in classes_, then predict_proba(), one column per class
  labels.txt            the classes, in the model's order
  pipeline.toml         the pipeline serving it over the table of schema.sql: the
                        queue written back as text, one probability column per queue
                        (the queues are the machine's 12 most common sections)
and prints the test accuracy. Exit 77 when sklearn or onnx is missing.

Usage: build_tickets.py OUTDIR [--index FILE] [--max-features N] [--save-sklearn]"""
import argparse
import collections
import csv
import hashlib
import os
import sys

try:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
except ImportError:
    sys.exit(77)

QUEUES = 12
TOKENS = r"(?u)\b\w\w+\b"  # scikit-learn's default: runs of 2+ word characters
RE2_TOKENS = r"[\p{L}\p{N}_]+"  # the same runs in RE2 (its \w is ASCII); shorter ones fall to mincharnum


def read_index(path):
    """Packages of a Debian control file: dicts of Package, Section, Priority,
    subject, body (the long description, paragraphs separated by newlines)."""
    packages, current, field = [], {}, None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                if current:
                    packages.append(current)
                current, field = {}, None
            elif line[0] in " \t":
                if field == "Description":
                    text = line[1:]
                    current["body"] = current.get("body", "") + ("\n" if text == "." else text.strip() + " ")
            else:
                field, _, value = line.partition(":")
                value = value.strip()
                if field == "Description":
                    current["subject"] = value
                elif field in ("Package", "Section", "Priority"):
                    current[field] = value
    if current:
        packages.append(current)
    return packages


def tickets_of(packages):
    seen, rows = set(), []
    for p in packages:
        if not all(k in p for k in ("Package", "Section", "Priority", "subject")) or p["Package"] in seen:
            continue
        seen.add(p["Package"])
        queue = p["Section"].split("/")[-1]  # contrib/net is net
        split = "test" if int(hashlib.sha1(p["Package"].encode()).hexdigest(), 16) % 4 == 0 else "train"
        rows.append({"name": p["Package"], "subject": p["subject"], "body": p.get("body", "").strip(),
                     "queue": queue, "priority": p["Priority"], "split": split})
    common = {q for q, _ in collections.Counter(r["queue"] for r in rows).most_common(QUEUES)}
    rows = [r for r in rows if r["queue"] in common]
    rows.sort(key=lambda r: r["name"])
    for i, r in enumerate(rows, 1):
        r["id"] = i
    return rows


def text_of(row):
    return row["subject"] + " " + row["body"]


def onnx_model(vectorizer, classifier):
    vocabulary = vectorizer.vocabulary_
    unigrams = sorted((t for t in vocabulary if " " not in t), key=vocabulary.get)
    bigrams = sorted((t for t in vocabulary if " " in t), key=vocabulary.get)
    pool, indexes = [], []
    for term in unigrams + bigrams:
        pool.extend(term.split(" "))
        indexes.append(vocabulary[term])
    labels = [str(c) for c in classifier.classes_]
    nodes = [
        # C.UTF-8: a locale every Debian machine has (ONNX Runtime needs the named one).
        helper.make_node("StringNormalizer", ["text"], ["lower"], case_change_action="LOWER", is_case_sensitive=0,
                         locale="C.UTF-8"),
        helper.make_node("Tokenizer", ["lower"], ["tokens"], domain="com.microsoft", mark=0, mincharnum=2,
                         pad_value="#", tokenexp=RE2_TOKENS),
        helper.make_node("TfIdfVectorizer", ["tokens"], ["tfidf"], mode="TFIDF", min_gram_length=1,
                         max_gram_length=2, max_skip_count=0, ngram_counts=[0, len(unigrams)],
                         ngram_indexes=indexes, pool_strings=pool,
                         weights=[float(w) for w in vectorizer.idf_]),
        helper.make_node("Normalizer", ["tfidf"], ["normalized"], domain="ai.onnx.ml", norm="L2"),
        helper.make_node("LinearClassifier", ["normalized"], ["label", "probabilities"], domain="ai.onnx.ml",
                         coefficients=[float(v) for v in classifier.coef_.ravel()],
                         intercepts=[float(v) for v in classifier.intercept_], classlabels_strings=labels,
                         multi_class=1, post_transform="SOFTMAX"),
        helper.make_node("ZipMap", ["probabilities"], ["output_probability"], domain="ai.onnx.ml",
                         classlabels_strings=labels),
    ]
    zipped = onnx.TypeProto()
    zipped.sequence_type.elem_type.map_type.key_type = TensorProto.STRING
    zipped.sequence_type.elem_type.map_type.value_type.CopyFrom(helper.make_tensor_type_proto(TensorProto.FLOAT, []))
    graph = helper.make_graph(nodes, "tickets", [helper.make_tensor_value_info("text", TensorProto.STRING, [None])],
                              [helper.make_tensor_value_info("label", TensorProto.STRING, [None]),
                               helper.make_value_info("output_probability", zipped)])
    model = helper.make_model(graph, producer_name="skl2onnx-like", producer_version="runnel-tickets",
                              opset_imports=[helper.make_opsetid("", 15), helper.make_opsetid("ai.onnx.ml", 1),
                                             helper.make_opsetid("com.microsoft", 1)])
    onnx.checker.check_model(model)
    return model, labels


PIPELINE = """# Generated by examples/tickets/build_tickets.py: routes each ticket of the table
# `tickets` (examples/tickets/schema.sql) to a queue, written back as text.
name = "tickets"

[source]
table = "tickets"
key = "id"
text_columns = ["subject", "body"]

[model]
path = "tickets_model.onnx"
outputs = [{outputs}]
labels = ["queue"]

[features]
text = ["subject || ' ' || coalesce(body, '')"]

[output]
columns = [{outputs}]

[write_back]
columns = ["queue"]
"""


def write_pipeline(path, labels):
    columns = ["p_" + "".join(c if c.isalnum() else "_" for c in label) for label in labels]
    outputs = ", ".join(f'"{name}"' for name in ["queue"] + columns)
    with open(path, "w", encoding="utf-8") as f:
        f.write(PIPELINE.format(outputs=outputs))


def write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir")
    parser.add_argument("--index", default="/var/lib/dpkg/status")
    parser.add_argument("--max-features", type=int, default=5000)
    parser.add_argument("--save-sklearn", action="store_true",
                        help="also pickle the fitted vectorizer and classifier (bench/tickets_peer.py)")
    args = parser.parse_args()
    os.makedirs(args.outdir, exist_ok=True)
    rows = tickets_of(read_index(args.index))
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    if len(train) < 50 or not test:
        sys.exit(f"{args.index}: only {len(rows)} usable packages")
    vectorizer = TfidfVectorizer(lowercase=True, token_pattern=TOKENS, ngram_range=(1, 2),
                                 max_features=args.max_features)
    x_train = vectorizer.fit_transform([text_of(r) for r in train])
    classifier = LogisticRegression(C=10.0, max_iter=2000).fit(x_train, [r["queue"] for r in train])
    model, labels = onnx_model(vectorizer, classifier)
    onnx.save(model, os.path.join(args.outdir, "tickets_model.onnx"))

    x_test = vectorizer.transform([text_of(r) for r in test])
    predicted = classifier.predict(x_test)
    probabilities = classifier.predict_proba(x_test)
    accuracy = float(np.mean(predicted == np.array([r["queue"] for r in test])))
    keys = ["id", "subject", "body", "queue", "priority", "split"]
    write_csv(os.path.join(args.outdir, "tickets.csv"), keys, [[r[k] for k in keys] for r in rows])
    write_csv(os.path.join(args.outdir, "tickets_test.csv"), ["id", "subject", "body"],
              [[r["id"], r["subject"], r["body"]] for r in test])
    index = np.searchsorted(classifier.classes_, predicted)
    np.savetxt(os.path.join(args.outdir, "tickets_expected.csv"), np.column_stack([index, probabilities]),
               delimiter=",", fmt="%.9g")
    with open(os.path.join(args.outdir, "labels.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(labels) + "\n")
    write_pipeline(os.path.join(args.outdir, "pipeline.toml"), labels)
    if args.save_sklearn:
        import pickle
        with open(os.path.join(args.outdir, "tickets_sklearn.pkl"), "wb") as f:
            pickle.dump((vectorizer, classifier), f)
    print(f"{len(rows)} tickets ({len(train)} train, {len(test)} test), {len(labels)} queues, "
          f"{len(vectorizer.vocabulary_)} terms; test accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
