"""reference/tokenization.py against transformers' BertTokenizer over the shipped vocabulary (no hub, offline).

transformers 5's BertTokenizer runs the Rust ``tokenizers`` library (BertNormalizer with handle_chinese_chars,
BertPreTokenizer, WordPiece): an implementation independent of the Python one under test. They must give the
same tokens, ids and token types on the seed document's Chinese example sentences (whose tokens are also
written out by hand here) and on random text mixing English, Chinese in and out of the vocabulary, full-width
and ASCII punctuation, accents, odd whitespace and control characters.
"""

import random

import pytest

from reference.bert import load_tokenizer, load_vocab
from reference.tokenization import WordPieceTokenizer, is_cjk

# The seed's own example inputs (sections 1, 2, 6 and 8), and the tokens BERT must make of them: one per character.
SEED_SENTENCES = {
    "你好，世界！": ["你", "好", "，", "世", "界", "！"],
    "你好，世界！明天下雨了。": ["你", "好", "，", "世", "界", "！", "明", "天", "下", "雨", "了", "。"],
    "这是一张图片。": ["这", "是", "一", "张", "图", "片", "。"],
}


@pytest.fixture(scope="module")
def tokenizers():
    return WordPieceTokenizer(load_vocab()), load_tokenizer()


def test_seed_sentences_tokenize_one_token_per_character(tokenizers):
    ours, theirs = tokenizers
    for sentence, expected in SEED_SENTENCES.items():
        assert ours.tokenize(sentence) == expected
        assert theirs.tokenize(sentence) == expected
        ids, types = ours.encode(sentence)
        assert ids == theirs(sentence)["input_ids"]
        assert ids[0] == theirs.cls_token_id and ids[-1] == theirs.sep_token_id and len(ids) == len(expected) + 2
        assert types == [0] * len(ids)
    # Section 2's sentence as a pair (A = the first sentence, B = its continuation): NSP's input.
    ids, types = ours.encode("你好，世界！", "明天下雨了。")
    encoded = theirs("你好，世界！", "明天下雨了。")
    assert (ids, types) == (encoded["input_ids"], encoded["token_type_ids"])


def test_chinese_characters_outside_the_vocabulary_are_unknown_one_by_one(tokenizers):
    ours, theirs = tokenizers
    text = "你好龘世界"  # 龘 (U+9F98) is not in the seed
    assert ours.tokenize(text) == theirs.tokenize(text) == ["你", "好", "[UNK]", "世", "界"]
    assert ours.tokenize("Music模型") == theirs.tokenize("Music模型") == ["music", "模", "型"]  # no space needed


def _random_text(rng: random.Random, english: list[str], chinese: list[str]) -> str:
    pieces = [
        lambda: rng.choice(english),
        lambda: rng.choice(english).upper(),
        lambda: rng.choice(english).capitalize() + rng.choice(["ing", "s", "ed", "qz"]),
        lambda: "".join(rng.choices(chinese, k=rng.randint(1, 6))),
        lambda: rng.choice("龘𠀀豈丽"),  # CJK not in the vocabulary: unified, extension B, compatibility ideographs
        lambda: rng.choice(",.!?;:'\"()-/&%$#@^`|~{}") * rng.randint(1, 2),  # ASCII punctuation ('[' left out:
        lambda: rng.choice("，。！？：；（）、“”《》"),  # "[MASK]" in the text would be a special token to both)
        lambda: rng.choice(["café", "naïve", "Ünïcödé", "ÉCOLE", "a\u0301"]),  # accents, a combining mark
        lambda: rng.choice([" ", "  ", "\t", "\n", "\u3000", "\xa0", "\r\n"]),  # odd whitespace
        lambda: rng.choice(["\x07", "\x00", "\ufffd", "\u200b"]),  # control characters, replacement, zero width
        lambda: str(rng.randint(0, 10**6)),
        lambda: "s" * rng.choice([100, 101]),  # "s" and "##s" are in the vocabulary: 100 characters are the limit
    ]
    return "".join(rng.choice(pieces)() + rng.choice(["", " ", " ", "\t"]) for _ in range(rng.randint(1, 30)))


def test_random_text_tokenizes_as_transformers_does(seed, tokenizers):
    ours, theirs = tokenizers
    vocab = load_vocab()
    english = [t for t in vocab if t.isalpha() and t.isascii()]
    chinese = [t for t in vocab if len(t) == 1 and is_cjk(t)]
    rng = random.Random(seed)
    for _ in range(150):
        first, second = _random_text(rng, english, chinese), _random_text(rng, english, chinese)
        assert ours.tokenize(first) == theirs.tokenize(first), repr(first)
        encoded = theirs(first, second)
        assert ours.encode(first, second) == (encoded["input_ids"], encoded["token_type_ids"]), repr((first, second))


def test_wordpiece_is_greedy_longest_match_first():
    vocab = {t: i for i, t in enumerate(["[UNK]", "[CLS]", "[SEP]", "un", "una", "##aff", "##able", "##ffable", "a"])}
    tokenizer = WordPieceTokenizer(vocab)
    assert tokenizer.tokenize("unaffable") == ["una", "##ffable"]  # "una" is longer than "un"
    assert tokenizer.tokenize("unable") == ["[UNK]"]  # "una" leaves "##ble": no backtracking to "un" + "##able"
    assert tokenizer.tokenize("unb") == ["[UNK]"]


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="unk_token '\\[UNK\\]' is not in the vocabulary"):
        WordPieceTokenizer({"[CLS]": 0, "[SEP]": 1})
    with pytest.raises(TypeError, match="text must be a str"):
        WordPieceTokenizer(load_vocab()).tokenize(b"bytes")
