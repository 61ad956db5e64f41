"""Hugging Face tokenizers in Python, written from the reference algorithms, for the
tests and the reviews workload (no model hub or `tokenizers` package is reachable
here): building a WordPiece vocabulary or byte-level BPE merges from texts, writing
them as tokenizer.json the way the `tokenizers` library does, and encoding texts to
ids as that library does (Google's BERT tokenization.py with Hugging Face's
BertNormalizer rules; OpenAI's GPT-2 encoder.py, with the `regex` module's \\p{L}).
Needs python3-regex."""
import collections
import unicodedata

import regex

GPT2_PATTERN = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


# --- Character classes as Hugging Face's tokenizers (Rust) defines them ------------

WHITE_SPACE = set("\t\n\x0b\x0c\r \x85") | {"\u2028", "\u2029"}


def is_whitespace(c):  # the White_Space property
    return c in WHITE_SPACE or unicodedata.category(c) == "Zs"


def is_control(c):  # BertNormalizer: general category C*, \t \n \r excepted
    return c not in "\t\n\r" and unicodedata.category(c).startswith("C")


def is_punctuation(c):
    o = ord(c)
    if 33 <= o <= 47 or 58 <= o <= 64 or 91 <= o <= 96 or 123 <= o <= 126:
        return True
    return unicodedata.category(c).startswith("P")


def is_chinese(c):
    o = ord(c)
    return any(a <= o <= b for a, b in [(0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
                                         (0x2B740, 0x2B81F), (0x2B920, 0x2CEAF), (0xF900, 0xFAFF),
                                         (0x2F800, 0x2FA1F)])


def split_added(text, tokens):
    """Leftmost-longest matches of the added tokens (content -> (id, lstrip)):
    [(plain text, None) or (None, id)]."""
    out, plain, i = [], 0, 0
    ordered = sorted(tokens, key=len, reverse=True)
    while i < len(text):
        hit = next((t for t in ordered if text.startswith(t, i)), None)
        if hit is None:
            i += 1
            continue
        start, end = i, i + len(hit)
        tid, lstrip = tokens[hit]
        if lstrip:
            while start > plain and is_whitespace(text[start - 1]):
                start -= 1
        if start > plain:
            out.append((text[plain:start], None))
        out.append((None, tid))
        plain = i = end
    if plain < len(text):
        out.append((text[plain:], None))
    return out


# --- BERT: BertNormalizer + BertPreTokenizer + WordPiece --------------------------

def bert_normalize(text, lowercase):
    text = "".join(" " if is_whitespace(c) else c for c in text
                   if not (c == "\0" or c == "\ufffd" or is_control(c)))
    text = "".join(f" {c} " if is_chinese(c) else c for c in text)
    if lowercase:  # strip_accents follows lowercase
        text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
        text = "".join(c.lower() for c in text)  # per character, as Rust's char::to_lowercase
    return text


def bert_words(text):
    words, current = [], ""
    for c in text:
        if is_whitespace(c) or is_punctuation(c):
            if current:
                words.append(current)
            current = ""
            if is_punctuation(c):
                words.append(c)
        else:
            current += c
    if current:
        words.append(current)
    return words


def wordpiece(word, vocab, max_chars=100):
    if len(word) > max_chars:
        return [vocab["[UNK]"]]
    ids, start = [], 0
    while start < len(word):
        end, found = len(word), None
        while start < end:
            piece = ("##" if start > 0 else "") + word[start:end]
            if piece in vocab:
                found = vocab[piece]
                break
            end -= 1
        if found is None:
            return [vocab["[UNK]"]]
        ids.append(found)
        start = end
    return ids


BERT_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def bert_encode(text, vocab, lowercase):
    ids = []
    for plain, tid in split_added(text, {t: (vocab[t], False) for t in BERT_SPECIAL}):
        if tid is not None:
            ids.append(tid)
            continue
        for word in bert_words(bert_normalize(plain, lowercase)):
            ids.extend(wordpiece(word, vocab))
    return [vocab["[CLS]"]] + ids + [vocab["[SEP]"]]


def build_wordpiece_vocab(texts):
    words = collections.Counter()
    for t in texts:
        words.update(bert_words(bert_normalize(t, True)))
        words.update(bert_words(bert_normalize(t, False)))
    chars = sorted({c for w in words for c in w})
    tokens = list(BERT_SPECIAL) + chars + ["##" + c for c in chars]
    frequent = [w for w, _ in words.most_common(1500)]
    pieces = collections.Counter()
    for w, n in words.items():
        for k in range(2, min(len(w), 6)):
            pieces[w[:k]] += n
            pieces["##" + w[-k:]] += n
    tokens += frequent + [p for p, _ in pieces.most_common(1500)]
    vocab = {}
    for t in tokens:
        vocab.setdefault(t, len(vocab))
    return vocab


def bert_json(vocab, lowercase):
    special = {"[CLS]": vocab["[CLS]"], "[SEP]": vocab["[SEP]"]}
    if lowercase:
        post = {"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                           {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
                "pair": [], "special_tokens": {k: {"id": k, "ids": [v], "tokens": [k]} for k, v in special.items()}}
    else:
        post = {"type": "BertProcessing", "sep": ["[SEP]", special["[SEP]"]], "cls": ["[CLS]", special["[CLS]"]]}
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": vocab[t], "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for t in BERT_SPECIAL],
        "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                       "strip_accents": None, "lowercase": lowercase},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": post,
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab},
    }


# --- Byte-level BPE: GPT-2's encoder.py ---------------------------------------------

def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


BYTE_CHARS = bytes_to_unicode()


def byte_words(text):
    return ["".join(BYTE_CHARS[b] for b in piece.encode("utf-8")) for piece in GPT2_PATTERN.findall(text)]


def get_pairs(word):
    return {(word[i], word[i + 1]) for i in range(len(word) - 1)}


def bpe(token, ranks):
    word = tuple(token)
    pairs = get_pairs(word)
    if not pairs:
        return word
    while True:
        bigram = min(pairs, key=lambda p: ranks.get(p, float("inf")))
        if bigram not in ranks:
            break
        first, second = bigram
        new_word, i = [], 0
        while i < len(word):
            try:
                j = word.index(first, i)
            except ValueError:
                new_word.extend(word[i:])
                break
            new_word.extend(word[i:j])
            i = j
            if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                new_word.append(first + second)
                i += 2
            else:
                new_word.append(word[i])
                i += 1
        word = tuple(new_word)
        if len(word) == 1:
            break
        pairs = get_pairs(word)
    return word


BPE_SPECIAL = ["<s>", "<pad>", "</s>", "<unk>"]


def train_bpe(texts, merges_wanted=600):
    counts = collections.Counter()
    for t in texts:
        counts.update(byte_words(t))
    words = {tuple(w): n for w, n in counts.items()}
    merges = []
    for _ in range(merges_wanted):
        pairs = collections.Counter()
        for w, n in words.items():
            for i in range(len(w) - 1):
                pairs[(w[i], w[i + 1])] += n
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        merges.append(best)
        merged = {}
        for w, n in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + n
        words = merged
    vocab = {t: i for i, t in enumerate(BPE_SPECIAL)}
    for b in range(256):
        vocab.setdefault(BYTE_CHARS[b], len(vocab))
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    vocab["<mask>"] = len(vocab)
    return vocab, merges


def bpe_encode(text, vocab, ranks, max_length=None):
    """RoBERTa's ids for `text`; with max_length, cut on the right to keep <s> and </s>."""
    added = {t: (vocab[t], False) for t in BPE_SPECIAL}
    added["<mask>"] = (vocab["<mask>"], True)
    ids = []
    for plain, tid in split_added(text, added):
        if tid is not None:
            ids.append(tid)
            continue
        for word in byte_words(plain):
            ids.extend(vocab[t] for t in bpe(word, ranks))
    if max_length is not None:
        ids = ids[:max(max_length - 2, 0)]
    return [vocab["<s>"]] + ids + [vocab["</s>"]]


def bpe_json(vocab, merges, max_length=None):
    added = [{"id": vocab[t], "content": t, "single_word": False, "lstrip": t == "<mask>", "rstrip": False,
              "normalized": False, "special": True} for t in BPE_SPECIAL + ["<mask>"]]
    return {
        "version": "1.0", "padding": None, "added_tokens": added, "normalizer": None,
        "truncation": None if max_length is None else {"direction": "Right", "max_length": max_length,
                                                       "strategy": "LongestFirst", "stride": 0},
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": {"type": "RobertaProcessing", "sep": ["</s>", vocab["</s>"]], "cls": ["<s>", vocab["<s>"]],
                           "trim_offsets": True, "add_prefix_space": False},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False,
                  "vocab": vocab, "merges": [f"{a} {b}" for a, b in merges]},
    }
