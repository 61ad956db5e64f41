#!/usr/bin/python3
"""scikit-learn's own pipeline on the tickets of CSV (id, subject, body): TF-IDF
transform and predict_proba in batches of 1,024, timed; prints tickets/s.
Usage: tickets_peer.py DIR CSV (DIR from build_tickets.py --save-sklearn)."""
import csv
import pickle
import sys
import time

with open(sys.argv[1] + "/tickets_sklearn.pkl", "rb") as f:
    vectorizer, classifier = pickle.load(f)
with open(sys.argv[2], encoding="utf-8") as f:
    rows = list(csv.reader(f))[1:]
texts = [r[1] + " " + r[2] for r in rows]
start = time.perf_counter()
for i in range(0, len(texts), 1024):
    classifier.predict_proba(vectorizer.transform(texts[i:i + 1024]))
elapsed = time.perf_counter() - start
print(f"scikit-learn  {len(texts)} tickets  {len(texts) / elapsed:10.0f} tickets/s")
