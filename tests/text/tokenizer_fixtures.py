#!/usr/bin/python3
"""Tokenizers and the token ids they must give, made independently of Runnel.

Builds three Hugging Face tokenizer.json files from the package descriptions of the
machine's Debian index (/var/lib/dpkg/status), as the `tokenizers` library writes them:
  bert_uncased.json  WordPiece: BertNormalizer (lower case, accents stripped),
                     BertPreTokenizer, TemplateProcessing "[CLS] $A [SEP]"
  bert_cased.json    the same vocabulary, cased, accents kept, BertProcessing
  bpe.json           byte-level BPE as RoBERTa's: ByteLevel pre-tokenizer, merges
                     trained here, RobertaProcessing, "<mask>" with lstrip
  unigram.json       a SentencePiece Unigram model trained here by python3-sentencepiece
                     (nmt_nfkc rules), as transformers' converter writes it: Precompiled,
                     Strip, Replace(Regex), Metaspace (prepend always), <s> $A </s>
  unigram_bytes.json the same with byte fallback, no rules, Metaspace prepend "first"
and encodes hundreds of texts with the Python implementation of each in
examples/reviews/hf_tokenizers.py and tests/text/unigram_reference.py (from the
reference algorithms, not from Runnel):
  cases.json         [{"text", "bert_uncased": ids, "bert_cased": ids, "bpe": ids,
                       "unigram": ids, "unigram_bytes": ids,
                       "unigram_spm": SentencePiece's own ids (texts without "<" only)}]
Texts: package descriptions, and hostile ones (accents, Greek, Turkish İ, CJK, emoji,
unusual spaces, very long words, special tokens typed literally, empty text).

Usage: tokenizer_fixtures.py OUTDIR. Exit 77 when python3-regex or python3-sentencepiece
is missing."""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples", "reviews"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    from hf_tokenizers import bert_encode, bert_json, bpe_encode, bpe_json, build_wordpiece_vocab, train_bpe
    import unigram_reference
except ImportError:
    sys.exit(77)

INDEX = "/var/lib/dpkg/status"

HOSTILE = [
    "",
    " ",
    "Café crème brûlée — naïve façade, résumé.",
    "ΑΘΗΝΑ είναι η πρωτεύουσα της Ελλάδας; Σίσυφος ΟΔΟΣ",
    "İstanbul'da IŞIK ılık; İİ ii",
    "東京都は日本の首都です。北京欢迎你！한국어 텍스트",
    "emoji 😀🎉👍🏽 and 🇩🇪 flags, ZWJ 👨‍👩‍👧",
    "tabs\tand\nnewlines\r\nand\u00a0nbsp\u2003em\u3000ideographic\u202fnarrow",
    "zero\u200bwidth\ufeffbom and control\x07bell\x00nul",
    "a" * 150,
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "[CLS] typed [SEP] literally [MASK] and [mask] [UNK] [PAD]",
    "<s>roberta</s> a <mask> b<mask>c <pad> <unk>",
    "it's they're we've I'm you'll he'd 'S 'T",
    "    leading and trailing spaces    ",
    "multiple   inner    spaces and a\n\n\nparagraph",
    "numbers 1234567890 3.14159 1e-9 -42 ½ ² ٣ ৪",
    "punctuation!!! ?? ... ,,, ;;; ::: \"quoted\" 'single' (paren) [bracket] {brace}",
    "symbols $ + < = > ^ ` | ~ © ® ™ ° ± × ÷ € £ ¥",
    "URL https://example.com/path?q=1&r=2#frag and email user@example.org",
    "mixed CamelCase snake_case kebab-case UPPER lower",
    "Ǆ ǅ ǆ Ⅻ ﬁ ligature ﬀ",
    "combining e\u0301 a\u0300 n\u0303 o\u0308",
    "Deutsch: Straße, Größe, ÄÖÜ äöü ẞ",
    "русский текст: Привет, мир!",
    "עברית שלום עולם ومرحبا بالعالم",
    "x",
    "?",
    "'",
    "  \t  ",
]


def read_descriptions(limit=400):
    texts, current = [], []
    with open(INDEX, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("Description:"):
                current = [line[len("Description:"):].strip()]
            elif line.startswith(" ") and current:
                current.append(line.strip() if line.strip() != "." else "")
            elif current:
                texts.append("\n".join(current))
                current = []
    return sorted(set(texts))[:limit]


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    texts = read_descriptions() + HOSTILE
    training = texts[:300] + HOSTILE[::2]  # some hostile texts' characters known, others not
    vocab = build_wordpiece_vocab(training)
    bpe_vocab, merges = train_bpe(training)
    ranks = {m: i for i, m in enumerate(merges)}
    spm = unigram_reference.train(training, "unigram", 1500, False, "nmt_nfkc")
    spm_bytes = unigram_reference.train(training, "unigram_bytes", 1200, True, "identity")
    unigram = unigram_reference.Reference(spm, "always")
    unigram_bytes = unigram_reference.Reference(spm_bytes, "first")
    files = {"bert_uncased.json": bert_json(vocab, True), "bert_cased.json": bert_json(vocab, False),
             "bpe.json": bpe_json(bpe_vocab, merges),
             "unigram.json": unigram_reference.tokenizer_json(spm, "always"),
             "unigram_bytes.json": unigram_reference.tokenizer_json(spm_bytes, "first")}
    for name, content in files.items():
        with open(os.path.join(out, name), "w", encoding="utf-8") as f:
            json.dump(content, f, ensure_ascii=False)
    cases = [{"text": t, "bert_uncased": bert_encode(t, vocab, True), "bert_cased": bert_encode(t, vocab, False),
              "bpe": bpe_encode(t, bpe_vocab, ranks), "unigram": unigram.encode(t),
              "unigram_bytes": unigram_bytes.encode(t)} for t in texts]
    for c in cases:
        if "<" not in c["text"]:
            c["unigram_spm"] = unigram_reference.spm_encode(spm, c["text"])
    with open(os.path.join(out, "cases.json"), "w", encoding="utf-8") as f:
        json.dump(cases, f, ensure_ascii=False)
    print(f"{len(cases)} texts, WordPiece {len(vocab)} tokens, BPE {len(bpe_vocab)} tokens / {len(merges)} merges, "
          f"Unigram {len(unigram.model.pieces)} and {len(unigram_bytes.model.pieces)} pieces")


if __name__ == "__main__":
    main()
