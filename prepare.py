"""
Turn raw text into what train.py reads: clean, normalized Persian documents encoded with our
BPE tokenizer into uint16 token files.

    python prepare.py --out_dir=data/fawiki --max_articles=20000    # streams the latest fawiki dump
    python prepare.py fawiki-latest-pages-articles.xml.bz2 --out_dir=data/fawiki
    python prepare.py ../shared/data/persian/news.jsonl ../shared/data/books/pg2600.txt --out_dir=data/mix
    python prepare.py more.jsonl --out_dir=data/finetune --tokenizer=data/fawiki/tokenizer.json

Inputs: MediaWiki XML dumps (.xml or .xml.bz2, a local file or the official URL, decompressed as
it downloads, resumed where a dropped connection stopped, checked against the SHA-1 Wikimedia
publishes and kept with --save_dump=PATH), .jsonl files with a "text" field, and .txt books. A
dump is parsed page by page and every page is thrown away once read, so memory stays flat on the
1.5 GB compressed fawiki dump. Wikitext is cleaned with regular expressions and every document
is normalized, in num_proc processes. Clean documents wait in a temporary file inside out_dir
(about the size of the clean text, ~1 GB for fawiki): the tokenizer is trained on the training
split of that file, then each document is encoded and appended to train.bin, val.bin or test.bin,
followed by <|endoftext|>. With --tokenizer there is nothing to train: each document is encoded in
the process that cleaned it and written at once, in one pass with no temporary file. Whole documents
go to val and test, chosen by a hash of their text and the seed. The outputs replace earlier ones
only once everything has succeeded.
"""

import array
import bz2
import contextlib
import functools
import hashlib
import html
import http.client
import io
import itertools
import json
import multiprocessing
import os
import queue
import re
import shutil
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections import Counter, deque

import numpy as np
import regex
from tqdm import tqdm

import bpe
import common

FAWIKI_URL = "https://dumps.wikimedia.org/fawiki/latest/fawiki-latest-pages-articles.xml.bz2"
# Wikimedia answers requests without a descriptive User-Agent (tool name/version and a contact, per
# its User-Agent policy) with HTTP 403; put your own URL or e-mail in it with --user_agent=...
USER_AGENT = "persian-gpt-prepare/1.0 (https://example.org/set-your-contact-with--user_agent)"
EOT = "<|endoftext|>"

DEFAULTS = dict(
    out_dir="data/fawiki",  # train.bin, val.bin, tokenizer.json, meta.json and sample.txt go here
    vocab_size=8192,  # BPE vocabulary trained here; at most 65536 because tokens are stored as uint16
    tokenizer="",  # path of an existing tokenizer.json to encode with instead (fine-tuning)
    max_articles=0,  # keep at most this many documents from each input; 0 = all of them
    num_proc=os.cpu_count() or 1,  # processes for cleaning, tokenizer training and encoding
    val_fraction=0.01,  # share of documents held out for validation, as whole documents
    test_fraction=0.01,  # share held out for the final test (test.bin, read only by eval.py); 0 = none
    seed=1337,  # with the text of a document, decides whether it goes to validation or test
    min_chars=100,  # documents with fewer characters of text are dropped as near-empty stubs
    normalize_text=True,  # Persian normalization (table below); False keeps every character
    remove_diacritics=True,  # with normalize_text: also drop the short-vowel marks U+064B..U+0652
    book_chunk_chars=20_000,  # a .txt book is cut at blank lines into documents of about this size
    batch_chars=1_000_000,  # text handed to each process at once: with two rounds in flight, bounds memory
    user_agent=USER_AGENT,  # sent with every download request: "name/version (your URL or e-mail)"
    save_dump="",  # a path: also keep the downloaded dump there, to read it locally next time
)

# -----------------------------------------------------------------------------
# Cleaning wikitext with regular expressions: markup that renders as text becomes that text,
# everything else (templates, tables, references, files, categories ...) goes.

# Rendered in place of a removed element that a reader would see as a break between words: a
# reference between two sentences (است.<ref>…</ref>جمله) must not glue them (است.جمله).
GAP = " "
# <nowiki>text</nowiki> shows its text as written (which may not open <nowiki> again: an unclosed one
# costs one scan, not one per <nowiki>)
NOWIKI = regex.compile(r"<nowiki\s*>((?:[^<]++|<(?!/?nowiki\b))*+)</nowiki\s*>", regex.I)
# inside <nowiki>, markup characters become numeric entities: no rule below sees them as markup,
# and html.unescape, last of all, gives them back as the literal text MediaWiki shows
NOWIKI_ESCAPES = str.maketrans({c: f"&#{ord(c)};" for c in "{}[]<>|'=_&*#:;~-"})
COMMENT = regex.compile(r"<!--.*?(?:-->|\Z)", regex.S)
# elements whose content is not running text; they are dropped with everything inside
NOT_TEXT_TAGS = ("ref|references|math|chem|ce|gallery|timeline|imagemap|syntaxhighlight|source|score"
                 "|graph|mapframe|maplink|hiero|templatedata|categorytree|inputbox|includeonly")
# From an opening tag (not a self-closing <ref name=x />, see UNCLOSED_INLINE) to its closing
# tag; the content may not open the same tag again, so an unclosed <ref> costs one scan, not one per <ref>.
# Possessive quantifiers (*+, ++) never give back what they matched: no backtracking, time linear.
NOT_TEXT_BLOCK = regex.compile(rf"<({NOT_TEXT_TAGS})\b[^<>]*(?<!/)>[^<]*+(?:<(?!/?\1\b)[^<]*+)*+</\1\s*>",
                               regex.I)
# What is left of those is self-closing (<ref name=a />) or unclosed. An unclosed <ref> (or <math>,
# <ce> ...) inside a sentence costs only its tag; an unclosed gallery, timeline ... holds lines of file
# names and data up to the next blank line.
UNCLOSED_INLINE = regex.compile(r"<(?:ref|math|chem|ce|maplink|hiero)\b[^<>]*>", regex.I)
UNCLOSED_BLOCK = regex.compile(rf"<(?:{NOT_TEXT_TAGS})\b[^<>]*(?<!/)>.*?(?:\n[^\S\n]*\n|\Z)",
                               regex.I | regex.S)
# {{{1|default}}}: a template's parameter, copied into an article with its template's code, shows its default
TEMPLATE_PARAMETER = regex.compile(r"\{\{\{[^{}|]*+(?:\|([^{}]*+))?\}\}\}")
# A template holding no other template. Its content may hold single braces, balanced ({{math|x ∈ {1, 2}}})
# or not, so that a stray brace costs only its template, not everything to the end of the paragraph.
INNERMOST_TEMPLATE = regex.compile(r"\{\{((?:[^{}]++|\{[^{}]*+\}(?=[^}]|\}\})|\{(?!\{)|\}(?!\}))*+)\}\}")
# a table {| ... |} holding no other table (templates inside it are gone by the time it is matched)
INNERMOST_TABLE = regex.compile(r"\{\|[^{|]*+(?:(?:\{(?!\|)|\|(?!\}))[^{|]*+)*+\|\}")
UNCLOSED_TEMPLATE = regex.compile(r"\{\{[^{}|\n]*+\|?")  # a {{ never closed costs only itself and its name
# [[target|label]] holding no other link; the label may hold single brackets: [[a|b [c]]]
INNERMOST_LINK = regex.compile(r"\[\[((?:[^\[\]]++|\[[^\[\]]*+\](?=[^\]]|\]\])|\[(?!\[)|\](?!\]))*+)\]\]")
# Most links are [[target]] or [[target|label]] with no namespace: these show target or label, a
# replacement done in C; link_text, a Python call per link, decides the rest.
PLAIN_LINK = regex.compile(r"\[\[(?:[^\[\]|:]*+\|(?=[^\[\]|]*+\]\])(?=\s*+[^\s\]]))?([^\[\]|:]*+)\]\]")
EXTERNAL_LINK = regex.compile(r"(?<!\[)\[(?:https?:|ftp:)?//[^\s\[\]]*+(?:[ \t]++([^\[\]\n]*+))?\]")
MAX_NESTING = 40  # bounds the innermost-first passes, so malformed input cannot loop for long
# links into these namespaces show a picture or put the page in a category: no text to keep
NO_TEXT_NAMESPACES = {"پرونده", "تصویر", "file", "image", "مدیا", "media", "رده", "category"}
LANGUAGE_CODE = regex.compile(r"[a-z]{2,3}(?:-[a-z0-9]+)*|simple")  # [[en:Spain]] and the like
BOLD_ITALIC = regex.compile(r"'{2,}")
MAGIC_WORD = regex.compile(r"__[^\s_]+__")  # __TOC__, __بی‌فهرست__
# tags that start a new block on the page: what is on either side of them is not one word
BLOCK_TAG = regex.compile(r"</?(?:br|div|center|p|blockquote|poem|li|ul|ol|dl|dt|dd|table|tr|td|th|hr"
                          r"|h[1-6])\b[^<>]*>", regex.I)
HTML_TAG = regex.compile(r"</?[a-zA-Z][a-zA-Z0-9]*\b[^<>]*>")  # <small>, <span ...>, <sup> ...: keep the text
HEADING = regex.compile(r"(={1,6})\s*(.+?)\s*\1")
LIST_MARKS = regex.compile(r"^[*#:;]+\s*")
TABLE_STARTS = ("|", "!")  # with "{|": rows of a table that could not be matched whole
LIST_STARTS = ("*", "#", ":", ";")
WORD = regex.compile(r"\w")
EMPTY_PARENTHESES = regex.compile(r"\([\s،,;:؛]*\)")
# (re finds a space before punctuation faster than regex; regex is faster after an opening bracket)
SPACE_BEFORE_PUNCTUATION = re.compile(r" (?=[،؛:.,;!?؟)\]»])")
SPACE_AFTER_OPENING = regex.compile(r"([(\[«]) ")
REDIRECT = regex.compile(r"\s*#\s*(?:redirect|تغییر[ _\u200c]?مسیر)", regex.I)
# fawiki marks a disambiguation page, a list of links to the articles a title may mean, with
# {{ابهام‌زدایی}} (or enwiki's name for it, {{disambig}}), or with the Disambiguator extension's magic
# word, __DISAMBIG__ or its Persian alias __ابهام‌زدایی__
DISAMBIGUATION = regex.compile(r"\{\{\s*(?:ابهام[ _\u200c]?زدایی|disambig(?:uation)?)\s*(?:\||\}\})"
                               r"|__(?:DISAMBIG|ابهام[ _\u200c]?زدایی)__", regex.I)
DISAMBIGUATION_HINTS = ("ابهام", "isambig", "ISAMBIG")  # one is in every page the pattern can match

# -----------------------------------------------------------------------------
# Templates that show text. Every template is removed (infoboxes, citations, navigation boxes,
# notices, pronunciations, audio, coordinates ...) except these, whose arguments are words of the
# sentence they sit in. Names are compared lower-case, with spaces, underscores and ZWNJs alike.

# MediaWiki's Persian month names (languages/messages/MessagesFa.php), for the date templates
MONTHS = ("ژانویه", "فوریه", "مارس", "آوریل", "مه", "ژوئن", "ژوئیه", "اوت", "سپتامبر", "اکتبر", "نوامبر",
          "دسامبر")
# fawiki's language templates are named after the language ({{آلمانی|Berlin}}, {{به انگلیسی|...}})
# or its code ({{lang-es|España}}); around the foreign words they show the language's name, left out here
LANGUAGES = ("انگلیسی", "فرانسوی", "آلمانی", "عربی", "اسپانیایی", "ایتالیایی", "روسی", "ترکی",
             "ترکی استانبولی", "یونانی", "لاتین", "ژاپنی", "چینی", "کره ای", "پرتغالی", "هلندی", "عبری",
             "کردی", "آذربایجانی", "ارمنی", "گرجی", "اردو", "هندی", "پشتو", "سوئدی", "لهستانی", "فارسی",
             "پهلوی", "اوستایی", "سانسکریت", "تاجیکی", "ازبکی", "ترکمنی")
LANGUAGE_TEMPLATE = regex.compile(r"lang-[a-z]{2,3}(?:-[a-z0-9]+)*")  # {{lang-ar|...}}, {{lang-de|...}}


def argument(k):
    """The k-th unnamed argument, as the template shows it."""
    return lambda args: args[k - 1] if len(args) >= k else ""


def date_text(args):
    """{{birth date|1950|5|3}} -> 3 مه 1950: day, month name, year; an age or anything else is left out."""
    try:
        year, month, day = args[:3]
        return f"{day.strip()} {MONTHS[int(month) - 1]} {year.strip()}"
    except (ValueError, IndexError):  # not year|month|day: the words given
        return " ".join(args[:3])


def measure_text(args):
    """{{convert|10|km|mi}} -> 10 km, {{convert|3|to|5|m}} -> 3–5 m: the measure and its unit only."""
    if len(args) >= 4 and args[1].strip() in ("-", "–", "to", "and", "or", "by", "x", "×"):
        return f"{args[0].strip()}–{args[2].strip()} {args[3].strip()}"
    return " ".join(arg.strip() for arg in args[:2])


TEMPLATE_TEXT = {
    **{name: argument(1) for name in LANGUAGES},
    **{f"به {name}": argument(1) for name in LANGUAGES},
    "lang": argument(2),  # {{lang|fr|Paris}}
    "نستعلیق": argument(1), "nastaliq": argument(1),  # text set in the Nastaliq script
    "nowrap": argument(1), "nobr": argument(1), "small": argument(1), "big": argument(1),
    "سخ": "\n", "br": "\n", "-": "\n", "clear": "\n", "پاک کن": "\n",  # line breaks and clears
    "فاصله نشکن": "\u00a0", "nbsp": "\u00a0",  # a space that does not break, as in ۱۰ کیلومتر
    "birth date": date_text, "death date": date_text, "birth date and age": date_text,
    "death date and age": date_text, "start date": date_text, "end date": date_text,
    "convert": measure_text, "cvt": measure_text,
}
TEMPLATE_NAME_SPACES = regex.compile(r"[\s_\u200c]+")
TEMPLATE_NAMESPACE = regex.compile(r"^(?:الگو|template)\s*:\s*", regex.I)
PIPE_OR_LINK = regex.compile(r"\[\[[^\[\]]*+\]\]|\|")  # a | inside [[target|label]] does not split arguments
NAMED_ARGUMENT = regex.compile(r"\s*[\w\s-]+=")


def template_arguments(body, start):
    """The unnamed arguments in a template's body from `start` on: split at each | outside a link."""
    args = []
    for pipe in PIPE_OR_LINK.finditer(body, start):
        if pipe[0] == "|":
            args.append(body[start:pipe.start()])
            start = pipe.end()
    args.append(body[start:])
    return [arg for arg in args if not NAMED_ARGUMENT.match(arg)]


def template_text(match):
    """What a reader sees of an innermost template: its text if TEMPLATE_TEXT knows it, else a gap."""
    body = match[1]
    name, pipe, _ = body.partition("|")
    key = TEMPLATE_NAMESPACE.sub("", TEMPLATE_NAME_SPACES.sub(" ", name).strip().lower())
    render = TEMPLATE_TEXT.get(key) or (argument(1) if LANGUAGE_TEMPLATE.fullmatch(key) else None)
    if render is None:
        return GAP
    if isinstance(render, str):
        return render
    return render(template_arguments(body, len(name) + 1) if pipe else [])


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
        first = line[:1]  # most lines are plain text: their first character rules out the patterns
        heading = HEADING.fullmatch(line) if first == "=" else None
        if heading and WORD.search(heading[2]):
            lines.append((len(heading[1]), heading[2]))
            continue
        if first in TABLE_STARTS or line.startswith("{|"):
            line = ""
        elif first in LIST_STARTS:
            line = LIST_MARKS.sub("", line)
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
    text = NOWIKI.sub(lambda m: m[1].translate(NOWIKI_ESCAPES), wikitext)
    text = COMMENT.sub("", text)
    text = NOT_TEXT_BLOCK.sub(GAP, text)
    text = UNCLOSED_BLOCK.sub("\n", UNCLOSED_INLINE.sub(GAP, text))
    text = remove_innermost_first(text, [(TEMPLATE_PARAMETER, r"\1"), (INNERMOST_TEMPLATE, template_text),
                                         (INNERMOST_TABLE, "\n")])
    text = UNCLOSED_TEMPLATE.sub(GAP, text).replace("}}", GAP)
    text = remove_innermost_first(text, [(PLAIN_LINK, r"\1"), (INNERMOST_LINK, link_text),
                                         (EXTERNAL_LINK, r"\1")])
    text = text.replace("[[", "").replace("]]", "")
    text = MAGIC_WORD.sub("", BOLD_ITALIC.sub("", text))
    text = HTML_TAG.sub("", BLOCK_TAG.sub("\n", text))
    text = bpe.collapse_whitespace(clean_lines(EMPTY_PARENTHESES.sub("", html.unescape(text))))
    # the gaps removed references and templates left before punctuation and after an opening bracket
    return SPACE_AFTER_OPENING.sub(r"\1", SPACE_BEFORE_PUNCTUATION.sub("", text))


# -----------------------------------------------------------------------------
# Reading inputs as a stream of records: (title, wikitext) for a dump page, (None, text) otherwise

GUTENBERG_START = regex.compile(r"\*{3}\s*START OF (?:THE|THIS) PROJECT GUTENBERG", regex.I)
# the footer starts at "*** END OF THIS PROJECT GUTENBERG EBOOK ..." or the line before it
GUTENBERG_END = regex.compile(
    r"\*{3}\s*END OF (?:THE|THIS) PROJECT GUTENBERG|End of (?:the )?Project Gutenberg", regex.I)
GUTENBERG_HEADER_LINES = 1000  # the START line is looked for this far into a .txt file
INPUT_KINDS = (".xml.bz2", ".xml", ".jsonl", ".txt")
READ_AHEAD_BYTES = 1 << 20  # decompressed bytes of a dump read at a time, ahead of the XML parser
READ_AHEAD_BLOCKS = 4  # such blocks waiting for the parser at most: memory stays flat


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


class ReadAhead(io.RawIOBase):
    """The bytes of a binary file object, read READ_AHEAD_BYTES at a time in a thread. bz2 lets go of
    the GIL while it decompresses, so a dump is decompressed on one core while this process parses
    the XML and hands pages to the workers on another. An error in reading is raised to the reader."""

    def __init__(self, source):
        super().__init__()
        self.source, self.blocks, self.block = source, queue.Queue(READ_AHEAD_BLOCKS), memoryview(b"")
        self.stopping, self.at_end = threading.Event(), False
        self.thread = threading.Thread(target=self.read_source, daemon=True)
        self.thread.start()

    def read_source(self):
        try:
            while self.put(self.source.read(READ_AHEAD_BYTES) or None):
                pass
        except BaseException as e:
            self.put(e)

    def put(self, item):
        """Queue a block (None at the end) unless reading has stopped; whether to go on reading."""
        while not self.stopping.is_set():
            try:
                self.blocks.put(item, timeout=0.1)
                return isinstance(item, bytes)
            except queue.Full:
                continue
        return False

    def readable(self):
        return True

    def readinto(self, buffer):
        if not self.block and not self.at_end:
            item = self.blocks.get()
            if isinstance(item, BaseException):
                raise item
            self.block, self.at_end = memoryview(item or b""), item is None
        n = min(len(buffer), len(self.block))
        buffer[:n], self.block = self.block[:n], self.block[n:]
        return n

    def close(self):
        self.stopping.set()
        self.thread.join()
        self.source.close()
        super().close()


def is_url(source):
    return source.startswith(("http://", "https://"))


def input_kind(source):
    kind = next((k for k in INPUT_KINDS if source.lower().endswith(k)), None)
    if kind is None:
        raise common.UsageError(f"cannot read {source}: expected a file ending in {', '.join(INPUT_KINDS)}")
    return kind


# Downloading: Wikimedia asks for a descriptive User-Agent, and a 1.5 GB download over hours will
# see dropped connections, so a dropped or stalled one is resumed where it stopped.
DOWNLOAD_TIMEOUT = 60  # seconds without a byte before a connection counts as stalled
DOWNLOAD_RETRIES = 6  # reconnections in a row without a byte received before the download gives up
DOWNLOAD_BACKOFF = 2.0  # seconds before the first reconnection, doubled before each further one
# fawiki-latest-pages-articles.xml.bz2 or fawiki-20240601-pages-articles.xml.bz2: the wiki and the date
# (or "latest") name the sha1sums.txt published in the same directory
DUMP_NAME = regex.compile(r"(?P<wiki>[^-/]+)-(?P<date>latest|\d{8})-.+")


def http_open(url, user_agent, start=0, validator=None):
    """A response for url from byte `start` on; with a validator (ETag or Last-Modified), a server whose
    file has changed since answers with the whole new file (200) instead of the range (206)."""
    headers = {"User-Agent": user_agent}
    if start:
        headers["Range"] = f"bytes={start}-"
        if validator:
            headers["If-Range"] = validator
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=DOWNLOAD_TIMEOUT)


def http_problem(url, error):
    """One line for an HTTP error status: what it means here and what to do."""
    host = urllib.parse.urlsplit(url).netloc
    advice = {
        403: 'the server refuses this client; set --user_agent="name/version (your URL or e-mail)" '
             "as Wikimedia's User-Agent policy asks",
        404: f"no such dump: {url}; the dumps that exist are listed at {url.rpartition('/')[0]}/",
        429: "rate limited, retry later" + (f" (after {error.headers['Retry-After']} s)"
                                            if error.headers and error.headers["Retry-After"] else ""),
    }.get(error.code, f"while downloading {url}")
    return f"HTTP {error.code} {error.reason} from {host}: {advice}"


def connect(url, user_agent):
    """The first response for url, or one line saying why there is none."""
    try:
        return http_open(url, user_agent)
    except urllib.error.HTTPError as e:
        raise common.UsageError(http_problem(url, e)) from e
    except OSError as e:  # URLError (no route, no name, refused) and timeouts
        raise common.UsageError(
            f"cannot download {url}: cannot connect to {urllib.parse.urlsplit(url).netloc} "
            f"({getattr(e, 'reason', e)}); check the network, or fetch the dump elsewhere and pass the "
            f"file: python prepare.py fawiki-latest-pages-articles.xml.bz2") from e


def published_sha1(url, user_agent):
    """(sha1 that Wikimedia lists for the file at url in the sha1sums.txt beside it, or None; a note).
    The list names dated files, so fawiki-latest-x matches fawiki-<8 digits>-x."""
    directory, _, name = url.rpartition("/")
    parts = DUMP_NAME.fullmatch(name)
    if not parts:
        return None, f"not checked: no checksum list is known for {name}"
    sums_url = f"{directory}/{parts['wiki']}-{parts['date']}-sha1sums.txt"
    date_start, date_end = parts.span("date")
    listed_name = regex.compile(
        regex.escape(name[:date_start]) + r"(?:latest|\d{8})" + regex.escape(name[date_end:]))
    try:
        with http_open(sums_url, user_agent) as response:
            listing = response.read(1 << 20).decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None, f"not checked: {sums_url} does not exist"
        raise common.UsageError(http_problem(sums_url, e)) from e
    except OSError:
        return None, f"not checked: {sums_url} could not be read"
    for line in listing.splitlines():
        digest, _, listed = line.strip().partition(" ")
        if listed_name.fullmatch(listed.strip().lstrip("*")):
            return digest.lower(), sums_url
    return None, f"not checked: {sums_url} does not list {name}"


class Download(io.RawIOBase):
    """The bytes of a URL from first to last, as one stream. A connection that drops or stalls is
    reopened with `Range: bytes=N-` from the first byte not yet received, so whatever reads from
    this stream (the bz2 decompressor, whose state spans bz2 streams and blocks, and the XML parser)
    never sees the gap. The bytes are hashed, checked against `sha1` when the last one arrives, and
    copied to `copy_to` if given."""

    def __init__(self, url, user_agent, sha1=None, sha1_source="", copy_to=None):
        super().__init__()
        self.url, self.user_agent, self.expected_sha1, self.sha1_source = url, user_agent, sha1, sha1_source
        self.response = connect(url, user_agent)
        length = self.response.headers["Content-Length"]
        self.size = int(length) if length else None
        self.validator = self.response.headers["ETag"] or self.response.headers["Last-Modified"]
        self.last_modified = self.response.headers["Last-Modified"]
        self.received, self.failures, self.complete = 0, 0, False
        self.sha1 = hashlib.sha1()
        self.copy = open(copy_to, "wb") if copy_to else None

    def readable(self):
        return True

    def readinto(self, buffer):
        while True:
            try:
                data = self.response.read1(len(buffer))  # what has arrived: a stall loses nothing received
                if data or self.size is None or self.received == self.size:
                    break
                problem = "the connection closed early"
            except (OSError, http.client.HTTPException) as e:  # a timeout, a reset, a broken chunk
                problem = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            self.reconnect(problem)
        if not data:
            self.finish()
            return 0
        n = len(data)
        buffer[:n] = data
        self.sha1.update(data)
        if self.copy:
            self.copy.write(data)
        self.received += n
        self.failures = 0
        return n

    def reconnect(self, problem):
        """Open a new connection at the first byte not received, after a pause that doubles each time."""
        self.response.close()
        while True:
            self.failures += 1
            where = f"at byte {self.received:,}" + (f" of {self.size:,}" if self.size else "")
            if self.failures > DOWNLOAD_RETRIES:
                raise common.UsageError(f"download of {self.url} failed {where}: {problem}, and "
                                        f"{DOWNLOAD_RETRIES} reconnections in a row did not help; "
                                        f"run again later")
            delay = DOWNLOAD_BACKOFF * 2 ** (self.failures - 1)
            tqdm.write(f"{problem} {where}; reconnecting in {delay:g} s ({self.failures}/{DOWNLOAD_RETRIES})",
                       file=sys.stderr)
            time.sleep(delay)
            try:
                response = http_open(self.url, self.user_agent, self.received, self.validator)
                break
            except urllib.error.HTTPError as e:
                if e.code < 500:  # refused, gone or rate limited: waiting a few seconds will not help
                    raise common.UsageError(http_problem(self.url, e)) from e
                problem = f"HTTP {e.code} {e.reason}"
            except OSError as e:
                problem = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
        if self.received and response.status != 206:
            response.close()
            raise common.UsageError(
                f"{self.url}: after a dropped connection the server sent the whole file again instead of the "
                f"rest from byte {self.received:,} (it ignores Range requests, or the dump changed "
                f"meanwhile); run again")
        content_range = response.headers["Content-Range"] or ""
        if self.received and not content_range.startswith(f"bytes {self.received}-"):
            response.close()
            raise common.UsageError(f"{self.url}: asked for the bytes from {self.received:,} on, the server "
                                    f"sent '{content_range}'; run again")
        self.response = response

    def finish(self):
        """The last byte has arrived: check it all against the published sha1."""
        if self.complete:
            return
        if self.expected_sha1 and self.sha1.hexdigest() != self.expected_sha1:
            raise common.UsageError(
                f"{self.url}: the downloaded bytes have sha1 {self.sha1.hexdigest()}, but "
                f"{self.expected_sha1} is published for this dump; the download is damaged (or a new dump was "
                f"published meanwhile): run again")
        self.complete = True

    def checksum_status(self):
        if not self.expected_sha1:
            return self.sha1_source
        if self.complete:
            return f"sha1 matches {self.sha1_source}"
        return f"not checked: reading stopped at byte {self.received:,} of {self.size or '?'}, before the end"

    def close(self):
        self.response.close()
        if self.copy:
            self.copy.close()
        super().close()


def open_input(source, report, unit, user_agent=USER_AGENT, copy_to=None):
    """A ProgressReader over the raw bytes of a local file or a URL (a Download, checked against the
    sha1 Wikimedia publishes beside its dumps and copied to `copy_to` if given)."""
    if is_url(source):
        sha1, sha1_source = published_sha1(source, user_agent)
        raw = Download(source, user_agent, sha1, sha1_source, copy_to)
        size = raw.size
        report["last_modified"] = raw.last_modified
        # a stream can only be checked once all of it has gone past
        tqdm.write(f"checksum: the sha1 published in {sha1_source} is checked when the last byte has arrived, "
                   f"not if reading stops before" if sha1 else f"checksum: {sha1_source}", file=sys.stderr)
    else:
        try:
            raw, size = open(source, "rb"), os.path.getsize(source)
        except OSError as e:
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
        text = fields.get("text", "")
        if fields.get("ns", "0") != "0":
            report["dropped"]["not_article"] += 1
        elif "redirect" in fields or REDIRECT.match(text):
            report["dropped"]["redirect"] += 1
        elif any(hint in text for hint in DISAMBIGUATION_HINTS) and DISAMBIGUATION.search(text):
            report["dropped"]["disambiguation"] += 1
        else:
            yield fields.get("title", ""), text


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


def iter_records(source, report, config):
    """Records of one input; a damaged input stops with an error saying how far it got. A download is
    also saved to config["save_dump"] if set, once all of it has arrived and matched its checksum."""
    kind = input_kind(source)
    unit = "pages" if kind in (".xml", ".xml.bz2") else "records"
    with contextlib.ExitStack() as saving:
        copy_to = None
        if config["save_dump"] and is_url(source):
            copy_to = saving.enter_context(common.atomic_path(config["save_dump"]))
        stream = open_input(source, report, unit, config["user_agent"], copy_to)
        try:
            with stream:
                if unit == "pages":
                    with contextlib.ExitStack() as reading:
                        xml = bz2.open(stream) if kind == ".xml.bz2" else stream
                        # not a download: it waits on the network anyway, and a stalled one would keep
                        # the reading thread, and so an early stop or Ctrl-C, waiting for minutes
                        if kind == ".xml.bz2" and not is_url(source):
                            xml = reading.enter_context(ReadAhead(xml))
                        yield from iter_pages(xml, report)
                else:
                    lines = io.TextIOWrapper(io.BufferedReader(stream), encoding="utf-8-sig")
                    if kind == ".jsonl":
                        yield from iter_jsonl(lines, source, report)
                    else:
                        yield from iter_book(lines, config["book_chunk_chars"], report)
                while copy_to and stream.read(1 << 20):
                    pass  # whatever follows the XML's end still belongs in the saved file
        except (ET.ParseError, EOFError, OSError, UnicodeDecodeError) as e:
            problem = {ET.ParseError: "malformed XML", EOFError: "truncated file",
                       UnicodeDecodeError: "not UTF-8"}.get(type(e), "unreadable")
            raise common.UsageError(f"{source}: {problem} ({e}) after {report['records']:,} {unit} / "
                                    f"{tqdm.format_sizeof(stream.bytes_read, 'B')} read") from e
        finally:
            report["bytes_read"] = stream.bytes_read
            if is_url(source):
                report["checksum"] = stream.raw.checksum_status()
                if copy_to and not stream.raw.complete:
                    tqdm.write(f"--save_dump: {config['save_dump']} not written, reading stopped before the "
                               f"end of the dump", file=sys.stderr)


# -----------------------------------------------------------------------------
# From records to documents, in num_proc processes

def prepare_record(record, normalize_text, remove_diacritics, min_chars):
    """(None, document) for a record worth keeping, else (why it was dropped, None)."""
    title, text = record
    if title is not None:
        text = clean_wikitext(text)
    text = bpe.normalize(text, normalize_text, remove_diacritics)
    if len(text) < max(1, min_chars):
        return "too_short", None
    if title is None:
        return None, text
    return None, f"{bpe.normalize(title, normalize_text, remove_diacritics)}\n\n{text}"


encoder = None  # the tokenizer encode_record uses, set by use_encoder in each process that prepares text


def use_encoder(tokenizer_json):
    """Give this process its own tokenizer; in a pool's worker it lives as long as the pool, so its
    caches of encoded words stay warm over the whole input."""
    global encoder
    encoder = bpe.Tokenizer.from_json(tokenizer_json)


def encode_record(record, normalize_text, remove_diacritics, min_chars, seed):
    """prepare_record, then for a kept document (split key, UTF-8 bytes, token ids as an array of uint16):
    the text is encoded where it was prepared and never travels further."""
    dropped, document = prepare_record(record, normalize_text, remove_diacritics, min_chars)
    if dropped:
        return dropped, None
    return None, (split_key(seed, document), len(document.encode()), encoder.encode_array(document))


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


def read_documents(source, report, config, pool=None, encode=False):
    """Clean, normalized documents of one input, counting what was kept and dropped in report; with
    encode, each as encode_record's tuple (the text stays in the process that prepared it)."""
    options = dict(normalize_text=config["normalize_text"], remove_diacritics=config["remove_diacritics"],
                   min_chars=config["min_chars"])
    work = (functools.partial(encode_record, seed=config["seed"], **options) if encode
            else functools.partial(prepare_record, **options))
    records = iter_records(source, report, config)
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

OUTPUTS = ("train.bin", "val.bin", "test.bin", "tokenizer.json", "meta.json", "sample.txt")
SPLITS = ("train", "val", "test")  # the value of a document's entry in the array choose_splits returns
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


def choose_splits(keys, val_fraction, test_fraction):
    """Index into SPLITS of each document. Val is choose_val's, so adding a test split leaves it as it
    was; test takes the keys just above it, [val_fraction, val_fraction + test_fraction), one document
    at least when test_fraction > 0, and train keeps one at least."""
    split = np.where(choose_val(keys, val_fraction), 1, 0)
    if test_fraction > 0:  # among the rest, choose_val's rule again: one at least, not all
        rest = np.flatnonzero(split == 0)
        split[rest[choose_val(keys[rest], val_fraction + test_fraction)]] = 2
    return split


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


def write_tokens(tokenizer, documents_path, split_of, paths, config):
    """Pass 2: encode every document, append it and <|endoftext|> to the .bin of its split (paths:
    split name -> file; split_of: choose_splits's array); returns the tokens and UTF-8 bytes of each."""
    tokens, sizes = array.array("q"), array.array("q")
    lengths = deque()  # UTF-8 bytes of each document read and not yet written

    def documents():  # the encoder reads ahead, in worker processes whose chunk caches stay warm
        for document in read_document_file(documents_path):
            lengths.append(len(document.encode()))
            yield document

    with contextlib.ExitStack() as stack:
        files = {split: stack.enter_context(open(path, "wb")) for split, path in paths.items()}
        bar = stack.enter_context(tqdm(total=len(split_of), unit="doc", desc="encoding", mininterval=1))
        encoded = tokenizer.encode_iter(documents(), num_proc=config["num_proc"])
        for index, ids in enumerate(encoded):  # ids: an array of uint16, as the .bin files hold them
            ids.append(tokenizer.eot_id)
            ids.tofile(files[SPLITS[split_of[index]]])
            tokens.append(len(ids))
            sizes.append(lengths.popleft())
            bar.update(1)
    return np.array(tokens), np.array(sizes)


def split_by_key(key, val_fraction, test_fraction):
    """The split of a document by its key alone: choose_splits's choice for all but the few documents
    it moves so that no split is left empty."""
    return 1 if key < val_fraction else 2 if key < val_fraction + test_fraction else 0


def encode_documents(inputs, reports, config, tokenizer, paths):
    """The one pass when a tokenizer is given: every kept document is encoded in the process that
    cleaned it and appended, with <|endoftext|>, to the .bin of split_by_key's split (paths: split
    name -> file). Returns the split keys, the split each document went to, the tokens and UTF-8
    bytes of each, and a sample."""
    keys, written_to, tokens, sizes, sample = (array.array("d"), array.array("b"), array.array("q"),
                                               array.array("q"), [])
    with contextlib.ExitStack() as stack:
        num_proc = config["num_proc"]
        if num_proc > 1:
            pool = stack.enter_context(multiprocessing.Pool(num_proc, use_encoder, (tokenizer.to_json(),)))
        else:
            pool = None
            use_encoder(tokenizer.to_json())
        files = [stack.enter_context(open(paths[split], "wb")) for split in SPLITS[:len(paths)]]
        for source, report in zip(inputs, reports):
            for key, size, ids in read_documents(source, report, config, pool, encode=True):
                if len(sample) < SAMPLE_DOCUMENTS:  # decoding gives back the text, byte for byte
                    sample.append(tokenizer.decode(ids)[:SAMPLE_CHARS])
                split = split_by_key(key, config["val_fraction"], config["test_fraction"])
                ids.append(tokenizer.eot_id)
                ids.tofile(files[split])
                keys.append(key)
                written_to.append(split)
                tokens.append(len(ids))
                sizes.append(size)
    return np.array(keys), np.array(written_to), np.array(tokens), np.array(sizes), sample


def move_documents(paths, written_to, split_of, tokens, work_dir):
    """Rewrite the .bin files (paths: split name -> file) so that each document is in choose_splits's
    split (split_of), in document order, reading them as encode_documents wrote them (written_to)."""
    first = {split: os.path.join(work_dir, f"{split}.bin") for split in paths}
    for split, path in paths.items():
        os.replace(path, first[split])
    with contextlib.ExitStack() as stack:
        readers = [stack.enter_context(open(first[split], "rb")) for split in SPLITS[:len(paths)]]
        writers = [stack.enter_context(open(paths[split], "wb")) for split in SPLITS[:len(paths)]]
        for was, now, n in zip(written_to, split_of, tokens):
            writers[now].write(readers[was].read(2 * int(n)))


def split_counts(split_of, tokens, sizes, splits):
    """Documents, tokens (with <|endoftext|>) and bytes of text of each split."""
    return {name: {"documents": int((split_of == i).sum()), "tokens": int(tokens[split_of == i].sum()),
                   "bytes": int(sizes[split_of == i].sum())} for i, name in enumerate(splits)}


def choose_document_splits(keys, splits, config, inputs, dropped):
    """choose_splits's array for the documents' keys, or an error if there are too few documents."""
    if len(keys) < len(splits):
        raise common.UsageError(f"{len(keys)} usable documents in {', '.join(inputs)} (dropped: "
                                f"{dict(dropped) or 'none'}); a {'/'.join(splits)} split needs at least "
                                f"{len(splits)}")
    split_of = choose_splits(keys, config["val_fraction"], config["test_fraction"])
    if len(splits) == 3 and not (split_of == 2).any():  # val left a single document to train on
        raise common.UsageError(f"{len(keys)} usable documents are too few for a test split beside "
                                f"{(split_of == 1).sum()} val documents (set --test_fraction=0)")
    return split_of


def check_config(config):
    if not 0 < config["val_fraction"] < 1:
        raise common.UsageError(f"val_fraction must be between 0 and 1, got {config['val_fraction']}")
    if not 0 <= config["test_fraction"] < 1 - config["val_fraction"]:
        raise common.UsageError(f"test_fraction must be at least 0 and below 1 - val_fraction, "
                                f"got {config['test_fraction']}")
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
    if config["save_dump"] and sum(map(is_url, inputs)) != 1:
        raise common.UsageError("--save_dump keeps one downloaded dump: give no input (the latest fawiki "
                                "dump) or one URL")
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
        outputs = [name for name in OUTPUTS if name != "test.bin" or config["test_fraction"]]
        tmp = {name: stack.enter_context(common.atomic_path(os.path.join(out_dir, name))) for name in outputs}
        splits = SPLITS if config["test_fraction"] else SPLITS[:2]
        bins = {split: tmp[f"{split}.bin"] for split in splits}
        if tokenizer is None:  # pass 1: clean documents wait in a file for the tokenizer to be trained
            documents_path = os.path.join(work_dir, "documents.jsonl")
            keys, sample = write_documents(inputs, reports, config, documents_path)
        else:  # the only pass: documents are cleaned and encoded together
            shutil.copyfile(config["tokenizer"], tmp["tokenizer.json"])
            keys, written_to, tokens, sizes, sample = encode_documents(inputs, reports, config, tokenizer, bins)
        dropped = sum((report["dropped"] for report in reports), Counter())
        split_of = choose_document_splits(keys, splits, config, inputs, dropped)
        if tokenizer is None:
            print(f"training a tokenizer of {config['vocab_size']:,} tokens on {(split_of == 0).sum():,} "
                  f"documents", file=sys.stderr)
            train_texts = (doc for doc, split in zip(read_document_file(documents_path), split_of) if split == 0)
            tokenizer = bpe.Tokenizer.train(train_texts, config["vocab_size"], special_tokens=(EOT,),
                                            num_proc=config["num_proc"], normalization=dict(
                                                normalize_text=config["normalize_text"],
                                                remove_diacritics=config["remove_diacritics"]))
            tokenizer.save(tmp["tokenizer.json"])
            tokens, sizes = write_tokens(tokenizer, documents_path, split_of, bins, config)
        elif (written_to != split_of).any():  # choose_splits moved a few documents to fill every split
            move_documents(bins, written_to, split_of, tokens, work_dir)
        counts = split_counts(split_of, tokens, sizes, splits)

        for file, report in zip(files, reports):
            file.update(records=report["records"], kept=report["kept"], dropped=dict(report["dropped"]))
            if "url" in file:
                file.update(bytes_read=report["bytes_read"], last_modified=report.get("last_modified"),
                            checksum=report.get("checksum"))
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
    if not config["test_fraction"]:  # an earlier run's test split would no longer match the others
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(out_dir, "test.bin"))
    print(f"dropped: {dict(dropped) or 'nothing'}; wrote {', '.join(outputs)} to {out_dir}")


if __name__ == "__main__":
    common.run(main)
