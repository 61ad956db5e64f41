"""SentencePiece Unigram tokenizers as Hugging Face's `tokenizers` runs them, in Python,
written from the reference algorithms (tokenizers' models/unigram, normalizers/
precompiled with the spm_precompiled crate, pre_tokenizers/metaspace; SentencePiece's
darts-clone double array), for tests/text. The models are trained here by Debian's
python3-sentencepiece and written as tokenizer.json the way transformers' SpmConverter
does; SentencePiece's own encoder is the second opinion the tests also compare with.
Needs python3-regex (graphemes: \\X) and python3-sentencepiece."""
import base64
import math
import os
import struct
import tempfile

import regex
import sentencepiece
from sentencepiece import sentencepiece_model_pb2

SPACE = "\u2581"
UNK_PENALTY = 10.0


# --- Precompiled: SentencePiece's compiled normalization rules ----------------------

class Precompiled:
    """charsmap = u32 trie size (bytes, little endian), darts-clone units, then
    NUL-terminated replacement strings."""

    def __init__(self, charsmap):
        (size,) = struct.unpack_from("<I", charsmap, 0)
        self.units = struct.unpack_from(f"<{size // 4}I", charsmap, 4)
        self.normalized = charsmap[4 + size:]

    def prefix_values(self, key):
        units, out = self.units, []
        pos = (units[0] >> 10) << ((units[0] & (1 << 9)) >> 6)
        for c in key:
            if c == 0:
                break
            pos ^= c
            if pos >= len(units):
                break
            unit = units[pos]
            if unit & ((1 << 31) | 0xFF) != c:
                break
            pos ^= (unit >> 10) << ((unit & (1 << 9)) >> 6)
            if (unit >> 8) & 1:
                out.append(units[pos] & ((1 << 31) - 1))
        return out

    def transform(self, chunk):
        """The replacement of the chunk's shortest prefix with a rule, for the whole
        chunk (as tokenizers does), or None."""
        values = self.prefix_values(chunk.encode("utf-8"))
        if not values:
            return None
        start = values[0]
        end = self.normalized.index(b"\0", start) if b"\0" in self.normalized[start:] else len(self.normalized)
        return self.normalized[start:end].decode("utf-8")

    def normalize(self, text):
        out = []
        for grapheme in regex.findall(r"\X", text):
            if len(grapheme.encode("utf-8")) < 6:
                norm = self.transform(grapheme)
                if norm is not None:
                    out.append(norm)
                    continue
            for c in grapheme:
                norm = self.transform(c)
                out.append(c if norm is None else norm)
        return "".join(out)


# --- Metaspace and Unigram ----------------------------------------------------------

def metaspace(text, prepend):
    """Spaces to U+2581, the mark prepended, split before each mark (MergedWithNext)."""
    text = text.replace(" ", SPACE)
    if prepend and text and not text.startswith(SPACE):
        text = SPACE + text
    words, start = [], 0
    for i, c in enumerate(text):
        if c == SPACE and i > start:
            words.append(text[start:i])
            start = i
    if start < len(text):
        words.append(text[start:])
    return words


class Unigram:
    def __init__(self, pieces, unk_id, byte_fallback):
        self.pieces = pieces  # [(piece, score)]
        self.ids = {}
        for i, (p, _) in enumerate(pieces):
            self.ids[p] = i
        self.min_score = min(s for _, s in pieces)
        self.unk_id = unk_id
        self.byte_fallback = byte_fallback
        self.longest = max(len(p.encode("utf-8")) for p, _ in pieces)

    def encode(self, word):
        """Viterbi over byte positions; runs of unknown characters fused to one."""
        data = word.encode("utf-8")
        n = len(data)
        best = [None] * (n + 1)  # (score, start, id)
        best[0] = (0.0, None, None)
        start = 0
        while start < n:
            here = best[start][0]
            mblen = len(word_char_at(data, start).encode("utf-8"))
            single = False
            for end in range(start + 1, min(n, start + self.longest) + 1):
                tid = self.ids.get(data[start:end].decode("utf-8")) if valid(data[start:end]) else None
                if tid is None:
                    continue
                score = self.pieces[tid][1] + here
                if best[end] is None or score > best[end][0]:
                    best[end] = (score, start, tid)
                if end - start == mblen:
                    single = True
            if not single:
                end = start + mblen
                score = self.min_score - UNK_PENALTY + here
                if best[end] is None or score > best[end][0]:
                    if self.unk_id is None:
                        raise ValueError("unknown character and no unk")
                    best[end] = (score, start, self.unk_id)
            start += mblen
        strings, fused, end = [], [], n
        while end > 0:
            _, s, tid = best[end]
            piece = data[s:end].decode("utf-8")
            if self.unk_id is not None and tid == self.unk_id:
                fused.append(piece)
            else:
                if fused:
                    strings.append("".join(reversed(fused)))
                    fused = []
                strings.append(piece)
            end = s
        if fused:
            strings.append("".join(reversed(fused)))
        ids = []
        for s in reversed(strings):
            if s in self.ids:
                ids.append(self.ids[s])
            elif self.byte_fallback and all(f"<0x{b:02X}>" in self.ids for b in s.encode("utf-8")):
                ids.extend(self.ids[f"<0x{b:02X}>"] for b in s.encode("utf-8"))
            else:
                ids.append(self.unk_id)
        return ids


def valid(b):
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def word_char_at(data, i):
    for k in range(1, 5):
        if valid(data[i:i + k]):
            return data[i:i + k].decode("utf-8")
    raise ValueError("not UTF-8")


# --- Models trained here, written as tokenizer.json ---------------------------------

SPECIAL = ["<pad>", "<unk>", "<s>", "</s>"]  # ids 0..3


def train(texts, name, vocab_size, byte_fallback, normalization):
    with tempfile.TemporaryDirectory() as tmp:
        corpus = os.path.join(tmp, "corpus.txt")
        with open(corpus, "w", encoding="utf-8") as f:
            for t in texts:
                for line in t.split("\n"):
                    if line.strip():
                        f.write(line + "\n")
        prefix = os.path.join(tmp, name)
        sentencepiece.SentencePieceTrainer.train(
            input=corpus, model_prefix=prefix, model_type="unigram", vocab_size=vocab_size,
            hard_vocab_limit=False, pad_id=0, unk_id=1, bos_id=2, eos_id=3, byte_fallback=byte_fallback,
            normalization_rule_name=normalization, character_coverage=0.98, minloglevel=2,
            user_defined_symbols=["<mask>"])
        with open(prefix + ".model", "rb") as f:
            return f.read()


def pieces_of(model_bytes):
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model_bytes)
    return proto, [(p.piece, p.score) for p in proto.pieces]


def tokenizer_json(model_bytes, prepend_scheme):
    """As transformers' SpmConverter writes it: Precompiled (when the model has rules),
    right Strip, runs of spaces to one mark; Metaspace; Unigram; <s> $A </s>."""
    proto, pieces = pieces_of(model_bytes)
    charsmap = proto.normalizer_spec.precompiled_charsmap
    steps = [{"type": "Strip", "strip_left": False, "strip_right": True},
             {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": SPACE}]
    if charsmap:
        steps.insert(0, {"type": "Precompiled", "precompiled_charsmap": base64.b64encode(charsmap).decode()})
    ids = {p: i for i, (p, _) in enumerate(pieces)}
    added = [{"id": ids[t], "content": t, "single_word": False, "lstrip": t == "<mask>", "rstrip": False,
              "normalized": False, "special": True} for t in SPECIAL + ["<mask>"]]
    special = {t: {"id": t, "ids": [ids[t]], "tokens": [t]} for t in ["<s>", "</s>"]}
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": steps},
        "pre_tokenizer": {"type": "Metaspace", "replacement": SPACE, "prepend_scheme": prepend_scheme,
                          "split": True},
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}},
                                      {"SpecialToken": {"id": "</s>", "type_id": 0}}],
                           "pair": [], "special_tokens": special},
        "decoder": {"type": "Metaspace", "replacement": SPACE, "prepend_scheme": prepend_scheme, "split": True},
        "model": {"type": "Unigram", "unk_id": proto.trainer_spec.unk_id, "vocab": [[p, s] for p, s in pieces],
                  "byte_fallback": proto.trainer_spec.byte_fallback},
    }


class Reference:
    """Encodes as the tokenizer.json made by tokenizer_json() runs in `tokenizers`."""

    def __init__(self, model_bytes, prepend_scheme):
        from hf_tokenizers import split_added
        self.split_added = split_added
        proto, pieces = pieces_of(model_bytes)
        charsmap = proto.normalizer_spec.precompiled_charsmap
        self.precompiled = Precompiled(charsmap) if charsmap else None
        self.model = Unigram(pieces, proto.trainer_spec.unk_id, proto.trainer_spec.byte_fallback)
        self.prepend_scheme = prepend_scheme
        self.added = {t: (self.model.ids[t], t == "<mask>") for t in SPECIAL + ["<mask>"]}

    def normalize(self, text):
        if self.precompiled is not None:
            text = self.precompiled.normalize(text)
        text = rstrip_ws(text)
        return regex.sub(" {2,}", SPACE, text)

    def encode(self, text):
        ids = []
        for index, (plain, tid) in enumerate(self.split_added(text, self.added)):
            if tid is not None:
                ids.append(tid)
                continue
            prepend = self.prepend_scheme == "always" or (self.prepend_scheme == "first" and index == 0)
            for word in metaspace(self.normalize(plain), prepend):
                ids.extend(self.model.encode(word))
        return [self.model.ids["<s>"]] + ids + [self.model.ids["</s>"]]


def rstrip_ws(text):
    from hf_tokenizers import is_whitespace
    end = len(text)
    while end > 0 and is_whitespace(text[end - 1]):
        end -= 1
    return text[:end]


def spm_encode(model_bytes, text):
    """SentencePiece's own ids for `text` (with <s> and </s>)."""
    sp = sentencepiece.SentencePieceProcessor(model_proto=model_bytes)
    return [2] + sp.encode(text) + [3]
