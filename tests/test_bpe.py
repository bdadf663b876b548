import json
import os
import random
import subprocess
import sys
from collections import Counter

import pytest
import regex
from conftest import ROOT, shared_file

import bpe
from common import UsageError

ZWNJ = "\u200c"

# A small corpus written for these tests: Persian with ZWNJ and diacritics, English,
# digits of three scripts, punctuation, and repeated letters whose pairs overlap.
CORPUS = [
    "می‌خواهم کتاب‌ها را بخوانم. کِتابِ خوبی است؛ «شاهنامه» را خوانده‌ای؟",
    "ما می‌خواهیم به کتابخانه برویم، کتاب‌ها را پس بدهیم و کتاب‌های تازه بگیریم.",
    "سال ۱۴۰۲ و سال ٢٠٢٣ و سال 2023 گذشت؛ قیمت ۱۲۵۰۰۰ تومان بود.",
    "He said, \"I don't know,\" and you’re sure it's fine. Prince Andrew's sister wasn't.",
    "aaaa aaa abab ababab bbbb aaaaa baba " * 3,
    "نامه‌ها   رسید\n\nو    ما\tخواندیم  ",
]
ROUND_TRIP = [
    "می‌خواهم کتاب‌ها را بخوانم.",
    "کِتابِ خوبی است؛ «شاهنامه» را خوانده‌ای؟",
    "The Prince's daughter didn't come, did she?",
    "۰۱۲۳۴۵۶۷۸۹ ٠١٢٣٤٥٦٧٨٩ 0123456789",
    "emoji 🙂👍🏽 👨‍👩‍👧 🇮🇷 done",
    "فارسی English فارسی 123 «quoted» (پرانتز) ‏mark‎",
    "  \t \n\n\n   spaces\r\n\t end   ",
    "",
    "unseen 漢字 and Ελληνικά",
    "a<|endoftext|>b",
    "\u200c\u200cلبه\u200c",
]


@pytest.fixture(scope="module")
def tok():
    return bpe.Tokenizer.train(CORPUS, vocab_size=400)


def naive_merges(texts, num_merges):
    """Reference BPE: recount every pair before each merge; ties to the smallest pair of ids."""
    chunks = Counter(chunk for text in texts for chunk in regex.findall(bpe.SPLIT_PATTERN, text))
    words = [(list(chunk.encode("utf-8")), count) for chunk, count in chunks.items()]
    merges = []
    for new_id in range(256, 256 + num_merges):
        pairs = Counter()
        for word, count in words:
            for pair in zip(word, word[1:]):
                pairs[pair] += count
        if not pairs:
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        words = [(merge_pair(word, best, new_id), count) for word, count in words]
    return merges


def merge_pair(ids, pair, new_id):
    merged, i = [], 0
    while i < len(ids):
        if tuple(ids[i:i + 2]) == pair:
            merged.append(new_id)
            i += 2
        else:
            merged.append(ids[i])
            i += 1
    return merged


def naive_encode(tok, text):
    """Reference encoding: per chunk, merge the pair of lowest rank until none is left."""
    rank = {pair: 256 + i for i, pair in enumerate(tok.merges)}
    ids = []
    for chunk in regex.findall(bpe.SPLIT_PATTERN, text):
        chunk_ids = list(chunk.encode("utf-8"))
        while True:
            ranked = [pair for pair in zip(chunk_ids, chunk_ids[1:]) if pair in rank]
            if not ranked:
                break
            best = min(ranked, key=rank.get)
            chunk_ids = merge_pair(chunk_ids, best, rank[best])
        ids += chunk_ids
    return ids


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_round_trip(tok, text):
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.decode_bytes(ids) == text.encode("utf-8")
    assert all(0 <= i < tok.vocab_size and i != tok.eot_id for i in ids)


@pytest.mark.parametrize("text, chunks", [
    ("می‌خواهم کتاب‌ها را", ["می‌خواهم", " کتاب‌ها", " را"]),
    ("کِتابِ خوبی", ["کِتابِ", " خوبی"]),
    ("خوانده‌ای؟", ["خوانده‌ای", "؟"]),
    ("«شاهنامه»، دیوان؛ ", ["«", "شاهنامه", "»،", " دیوان", "؛", " "]),
    ("۱۲۳۴۵ ٠١٢٣ 2023", ["۱۲۳", "۴۵", " ", "٠١٢", "٣", " ", "202", "3"]),
    ("I don't know, you’re", ["I", " don", "'t", " know", ",", " you", "’re"]),
    ("a  b\n\n c", ["a", " ", " b", "\n\n", " c"]),
])
def test_split_pattern(text, chunks):
    assert regex.findall(bpe.SPLIT_PATTERN, text) == chunks


@pytest.mark.parametrize("num_merges", [1, 40, 150, 5000])
def test_merges_equal_naive_reference(num_merges):
    expected = naive_merges(CORPUS, num_merges)
    assert bpe.learn_merges(bpe.count_chunks(CORPUS), num_merges) == expected
    if num_merges == 5000:
        assert len(expected) < 5000  # the corpus ran out of pairs: both stop at the same point


def test_random_corpus_equals_naive_reference():
    rng = random.Random(0)
    texts = ["".join(rng.choice("ab ک‌تا۱") for _ in range(rng.randrange(1, 80))) for _ in range(60)]
    assert bpe.learn_merges(bpe.count_chunks(texts), 300) == naive_merges(texts, 300)


@pytest.mark.parametrize("text", ROUND_TRIP + CORPUS)
def test_encode_equals_naive_reference(tok, text):
    assert tok.encode(text) == naive_encode(tok, text)


# Characters that decide where the split pattern cuts: spaces and newlines, U+00A0 and U+2028 (whitespace
# to the pattern), U+001C (whitespace to str.split, not to the pattern), ZWNJ, a kasra, letters, digits,
# punctuation, quotes and apostrophes
TRICKY = " \t\n\r\u00a0\u2028\x1c\u200c\u0650کتab۱2«».،'’s-🙂"


@pytest.mark.parametrize("seed", range(3))
def test_cutting_at_spaces_equals_the_pattern_on_random_text(seed):
    rng = random.Random(seed)
    texts = ["".join(rng.choice(TRICKY) for _ in range(rng.randrange(60))) for _ in range(400)]
    # the same texts with no whitespace before a space, which encode cuts at its spaces
    spaced = [regex.sub(r"\s(?= )", "x", text) for text in texts]
    assert not any(bpe.SPACE_AFTER_WHITESPACE.search(text) for text in spaced)
    tok = bpe.Tokenizer.train(texts + spaced, vocab_size=600)  # merges inside most chunks that occur
    for text in texts + spaced:
        assert tok.encode(text) == naive_encode(tok, text)


@pytest.mark.parametrize("name", ["news.jsonl", "poems.jsonl"])
def test_cutting_at_spaces_equals_the_pattern_on_real_text(name):
    with open(shared_file("persian", name), encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for _, line in zip(range(1500), f)]
    texts += [" ".join(text.split()) for text in texts]  # single spaces only: all cut at spaces
    tok = bpe.Tokenizer.train(texts[:200], vocab_size=1500)
    by_pattern = bpe.Tokenizer(tok.merges, tok.special_tokens, tok.pattern_text)
    by_pattern.split_at_spaces = False
    for text in texts:
        assert tok.encode_array(text) == by_pattern.encode_array(text)


def test_full_caches_are_cleared_and_encoding_goes_on(monkeypatch):
    monkeypatch.setattr(bpe, "CACHE_CHUNKS", 3)
    monkeypatch.setattr(bpe, "CACHE_WORDS", 3)
    tok = bpe.Tokenizer.train(CORPUS, vocab_size=400)
    for text in CORPUS + ROUND_TRIP:
        assert tok.encode(text) == naive_encode(tok, text)
    assert 0 < len(tok.word_cache) <= 3 and 0 < len(tok.chunk_cache) <= 3


def test_frequent_persian_word_becomes_one_token():
    tok = bpe.Tokenizer.train(["می‌خواهم کِتاب‌ها را بخوانم. "] * 20, vocab_size=300)
    assert len(tok.encode(" کِتاب‌ها")) == 1
    assert len(tok.encode("می‌خواهم")) == 1


def test_vocab_layout(tok):
    assert tok.vocab_size == 400
    assert tok.eot_id == 399 and tok.special_tokens == {"<|endoftext|>": 399}
    assert len(tok.merges) == 400 - 256 - 1
    assert bpe.Tokenizer.train(CORPUS, 300, special_tokens=()).eot_id is None


def test_parallel_training_equals_serial(monkeypatch):
    monkeypatch.setattr(bpe, "BATCH_CHARS", 100)  # many batches, spread over both workers
    serial = bpe.Tokenizer.train(CORPUS * 5, vocab_size=350, num_proc=1)
    parallel = bpe.Tokenizer.train((text for text in CORPUS * 5), vocab_size=350, num_proc=2)
    assert parallel.merges == serial.merges


def test_special_tokens_only_when_allowed(tok):
    text = "پایان<|endoftext|>آغاز"
    assert tok.eot_id not in tok.encode(text)
    for allowed in ("all", {"<|endoftext|>"}, ("<|endoftext|>",)):
        ids = tok.encode(text, allowed_special=allowed)
        assert ids.count(tok.eot_id) == 1
        assert tok.decode(ids) == text
    assert tok.eot_id in tok.encode_array(text, allowed_special="all")
    with pytest.raises(UsageError, match="not special tokens"):
        tok.encode(text, allowed_special={"<|unknown|>"})


def test_decode_partial_sequences_never_raise(tok):
    text = "کتاب 🙂 کِتاب"
    ids = list(text.encode("utf-8"))  # byte ids: every prefix may end inside a character
    for end in range(len(ids) + 1):
        assert tok.decode(ids[:end]).startswith(text.encode("utf-8")[:end].decode("utf-8", "ignore"))
    assert tok.decode([0xDA]) == "\ufffd"
    assert tok.decode([tok.vocab_size, -1]) == "\ufffd\ufffd"  # ids outside the vocabulary


def test_save_load_round_trip(tok, tmp_path):
    path = tmp_path / "tokenizer.json"
    tok.save(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["version"] == bpe.FORMAT_VERSION and len(data["merges"]) == len(tok.merges)
    loaded = bpe.Tokenizer.load(path)
    assert loaded.merges == tok.merges and loaded.special_tokens == tok.special_tokens
    for text in ROUND_TRIP + CORPUS:
        assert loaded.encode(text) == tok.encode(text)
    assert bpe.Tokenizer.from_json(tok.to_json()).encode(CORPUS[0]) == tok.encode(CORPUS[0])
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer.json"]  # no temporary file left


CORRUPTIONS = {  # each turns a good tokenizer JSON text (and its parsed dict) into a bad one
    "truncated": lambda text, data: text[:len(text) // 2],
    "not json": lambda text, data: "merges: 1 2",
    "a list": lambda text, data: "[]",
    "no version": lambda text, data: json.dumps({k: v for k, v in data.items() if k != "version"}),
    "other version": lambda text, data: json.dumps(dict(data, version=bpe.FORMAT_VERSION + 1)),
    "future id": lambda text, data: json.dumps(dict(data, merges=data["merges"] + [[999, 1]])),
    "bad pair": lambda text, data: json.dumps(dict(data, merges=[[1, 2, 3]])),
    "special id": lambda text, data: json.dumps(dict(data, special_tokens={"<|endoftext|>": 7})),
    "bad pattern": lambda text, data: json.dumps(dict(data, pattern="(unclosed")),
    "bad normalization": lambda text, data: json.dumps(dict(data, normalization={"normalize_text": 1})),
}


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_corrupt_file_is_a_usage_error(tok, tmp_path, corrupt):
    text = corrupt(tok.to_json(), json.loads(tok.to_json()))
    path = tmp_path / "tokenizer.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UsageError, match="tokenizer.json"):
        bpe.Tokenizer.load(path)
    with pytest.raises(UsageError, match="tokenizer"):
        bpe.Tokenizer.from_json(text)


@pytest.mark.parametrize("normalization, text, expected", [
    (None, "\u0643\u062a\u0627\u0628  \u0661", "\u0643\u062a\u0627\u0628  \u0661"),  # as it is
    ({"normalize_text": True, "remove_diacritics": True}, "\u0643\u0650\u062a\u0627\u0628  \u0661",
     "\u06a9\u062a\u0627\u0628 \u06f1"),  # Arabic kaf, kasra and digit: Persian kaf, no mark, ۱
    ({"normalize_text": True, "remove_diacritics": False}, "\u0643\u0650\u062a\u0627\u0628",
     "\u06a9\u0650\u062a\u0627\u0628"),
    ({"normalize_text": False, "remove_diacritics": True}, "\u0643  \u0661 ", "\u0643 \u0661"),
])
def test_normalization_is_the_first_stage_of_encoding(tok, tmp_path, normalization, text, expected):
    normalizing = bpe.Tokenizer(tok.merges, normalization=normalization)
    assert normalizing.normalize(text) == expected
    assert normalizing.encode(text) == tok.encode(expected) == normalizing.encode(expected)
    normalizing.save(tmp_path / "tokenizer.json")  # the settings travel with the tokenizer
    assert bpe.Tokenizer.load(tmp_path / "tokenizer.json").encode(text) == tok.encode(expected)


def test_text_already_normalized_is_encoded_as_it_is(tok):
    normalizing = bpe.Tokenizer(tok.merges, normalization={"normalize_text": True, "remove_diacritics": True})
    text = "\u0643\u0650\u062a\u0627\u0628  \u0661"  # Arabic kaf, kasra and digit, two spaces
    assert normalizing.encode_array(text, normalized=True).tolist() == tok.encode(text)  # not normalized again
    assert normalizing.encode_array(normalizing.normalize(text), normalized=True).tolist() == normalizing.encode(text)


def test_version_1_files_read_without_normalization(tok):
    data = json.loads(tok.to_json())
    del data["normalization"]
    old = bpe.Tokenizer.from_json(json.dumps(dict(data, version=1)))
    assert old.normalization is None and old.encode("\u0643") == tok.encode("\u0643")


# normalization: one rule per case

@pytest.mark.parametrize("text, expected", [
    ("علي", "علی"),  # ARABIC YEH
    ("مصطفى", "مصطفی"),  # ALEF MAKSURA
    ("كتاب", "کتاب"),  # ARABIC KAF
    ("ە ھ ہ", "ه ه ه"),  # AE, DOACHASHMEE, GOAL
    ("\ufeb3\ufee0\ufe8e\ufee1 \ufefb", "سلام لا"),  # presentation forms and the lam-alef ligature
    ("\ufef2\ufedb", "یک"),  # a presentation-form Arabic yeh ends as Farsi yeh
    ("ایـــران", "ایران"),  # kashida
    ("کِتابٌ مُهِمّ", "کتاب مهم"),  # diacritics
    ("٠١٢٣٤٥٦٧٨٩ 2024 ۱۴۰۲", "۰۱۲۳۴۵۶۷۸۹ 2024 ۱۴۰۲"),  # Arabic-Indic digits; ASCII stays
    (f"می{ZWNJ}{ZWNJ}{ZWNJ}خواهم", f"می{ZWNJ}خواهم"),  # ZWNJ runs
    (f"کتاب{ZWNJ} ها {ZWNJ}را", "کتاب ها را"),  # ZWNJ beside a space
    (f"{ZWNJ}سلام{ZWNJ}، خوب{ZWNJ}.", "سلام، خوب."),  # ZWNJ at a word edge
    ("a\u200db\u200ec\u200fd\ufeffe", "abcde"),  # ZWJ, LRM, RLM, BOM
    ("یک  \t دو\u00a0سه \n\n\n\n چهار ", "یک دو سه\n\nچهار"),  # whitespace runs
    ("خانهٔ ما", "خانهٔ ما"),  # hamza above (ezafe) is not a diacritic to drop
    ("क्\u200cष", "क्\u200cष"),  # ZWNJ after a mark in another script stays
])
def test_normalize_rule(text, expected):
    assert bpe.normalize(text) == expected


def test_normalize_keeps_diacritics_when_asked():
    assert bpe.normalize("کِتابُ ـ", remove_diacritics=False) == "کِتابُ"


def test_normalize_is_idempotent():
    text = f"  {ZWNJ}كتابِ{ZWNJ}{ZWNJ}هاي \ufeb3\ufee0\ufe8e\ufee1 ٣\u200d ـ \n\n\n{ZWNJ} x "
    once = bpe.normalize(text)
    assert bpe.normalize(once) == once


def test_normalize_leaves_english_alone_apart_from_whitespace():
    with open(shared_file("books", "pg2600.txt"), encoding="utf-8-sig") as f:
        book = f.read(300_000)
    assert bpe.normalize(book) == bpe.collapse_whitespace(book)
    assert bpe.collapse_whitespace(book) != book  # the book does have whitespace to collapse


def test_missing_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="missing.json"):
        bpe.Tokenizer.load(tmp_path / "missing.json")


@pytest.mark.parametrize("vocab_size", [65537, 100_000, 256])
def test_bad_vocab_size_is_a_usage_error(vocab_size):
    with pytest.raises(UsageError, match="vocab_size"):
        bpe.Tokenizer.train(CORPUS, vocab_size=vocab_size)


def test_largest_vocab_size_is_allowed():
    tok = bpe.Tokenizer.train(CORPUS, vocab_size=65536)  # the corpus runs out of pairs first
    assert tok.vocab_size <= 65536 and tok.decode(tok.encode(CORPUS[0])) == CORPUS[0]


def test_non_string_text_is_a_usage_error():
    with pytest.raises(UsageError, match="str"):
        bpe.Tokenizer.train([b"bytes"], vocab_size=300)


def test_real_persian_compression():
    with open(shared_file("fawiki", "fawiki-bio-paragraphs.jsonl"), encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for _, line in zip(range(700), f)]
    train, heldout = texts[:600], texts[600:]
    tok = bpe.Tokenizer.train(train, vocab_size=1024, num_proc=2)
    ids = [tok.encode(text) for text in heldout]
    bytes_per_token = sum(len(t.encode("utf-8")) for t in heldout) / sum(map(len, ids))
    assert bytes_per_token > 3.0, bytes_per_token  # raw bytes would be 1.0
    assert [tok.decode(i) for i in ids] == heldout


def exit_at_once(*args):
    os._exit(3)


def test_dead_worker_is_an_error_not_a_hang(monkeypatch):
    monkeypatch.setattr(bpe, "_count_worker", exit_at_once)
    with pytest.raises(RuntimeError, match="died"):
        bpe.count_chunks(CORPUS * 100, num_proc=2)


def test_ctrl_c_while_counting_stops_at_once_without_worker_tracebacks():
    # SIGINT to the whole process group, as a terminal sends Ctrl-C, while batches still wait in the queue
    code = ("import os, signal, bpe, common\n"
            "def texts():\n"
            "    yield from ['a b c ' * 200_000] * 10\n"
            "    os.killpg(0, signal.SIGINT)\n"
            "common.run(lambda: bpe.count_chunks(texts(), num_proc=2))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            start_new_session=True)
    assert (result.returncode, result.stderr) == (130, "interrupted\n")
