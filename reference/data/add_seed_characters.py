"""Append the seed document's Chinese characters and full-width punctuation to the shipped WordPiece vocabulary.

The seed (``../shared/seed/000_797752924e540616.txt``, interview questions in Chinese) demonstrates BERT on
Chinese sentences (``bert-base-chinese``). BERT tokenizes Chinese one character per token (its basic tokenizer
puts spaces around every CJK ideograph), so a Chinese vocabulary is a list of single characters. This script
takes every character of the seed that BERT treats as a CJK ideograph (the Unicode blocks of
``_is_chinese_char`` in Google's ``tokenization.py``, from the Unicode Standard's CJK Unified Ideographs,
Extensions A-E and Compatibility Ideographs) and every non-ASCII punctuation mark (Unicode category P*: the
full-width ，。！？ ...), and appends them, sorted by code point, to ``vocab.txt`` after the English tokens,
whose ids stay unchanged. Running it again rewrites the same section: it is idempotent.

    python reference/data/add_seed_characters.py ../shared/seed/000_797752924e540616.txt
"""

from __future__ import annotations

import sys
import unicodedata
from pathlib import Path

VOCAB = Path(__file__).resolve().parent / "vocab.txt"

# The CJK blocks BERT's basic tokenizer splits into single characters (Google's tokenization.py, _is_chinese_char).
CJK_BLOCKS = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
              (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def is_cjk(character: str) -> bool:
    return any(low <= ord(character) <= high for low, high in CJK_BLOCKS)


def is_wide_punctuation(character: str) -> bool:
    return ord(character) > 127 and unicodedata.category(character).startswith("P")


def seed_characters(text: str) -> list[str]:
    """The seed's CJK ideographs and non-ASCII punctuation marks, once each, by code point."""
    return sorted({c for c in text if is_cjk(c) or is_wide_punctuation(c)})


def main(seed_path: str) -> None:
    english = [t for t in VOCAB.read_text(encoding="utf-8").splitlines()
               if not (len(t) == 1 and (is_cjk(t) or is_wide_punctuation(t)))]
    added = seed_characters(Path(seed_path).read_text(encoding="utf-8"))
    VOCAB.write_text("\n".join(english + added) + "\n", encoding="utf-8")
    print(f"{VOCAB}: {len(english)} tokens kept, {len(added)} seed characters appended")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python reference/data/add_seed_characters.py SEED_DOCUMENT")
    main(sys.argv[1])
