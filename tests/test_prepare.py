import bz2
import hashlib
import io
import json
import os
import random
import subprocess
import sys
import threading

import numpy as np
import pytest

import bpe
import prepare
from bpe import Tokenizer
from common import UsageError
from conftest import ROOT, shared_file


def sample_dump():
    return shared_file("fawiki", "fawiki-sample-pages-articles.xml.bz2")


# -----------------------------------------------------------------------------
# a real dump, cleaned

def test_real_dump_is_clean():
    documents = list(prepare.iter_documents(sample_dump()))
    assert [d.split("\n", 1)[0] for d in documents] == ["اسپانیا", "بازی فکری", "برلین"]
    for document in documents:
        for markup in ("{{", "}}", "[[", "]]", "<ref", "{|", "'''", "رده:", "بندانگشتی", "&amp;", "&lt;"):
            assert markup not in document
    spain, games, berlin = documents
    assert "اسپانیا کشوری چندزبانه است." in spain  # a paragraph just under a table inside a file caption
    assert "\nشطرنج\nنرد\n" in games and "\nسودوکو\n" in games  # the list article keeps its list
    assert "\n۱۹۸۸ مادرید، اسپانیا\n" in berlin  # list items with their flag templates removed
    assert len(spain) > 40_000 and len(berlin) > 5000


# -----------------------------------------------------------------------------
# reading inputs

def page(title, text, ns=0, redirect=False):
    return (f"<page><title>{title}</title><ns>{ns}</ns><id>1</id>"
            + ('<redirect title="x" />' if redirect else "")
            + f'<revision><id>2</id><text xml:space="preserve">{text}</text></revision></page>')


def dump(*pages, schema="0.10"):
    xmlns = f' xmlns="http://www.mediawiki.org/xml/export-{schema}/"' if schema else ""
    return f'<mediawiki{xmlns} version="{schema}"><siteinfo><sitename>x</sitename></siteinfo>' \
           + "".join(pages) + "</mediawiki>"


ARTICLE = "'''تهران''' پایتخت [[ایران]] است و بزرگ‌ترین شهر این کشور به شمار می‌آید. " * 3


@pytest.mark.parametrize("schema", ["0.10", "0.11", ""])
def test_dump_of_any_schema_keeps_articles_only(tmp_path, schema):
    path = tmp_path / "dump.xml"
    path.write_text(dump(
        page("تهران", ARTICLE),
        page("الگو:جعبه", ARTICLE, ns=10),
        page("پایتخت", "#REDIRECT [[تهران]]"),
        page("پایتخت ایران", "#تغییرمسیر [[تهران]]"),
        page("طهران", "#تغییر_مسیر [[تهران]]"),
        page("تهرون", "#redirect [[تهران]]"),
        page("تهران قدیم", ARTICLE, redirect=True),
        page("تهرانک", "'''تهرانک''' روستایی است."),  # a stub
        schema=schema), encoding="utf-8")
    report = prepare.new_report()
    documents = [document for _, _, document in prepare.read_documents(str(path), report, prepare.DEFAULTS)]
    assert len(documents) == 1 and documents[0].startswith("تهران\n\nتهران پایتخت ایران است")
    assert report["records"] == 8 and report["kept"] == 1
    assert report["dropped"] == {"not_article": 1, "redirect": 5, "too_short": 1}


def test_max_articles_stops_early():
    assert len(list(prepare.iter_documents(sample_dump(), max_articles=2))) == 2


@pytest.mark.parametrize("size", [0, 1, prepare.BLOCK_BYTES + 1, 9 * prepare.BLOCK_BYTES])
def test_read_ahead_gives_every_byte_in_order(size):
    data = random.Random(size).randbytes(size)
    with prepare.BlockReader(prepare.read_ahead(prepare.file_blocks(io.BytesIO(data)))) as reader:
        assert reader.read() == data and reader.read() == b""


def read_ahead_threads():
    return [thread for thread in threading.enumerate() if thread.name.startswith("read-ahead")]


def test_read_ahead_stops_when_closed_early():
    reader = prepare.BlockReader(prepare.read_ahead(prepare.file_blocks(io.BytesIO(bytes(20 * prepare.BLOCK_BYTES)))))
    assert reader.read(10) == bytes(10)
    assert len(read_ahead_threads()) == 1  # it reads the next blocks meanwhile
    reader.close()
    assert read_ahead_threads() == []


class FailingStream(io.RawIOBase):
    def readable(self):
        return True

    def readinto(self, buffer):
        raise OSError("disk unplugged")


def test_read_ahead_raises_the_error_of_its_source():
    with prepare.BlockReader(prepare.read_ahead(prepare.file_blocks(FailingStream()))) as reader, \
            pytest.raises(OSError, match="disk unplugged"):
        reader.read()


@pytest.mark.parametrize("block_size", [1, 1000, 100_000, 10**7])
def test_decompressed_reads_every_stream_in_any_blocks(block_size):
    rng = random.Random(block_size)
    streams = [rng.randbytes(n) + bytes(n) for n in (0, 10, 300_000, 2 * prepare.BLOCK_BYTES)]  # bz2 blocks are 900 kB
    compressed = b"".join(map(bz2.compress, streams))
    blocks = (compressed[i:i + block_size] for i in range(0, len(compressed), block_size))
    pieces = list(prepare.decompressed(blocks))
    assert b"".join(pieces) == b"".join(streams)
    assert all(0 < len(piece) <= prepare.BLOCK_BYTES for piece in pieces)  # b"" would read as the end


def test_decompressed_refuses_a_cut_stream_and_garbage():
    compressed = bz2.compress(bytes(1000))
    with pytest.raises(EOFError, match="ends before its end-of-stream marker"):
        list(prepare.decompressed(iter([compressed[:-5]])))
    with pytest.raises(OSError, match="Invalid data stream"):
        list(prepare.decompressed(iter([compressed, b"not bz2 data"])))


def test_jsonl_and_its_errors(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "كتاب يك"}\n\n{"text": "دو", "source": "x"}\n', encoding="utf-8")
    assert list(prepare.iter_documents(str(path))) == ["کتاب یک", "دو"]
    path.write_text('{"text": "یک"}\n{"title": "بی‌متن"}\n', encoding="utf-8")
    with pytest.raises(UsageError, match="a.jsonl line 2: expected a JSON object with a 'text' string"):
        list(prepare.iter_documents(str(path)))


def test_gutenberg_book_is_stripped_and_cut(tmp_path):
    path = tmp_path / "book.txt"
    body = "".join(f"Paragraph {i} of the story.\nIt goes on.\n\n" for i in range(300))
    header = "\ufeffThe Project Gutenberg EBook of X\n\n*** START OF THIS PROJECT GUTENBERG EBOOK X ***\n"
    footer = "*** END OF THIS PROJECT GUTENBERG EBOOK X ***\nlicense text\n"
    path.write_text(header + body + footer, encoding="utf-8")
    documents = list(prepare.iter_documents(str(path), book_chunk_chars=2000))
    assert documents[0].startswith("Paragraph 0 of the story.\nIt goes on.\n\nParagraph 1")
    assert documents[-1].endswith("Paragraph 299 of the story.\nIt goes on.")
    assert all(1900 < len(d) < 2200 for d in documents[:-1]) and len(documents) > 5
    assert "\n\n".join(documents) == bpe.collapse_whitespace(body)


def test_real_book_loses_only_the_gutenberg_wrapping():
    documents = list(prepare.iter_documents(shared_file("books", "pg2600.txt")))
    assert documents[0].startswith("An Anonymous Volunteer, and David Widger")
    assert "Project Gutenberg" not in documents[0] and "Project Gutenberg" not in documents[-1]
    assert documents[-1].endswith("to recognize a dependence of which we are not\nconscious.")
    assert sum(map(len, documents)) > 3_000_000


@pytest.mark.parametrize("num_proc", [1, 2])
def test_documents_encoded_in_the_workers_equal_encode(tmp_path, num_proc):
    # the documents of three inputs go to the workers in many small batches and come back in order,
    # normalized once and encoded as Tokenizer.encode (which normalizes) encodes them
    texts = ["می‌خواهم كتاب‌ها را بخوانم. کِتابِ خوبی است؛ «شاهنامه» را خوانده‌ای؟",
             "سال ۱۴۰۲ و سال ٢٠٢٣ و سال 2023 گذشت؛  قیمت ۱۲۵۰۰۰ تومان بود.",
             "He said, \"I don't know,\" and you’re sure it's fine. a<|endoftext|>b",
             "نامه‌ها   رسید\n\n\nو    ما\tخواندیم  ", "emoji 🙂👍🏽 👨‍👩‍👧 done", "آ"]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts), encoding="utf-8")
    normalization = {"normalize_text": True, "remove_diacritics": True}
    tokenizer = Tokenizer.train([bpe.normalize(text) for text in texts], 400, normalization=normalization)
    config = {**prepare.DEFAULTS, "num_proc": num_proc, "batch_chars": 100, "min_chars": 1}
    inputs = [str(source)] * 3
    encoded = prepare.prepare_inputs(inputs, [prepare.new_report() for _ in inputs], config, tokenizer)
    assert [ids.tolist() for _, _, ids in encoded] == [tokenizer.encode(text) for text in texts] * 3


def test_missing_input_is_an_error_before_any_input_is_read(tmp_path):
    present = tmp_path / "a.jsonl"
    present.write_text('{"text": "متن"}\n', encoding="utf-8")
    with pytest.raises(UsageError, match=r"cannot read .*missing\.jsonl: No such file or directory"):
        prepare.check_arguments(dict(prepare.DEFAULTS), [str(present), str(tmp_path / "missing.jsonl")])


# -----------------------------------------------------------------------------
# the command line: bad input leaves earlier outputs alone

def run_prepare(*args):
    return subprocess.run([sys.executable, "prepare.py", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def bz2_dump(n_pages):
    """A compressed dump big enough to span several bz2 blocks (random words compress badly)."""
    rng = random.Random(0)
    words = ["کتاب", "شهر", "ایران", "تاریخ", "زبان", "دریا", "کوه", "مردم", "سال", "جنگ"]
    pages = [page(f"صفحه {i}", " ".join(rng.choice(words) + str(rng.randrange(10**6)) for _ in range(300)))
             for i in range(n_pages)]
    return bz2.compress(dump(*pages).encode())


@pytest.mark.parametrize("case, expected", [
    ("malformed.xml", ["malformed.xml: malformed XML (mismatched tag", "after 1 pages"]),
    ("truncated.xml.bz2", ["truncated.xml.bz2: truncated file", "pages /"]),
    ("missing.jsonl", ["cannot read", "missing.jsonl: No such file or directory"]),
    ("empty.xml", ["0 usable documents", "redirect", "not_article"]),
    ("notes.csv", ["notes.csv: expected a file ending in .xml.bz2, .xml, .jsonl, .txt"]),
    ("URL", ["cannot download https://dumps.wikimedia.org/fawiki/latest/", "pass the file"]),
])
def test_bad_input_fails_in_one_line_and_keeps_outputs(tmp_path, case, expected):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    old = {name: f"old {name}".encode() for name in prepare.OUTPUTS}
    for name, content in old.items():
        (out_dir / name).write_bytes(content)
    source = tmp_path / case
    if case == "malformed.xml":
        source.write_text(dump(page("الف", ARTICLE), "<page><title>ب</titel></page>"), encoding="utf-8")
    elif case == "truncated.xml.bz2":
        compressed = bz2_dump(400)
        source.write_bytes(compressed[:len(compressed) // 2])
    elif case == "empty.xml":
        source.write_text(dump(page("الف", "#REDIRECT [[ب]]"), page("الگو:ج", ARTICLE, ns=10)),
                          encoding="utf-8")
    elif case == "notes.csv":
        source.write_text("a,b\n")
    args = [] if case == "URL" else [source]
    env = {**os.environ, "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    result = subprocess.run([sys.executable, "prepare.py", *map(str, args), f"--out_dir={out_dir}"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: ") and "Traceback" not in result.stderr
    for part in expected:
        assert part in error
    assert {p.name: p.read_bytes() for p in out_dir.iterdir()} == old  # untouched, no temp files left


# -----------------------------------------------------------------------------
# a full run on real text

@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    inputs = [sample_dump(), shared_file("fawiki", "fawiki-bio-paragraphs.jsonl")]
    out_dir = tmp_path_factory.mktemp("prepared")
    result = run_prepare(*inputs, f"--out_dir={out_dir}", "--vocab_size=400", "--num_proc=2",
                         "--val_fraction=0.05")
    assert result.returncode == 0, result.stderr
    return inputs, out_dir


def read_split(out_dir, split, tokenizer):
    tokens = np.fromfile(out_dir / f"{split}.bin", dtype=np.uint16)
    text = tokenizer.decode(tokens.tolist())
    assert text.endswith(bpe.EOT)
    return tokens, text.split(bpe.EOT)[:-1]


def test_bins_hold_every_document_once_and_meta_counts_them(prepared):
    inputs, out_dir = prepared
    tokenizer = Tokenizer.load(out_dir / "tokenizer.json")
    meta = json.loads((out_dir / "meta.json").read_text(encoding="utf-8"))
    expected = [d for source in inputs for d in prepare.iter_documents(source, min_chars=100)]
    decoded = []
    for split in ("train", "val", "test"):
        tokens, documents = read_split(out_dir, split, tokenizer)
        counts = meta["splits"][split]
        assert counts["tokens"] == len(tokens) and counts["documents"] == len(documents) > 0
        assert counts["bytes"] == sum(len(d.encode()) for d in documents)
        assert int(tokens.max()) < meta["vocab_size"] == tokenizer.vocab_size
        decoded += documents
    assert sorted(decoded) == sorted(expected)
    assert 0.02 < meta["splits"]["val"]["documents"] / len(expected) < 0.08
    for file, source in zip(meta["inputs"], inputs):
        with open(source, "rb") as f:
            assert file["sha256"] == hashlib.sha256(f.read()).hexdigest()
    assert meta["inputs"][0]["kept"] == 3 and meta["inputs"][1]["dropped"]["too_short"] > 0
    assert meta["config"]["seed"] == 1337 and meta["config"]["remove_diacritics"] is True
    assert (out_dir / "sample.txt").read_text(encoding="utf-8").startswith("اسپانیا\n\n")
    assert [p.name for p in out_dir.iterdir() if p.name.startswith(".")] == []


def test_tokenizer_reuse_and_seed_decide_the_split(prepared, tmp_path):
    inputs, out_dir = prepared
    again, reseeded = tmp_path / "again", tmp_path / "reseeded"
    for directory, seed in ((again, 1337), (reseeded, 7)):
        result = run_prepare(*inputs, f"--out_dir={directory}", f"--tokenizer={out_dir / 'tokenizer.json'}",
                             "--num_proc=1", "--val_fraction=0.05", f"--seed={seed}")
        assert result.returncode == 0, result.stderr
    # same seed, same tokenizer: the same files, though now encoded in the same pass as cleaned
    for name in ("train.bin", "val.bin", "test.bin", "tokenizer.json", "sample.txt"):
        assert (again / name).read_bytes() == (out_dir / name).read_bytes()
    meta, meta_again = (json.loads((d / "meta.json").read_text(encoding="utf-8")) for d in (out_dir, again))
    assert meta_again["splits"] == meta["splits"]
    tokenizer = Tokenizer.load(out_dir / "tokenizer.json")
    val, val_reseeded = (set(read_split(d, "val", tokenizer)[1]) for d in (out_dir, reseeded))
    assert val != val_reseeded


@pytest.mark.parametrize("n, val_fraction, test_fraction, num_proc", [
    (12, 0.01, 0.01, 1), (12, 0.01, 0.01, 2), (2, 0.98, 0, 2), (40, 0.3, 0.3, 2), (40, 0.05, 0, 1)])
def test_given_tokenizer_files_hold_choose_splits_documents_in_order(tmp_path, n, val_fraction, test_fraction,
                                                                      num_proc):
    # with a tokenizer, documents are encoded as they are cleaned, before their splits are known;
    # choose_splits's forced picks (a val or test document at least, a train one at least) must
    # still come out as a run that splits first and encodes afterwards would write
    rng = random.Random(n)
    words = ["کتاب", "شهر", "ایران", "تاریخ", "زبان", "دریا", "کوه", "مردم", "سال", "جنگ"]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 30))) + f" {i}" for i in range(n)]
    source = tmp_path / "in.jsonl"
    lines = (json.dumps({"text": text}, ensure_ascii=False) + "\n" for text in texts)
    source.write_text("".join(lines), encoding="utf-8")
    tokenizer = Tokenizer.train(texts, 300)
    tokenizer.save(tmp_path / "tokenizer.json")
    out_dir = tmp_path / "out"
    result = run_prepare(source, f"--out_dir={out_dir}", f"--tokenizer={tmp_path / 'tokenizer.json'}",
                         f"--num_proc={num_proc}", f"--val_fraction={val_fraction}",
                         f"--test_fraction={test_fraction}", "--min_chars=1")
    assert result.returncode == 0, result.stderr
    documents = list(prepare.iter_documents(str(source), min_chars=1))
    keys = np.array([prepare.split_key(prepare.DEFAULTS["seed"], d) for d in documents])
    split_of = prepare.choose_splits(keys, val_fraction, test_fraction)
    by_key_alone = np.where(keys < val_fraction, 1, np.where(keys < val_fraction + test_fraction, 2, 0))
    assert (split_of != by_key_alone).any() == (n < 40)  # the small runs need choose_splits's forced picks
    meta = json.loads((out_dir / "meta.json").read_text(encoding="utf-8"))
    for index, split in enumerate(prepare.SPLITS if test_fraction else prepare.SPLITS[:2]):
        ids = [i for d, s in zip(documents, split_of) if s == index
               for i in tokenizer.encode(d) + [tokenizer.eot_id]]
        assert (out_dir / f"{split}.bin").read_bytes() == np.array(ids, dtype=np.uint16).tobytes()
        assert meta["splits"][split] == {"documents": int((split_of == index).sum()), "tokens": len(ids),
                                         "bytes": sum(len(d.encode()) for d, s in zip(documents, split_of)
                                                      if s == index)}
    assert [p.name for p in out_dir.iterdir() if p.name.startswith(".")] == []


def test_given_tokenizer_normalization_is_the_one_used(tmp_path):
    texts = [f"کِتابِ {i} را خواندم و كتاب دیگری هم خریدم، کتاب‌ها را دوست دارم." for i in range(12)]
    source = tmp_path / "in.jsonl"
    lines = (json.dumps({"text": text}, ensure_ascii=False) + "\n" for text in texts)
    source.write_text("".join(lines), encoding="utf-8")
    keep_diacritics = {"normalize_text": True, "remove_diacritics": False}
    tokenizer = Tokenizer.train([bpe.normalize(text, **keep_diacritics) for text in texts], 300,
                                normalization=keep_diacritics)
    tokenizer.save(tmp_path / "tokenizer.json")
    out_dir = tmp_path / "out"
    args = [source, f"--out_dir={out_dir}", f"--tokenizer={tmp_path / 'tokenizer.json'}", "--num_proc=1",
            "--min_chars=1", "--val_fraction=0.2", "--test_fraction=0"]
    result = run_prepare(*args)
    assert result.returncode == 0, result.stderr
    documents = [d for split in ("train", "val") for d in read_split(out_dir, split, tokenizer)[1]]
    assert sorted(documents) == sorted(bpe.normalize(text, **keep_diacritics) for text in texts)
    assert all("کِتابِ" in d and "كتاب" not in d for d in documents)  # diacritics kept, the Arabic kaf not
    meta = json.loads((out_dir / "meta.json").read_text(encoding="utf-8"))
    assert {key: meta["config"][key] for key in keep_diacritics} == keep_diacritics
    result = run_prepare(*args, "--remove_diacritics=True")
    assert result.returncode == 1 and result.stderr.strip().splitlines()[-1] == (
        f"error: --remove_diacritics=True contradicts {tmp_path / 'tokenizer.json'}, which normalizes with "
        f"remove_diacritics=False; leave it out: the tokenizer's own normalization is used")


def test_given_tokenizer_without_endoftext_is_refused(tmp_path):
    path = tmp_path / "tokenizer.json"
    Tokenizer.train(["متن"], 300, special_tokens=()).save(path)
    with pytest.raises(UsageError, match=r"tokenizer\.json has no <\|endoftext\|> special token"):
        prepare.given_tokenizer({**prepare.DEFAULTS, "tokenizer": str(path)}, [])


@pytest.mark.parametrize("n, val_fraction, test_fraction", [
    (1000, 0.01, 0.01), (1000, 0.05, 0.1), (1000, 0.2, 0), (3, 0.01, 0.01), (5, 0.01, 0.9), (2, 0.5, 0)])
def test_test_split_is_disjoint_from_val_and_leaves_val_alone(n, val_fraction, test_fraction):
    keys = np.random.default_rng(n).random(n)
    split = prepare.choose_splits(keys, val_fraction, test_fraction)
    assert ((split == 1) == prepare.choose_val(keys, val_fraction)).all()  # val as without a test split
    assert (split == 0).any()
    assert (split == 2).any() == (test_fraction > 0) and (split == 2).sum() < (split != 1).sum()
    if n >= 1000:  # the test split is the next band of keys above val's
        assert ((split == 2) == ((keys >= val_fraction) & (keys < val_fraction + test_fraction))).all()


def test_prepare_writes_a_test_split_and_drops_it_when_asked(prepared, tmp_path):
    inputs, out_dir = prepared
    tokenizer = Tokenizer.load(out_dir / "tokenizer.json")
    meta = json.loads((out_dir / "meta.json").read_text(encoding="utf-8"))
    test_tokens, test_documents = read_split(out_dir, "test", tokenizer)
    assert meta["splits"]["test"]["tokens"] == len(test_tokens) and meta["config"]["test_fraction"] == 0.01
    assert 0 < len(test_documents) < meta["splits"]["val"]["documents"]  # ~1% against val's ~5%
    assert not set(test_documents) & set(read_split(out_dir, "val", tokenizer)[1])
    without = tmp_path / "without"
    without.mkdir()
    (without / "test.bin").write_bytes(b"an earlier run's test split")
    result = run_prepare(*inputs, f"--out_dir={without}", f"--tokenizer={out_dir / 'tokenizer.json'}",
                         "--num_proc=1", "--val_fraction=0.05", "--test_fraction=0")
    assert result.returncode == 0, result.stderr
    assert (without / "val.bin").read_bytes() == (out_dir / "val.bin").read_bytes()  # the same val
    assert not (without / "test.bin").exists()
    assert "test" not in json.loads((without / "meta.json").read_text(encoding="utf-8"))["splits"]
    train = set(read_split(without, "train", tokenizer)[1])
    assert set(test_documents) <= train and not set(test_documents) & set(read_split(out_dir, "train", tokenizer)[1])


@pytest.mark.parametrize("repeat", [[2, 0.5], [0, 3], [1, 1]])
@pytest.mark.parametrize("given_tokenizer", [True, False])
def test_repeat_mixes_the_training_documents_and_leaves_val_and_test_alone(tmp_path, repeat, given_tokenizer):
    rng = random.Random(0)
    words = ["کتاب", "شهر", "ایران", "تاریخ", "زبان", "دریا", "کوه", "مردم", "سال", "جنگ"]
    sources = []
    for name in ("a", "b"):
        texts = [f"{name} {i} " + " ".join(rng.choice(words) for _ in range(20)) for i in range(60)]
        sources.append(tmp_path / f"{name}.jsonl")
        sources[-1].write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts),
                               encoding="utf-8")
    documents = [d for source in sources for d in prepare.iter_documents(str(source), min_chars=1)]
    common_args = ["--min_chars=1", "--num_proc=1", "--val_fraction=0.1", "--test_fraction=0.1", "--vocab_size=300"]
    if given_tokenizer:
        Tokenizer.train(documents, 300).save(tmp_path / "tokenizer.json")
        common_args.append(f"--tokenizer={tmp_path / 'tokenizer.json'}")
    once, mixed = tmp_path / "once", tmp_path / "mixed"
    for out_dir, extra in ((once, []), (mixed, [f"--repeat={repeat}"])):
        result = run_prepare(*sources, f"--out_dir={out_dir}", *common_args, *extra)
        assert result.returncode == 0, result.stderr
    tokenizer = Tokenizer.load(mixed / "tokenizer.json")
    keys = np.array([prepare.split_key(prepare.DEFAULTS["seed"], d) for d in documents])
    split_of = prepare.choose_splits(keys, 0.1, 0.1)
    draws = np.random.default_rng(prepare.DEFAULTS["seed"]).random(len(documents))
    times = [int(r) + (draw < r - int(r)) for r, draw in zip(np.repeat(repeat, 60), draws)]
    expected = [d for d, s, n in zip(documents, split_of, times) if s == 0 for _ in range(n)]
    assert read_split(mixed, "train", tokenizer)[1] == expected  # in order, each repeated in place
    assert (len(expected) == (split_of == 0).sum()) == (repeat == [1, 1])
    once_tokenizer = Tokenizer.load(once / "tokenizer.json")
    for split in ("val", "test"):  # compared as text: without --tokenizer, each run trains its own
        assert read_split(mixed, split, tokenizer)[1] == read_split(once, split, once_tokenizer)[1]
    meta = json.loads((mixed / "meta.json").read_text(encoding="utf-8"))
    assert meta["splits"]["train"]["documents"] == len(expected) and meta["config"]["repeat"] == repeat
    assert meta["splits"]["train"]["tokens"] == len(np.fromfile(mixed / "train.bin", dtype=np.uint16))


@pytest.mark.parametrize("repeat", [[1], [1, -1], [0, 0], [1, "x"]])
def test_repeat_needs_a_number_for_each_input(tmp_path, repeat):
    sources = []
    for name in ("a", "b"):
        sources.append(tmp_path / f"{name}.jsonl")
        sources[-1].write_text('{"text": "متن"}\n', encoding="utf-8")
    with pytest.raises(UsageError, match=r"repeat needs one number of at least 0 for each of the 2 inputs"):
        prepare.check_arguments({**prepare.DEFAULTS, "repeat": repeat}, list(map(str, sources)))
