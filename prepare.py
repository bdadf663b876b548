"""
Turn raw text into what train.py reads: clean, normalized Persian documents encoded with our
BPE tokenizer into uint16 token files.

    python prepare.py --out_dir=data/fawiki --max_articles=20000    # streams the latest fawiki dump
    python prepare.py fawiki-latest-pages-articles.xml.bz2 --out_dir=data/fawiki
    python prepare.py ../shared/data/persian/news.jsonl ../shared/data/books/pg2600.txt --out_dir=data/mix
    python prepare.py more.jsonl --out_dir=data/finetune --tokenizer=data/fawiki/tokenizer.json

Inputs: MediaWiki XML dumps (.xml or .xml.bz2, a local file or the official URL, decompressed as
it downloads), .jsonl files with a "text" field, and .txt books. A dump is parsed page by page
and every page is thrown away once read, so memory stays flat on the 1.5 GB compressed fawiki
dump. Wikitext is cleaned with regular expressions and every document is normalized, in
num_proc processes. Clean documents wait in a temporary file inside out_dir (about the size of
the clean text, ~1 GB for fawiki): the tokenizer is trained on the training split of that file,
then each document is encoded and appended to train.bin or val.bin, followed by <|endoftext|>.
Whole documents go to val, chosen by a hash of their text and the seed. The outputs replace
earlier ones only once everything has succeeded.
"""

import array
import bz2
import contextlib
import functools
import hashlib
import html
import io
import itertools
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import unicodedata
import urllib.request
import xml.etree.ElementTree as ET
from collections import Counter

import numpy as np
import regex
from tqdm import tqdm

import bpe
import common

FAWIKI_URL = "https://dumps.wikimedia.org/fawiki/latest/fawiki-latest-pages-articles.xml.bz2"
EOT = "<|endoftext|>"

DEFAULTS = dict(
    out_dir="data/fawiki",  # train.bin, val.bin, tokenizer.json, meta.json and sample.txt go here
    vocab_size=8192,  # BPE vocabulary trained here; at most 65536 because tokens are stored as uint16
    tokenizer="",  # path of an existing tokenizer.json to encode with instead (fine-tuning)
    max_articles=0,  # keep at most this many documents from each input; 0 = all of them
    num_proc=os.cpu_count() or 1,  # processes for cleaning, tokenizer training and encoding
    val_fraction=0.01,  # share of documents held out for validation, as whole documents
    seed=1337,  # with the text of a document, decides whether it goes to validation
    min_chars=100,  # documents with fewer characters of text are dropped as near-empty stubs
    normalize_text=True,  # Persian normalization (table below); False keeps every character
    remove_diacritics=True,  # with normalize_text: also drop the short-vowel marks U+064B..U+0652
    book_chunk_chars=20_000,  # a .txt book is cut at blank lines into documents of about this size
    batch_chars=1_000_000,  # text handed to each process at once: with two rounds in flight, bounds memory
)

# -----------------------------------------------------------------------------
# Persian normalization: one spelling for what a reader sees as one letter, so the tokenizer
# does not spend its vocabulary on look-alikes. Applied character by character.

PERSIAN_CHARACTERS = {
    "\u064a": "\u06cc",  # ي ARABIC YEH -> ی FARSI YEH
    "\u0649": "\u06cc",  # ى ALEF MAKSURA -> ی
    "\u0643": "\u06a9",  # ك ARABIC KAF -> ک KEHEH
    "\u06d5": "\u0647",  # ە AE -> ه HEH
    "\u06be": "\u0647",  # ھ HEH DOACHASHMEE -> ه
    "\u06c1": "\u0647",  # ہ HEH GOAL -> ه
    "\u0640": "",  # ـ TATWEEL (kashida), a stretching stroke
    "\u200d": "",  # ZERO WIDTH JOINER
    "\u200e": "",  # LEFT-TO-RIGHT MARK
    "\u200f": "",  # RIGHT-TO-LEFT MARK
    "\ufeff": "",  # BYTE ORDER MARK
    **{chr(0x0660 + d): chr(0x06F0 + d) for d in range(10)},  # ٠..٩ ARABIC-INDIC -> ۰..۹ PERSIAN digits
}
# fathatan, dammatan, kasratan, fatha, damma, kasra, shadda, sukun: mostly unwritten in Persian,
# so a word with and without them should be one word. Hamza above (U+0654, as in خانهٔ) stays.
DIACRITICS = {chr(code): "" for code in range(0x064B, 0x0653)}
# Arabic presentation forms, U+FB50..U+FDFF and U+FE70..U+FEFE, are the positional shapes and
# ligatures that old software stored instead of letters; NFKC gives the letters back.
PRESENTATION_FORMS = [*range(0xFB50, 0xFE00), *range(0xFE70, 0xFEFF)]


def _build_tables():
    tables = {flag: str.maketrans({**PERSIAN_CHARACTERS, **(DIACRITICS if flag else {})})
              for flag in (False, True)}
    for code in PRESENTATION_FORMS:
        letters = unicodedata.normalize("NFKC", chr(code))
        if letters != chr(code):
            for table in tables.values():
                table[code] = letters.translate(table)
    return tables


TRANSLATION_TABLES = _build_tables()  # remove_diacritics -> str.translate table
ZWNJ_RUN = regex.compile("\u200c{2,}")
# ZWNJ (U+200C, the Persian half-space of می‌خواهم) only means something between two letters
ZWNJ_OUTSIDE_WORD = regex.compile(r"(?<![\p{L}\p{M}])\u200c|\u200c(?!\p{L})")
SPACES = regex.compile(r"[^\S\n ][^\S\n]*| [^\S\n]+")  # any run but a lone space (common, and a no-op)
SPACE_AT_LINE_EDGE = regex.compile(r" ?\n ?")
BLANK_LINES = regex.compile(r"\n{3,}")


def collapse_whitespace(text):
    """One space between words, no spaces at line edges, at most one blank line between paragraphs."""
    text = SPACE_AT_LINE_EDGE.sub("\n", SPACES.sub(" ", text))
    return BLANK_LINES.sub("\n\n", text).strip()


def normalize(text, remove_diacritics=True):
    """Persian normalization (the table above, then ZWNJ and whitespace rules); idempotent."""
    text = text.translate(TRANSLATION_TABLES[remove_diacritics])
    text = ZWNJ_OUTSIDE_WORD.sub("", ZWNJ_RUN.sub("\u200c", text))
    return collapse_whitespace(text)


# -----------------------------------------------------------------------------
# Cleaning wikitext with regular expressions: markup that renders as text becomes that text,
# everything else (templates, tables, references, files, categories ...) goes.

COMMENT = regex.compile(r"<!--.*?(?:-->|\Z)", regex.S)
# elements whose content is not running text; they are dropped with everything inside
NOT_TEXT_TAGS = ("ref|references|math|chem|ce|gallery|timeline|imagemap|syntaxhighlight|source|score"
                 "|graph|mapframe|maplink|hiero|templatedata|categorytree|inputbox|includeonly")
# From an opening tag (not a self-closing <ref name=x />, which HTML_TAG removes) to its closing
# tag; the content may not open the same tag again, so an unclosed <ref> costs one scan, not one per <ref>.
# Possessive quantifiers (*+, ++) never give back what they matched: no backtracking, time linear.
NOT_TEXT_BLOCK = regex.compile(rf"<({NOT_TEXT_TAGS})\b[^<>]*(?<!/)>[^<]*+(?:<(?!/?\1\b)[^<]*+)*+</\1\s*>",
                               regex.I)
INNERMOST_TEMPLATE = regex.compile(r"\{\{[^{}]*+\}\}")
# a table {| ... |} holding no other table (templates inside it are gone by the time it is matched)
INNERMOST_TABLE = regex.compile(r"\{\|[^{|]*+(?:(?:\{(?!\|)|\|(?!\}))[^{|]*+)*+\|\}")
UNCLOSED_TEMPLATE = regex.compile(r"\{\{[^\n]*")
INNERMOST_LINK = regex.compile(r"\[\[([^\[\]]*+)\]\]")
EXTERNAL_LINK = regex.compile(r"(?<!\[)\[(?:https?:|ftp:)?//[^\s\[\]]*+(?:[ \t]++([^\[\]\n]*+))?\]")
MAX_NESTING = 40  # bounds the innermost-first passes, so malformed input cannot loop for long
# links into these namespaces show a picture or put the page in a category: no text to keep
NO_TEXT_NAMESPACES = {"پرونده", "تصویر", "file", "image", "مدیا", "media", "رده", "category"}
LANGUAGE_CODE = regex.compile(r"[a-z]{2,3}(?:-[a-z0-9]+)*|simple")  # [[en:Spain]] and the like
BOLD_ITALIC = regex.compile(r"'{2,}")
MAGIC_WORD = regex.compile(r"__[^\s_]+__")  # __TOC__, __بی‌فهرست__
LINE_BREAK_TAG = regex.compile(r"<br\s*/?>", regex.I)
HTML_TAG = regex.compile(r"</?[a-zA-Z][a-zA-Z0-9]*\b[^<>]*>")  # <small>, <span ...>, <sup> ...: keep the text
HEADING = regex.compile(r"(={1,6})\s*(.+?)\s*\1")
LIST_MARKS = regex.compile(r"^[*#:;]+\s*")
TABLE_LINE = regex.compile(r"^(?:\{\||\|\}|\||!)")  # rows of a table that could not be matched whole
WORD = regex.compile(r"\w")
EMPTY_PARENTHESES = regex.compile(r"\([\s،,;:؛]*\)")
SPACE_BEFORE_PUNCTUATION = regex.compile(r" (?=[،؛:.,;!?؟)\]»])")
REDIRECT = regex.compile(r"\s*#\s*(?:redirect|تغییر[ _\u200c]?مسیر)", regex.I)


def link_text(match):
    """What a reader sees for [[target|label]]: the label, the target, or nothing."""
    target, pipe, label = match[1].partition("|")
    namespace, colon, _ = target.partition(":")
    namespace = namespace.strip().replace("_", " ").lower()
    if colon and not target.startswith(":"):  # a leading colon makes [[:رده:x]] an ordinary link
        if namespace in NO_TEXT_NAMESPACES:
            return ""  # file links go with their captions, links inside captions included
        if not pipe and LANGUAGE_CODE.fullmatch(namespace):
            return ""  # interlanguage link
    if not pipe:
        return target.lstrip(":")
    if not label.strip():  # the pipe trick: [[شیراز (شهر)|]] shows شیراز
        return regex.sub(r"\s*\(.*\)\s*$", "", target.lstrip(":"))
    return label


def remove_innermost_first(text, rules):
    """Apply the (pattern, replacement) rules until nothing matches: each pass peels one level of nesting."""
    for _ in range(MAX_NESTING):
        changes = 0
        for pattern, replacement in rules:
            text, n = pattern.subn(replacement, text)
            changes += n
        if not changes:
            break
    return text


def clean_lines(text):
    """Headings on their own line, list items as plain lines; table leftovers, empty lines and the
    headings of sections left empty (their templates or tables removed) dropped."""
    lines = []  # (heading level, text); level 0 is body text, "" a paragraph break
    for line in text.split("\n"):
        line = line.strip()
        heading = HEADING.fullmatch(line)
        if heading and WORD.search(heading[2]):
            lines.append((len(heading[1]), heading[2]))
            continue
        line = "" if TABLE_LINE.match(line) else LIST_MARKS.sub("", line)
        lines.append((0, line if WORD.search(line) else ""))
    # Backwards, so we know whether text follows a heading before the next heading of its rank:
    # top_level is the smallest level (highest rank) among the headings between here and the text.
    out, text_follows, top_level = [], False, 7
    for level, line in reversed(lines):
        if not level:
            out.append(line)
            if line:
                text_follows, top_level = True, 7
            continue
        if text_follows and level < top_level:
            out.extend(["", line, ""])
        top_level = min(top_level, level)
    return "\n".join(reversed(out))


def clean_wikitext(wikitext):
    """Plain text of an article's wikitext: paragraphs, headings and list items, no markup."""
    text = COMMENT.sub("", wikitext)
    text = NOT_TEXT_BLOCK.sub("", text)
    text = remove_innermost_first(text, [(INNERMOST_TEMPLATE, ""), (INNERMOST_TABLE, "")])
    text = UNCLOSED_TEMPLATE.sub("", text).replace("}}", "")
    text = remove_innermost_first(text, [(INNERMOST_LINK, link_text), (EXTERNAL_LINK, r"\1")])
    text = text.replace("[[", "").replace("]]", "")
    text = MAGIC_WORD.sub("", BOLD_ITALIC.sub("", text))
    text = HTML_TAG.sub("", LINE_BREAK_TAG.sub("\n", text))
    text = collapse_whitespace(clean_lines(EMPTY_PARENTHESES.sub("", html.unescape(text))))
    return SPACE_BEFORE_PUNCTUATION.sub("", text)  # the gap a removed reference or template left


# -----------------------------------------------------------------------------
# Reading inputs as a stream of records: (title, wikitext) for a dump page, (None, text) otherwise

GUTENBERG_START = regex.compile(r"\*{3}\s*START OF (?:THE|THIS) PROJECT GUTENBERG", regex.I)
# the footer starts at "*** END OF THIS PROJECT GUTENBERG EBOOK ..." or the line before it
GUTENBERG_END = regex.compile(
    r"\*{3}\s*END OF (?:THE|THIS) PROJECT GUTENBERG|End of (?:the )?Project Gutenberg", regex.I)
GUTENBERG_HEADER_LINES = 1000  # the START line is looked for this far into a .txt file
INPUT_KINDS = (".xml.bz2", ".xml", ".jsonl", ".txt")


class ProgressReader(io.RawIOBase):
    """A binary stream that shows the (compressed) bytes read from `raw` and the records parsed so far
    on a progress bar: MB read, MB/s, pages/s, and the time left when the size is known."""

    def __init__(self, raw, bar, report, unit):
        self.raw, self.bar, self.report, self.unit, self.bytes_read = raw, bar, report, unit, 0

    def readable(self):
        return True

    def readinto(self, buffer):
        n = self.raw.readinto(buffer)
        self.bytes_read += n
        if self.bar.update(n):  # the bar was redrawn: time to update the count shown after it
            records, seconds = self.report["records"], self.bar.format_dict["elapsed"]
            self.bar.set_postfix_str(f"{records:,} {self.unit}, {records / seconds:,.0f}/s", refresh=False)
        return n

    def close(self):
        self.raw.close()
        self.bar.close()
        super().close()


def is_url(source):
    return source.startswith(("http://", "https://"))


def input_kind(source):
    kind = next((k for k in INPUT_KINDS if source.lower().endswith(k)), None)
    if kind is None:
        raise common.UsageError(f"cannot read {source}: expected a file ending in {', '.join(INPUT_KINDS)}")
    return kind


def open_input(source, report, unit):
    """A ProgressReader over the raw bytes of a local file or a URL."""
    try:
        if is_url(source):
            raw = urllib.request.urlopen(source, timeout=60)
            size = int(raw.headers["Content-Length"]) if raw.headers["Content-Length"] else None
            report["last_modified"] = raw.headers["Last-Modified"]
        else:
            raw, size = open(source, "rb"), os.path.getsize(source)
    except OSError as e:  # urllib's URLError is an OSError too
        if is_url(source):
            raise common.UsageError(
                f"cannot download {source} ({getattr(e, 'reason', e)}); with no network, fetch the dump "
                f"elsewhere and pass the file: python prepare.py fawiki-latest-pages-articles.xml.bz2") from e
        raise common.UsageError(f"cannot read {source}: {e.strerror or e}") from e
    bar = tqdm(total=size, unit="B", unit_scale=True, desc=os.path.basename(source), mininterval=1)
    return ProgressReader(raw, bar, report, unit)


def local_name(tag):
    return tag.rpartition("}")[2]  # "{http://www.mediawiki.org/xml/export-0.11/}page" -> "page"


def iter_pages(stream, report):
    """(title, wikitext) of each article of a MediaWiki XML export; other pages are counted as dropped."""
    events = ET.iterparse(stream, events=("start", "end"))
    _, root = next(events)
    for event, element in events:
        if event != "end" or local_name(element.tag) != "page":
            continue
        fields = {local_name(child.tag): child.text or "" for child in element.iter()}
        root.clear()  # the page is read: let it go, or a 1.5 GB dump would stay in memory
        report["records"] += 1
        if fields.get("ns", "0") != "0":
            report["dropped"]["not_article"] += 1
        elif "redirect" in fields or REDIRECT.match(fields.get("text", "")):
            report["dropped"]["redirect"] += 1
        else:
            yield fields.get("title", ""), fields.get("text", "")


def iter_jsonl(lines, source, report):
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            text = json.loads(line)["text"]
        except (ValueError, KeyError, TypeError):
            text = None
        if not isinstance(text, str):
            raise common.UsageError(f"{source} line {number}: expected a JSON object with a 'text' string")
        report["records"] += 1
        yield None, text


def iter_book(lines, chunk_chars, report):
    """The lines of a book without Project Gutenberg's header and footer, cut at blank lines into
    documents of about chunk_chars characters."""
    head = list(itertools.islice(lines, GUTENBERG_HEADER_LINES))
    start = next((i for i, line in enumerate(head) if GUTENBERG_START.match(line)), -1)
    chunk, size = [], 0
    for line in itertools.chain(head[start + 1:], lines):
        if GUTENBERG_END.match(line):
            break
        if not line.strip() and size >= chunk_chars:
            report["records"] += 1
            yield None, "".join(chunk)
            chunk, size = [], 0
        chunk.append(line)
        size += len(line)
    if chunk:
        report["records"] += 1
        yield None, "".join(chunk)


def iter_records(source, report, book_chunk_chars):
    """Records of one input; a damaged input stops with an error saying how far it got."""
    kind = input_kind(source)
    unit = "pages" if kind in (".xml", ".xml.bz2") else "records"
    stream = open_input(source, report, unit)
    try:
        with stream:
            if unit == "pages":
                yield from iter_pages(bz2.open(stream) if kind == ".xml.bz2" else stream, report)
            else:
                lines = io.TextIOWrapper(io.BufferedReader(stream), encoding="utf-8-sig")
                if kind == ".jsonl":
                    yield from iter_jsonl(lines, source, report)
                else:
                    yield from iter_book(lines, book_chunk_chars, report)
    except (ET.ParseError, EOFError, OSError, UnicodeDecodeError) as e:
        problem = {ET.ParseError: "malformed XML", EOFError: "truncated file",
                   UnicodeDecodeError: "not UTF-8"}.get(type(e), "unreadable")
        raise common.UsageError(f"{source}: {problem} ({e}) after {report['records']:,} {unit} / "
                                f"{tqdm.format_sizeof(stream.bytes_read, 'B')} read") from e
    finally:
        report["bytes_read"] = stream.bytes_read


# -----------------------------------------------------------------------------
# From records to documents, in num_proc processes

def prepare_text(text, normalize_text=True, remove_diacritics=True):
    """Text in the form the model is trained on: normalized, or with normalize_text=False only
    its whitespace tidied. sample.py and eval.py prepare prompts and held-out text the same way."""
    return normalize(text, remove_diacritics) if normalize_text else collapse_whitespace(text)


def prepare_record(record, normalize_text, remove_diacritics, min_chars):
    """(None, document) for a record worth keeping, else (why it was dropped, None)."""
    title, text = record
    if title is not None:
        text = clean_wikitext(text)
    text = prepare_text(text, normalize_text, remove_diacritics)
    if len(text) < max(1, min_chars):
        return "too_short", None
    if title is None:
        return None, text
    return None, f"{prepare_text(title, normalize_text, remove_diacritics)}\n\n{text}"


def batches_of_text(items, chars):
    """Lists of consecutive (key, text) items holding about `chars` characters of text each."""
    batch, size = [], 0
    for item in items:
        batch.append(item)
        size += len(item[1])
        if size >= chars:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def parallel_map(work, records, pool, batch_chars, num_proc):
    """work(record) for every record, in order; with a pool, one batch is read while the last is cleaned."""
    if pool is None:
        yield from map(work, records)
        return
    pending = None
    for batch in batches_of_text(records, batch_chars * num_proc):
        job = pool.map_async(work, batch, chunksize=max(1, len(batch) // (4 * num_proc)))
        if pending is not None:
            yield from pending.get()
        pending = job
    if pending is not None:
        yield from pending.get()


def new_report():
    return {"records": 0, "kept": 0, "dropped": Counter()}


def read_documents(source, report, config, pool=None):
    """Clean, normalized documents of one input, counting what was kept and dropped in report."""
    work = functools.partial(prepare_record, normalize_text=config["normalize_text"],
                             remove_diacritics=config["remove_diacritics"], min_chars=config["min_chars"])
    records = iter_records(source, report, config["book_chunk_chars"])
    results = parallel_map(work, records, pool, config["batch_chars"], config["num_proc"])
    with contextlib.closing(results):
        for dropped, document in results:
            if dropped:
                report["dropped"][dropped] += 1
                continue
            report["kept"] += 1
            yield document
            if report["kept"] == config["max_articles"]:
                return


def iter_documents(source, **options):
    """Clean, normalized documents of a dump (path or URL), a .jsonl or a .txt file, in this process.
    options: any of DEFAULTS, e.g. min_chars=0, remove_diacritics=False."""
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"iter_documents got unknown options {sorted(unknown)}")
    return read_documents(source, new_report(), {**DEFAULTS, "min_chars": 0, **options})


# -----------------------------------------------------------------------------
# Split, tokenizer, token files

OUTPUTS = ("train.bin", "val.bin", "tokenizer.json", "meta.json", "sample.txt")
SAMPLE_DOCUMENTS, SAMPLE_CHARS = 5, 3000  # sample.txt: the start of the first few documents


def split_key(seed, document):
    """A number in [0, 1) fixed by the seed and the text; below val_fraction, the document goes to val.
    Hashing the text (not the position) keeps a document's split when inputs or max_articles change,
    and puts identical documents in the same split."""
    digest = hashlib.blake2b(document.encode(), digest_size=8, key=str(seed).encode()).digest()
    return int.from_bytes(digest, "big") / 2**64


def choose_val(keys, val_fraction):
    """Which documents go to val: those whose split key is below val_fraction, one at least, not all."""
    in_val = keys < val_fraction
    if not in_val.any():
        in_val[keys.argmin()] = True
    if in_val.all():
        in_val[keys.argmax()] = False
    return in_val


def describe_input(source):
    """Size and sha256 of a local input (a URL is described after it has been read)."""
    if is_url(source):
        return {"url": source}
    try:
        with open(source, "rb") as f:
            sha256 = hashlib.file_digest(f, "sha256").hexdigest()
        return {"path": source, "bytes": os.path.getsize(source), "sha256": sha256}
    except OSError as e:
        raise common.UsageError(f"cannot read {source}: {e.strerror or e}") from e


def load_tokenizer(path):
    if not os.path.isfile(path):
        raise common.UsageError(f"tokenizer not found: {path}")
    return bpe.Tokenizer.load(path)


def write_documents(inputs, reports, config, path):
    """Pass 1: every kept document as a JSON line of `path`. Returns their split keys and a sample."""
    keys, sample = array.array("d"), []
    with contextlib.ExitStack() as stack:
        num_proc = config["num_proc"]
        pool = stack.enter_context(multiprocessing.Pool(num_proc)) if num_proc > 1 else None
        f = stack.enter_context(open(path, "w", encoding="utf-8"))
        for source, report in zip(inputs, reports):
            for document in read_documents(source, report, config, pool):
                f.write(json.dumps(document, ensure_ascii=False) + "\n")
                keys.append(split_key(config["seed"], document))
                if len(sample) < SAMPLE_DOCUMENTS:
                    sample.append(document[:SAMPLE_CHARS])
    return np.array(keys), sample


def read_document_file(path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def write_tokens(tokenizer, documents_path, in_val, paths, config):
    """Pass 2: encode every document, append it and <|endoftext|> to train.bin or val.bin; returns counts."""
    counts = {split: {"documents": 0, "tokens": 0, "bytes": 0} for split in ("train", "val")}
    with open(paths["train"], "wb") as train_file, open(paths["val"], "wb") as val_file, \
            tqdm(total=len(in_val), unit="doc", desc="encoding", mininterval=1) as bar:
        # Two readers of the same file: the encoder runs ahead in worker processes whose
        # chunk caches stay warm over the whole corpus; the other supplies each text again.
        encoded = tokenizer.encode_iter(read_document_file(documents_path), num_proc=config["num_proc"])
        for index, (document, ids) in enumerate(zip(read_document_file(documents_path), encoded)):
            split, f = ("val", val_file) if in_val[index] else ("train", train_file)
            np.array([*ids, tokenizer.eot_id], dtype=np.uint16).tofile(f)
            counts[split]["documents"] += 1
            counts[split]["tokens"] += len(ids) + 1
            counts[split]["bytes"] += len(document.encode())
            bar.update(1)
    return counts


def check_config(config):
    if not 0 < config["val_fraction"] < 1:
        raise common.UsageError(f"val_fraction must be between 0 and 1, got {config['val_fraction']}")
    if not config["tokenizer"] and not 256 < config["vocab_size"] <= 2**16:
        raise common.UsageError(f"vocab_size must be above 256 and at most 65536 (uint16 tokens), "
                                f"got {config['vocab_size']}")
    for key in ("num_proc", "batch_chars", "book_chunk_chars"):
        if config[key] < 1:
            raise common.UsageError(f"{key} must be at least 1, got {config[key]}")


def main():
    config, inputs = common.configure(DEFAULTS, sys.argv[1:], config_files=False)
    check_config(config)
    inputs = inputs or [FAWIKI_URL]
    for source in inputs:
        input_kind(source)
    tokenizer = load_tokenizer(config["tokenizer"]) if config["tokenizer"] else None
    if tokenizer is not None and tokenizer.vocab_size > 2**16:
        raise common.UsageError(f"{config['tokenizer']}: {tokenizer.vocab_size} tokens do not fit in uint16")
    files = [describe_input(source) for source in inputs]
    reports = [new_report() for _ in inputs]
    out_dir = config["out_dir"]
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise common.UsageError(f"cannot create out_dir {out_dir}: {e.strerror or e}") from e
    with contextlib.ExitStack() as stack:
        work_dir = stack.enter_context(tempfile.TemporaryDirectory(dir=out_dir, prefix=".prepare-"))
        tmp = {name: stack.enter_context(common.atomic_path(os.path.join(out_dir, name))) for name in OUTPUTS}
        documents_path = os.path.join(work_dir, "documents.jsonl")

        keys, sample = write_documents(inputs, reports, config, documents_path)
        dropped = sum((report["dropped"] for report in reports), Counter())
        if len(keys) < 2:
            raise common.UsageError(f"{len(keys)} usable documents in {', '.join(inputs)} (dropped: "
                                    f"{dict(dropped) or 'none'}); a train/val split needs at least 2")
        in_val = choose_val(keys, config["val_fraction"])
        if tokenizer is None:
            print(f"training a tokenizer of {config['vocab_size']:,} tokens on {(~in_val).sum():,} documents",
                  file=sys.stderr)
            train_texts = (doc for doc, val in zip(read_document_file(documents_path), in_val) if not val)
            tokenizer = bpe.Tokenizer.train(train_texts, config["vocab_size"], special_tokens=(EOT,),
                                            num_proc=config["num_proc"])
            tokenizer.save(tmp["tokenizer.json"])
        else:
            shutil.copyfile(config["tokenizer"], tmp["tokenizer.json"])
        bins = {"train": tmp["train.bin"], "val": tmp["val.bin"]}
        counts = write_tokens(tokenizer, documents_path, in_val, bins, config)

        for file, report in zip(files, reports):
            file.update(records=report["records"], kept=report["kept"], dropped=dict(report["dropped"]))
            if "url" in file:
                file.update(bytes_read=report["bytes_read"], last_modified=report.get("last_modified"))
        with open(tmp["tokenizer.json"], "rb") as f:
            tokenizer_sha256 = hashlib.file_digest(f, "sha256").hexdigest()
        meta = {
            "vocab_size": tokenizer.vocab_size, "eot_id": tokenizer.eot_id, "dtype": "uint16",
            "tokenizer": {"trained_here": not config["tokenizer"], "sha256": tokenizer_sha256},
            "splits": counts, "inputs": files, "config": config,
        }
        with open(tmp["meta.json"], "w", encoding="utf-8") as f:
            json.dump(meta, f, ensure_ascii=False, indent=2)
        with open(tmp["sample.txt"], "w", encoding="utf-8") as f:
            f.write(f"\n\n{EOT}\n\n".join(sample) + "\n")
    for split, count in counts.items():
        print(f"{split}: {count['documents']:,} documents, {count['tokens']:,} tokens, "
              f"{tqdm.format_sizeof(count['bytes'], 'B')} of text")
    print(f"dropped: {dict(dropped) or 'nothing'}; wrote {', '.join(OUTPUTS)} to {out_dir}")


if __name__ == "__main__":
    common.run(main)
