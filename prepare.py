"""
Turn raw text into what train.py reads: clean, normalized Persian documents encoded with our
BPE tokenizer into uint16 token files.

    python prepare.py --out_dir=data/fawiki --max_articles=20000    # streams the latest fawiki dump
    python prepare.py fawiki-latest-pages-articles.xml.bz2 --out_dir=data/fawiki
    python prepare.py ../shared/data/persian/news.jsonl ../shared/data/books/pg2600.txt --out_dir=data/mix
    python prepare.py more.jsonl --out_dir=data/finetune --tokenizer=data/fawiki/tokenizer.json
    python prepare.py wiki.xml.bz2 news.jsonl poems.jsonl --repeat="[9,1,0.15]" --out_dir=data/mix

The pipeline, in the order of this file:
- read: MediaWiki XML dumps (.xml or .xml.bz2, a local file or the official URL, decompressed as
  it downloads, resumed where a dropped connection stopped, checked against the SHA-1 Wikimedia
  publishes and kept with --save_dump=PATH), .jsonl files with a "text" field, and .txt books. A
  dump is parsed page by page and every page is let go once read, so memory stays flat however
  large the dump;
- clean and normalize, in num_proc worker processes: a page's wikitext becomes plain text
  (wikitext.clean_wikitext), and every document is normalized as the tokenizer normalizes
  (bpe.normalize);
- train a tokenizer, unless --tokenizer gives one (whose own normalization is then used): the
  clean documents go to a temporary .jsonl in out_dir (about the size of the clean text), the
  tokenizer learns from its training split, and that file is the encoding pass's input;
- encode, in one pass over the inputs (with --tokenizer, the only one): each document is cleaned,
  normalized and encoded by the same worker, which sends back only its token ids; they are
  appended, with <|endoftext|>, to a temporary token file;
- split: whole documents go to val and test, chosen by a hash of their text and the seed, and each
  document's tokens are copied to train.bin (as many times as --repeat says), val.bin or test.bin.
The outputs replace earlier ones only once everything has succeeded.
"""

import array
import bz2
import concurrent.futures
import contextlib
import functools
import hashlib
import http.client
import io
import itertools
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections import Counter, deque

import numpy as np
import regex
from tqdm import tqdm

import bpe
import common
from wikitext import clean_wikitext, page_dropped_as

FAWIKI_URL = "https://dumps.wikimedia.org/fawiki/latest/fawiki-latest-pages-articles.xml.bz2"
# Wikimedia answers requests without a descriptive User-Agent (tool name/version and a contact, per
# its User-Agent policy) with HTTP 403; put your own URL or e-mail in it with --user_agent=...
USER_AGENT = "persian-gpt-prepare/1.0 (https://example.org/set-your-contact-with--user_agent)"

DEFAULTS = dict(
    out_dir="data/fawiki",  # train.bin, val.bin, test.bin, tokenizer.json, meta.json and sample.txt go here
    vocab_size=8192,  # BPE vocabulary trained here; at most 65536 because tokens are stored as uint16
    tokenizer="",  # path of an existing tokenizer.json to encode with instead (fine-tuning)
    max_articles=0,  # keep at most this many documents from each input; 0 = all of them
    # a data mix: how many times each input's training documents go into train.bin, one number per
    # input (a fraction keeps that share of them, chosen at random by seed); the tokenizer learns
    # from that mix too, and val and test keep every document once. [] = once each
    repeat=[],
    num_proc=os.cpu_count() or 1,  # processes for cleaning, tokenizer training and encoding
    val_fraction=0.01,  # share of documents held out for validation, as whole documents
    test_fraction=0.01,  # share held out for the final test (test.bin, read only by eval.py); 0 = none
    seed=1337,  # with a document's text, decides if it goes to val or test; also draws fractional --repeat copies
    min_chars=100,  # documents with fewer characters of text are dropped as near-empty stubs
    # the normalization a tokenizer trained here records (bpe.normalize); with --tokenizer, that
    # tokenizer's own is used, and giving one of these two that contradicts it is an error
    normalize_text=True,  # Persian normalization (the table in bpe.py); False tidies whitespace only
    remove_diacritics=True,  # with normalize_text: also drop the short-vowel marks U+064B..U+0652
    book_chunk_chars=20_000,  # a .txt book is cut at blank lines into documents of about this size
    batch_chars=1_000_000,  # text handed to each process at once: with two rounds in flight, bounds memory
    user_agent=USER_AGENT,  # sent with every download request: "name/version (your URL or e-mail)"
    save_dump="",  # a path: also keep the downloaded dump there, to read it locally next time
)

# -----------------------------------------------------------------------------
# Reading an input as blocks of bytes, then as records: (title, wikitext) for a dump page, (None, text)
# for a JSON line or a piece of a book

GUTENBERG_START = regex.compile(r"\*{3}\s*START OF (?:THE|THIS) PROJECT GUTENBERG", regex.I)
# the footer starts at "*** END OF THIS PROJECT GUTENBERG EBOOK ..." or the line before it
GUTENBERG_END = regex.compile(
    r"\*{3}\s*END OF (?:THE|THIS) PROJECT GUTENBERG|End of (?:the )?Project Gutenberg", regex.I)
GUTENBERG_HEADER_LINES = 1000  # the START line is looked for this far into a .txt file
INPUT_KINDS = (".xml.bz2", ".xml", ".jsonl", ".txt")
BLOCK_BYTES = 1 << 20  # read at a time: from a file, from a download, and of a dump decompressed ahead
READ_AHEAD_BLOCKS = 4  # decompressed blocks waiting for the XML parser at most: memory stays flat


def is_url(source):
    return source.startswith(("http://", "https://"))


def input_kind(source):
    kind = next((k for k in INPUT_KINDS if source.lower().endswith(k)), None)
    if kind is None:
        raise common.UsageError(f"cannot read {source}: expected a file ending in {', '.join(INPUT_KINDS)}")
    return kind


def open_local(source):
    try:
        return open(source, "rb")
    except OSError as e:
        raise common.UsageError(f"cannot read {source}: {e.strerror or e}") from e


class BlockReader(io.RawIOBase):
    """A binary stream of the blocks of bytes that a generator yields; closing the stream closes it.
    A file, a download and a decompressed dump all come as blocks, and the XML parser and the text
    readers read them through this stream."""

    def __init__(self, blocks):
        super().__init__()
        self.blocks, self.block = blocks, memoryview(b"")

    def readable(self):
        return True

    def readinto(self, buffer):
        if not self.block:
            self.block = memoryview(next(self.blocks, b""))
        n = min(len(buffer), len(self.block))
        buffer[:n], self.block = self.block[:n], self.block[n:]
        return n

    def close(self):
        self.blocks.close()
        super().close()


def file_blocks(file):
    yield from iter(functools.partial(file.read, BLOCK_BYTES), b"")


def read_ahead(blocks):
    """The same blocks, READ_AHEAD_BLOCKS of them produced ahead in a thread: a dump is decompressed
    on one core while this process parses the XML and hands pages to the workers on another (bz2
    lets go of the GIL while it decompresses). An error in producing them is raised here."""
    reader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="read-ahead")
    try:
        ahead = deque(reader.submit(next, blocks, b"") for _ in range(READ_AHEAD_BLOCKS))
        while block := ahead.popleft().result():
            ahead.append(reader.submit(next, blocks, b""))
            yield block
    finally:
        reader.shutdown(cancel_futures=True)
        blocks.close()  # after the thread has stopped: a generator cannot be closed while it runs


def decompressed(blocks):
    """The bytes of bz2 data that comes in blocks, decompressed, at most BLOCK_BYTES at a time; a file of
    several bz2 streams (a multistream dump) stream after stream. Each call into bz2 decompresses up to
    a whole block without the GIL. (bz2.open feeds it 8 KB at a time instead, and a thread that takes
    the GIL back that often waits for it behind the XML parser every time: decompressing and parsing
    in two threads then took as long as one after the other.)"""
    decompressor = bz2.BZ2Decompressor()
    for block in blocks:
        while block:
            if decompressor.eof:  # the next stream starts where the last one ended
                decompressor = bz2.BZ2Decompressor()
            data = decompressor.decompress(block, BLOCK_BYTES)
            while data:
                yield data
                done = decompressor.eof or decompressor.needs_input  # this block wholly decompressed
                data = b"" if done else decompressor.decompress(b"", BLOCK_BYTES)
            block = decompressor.unused_data if decompressor.eof else b""
    if not decompressor.eof:
        raise EOFError("the compressed data ends before its end-of-stream marker")


def counted(blocks, report, name, size, unit):
    """The blocks of an input as they are read: counted and hashed in report (its sha256 once the last
    block has gone past), and shown on a progress bar: MB read, MB/s, records parsed."""
    sha256 = hashlib.sha256()
    with contextlib.closing(blocks), tqdm(total=size, unit="B", unit_scale=True, desc=name, mininterval=1) as bar:
        for block in blocks:
            report["bytes_read"] += len(block)
            sha256.update(block)
            if bar.update(len(block)):  # the bar was redrawn: time to update the count shown after it
                bar.set_postfix_str(f"{report['records']:,} {unit}", refresh=False)
            yield block
    report["sha256"] = sha256.hexdigest()


# Downloading: Wikimedia refuses requests without a descriptive User-Agent, and a download that lasts
# hours will see dropped connections, so a dropped or stalled one is resumed where it stopped.
DOWNLOAD_TIMEOUT = 60  # seconds without a byte before a connection counts as stalled
DOWNLOAD_RETRIES = 6  # reconnections in a row without a byte received before the download gives up
DOWNLOAD_BACKOFF = 2.0  # seconds before the first reconnection, doubled before each further one
# fawiki-latest-pages-articles.xml.bz2 or fawiki-20240601-pages-articles.xml.bz2: the wiki and the date
# (or "latest") name the sha1sums.txt published in the same directory, which lists the dated names
DUMP_NAME = regex.compile(r"(?P<wiki>[^-/]+)-(?P<date>latest|\d{8})-(?P<file>.+)")


def http_get(url, user_agent, headers=None):
    request = urllib.request.Request(url, headers={"User-Agent": user_agent, **(headers or {})})
    return urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT)


def http_problem(url, error):
    """One line for an HTTP error status: what it means here and what to do."""
    advice = {
        403: 'the server refuses this client; set --user_agent="name/version (your URL or e-mail)" '
             "as Wikimedia's User-Agent policy asks",
        404: f"no such dump: {url}; the dumps that exist are listed at {url.rpartition('/')[0]}/",
        429: "rate limited, retry later" + (f" (after {error.headers['Retry-After']} s)"
                                            if error.headers and error.headers["Retry-After"] else ""),
    }.get(error.code, f"while downloading {url}")
    return f"HTTP {error.code} {error.reason} from {url.split('/')[2]}: {advice}"


def published_sha1(url, user_agent):
    """(sha1 that Wikimedia lists for the file at url in the sha1sums.txt beside it, or None; a note)."""
    directory, _, name = url.rpartition("/")
    dump = DUMP_NAME.fullmatch(name)
    if not dump:
        return None, f"not checked: no checksum list is known for {name}"
    sums_url = f"{directory}/{dump['wiki']}-{dump['date']}-sha1sums.txt"
    try:
        with http_get(sums_url, user_agent) as response:
            listing = response.read(1 << 20).decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        if e.code != 404:
            raise common.UsageError(http_problem(sums_url, e)) from e
        return None, f"not checked: {sums_url} does not exist"
    except OSError:
        return None, f"not checked: {sums_url} could not be read"
    listed_name = f"{regex.escape(dump['wiki'])}-(?:latest|\\d{{8}})-{regex.escape(dump['file'])}"
    listed = regex.search(rf"^(\w+) +\*?{listed_name}\s*$", listing, regex.M)
    return (listed[1].lower(), sums_url) if listed else (None, f"not checked: {sums_url} does not list {name}")


class Download:
    """The bytes of a URL from first to last, in blocks: iterate over it. A connection that drops or
    stalls is reopened with `Range: bytes=N-` from the first byte not yet received, so whatever reads
    the blocks (the bz2 decompressor, whose state spans bz2 streams and blocks, and the XML parser)
    never sees the gap. The bytes are copied to `copy` if given, and checked against the sha1 that
    Wikimedia publishes once the last has arrived; report gets Last-Modified and the check's outcome."""

    def __init__(self, url, user_agent, report, copy=None):
        self.url, self.user_agent, self.report, self.copy = url, user_agent, report, copy
        self.received, self.size, self.complete = 0, None, False
        self.expected_sha1, self.sha1_source = published_sha1(url, user_agent)
        report["checksum"] = self.sha1_source
        try:
            self.response = self.connect()
        except urllib.error.HTTPError as e:
            raise common.UsageError(http_problem(url, e)) from e
        except OSError as e:  # URLError (no route, no name, refused) and timeouts
            raise common.UsageError(f"cannot download {url}: cannot connect to {url.split('/')[2]} "
                                    f"({getattr(e, 'reason', e)}); check the network, or fetch the dump "
                                    f"elsewhere and pass the file: python prepare.py DUMP.xml.bz2") from e

    def position(self):
        return f"byte {self.received:,}" + (f" of {self.size:,}" if self.size else "")

    def connect(self):
        """A response from the first byte not received on. One from byte 0 gives the size, and the
        validator that later requests send as If-Range, so that a server whose file has changed sends
        all of it (200), not the rest (206): the ETag, or Last-Modified if the ETag is weak (W/"..."),
        since a server must ignore If-Range with a weak one. A later response must be the rest of a
        file of the first one's size: two versions of a changed file are never spliced together."""
        headers = {"Range": f"bytes={self.received}-", "If-Range": self.validator} if self.received else {}
        response = http_get(self.url, self.user_agent, {name: value for name, value in headers.items() if value})
        fields = response.headers
        expected = f"bytes {self.received}-" + (f"{self.size - 1}/{self.size}" if self.size else "")
        if not self.received:
            self.size = int(fields["Content-Length"]) if fields["Content-Length"] else None
            etag, self.report["last_modified"] = fields["ETag"], fields["Last-Modified"]
            self.validator = etag if etag and not etag.startswith("W/") else fields["Last-Modified"]
        elif response.status != 206 or not (fields["Content-Range"] or "").startswith(expected):
            response.close()
            sent = "the whole file again" if response.status != 206 else f"'{fields['Content-Range']}'"
            raise common.UsageError(f"{self.url}: after a dropped connection the server sent {sent} instead of the "
                                    f"rest from {self.position()} (it ignores Range requests, or the dump changed "
                                    f"meanwhile); run again")
        return response

    def __iter__(self):
        sha1, failures = hashlib.sha1(), 0  # failures in a row: a block received sets it back to 0
        while True:
            try:
                if self.response is None:
                    self.response = self.connect()
                while data := self.response.read1(BLOCK_BYTES):  # what has arrived: a stall loses nothing
                    sha1.update(data)
                    if self.copy:
                        self.copy.write(data)
                    self.received, failures = self.received + len(data), 0
                    yield data
                if self.size in (None, self.received):
                    break
                problem = "the connection closed early"
            except urllib.error.HTTPError as e:
                if e.code < 500:  # refused, gone or rate limited: waiting a few seconds will not help
                    raise common.UsageError(http_problem(self.url, e)) from e
                problem = f"HTTP {e.code} {e.reason}"
            except (OSError, http.client.HTTPException) as e:  # a timeout, a reset, a broken chunk
                problem = type(e).__name__ + (f": {getattr(e, 'reason', e)}" if str(e) else "")
            self.disconnect()
            failures += 1
            if failures > DOWNLOAD_RETRIES:
                raise common.UsageError(f"download of {self.url} failed at {self.position()}: {problem}, and "
                                        f"{DOWNLOAD_RETRIES} reconnections in a row did not help; run again later")
            delay = DOWNLOAD_BACKOFF * 2 ** (failures - 1)
            tqdm.write(f"{problem} at {self.position()}; reconnecting in {delay:g} s ({failures}/{DOWNLOAD_RETRIES})",
                       file=sys.stderr)
            time.sleep(delay)
        if self.expected_sha1 and sha1.hexdigest() != self.expected_sha1:
            raise common.UsageError(f"{self.url}: the downloaded bytes have sha1 {sha1.hexdigest()}, but "
                                    f"{self.expected_sha1} is published for this dump: the download is damaged, "
                                    f"or a new dump was published meanwhile; run again")
        self.complete = True
        if self.expected_sha1:
            self.report["checksum"] = f"sha1 matches {self.sha1_source}"

    def disconnect(self):
        """Close the connection. Until the bytes have been checked, report says where reading stopped."""
        if self.response is not None:
            self.response.close()
        self.response = None
        if self.expected_sha1 and not self.complete:
            self.report["checksum"] = f"not checked: reading stopped at {self.position()}, before the end"


def iter_pages(stream, report):
    """(title, wikitext) of each article of a MediaWiki XML export; other pages are counted as dropped."""
    events = ET.iterparse(stream, events=("start", "end"))
    _, root = next(events)
    for event, element in events:
        # a tag without its namespace: "{http://www.mediawiki.org/xml/export-0.11/}page" -> "page"
        if event != "end" or element.tag.rpartition("}")[2] != "page":
            continue
        fields = {child.tag.rpartition("}")[2]: child.text or "" for child in element.iter()}
        root.clear()  # the page is read: let it go, or a whole dump would stay in memory
        report["records"] += 1
        text = fields.get("text", "")
        # a page of another namespace, one with a <redirect> element, or wikitext that is no article
        dropped = ("not_article" if fields.get("ns", "0") != "0" else "redirect" if "redirect" in fields
                   else page_dropped_as(text))
        if dropped:
            report["dropped"][dropped] += 1
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
    body = itertools.chain(head[start + 1:], lines)
    chunk, size = [], 0
    for line in itertools.takewhile(lambda line: not GUTENBERG_END.match(line), body):
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
    """Records of one input; a damaged input stops with one line saying how far it got. A download is
    also saved to config["save_dump"] if set, once all of it has arrived and matched its checksum."""
    kind = input_kind(source)
    unit = "pages" if kind in (".xml", ".xml.bz2") else "records"
    with contextlib.ExitStack() as stack:
        download = copy = None
        if is_url(source):
            if config["save_dump"]:
                try:
                    copy = stack.enter_context(open(stack.enter_context(common.atomic_path(config["save_dump"])), "wb"))
                except OSError as e:
                    raise common.UsageError(f"cannot write --save_dump={config['save_dump']}: {e.strerror or e}") from e
            download = Download(source, config["user_agent"], report, copy)
            stack.callback(download.disconnect)
            blocks, size = iter(download), download.size
        else:
            blocks, size = file_blocks(stack.enter_context(open_local(source))), os.path.getsize(source)
        blocks = counted(blocks, report, os.path.basename(source), size, unit)
        stack.callback(blocks.close)
        data = blocks
        if kind == ".xml.bz2":  # decompressed ahead in a thread, but for a download: that waits on the network
            # anyway, and a stalled one would keep the thread, and so an early stop or Ctrl-C, waiting for minutes
            data = decompressed(blocks) if download else read_ahead(decompressed(blocks))
        stream = stack.enter_context(BlockReader(data))
        try:
            if unit == "pages":
                yield from iter_pages(stream, report)
            else:
                lines = io.TextIOWrapper(io.BufferedReader(stream), encoding="utf-8-sig")
                yield from (iter_jsonl(lines, source, report) if kind == ".jsonl"
                            else iter_book(lines, config["book_chunk_chars"], report))
            for _ in blocks if copy else ():
                pass  # whatever follows the last record still belongs in the saved file
        except (ET.ParseError, EOFError, OSError, UnicodeDecodeError) as e:
            problem = {ET.ParseError: "malformed XML", EOFError: "truncated file",
                       UnicodeDecodeError: "not UTF-8"}.get(type(e), "unreadable")
            raise common.UsageError(f"{source}: {problem} ({e}) after {report['records']:,} {unit} / "
                                    f"{tqdm.format_sizeof(report['bytes_read'], 'B')} read") from e


# -----------------------------------------------------------------------------
# From records to documents, in num_proc worker processes

encoder = None  # in a worker of the encoding pass: the tokenizer that prepare_record encodes with


def use_encoder(tokenizer_json):
    """A worker's start: its own tokenizer, or None to keep documents as text. It lives as long as the
    pool, so its caches of encoded words stay warm over the whole input."""
    global encoder
    bpe.ignore_interrupts()
    encoder = bpe.Tokenizer.from_json(tokenizer_json) if tokenizer_json else None


def prepare_record(record, config):
    """(None, (split key, UTF-8 size, document)) for a record worth keeping, else (why it was dropped,
    None). The document is its text or, in a worker with an encoder, its token ids (an array of uint16):
    then the text is encoded where it was cleaned and never travels further, and, normalized here for
    its split key, is not normalized again by the encoder."""
    title, text = record
    if title is not None:
        text = clean_wikitext(text)
    text = bpe.normalize(text, config["normalize_text"], config["remove_diacritics"])
    if len(text) < max(1, config["min_chars"]):
        return "too_short", None
    if title is not None:
        text = f"{bpe.normalize(title, config['normalize_text'], config['remove_diacritics'])}\n\n{text}"
    document = encoder.encode_array(text, normalized=True) if encoder else text
    return None, (split_key(config["seed"], text), len(text.encode()), document)


def parallel_map(work, records, pool, chars):
    """work(record) for every (title, text) record, in order. With a pool, the records go to it in
    batches of about `chars` characters of text, and the next batch is read while the pool works on
    the last one: memory holds two batches, however large the input."""
    if pool is None:
        yield from map(work, records)
        return
    batch, size, pending = [], 0, deque()
    for record in records:
        batch.append(record)
        size += len(record[1])
        if size >= chars:
            pending.append(pool.map_async(work, batch))
            batch, size = [], 0
            if len(pending) > 1:
                yield from pending.popleft().get()
    pending.append(pool.map_async(work, batch))  # the last batch, perhaps empty
    while pending:
        yield from pending.popleft().get()


def new_report():
    return {"records": 0, "kept": 0, "dropped": Counter(), "bytes_read": 0}


def read_documents(source, report, config, pool=None):
    """prepare_record's (split key, UTF-8 size, document) of each kept document of one input, counting
    what was kept and dropped in report."""
    work = functools.partial(prepare_record, config=config)
    results = parallel_map(work, iter_records(source, report, config), pool, config["batch_chars"] * config["num_proc"])
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
    config = {**DEFAULTS, "min_chars": 0, **options}
    return (document for _, _, document in read_documents(source, new_report(), config))


def prepare_inputs(inputs, reports, config, tokenizer=None):
    """read_documents of every input, in a pool of num_proc worker processes that also encode the
    documents when a tokenizer is given."""
    with multiprocessing.Pool(config["num_proc"], use_encoder, (tokenizer and tokenizer.to_json(),)) as pool:
        for source, report in zip(inputs, reports):
            yield from read_documents(source, report, config, pool)


# -----------------------------------------------------------------------------
# Splits, the tokenizer, the token files

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


def choose_document_splits(keys, splits, config, inputs, reports):
    """choose_splits's array for the documents' keys, or an error if there are too few documents."""
    if len(keys) < len(splits):
        dropped = dict(sum((report["dropped"] for report in reports), Counter())) or "none"
        raise common.UsageError(f"{len(keys)} usable documents in {', '.join(inputs)} (dropped: {dropped}); "
                                f"a {'/'.join(splits)} split needs at least {len(splits)}")
    split_of = choose_splits(keys, config["val_fraction"], config["test_fraction"])
    if len(splits) == 3 and not (split_of == 2).any():  # val left a single document to train on
        raise common.UsageError(f"{len(keys)} usable documents are too few for a test split beside "
                                f"{(split_of == 1).sum()} val documents (set --test_fraction=0)")
    return split_of


def copies_of(split_of, reports, config):
    """How many times each document goes into its split: --repeat's number for its input (documents
    come input by input, reports[i]["kept"] of input i) if it is a training one, else once. A
    fraction r keeps the document with probability r, drawn from seed."""
    repeat = np.repeat(np.asarray(config["repeat"] or [1] * len(reports), dtype=float),
                       [report["kept"] for report in reports])
    whole = np.floor(repeat)
    copies = whole + (np.random.default_rng(config["seed"]).random(len(repeat)) < repeat - whole)
    return np.where(split_of == 0, copies, 1).astype(np.int64)


def train_tokenizer(inputs, reports, config, splits, path):
    """The pass before encoding when no tokenizer is given: the clean documents go to a .jsonl at
    `path`, and a tokenizer is trained on its training split, each document as many times as copies_of says."""
    keys = array.array("d")
    with open(path, "w", encoding="utf-8") as f:
        for key, _, document in prepare_inputs(inputs, reports, config):
            f.write(json.dumps({"text": document}, ensure_ascii=False) + "\n")
            keys.append(key)
    split_of = choose_document_splits(np.array(keys), splits, config, inputs, reports)
    copies = np.where(split_of == 0, copies_of(split_of, reports, config), 0)
    print(f"training a tokenizer of {config['vocab_size']:,} tokens on {copies.sum():,} documents",
          file=sys.stderr)
    with open(path, encoding="utf-8") as f:
        texts = (json.loads(line)["text"] for line, n in zip(f, copies) for _ in range(n))
        return bpe.Tokenizer.train(texts, config["vocab_size"], special_tokens=(bpe.EOT,), num_proc=config["num_proc"],
                                   normalization={key: config[key] for key in ("normalize_text", "remove_diacritics")})


def encode_inputs(inputs, reports, config, tokenizer, path):
    """The encoding pass: each kept document, encoded in the worker that cleaned it, is appended with
    <|endoftext|> to the token file at `path`. Returns the split key, the tokens and the UTF-8 size
    of each document, in order, and a sample."""
    keys, tokens, sizes = array.array("d"), array.array("q"), array.array("q")
    sample = []
    with open(path, "wb") as f:
        for key, size, ids in prepare_inputs(inputs, reports, config, tokenizer):
            if len(sample) < SAMPLE_DOCUMENTS:  # decoding gives back the text, byte for byte
                sample.append(tokenizer.decode(ids)[:SAMPLE_CHARS])
            ids.append(tokenizer.eot_id)
            ids.tofile(f)
            for column, value in zip((keys, tokens, sizes), (key, len(ids), size)):
                column.append(value)
    return np.array(keys), np.array(tokens), np.array(sizes), sample


def write_splits(path, split_of, copies, tokens, bins):
    """Copy the documents of the token file at `path` (tokens: how many each has), in order, to the
    .bin of their split: copies[i] times to bins[split_of[i]] for document i."""
    with contextlib.ExitStack() as stack:
        documents = stack.enter_context(open(path, "rb"))
        files = [stack.enter_context(open(bin_path, "wb")) for bin_path in bins]
        for split, n, times in zip(split_of, tokens, copies):
            files[split].write(documents.read(2 * int(n)) * int(times))


def given_tokenizer(config, argv):
    """The tokenizer of --tokenizer. Its normalization is the one used: it replaces the two options in
    config, and either given on the command line against it is an error. (A version-1 file records
    none: the options then say how its training text was normalized, as they did when it was written.)"""
    path = config["tokenizer"]
    tokenizer = bpe.Tokenizer.load(path)  # which refuses a vocabulary that uint16 cannot hold
    if tokenizer.eot_id is None:
        raise common.UsageError(f"{path} has no {bpe.EOT} special token, which ends every document in the token files")
    given = {arg[2:].partition("=")[0] for arg in argv if arg.startswith("--")}
    for key, value in (tokenizer.normalization or {}).items():
        if key in given and config[key] != value:
            raise common.UsageError(f"--{key}={config[key]} contradicts {path}, which normalizes with {key}={value}; "
                                    f"leave it out: the tokenizer's own normalization is used")
        config[key] = value
    return tokenizer


def check_arguments(config, inputs):
    """Refuse settings and inputs that cannot work (a missing file, an unknown kind), before any work."""
    if not 0 < config["val_fraction"] < 1:
        raise common.UsageError(f"val_fraction must be between 0 and 1, got {config['val_fraction']}")
    if not 0 <= config["test_fraction"] < 1 - config["val_fraction"]:
        raise common.UsageError(f"test_fraction must be at least 0 and below 1 - val_fraction, "
                                f"got {config['test_fraction']}")
    if not config["tokenizer"] and not 256 < config["vocab_size"] <= bpe.MAX_VOCAB_SIZE:
        raise common.UsageError(f"vocab_size must be above 256 and at most {bpe.MAX_VOCAB_SIZE} (uint16 tokens), "
                                f"got {config['vocab_size']}")
    for key in ("num_proc", "batch_chars", "book_chunk_chars"):
        if config[key] < 1:
            raise common.UsageError(f"{key} must be at least 1, got {config[key]}")
    for source in inputs:
        input_kind(source)
        if not is_url(source):
            open_local(source).close()
    repeat = config["repeat"]
    if repeat and (len(repeat) != len(inputs) or not all(isinstance(r, (int, float)) and r >= 0 for r in repeat)
                   or not any(repeat)):
        raise common.UsageError(f"repeat needs one number of at least 0 for each of the {len(inputs)} inputs, "
                                f"not all 0; got {repeat}")
    if config["save_dump"] and sum(map(is_url, inputs)) != 1:
        raise common.UsageError("--save_dump keeps one downloaded dump: give no input (the latest fawiki "
                                "dump) or one URL")
    if config["save_dump"] and config["max_articles"]:  # a dump read in part is never saved
        raise common.UsageError("--save_dump keeps a whole dump, which --max_articles stops reading early: "
                                "give one of them")


def write_meta(path, tokenizer, tokenizer_path, counts, inputs, reports, config):
    """meta.json: the token files' vocabulary, the tokenizer, each split's counts, what was read of each
    input (its report: records, bytes, sha256, and a download's Last-Modified and checksum), the config."""
    with open(tokenizer_path, "rb") as f:
        tokenizer_sha256 = hashlib.sha256(f.read()).hexdigest()
    described = [{"url" if is_url(source) else "path": source, **report} for source, report in zip(inputs, reports)]
    meta = {"vocab_size": tokenizer.vocab_size, "eot_id": tokenizer.eot_id, "dtype": "uint16",
            "tokenizer": {"trained_here": not config["tokenizer"], "sha256": tokenizer_sha256},
            "splits": counts, "inputs": described, "config": config}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(meta, f, ensure_ascii=False, indent=2)


def main():
    # The decompressing thread takes the GIL back after each block, and the pool's threads after each batch,
    # from a parser that holds it meanwhile: a switch interval of 0.5 ms, not 5, gives it back to them sooner.
    sys.setswitchinterval(0.0005)
    config, inputs = common.configure(DEFAULTS, sys.argv[1:], config_files=False)
    inputs = inputs or [FAWIKI_URL]
    check_arguments(config, inputs)
    tokenizer = given_tokenizer(config, sys.argv[1:]) if config["tokenizer"] else None
    reports, out_dir = [new_report() for _ in inputs], config["out_dir"]
    splits = SPLITS if config["test_fraction"] else SPLITS[:2]
    outputs = [name for name in OUTPUTS if name != "test.bin" or config["test_fraction"]]
    with contextlib.ExitStack() as stack:
        try:
            os.makedirs(out_dir, exist_ok=True)
            work_dir = stack.enter_context(tempfile.TemporaryDirectory(dir=out_dir, prefix=".prepare-"))
            tmp = {name: stack.enter_context(common.atomic_path(os.path.join(out_dir, name))) for name in outputs}
        except OSError as e:
            raise common.UsageError(f"cannot write to out_dir {out_dir}: {e.strerror or e}") from e
        all_tokens = os.path.join(work_dir, "tokens.bin")
        if tokenizer is None:  # the encoding pass reads the clean documents the tokenizer was trained on
            documents = os.path.join(work_dir, "documents.jsonl")
            tokenizer = train_tokenizer(inputs, reports, config, splits, documents)
            tokenizer.save(tmp["tokenizer.json"])
            keys, tokens, sizes, sample = encode_inputs([documents], [new_report()], {**config, "max_articles": 0},
                                                        tokenizer, all_tokens)
        else:  # the only pass: documents are cleaned and encoded together
            shutil.copyfile(config["tokenizer"], tmp["tokenizer.json"])
            keys, tokens, sizes, sample = encode_inputs(inputs, reports, config, tokenizer, all_tokens)
        split_of = choose_document_splits(keys, splits, config, inputs, reports)
        copies = copies_of(split_of, reports, config)
        write_splits(all_tokens, split_of, copies, tokens, [tmp[f"{split}.bin"] for split in splits])
        counts = {name: {key: int((copies * column)[split_of == i].sum())
                         for key, column in (("documents", 1), ("tokens", tokens), ("bytes", sizes))}
                  for i, name in enumerate(splits)}
        write_meta(tmp["meta.json"], tokenizer, tmp["tokenizer.json"], counts, inputs, reports, config)
        with open(tmp["sample.txt"], "w", encoding="utf-8") as f:
            f.write(f"\n\n{bpe.EOT}\n\n".join(sample) + "\n")
    for split, count in counts.items():
        print(f"{split}: {count['documents']:,} documents, {count['tokens']:,} tokens, "
              f"{tqdm.format_sizeof(count['bytes'], 'B')} of text")
    if not config["test_fraction"]:  # an earlier run's test split would no longer match the others
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(out_dir, "test.bin"))
    dropped = sum((report["dropped"] for report in reports), Counter())
    print(f"dropped: {dict(dropped) or 'nothing'}; wrote {', '.join(outputs)} to {out_dir}")


if __name__ == "__main__":
    common.run(main)
