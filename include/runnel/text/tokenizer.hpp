// Hugging Face tokenizers read from their `tokenizer.json`: the text → token ids step
// a transformer text classifier needs before its ONNX graph (input_ids and
// attention_mask). Supported, as the `tokenizers` library runs them:
//   normalizers     BertNormalizer, Lowercase, StripAccents, NFC/NFD/NFKC/NFKD, Strip,
//                   Replace (a string, or a regular expression RE2 reads as the library
//                   does: no look-arounds, no \s \w \d \b), Prepend, Precompiled
//                   (SentencePiece's compiled rules), Sequence, null
//   pre-tokenizers  BertPreTokenizer, ByteLevel (GPT-2's split; use_regex), Whitespace,
//                   WhitespaceSplit, Punctuation (isolated), Metaspace (prepend always,
//                   never, or first: then as the first pre-tokenizer), Sequence, null
//   models          WordPiece (BERT), BPE (byte-level as GPT-2/RoBERTa, or with an
//                   unk token, continuing-subword prefix, end-of-word suffix), WordLevel,
//                   Unigram (SentencePiece's: T5, XLM-R, ALBERT, mBART; byte fallback)
//   post-processors BertProcessing, RobertaProcessing, TemplateProcessing (single
//                   sequences), ByteLevel, Sequence, null
//   added tokens    matched in the raw text (or the normalized text when `normalized`)
//                   before everything else, with single_word, lstrip, rstrip
//   truncation      max_length (right or left), kept when special tokens are added
// Anything else (a regex Split, BPE dropout, Nmt, ...) is refused at load naming the
// file and the field. Offsets and pairs of sequences are not computed.
//
// Thread safety: a Tokenizer is immutable after Load and shared read-only; Encode may
// run on many threads at once.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace runnel::text {

class Tokenizer {
 public:
  // The largest tokenizer.json read (64 MiB: BERT's is 0.7 MB, RoBERTa's 1.4 MB).
  static constexpr size_t kMaxFileBytes = size_t{64} << 20;

  // Reads and checks a tokenizer.json. Throws Error(Io) when it cannot be read,
  // Error(Model) naming the file and the field at fault for malformed or unsupported
  // content (sizes bounded before anything is allocated for them).
  static std::shared_ptr<const Tokenizer> Load(const std::filesystem::path& file);
  // The same from the file's bytes; `source` names it in messages.
  static std::shared_ptr<const Tokenizer> Parse(std::string_view json, const std::string& source);

  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // The ids of one text with the post-processor's special tokens, cut to
  // `max_length` tokens when it is not 0 (else to the file's truncation, if any).
  // Throws Error(InvalidInput) when `text` is not well-formed UTF-8.
  std::vector<int64_t> Encode(std::string_view text, size_t max_length = 0) const;

  // The id padding takes (the file's padding.pad_id, else the id of a pad token
  // among the added tokens: [PAD], <pad>), and the truncation length of the file (0:
  // none).
  int64_t pad_id() const;
  size_t max_length() const;
  size_t vocab_size() const;
  const std::string& source() const;

  // One line per stage, for `runnel model inspect`.
  std::vector<std::string> Describe() const;

  struct Impl;

 private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace runnel::text
