#!/usr/bin/python3
"""The reviews workload: a small transformer that scores the emotion of product
reviews, served with its Hugging Face tokenizer.json as a DistilRoBERTa emotion
classifier would be.

No model hub can be reached here, so everything is made on the spot: reviews written
from templates (six emotions, varied length: a few to ~200 tokens), a byte-level BPE
tokenizer trained on them (RoBERTa's format: examples/reviews/hf_tokenizers.py), and a
two-layer transformer encoder (RoBERTa's shape, d=64, 4 heads, classification head on
<s>) trained briefly with Debian's python3-torch and exported to ONNX
(torch.onnx.export, opset 17, dynamic batch and sequence).

Writes into OUTDIR:
  reviews.csv            every review: id, title, body, emotion, split
  tokenizer.json         the tokenizer (truncation at 128 tokens)
  labels.txt             the emotions, in the model's output order
  reviews_model.onnx     inputs input_ids, attention_mask [batch, seq]; output logits
  reviews_model_labelled.onnx
                         the same with the emotions in the ONNX metadata (id2label,
                         as onnx.helper.set_model_props writes it): served with no
                         labels file
  reviews_expected.csv   64 test reviews of varied lengths: id, then PyTorch's logits,
                         each review run alone (unpadded) on the Python tokenizer's ids
  pipeline.toml          the pipeline over examples/reviews/schema.sql: the emotion
                         written back as text, one probability column per emotion
  reviews_ids.json       every review's token ids by the Python tokenizer (for
                         benchmark peers that have no tokenizer)
and prints the test accuracy. Exit 77 when torch, onnx or regex is missing.

Usage: build_reviews.py OUTDIR [--epochs N] [--reviews N]"""
import argparse
import csv
import json
import math
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    import torch
    from torch import nn
    import onnx
    from hf_tokenizers import bpe_encode, bpe_json, train_bpe
except ImportError:
    sys.exit(77)

EMOTIONS = ["anger", "fear", "joy", "sadness", "surprise", "neutral"]
MAX_TOKENS = 128
PRODUCTS = ["blender", "kettle", "phone case", "backpack", "desk lamp", "headphones", "running shoes", "coffee grinder",
            "winter jacket", "tent", "keyboard", "vacuum cleaner", "water bottle", "office chair", "toaster"]
PHRASES = {
    "anger": ["this is outrageous", "I am furious about it", "what a scam", "absolutely unacceptable service",
              "they ignored every complaint", "I want my money back now", "the seller was rude and useless"],
    "fear": ["I am worried it will catch fire", "it sparked and scared me", "I'm afraid to leave it plugged in",
             "the smell of burning plastic was alarming", "my kids could get hurt", "it feels unsafe to use"],
    "joy": ["I absolutely love it", "best purchase this year", "works beautifully", "it made my day",
            "delighted with the quality", "what a wonderful surprise gift for myself", "five stars, so happy"],
    "sadness": ["I'm disappointed and sad", "it broke after a week, heartbreaking", "I miss my old one",
                "it was a gift from my late father and now it's ruined", "such a letdown", "I feel let down"],
    "surprise": ["I did not expect that at all", "wow, it is much bigger than I thought", "unexpectedly fast delivery",
                 "to my astonishment it works underwater", "I was shocked by how light it is", "who knew!"],
    "neutral": ["it does what it says", "arrived on Tuesday", "the colour is grey", "average product",
                "it is a standard model", "instructions were included", "fits in the cupboard"],
}
FILLER = ["I bought it last month.", "The box was plain cardboard.", "My neighbour has the same one.",
          "Shipping took four days.", "I use it mostly in the evening.", "The manual is in English and French.",
          "It came with two spare parts.", "Price was around forty euros.", "I compared three brands before.",
          "Setup took ten minutes.", "Voilà, c'était livré — très vite.", "Größe passt, Farbe okay.", "😀👍"]


def make_reviews(n, rng):
    reviews = []
    for i in range(n):
        emotion = EMOTIONS[i % len(EMOTIONS)]
        product = rng.choice(PRODUCTS)
        title = f"{rng.choice(PHRASES[emotion]).capitalize()} ({product})"
        sentences = rng.sample(FILLER, rng.choice([0, 0, 1, 2, 4, 8, 12]))
        sentences.insert(rng.randrange(len(sentences) + 1), f"The {product}: {rng.choice(PHRASES[emotion])}.")
        if rng.random() < 0.15:  # a long review, past the truncation
            sentences += rng.sample(FILLER, len(FILLER)) * 2
        reviews.append({"id": i + 1, "title": title, "body": " ".join(sentences), "emotion": emotion,
                        "split": "test" if (i // len(EMOTIONS)) % 4 == 3 else "train"})
    return reviews


def review_text(r):
    return f"{r['title']}. {r['body']}"  # the pipeline's text feature: title || '. ' || body


class EncoderLayer(nn.Module):
    def __init__(self, d, heads, ff):
        super().__init__()
        self.heads, self.dh = heads, d // heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ff1, self.ff2 = nn.Linear(d, ff), nn.Linear(ff, d)

    def split(self, x):
        return x.view(x.size(0), -1, self.heads, self.dh).transpose(1, 2)

    def forward(self, x, bias):
        q, k, v = self.split(self.q(x)), self.split(self.k(x)), self.split(self.v(x))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.dh) + bias, dim=-1)
        y = (att @ v).transpose(1, 2).reshape(x.size(0), -1, self.heads * self.dh)
        x = self.ln1(x + self.o(y))
        return self.ln2(x + self.ff2(nn.functional.gelu(self.ff1(x))))


class TinyRoberta(nn.Module):
    """RoBERTa's shape in small: embeddings + positions, post-LN encoder layers, the
    classification head (dense, tanh, projection) on the first token, <s>."""

    def __init__(self, vocab, pad_id, d=64, heads=4, layers=2, ff=128, classes=len(EMOTIONS)):
        super().__init__()
        self.tokens = nn.Embedding(vocab, d, padding_idx=pad_id)
        self.positions = nn.Embedding(MAX_TOKENS, d)
        self.ln = nn.LayerNorm(d)
        self.layers = nn.ModuleList(EncoderLayer(d, heads, ff) for _ in range(layers))
        self.dense, self.out = nn.Linear(d, d), nn.Linear(d, classes)

    def forward(self, input_ids, attention_mask):
        positions = torch.arange(input_ids.size(1)).unsqueeze(0)
        x = self.ln(self.tokens(input_ids) + self.positions(positions))
        bias = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * -10000.0
        for layer in self.layers:
            x = layer(x, bias)
        return self.out(torch.tanh(self.dense(x[:, 0])))


def batch(ids_list, pad_id):
    seq = max(len(ids) for ids in ids_list)
    ids = torch.full((len(ids_list), seq), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids_list), seq), dtype=torch.long)
    for i, row in enumerate(ids_list):
        ids[i, :len(row)] = torch.tensor(row)
        mask[i, :len(row)] = 1
    return ids, mask


def train(model, ids, labels, pad_id, epochs, rng):
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    order = list(range(len(ids)))
    model.train()
    for _ in range(epochs):
        rng.shuffle(order)
        for start in range(0, len(order), 32):
            chunk = order[start:start + 32]
            x, m = batch([ids[i] for i in chunk], pad_id)
            loss = nn.functional.cross_entropy(model(x, m), torch.tensor([labels[i] for i in chunk]))
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()


def write_outputs(out, reviews, vocab, merges):
    with open(os.path.join(out, "reviews.csv"), "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "title", "body", "emotion", "split"])
        for r in reviews:
            w.writerow([r["id"], r["title"], r["body"], r["emotion"], r["split"]])
    with open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(bpe_json(vocab, merges, MAX_TOKENS), f, ensure_ascii=False)
    with open(os.path.join(out, "labels.txt"), "w", encoding="utf-8") as f:
        f.write("".join(e + "\n" for e in EMOTIONS))
    probabilities = ", ".join(f'"p_{e}"' for e in EMOTIONS)
    with open(os.path.join(out, "pipeline.toml"), "w", encoding="utf-8") as f:
        f.write(f'''# The reviews workload (examples/reviews): a transformer scores each review's emotion.
name = "reviews"

[source]
table = "reviews"
key = "id"
text_columns = ["title", "body"]

[model]
path = "reviews_model.onnx"
tokenizer = "tokenizer.json"   # Hugging Face tokenizer: input_ids and attention_mask
labels_file = "labels.txt"     # the logits' classes: served as the label, then softmax
outputs = ["emotion", {probabilities}]
labels = ["emotion"]

[features]
text = ["title || '. ' || body"]

[output]
columns = ["emotion", {probabilities}]

[write_back]
columns = ["emotion"]
''')


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("outdir")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--reviews", type=int, default=1200)
    args = parser.parse_args()
    os.makedirs(args.outdir, exist_ok=True)
    torch.manual_seed(7)
    torch.set_num_threads(2)
    rng = random.Random(7)
    reviews = make_reviews(args.reviews, rng)
    train_set = [r for r in reviews if r["split"] == "train"]
    test_set = [r for r in reviews if r["split"] == "test"]
    vocab, merges = train_bpe([review_text(r) for r in train_set[:400]], merges_wanted=400)
    ranks = {m: i for i, m in enumerate(merges)}
    encode = lambda r: bpe_encode(review_text(r), vocab, ranks, MAX_TOKENS)  # noqa: E731
    pad_id = vocab["<pad>"]
    model = TinyRoberta(len(vocab), pad_id)
    train(model, [encode(r) for r in train_set], [EMOTIONS.index(r["emotion"]) for r in train_set], pad_id,
          args.epochs, rng)
    write_outputs(args.outdir, reviews, vocab, merges)
    with open(os.path.join(args.outdir, "reviews_ids.json"), "w") as f:
        json.dump([encode(r) for r in reviews], f)

    x, m = batch([encode(test_set[0]), encode(test_set[1])], pad_id)
    torch.onnx.export(model, (x, m), os.path.join(args.outdir, "reviews_model.onnx"), opset_version=17,
                      input_names=["input_ids", "attention_mask"], output_names=["logits"],
                      dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                                    "attention_mask": {0: "batch", 1: "sequence"}, "logits": {0: "batch"}})
    labelled = onnx.load(os.path.join(args.outdir, "reviews_model.onnx"))
    onnx.helper.set_model_props(labelled, {"id2label": json.dumps({str(i): e for i, e in enumerate(EMOTIONS)})})
    onnx.save(labelled, os.path.join(args.outdir, "reviews_model_labelled.onnx"))
    # 64 test reviews of every length class, each run alone: no padding can hide here.
    by_length = sorted(test_set, key=lambda r: len(encode(r)))
    chosen = [by_length[i * (len(by_length) - 1) // 63] for i in range(64)]
    correct = 0
    with torch.no_grad(), open(os.path.join(args.outdir, "reviews_expected.csv"), "w", newline="") as f:
        w = csv.writer(f)
        for r in chosen:
            x, m = batch([encode(r)], pad_id)
            w.writerow([r["id"]] + [f"{v:.9g}" for v in model(x, m)[0].tolist()])
        for start in range(0, len(test_set), 64):
            chunk = test_set[start:start + 64]
            x, m = batch([encode(r) for r in chunk], pad_id)
            predicted = model(x, m).argmax(dim=1).tolist()
            correct += sum(EMOTIONS[p] == r["emotion"] for p, r in zip(predicted, chunk))
    lengths = [len(encode(r)) for r in chosen]
    print(f"{len(reviews)} reviews, {len(vocab)} tokens; test accuracy {correct / len(test_set):.3f} "
          f"on {len(test_set)}; expected logits for 64 reviews of {min(lengths)} to {max(lengths)} tokens")


if __name__ == "__main__":
    main()
