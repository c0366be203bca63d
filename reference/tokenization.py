"""BERT's WordPiece tokenizer, written out: basic tokenization, then greedy longest-match-first WordPiece (section 1).

Devlin et al. 2019, "BERT", section 3 and appendix A; Wu et al. 2016, "Google's Neural Machine Translation System"
(WordPiece); the rules follow Google's ``tokenization.py``, as transformers' ``BertTokenizer`` does:

1. clean: drop NUL, U+FFFD and control characters (Unicode category C*, except tab, newline and carriage return);
   every whitespace character becomes a space;
2. Chinese: put spaces around every CJK ideograph, so Chinese is tokenized one character per token
   (``tokenize_chinese_chars``; the blocks are in :data:`CJK_BLOCKS`);
3. split on whitespace; lower-case and strip accents (NFD, then drop combining marks, category Mn);
4. split off every punctuation character (ASCII punctuation, and Unicode category P*) as a token of its own;
5. WordPiece each word: repeatedly take the longest prefix of what is left that the vocabulary holds
   (``##``-prefixed after the first piece); a word with a piece not in the vocabulary, or longer than
   100 characters, becomes ``[UNK]`` as a whole.

Special tokens written inside the text (a literal ``[MASK]``) are not recognised: the text is plain text.
The vocabulary shipped in ``reference/data/vocab.txt`` holds English WordPieces and the seed document's
Chinese characters (built by ``reference/data/add_seed_characters.py``).
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

__all__ = ["CJK_BLOCKS", "WordPieceTokenizer", "is_cjk", "is_punctuation"]

# The CJK Unified Ideographs blocks (and extensions A-E, compatibility ideographs) of Google's _is_chinese_char.
CJK_BLOCKS = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
              (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))
MAX_WORD_CHARACTERS = 100  # a longer "word" is [UNK] (transformers' max_input_chars_per_word)


def is_cjk(character: str) -> bool:
    return any(low <= ord(character) <= high for low, high in CJK_BLOCKS)


def is_punctuation(character: str) -> bool:
    # Every ASCII non-alphanumeric printable counts (BERT splits "$" and "^" although Unicode calls them symbols).
    code = ord(character)
    if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126:
        return True
    return unicodedata.category(character).startswith("P")


def _is_control(character: str) -> bool:
    return character not in "\t\n\r" and unicodedata.category(character).startswith("C")


class WordPieceTokenizer:
    """``tokenize(text) -> tokens``, ``encode(text, pair) -> (input_ids, token_type_ids)`` over a vocabulary file.

    Args:
        vocab: ``{token: id}`` (see :func:`reference.bert.load_vocab`) or the path of a one-token-a-line file.
        do_lower_case: lower-case and strip accents (BERT uncased, ``bert-base-chinese``).
        tokenize_chinese_chars: one token per CJK ideograph.
    """

    def __init__(self, vocab: dict[str, int] | str | Path, *, do_lower_case: bool = True,
                 tokenize_chinese_chars: bool = True, unk_token: str = "[UNK]", cls_token: str = "[CLS]",
                 sep_token: str = "[SEP]"):
        if not isinstance(vocab, dict):
            from reference.bert import load_vocab  # the one reader of vocabulary files

            vocab = load_vocab(vocab)
        for name, token in (("unk_token", unk_token), ("cls_token", cls_token), ("sep_token", sep_token)):
            if token not in vocab:
                raise ValueError(f"{name} {token!r} is not in the vocabulary")
        self.vocab, self.unk_token, self.cls_token, self.sep_token = vocab, unk_token, cls_token, sep_token
        self.do_lower_case, self.tokenize_chinese_chars = do_lower_case, tokenize_chinese_chars

    # ---- 1-4: basic tokenization ----------------------------------------------------------------------------

    def _clean(self, text: str) -> str:
        kept = (c for c in text if c not in "\x00\ufffd" and not _is_control(c))
        return "".join(" " if c.isspace() else c for c in kept)

    def basic_tokenize(self, text: str) -> list[str]:
        """Words and punctuation marks, before WordPiece."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        text = self._clean(text)
        if self.tokenize_chinese_chars:
            text = "".join(f" {c} " if is_cjk(c) else c for c in text)
        words = []
        for word in text.split():
            if self.do_lower_case:
                word = unicodedata.normalize("NFD", word.lower())
                word = "".join(c for c in word if unicodedata.category(c) != "Mn")
            words.extend(self._split_punctuation(word))
        return words

    @staticmethod
    def _split_punctuation(word: str) -> list[str]:
        pieces, current = [], ""
        for character in word:
            if is_punctuation(character):
                pieces += [current, character] if current else [character]
                current = ""
            else:
                current += character
        return pieces + [current] if current else pieces

    # ---- 5: WordPiece ----------------------------------------------------------------------------------------

    def wordpiece(self, word: str) -> list[str]:
        """Greedy longest-match-first: ``"unaffable" -> ["un", "##aff", "##able"]``, or ``[unk_token]``."""
        if len(word) > MAX_WORD_CHARACTERS:
            return [self.unk_token]
        pieces, start = [], 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    break
            else:
                return [self.unk_token]  # no prefix of what is left is in the vocabulary
            pieces.append(piece)
            start = end
        return pieces

    def tokenize(self, text: str) -> list[str]:
        return [piece for word in self.basic_tokenize(text) for piece in self.wordpiece(word)]

    def encode(self, text: str, text_pair: str | None = None) -> tuple[list[int], list[int]]:
        """``[CLS] text [SEP]`` (``text_pair [SEP]``): the ids and the token types (0 = first segment, 1 = second)."""
        tokens = [self.cls_token, *self.tokenize(text), self.sep_token]
        types = [0] * len(tokens)
        if text_pair is not None:
            second = [*self.tokenize(text_pair), self.sep_token]
            tokens, types = tokens + second, types + [1] * len(second)
        return [self.vocab[t] for t in tokens], types
