"""
A byte-level BPE tokenizer, written for Persian, small enough to read in one sitting.

    tok = Tokenizer.train(texts, vocab_size=16384, num_proc=2)
    ids = tok.encode("می‌خواهم کتاب بخوانم.")
    assert tok.decode(ids) == "می‌خواهم کتاب بخوانم."
    tok.save("tokenizer.json"); tok = Tokenizer.load("tokenizer.json")

Text is first cut into chunks by SPLIT_PATTERN (below); BPE merges never cross a chunk
boundary. Every chunk starts as its UTF-8 bytes (ids 0..255), so any string round-trips.
Training then repeatedly merges the most frequent adjacent pair of ids into a new id.
Merge number i creates id 256 + i, so an id is also its merge's rank: encoding applies
the pair with the lowest id first, replaying training. Special tokens take the ids after
the merges. All ids are < 65536 so a token stream fits in uint16.
"""

import heapq
import json
import multiprocessing
import queue
import re
import signal
import sys
import time
import unicodedata
from array import array
from collections import Counter, defaultdict
from itertools import chain, islice

import regex

from common import UsageError, atomic_path

# The split pattern, in the spirit of GPT-4's, but right for Persian. GPT-2/GPT-4 keep
# only \p{L} together, so a diacritic (\p{M}, e.g. the kasra in کِتاب) or the zero-width
# non-joiner U+200C (ZWNJ, category Cf, part of words like می‌خواهم and کتاب‌ها) cuts a
# word in pieces. Here a word is letters and marks, with ZWNJ allowed between them, and
# Persian punctuation « » ، ؛ ؟ never sticks to the front of a word (as "(" or '"' may):
#   "می‌خواهم کتاب‌ها را بخوانم."  -> می‌خواهم | ␣کتاب‌ها | ␣را | ␣بخوانم | .
#   "کِتابِ خوبی است؛"             -> کِتابِ | ␣خوبی | ␣است | ؛
#   "«شاهنامه» را خوانده‌ای؟"      -> « | شاهنامه | » | ␣را | ␣خوانده‌ای | ؟
#   "سال ۱۴۰۲ و ٢٠٢٣ و 2023"       -> سال | ␣ | ۱۴۰ | ۲ | ␣و | ␣ | ٢٠٢ | ٣ | ␣و | ␣ | 202 | 3
#   "I don't know, you’re sure"    -> I | ␣don | 't | ␣know | , | ␣you | ’re | ␣sure
WORD = r"[\p{L}\p{M}]++(?:\u200c[\p{L}\p{M}]++)*+"  # letters and marks; ZWNJ only inside
SPLIT_PATTERN = "|".join([  # the first branch that matches wins
    r"['’](?i:[sdmt]|ll|ve|re)",  # English contractions, straight or curly apostrophe
    r"[^\r\n\p{L}\p{M}\p{N}«»،؛؟]?+" + WORD,  # a word, after at most one space or symbol
    r"\p{N}{1,3}",  # digits of any script (ASCII, ۰-۹, ٠-٩), at most three: numbers stay few
    r" ?[^\s\p{L}\p{M}\p{N}]++[\r\n]*",  # punctuation and symbols, and newlines after them
    r"\s*[\r\n]",  # whitespace up to a newline
    r"\s+(?!\S)",  # whitespace, leaving its last space to start the next word
    r"\s+",
])
# Under SPLIT_PATTERN a space that follows anything but whitespace always starts a chunk (no branch
# that matches a non-space character goes on into a space), and the next such space ends the chunks
# before it as the end of the text would. So a text with no whitespace before a space (normalized
# text never has one) is cut at its spaces by str.split, in C, and each " " + word is encoded once
# and remembered: one dict lookup per word, not a regex match and a lookup per chunk.
SPACE_AFTER_WHITESPACE = regex.compile(r"\s ")
FORMAT_VERSION = 2  # of the JSON file; bump when its meaning changes (2: normalization)
MAX_VOCAB_SIZE = 65536  # ids must fit in uint16
EOT = "<|endoftext|>"  # the special token that ends every document
BATCH_CHARS = 1 << 20  # characters of text handed to a worker process at a time
CACHE_CHUNKS = 1 << 17  # chunk encodings encode() remembers; cleared when full, so memory stays bounded
CACHE_WORDS = 1 << 19  # encodings of " " + word encode() remembers; cleared when full
PROGRESS_SECONDS = 10.0  # how often long training runs report on stderr
REPLACEMENT = "\ufffd".encode()  # what decode gives for an id outside the vocabulary
PAIR = 1 << 16  # a pair of ids (a, b) is kept as the single int a * PAIR + b
NO_MERGE = MAX_VOCAB_SIZE  # rank of a pair that is never merged: above every id


# -----------------------------------------------------------------------------
# Persian normalization: one spelling for what a reader sees as one letter, so the tokenizer
# does not spend its vocabulary on look-alikes. Applied character by character.

PERSIAN_CHARACTERS = {
    **dict.fromkeys("\u064a\u0649", "\u06cc"),  # ي ARABIC YEH, ى ALEF MAKSURA -> ی FARSI YEH
    "\u0643": "\u06a9",  # ك ARABIC KAF -> ک KEHEH
    **dict.fromkeys("\u06d5\u06be\u06c1", "\u0647"),  # ە AE, ھ HEH DOACHASHMEE, ہ HEH GOAL -> ه HEH
    # removed: ـ TATWEEL (kashida, a stretching stroke), ZERO WIDTH JOINER, LEFT-TO-RIGHT MARK,
    # RIGHT-TO-LEFT MARK, BYTE ORDER MARK
    **dict.fromkeys("\u0640\u200d\u200e\u200f\ufeff", ""),
    **{chr(0x0660 + d): chr(0x06F0 + d) for d in range(10)},  # ٠..٩ ARABIC-INDIC -> ۰..۹ PERSIAN digits
}
# fathatan, dammatan, kasratan, fatha, damma, kasra, shadda, sukun: mostly unwritten in Persian,
# so a word with and without them should be one word. Hamza above (U+0654, as in خانهٔ) stays.
DIACRITICS = {chr(code): "" for code in range(0x064B, 0x0653)}
# Arabic presentation forms, U+FB50..U+FDFF and U+FE70..U+FEFE, are the positional shapes and
# ligatures that old software stored instead of letters; NFKC gives the letters back.
PRESENTATION_FORMS = [*range(0xFB50, 0xFE00), *range(0xFE70, 0xFEFF)]


def _translation_table(remove_diacritics):
    """The str.translate table of normalize(): the characters above, and each presentation form as its
    letters, themselves translated (a presentation-form Arabic yeh becomes a Farsi yeh)."""
    table = str.maketrans({**PERSIAN_CHARACTERS, **(DIACRITICS if remove_diacritics else {})})
    forms = {code: unicodedata.normalize("NFKC", chr(code)) for code in PRESENTATION_FORMS}
    return table | {code: letters.translate(table) for code, letters in forms.items() if letters != chr(code)}


TRANSLATION_TABLES = {flag: _translation_table(flag) for flag in (False, True)}  # remove_diacritics -> table
# Runs of the characters a table changes. Most text holds few of them, and finding them with re
# then translating only those is much faster than str.translate over all of a Persian text.
CHANGED_CHARACTERS = {flag: re.compile("[" + re.escape("".join(map(chr, table))) + "]+")
                      for flag, table in TRANSLATION_TABLES.items()}
ZWNJ_RUN = regex.compile("\u200c{2,}")
# ZWNJ (U+200C, the Persian half-space of می‌خواهم) only means something between two letters
ZWNJ_OUTSIDE_WORD = regex.compile(r"(?<![\p{L}\p{M}])\u200c|\u200c(?!\p{L})")
# Every run of whitespace within a line becomes one space, in two passes with re: the characters
# other than space and newline that str.isspace (re's \s) knows, all below U+3001, listed rather than
# written [^\S\n ] (faster to look for), then runs of spaces ("  +" starts with a literal, which
# re looks for as fast as str.find, not trying a match at every space between words)
OTHER_SPACES = "".join(chr(code) for code in range(0x3001) if chr(code).isspace() and chr(code) not in " \n")
OTHER_SPACE = re.compile(f"[{OTHER_SPACES}]")
SPACE_RUN = re.compile("  +")
SPACE_AT_LINE_EDGE = regex.compile(r" ?\n ?")
BLANK_LINES = regex.compile(r"\n{3,}")


def collapse_whitespace(text):
    """One space between words, no spaces at line edges, at most one blank line between paragraphs."""
    text = SPACE_AT_LINE_EDGE.sub("\n", SPACE_RUN.sub(" ", OTHER_SPACE.sub(" ", text)))
    return BLANK_LINES.sub("\n\n", text).strip()


def normalize(text, normalize_text=True, remove_diacritics=True, tidy_spaces=True):
    """Text in the form the model is trained on; idempotent. normalize_text: Persian letters (the
    table above) and the ZWNJ rules; tidy_spaces: collapse_whitespace. A piece of text that is not
    a whole document (a stop string) keeps its spaces with tidy_spaces=False."""
    if normalize_text:
        table = TRANSLATION_TABLES[remove_diacritics]
        text = CHANGED_CHARACTERS[remove_diacritics].sub(lambda run: run[0].translate(table), text)
        text = ZWNJ_OUTSIDE_WORD.sub("", ZWNJ_RUN.sub("\u200c", text))
    return collapse_whitespace(text) if tidy_spaces else text


# -----------------------------------------------------------------------------
# Training: count the chunks of the corpus, then learn the merges from the counts

def _batches(texts):
    """Group an iterable of strings into lists of about BATCH_CHARS characters, reporting progress."""
    batch, size, seen = [], 0, 0
    start = last_report = time.time()
    for text in texts:
        if not isinstance(text, str):
            raise UsageError(f"expected text as str, got {type(text).__name__}")
        batch.append(text)
        size += len(text)
        if size >= BATCH_CHARS:
            yield batch
            batch, seen, size = [], seen + size, 0
            if time.time() >= last_report + PROGRESS_SECONDS:
                last_report = time.time()
                print(f"bpe: read {seen / 1e6:.0f} M characters in {last_report - start:.0f} s", file=sys.stderr)
    if batch:
        yield batch


def _count(batches):
    """The chunks of every text in batches of texts -> Counter."""
    pattern = regex.compile(SPLIT_PATTERN)
    counts = Counter()
    for text in chain.from_iterable(batches):
        counts.update(pattern.findall(text))
    return counts


def ignore_interrupts():
    """A worker process's start. Ctrl-C reaches every process of the terminal, and only the parent
    handles it (it stops its workers), so that no worker prints a traceback of its own."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _count_worker(inbox, outbox):
    """A worker process of count_chunks: counts the batches from inbox until None, then sends its counts."""
    ignore_interrupts()
    outbox.put(_count(iter(inbox.get, None)))


def _wait(workers, queue_operation, *args):
    """Run a blocking queue operation on args, failing instead of hanging when a worker has died."""
    while True:
        try:
            return queue_operation(*args, timeout=1.0)
        except (queue.Empty, queue.Full):
            if any(worker.exitcode for worker in workers):
                raise RuntimeError("a chunk-counting worker process died (out of memory?)") from None


def count_chunks(texts, num_proc=1):
    """Count every distinct chunk of the corpus, streaming it once in batches -> Counter.

    With num_proc > 1 the batches go through a bounded queue to worker processes, each
    keeping its own counts, so memory holds the distinct chunks, never the corpus.
    """
    if num_proc <= 1:
        return _count(_batches(texts))
    counts = Counter()
    inbox, outbox = multiprocessing.Queue(maxsize=2 * num_proc), multiprocessing.Queue()
    workers = [multiprocessing.Process(target=_count_worker, args=(inbox, outbox), daemon=True)
               for _ in range(num_proc)]
    for worker in workers:
        worker.start()
    try:
        for batch in chain(_batches(texts), [None] * num_proc):  # a None tells a worker to send its counts
            _wait(workers, inbox.put, batch)
        for _ in workers:
            smaller, counts = sorted([counts, _wait(workers, outbox.get)], key=len)
            counts.update(smaller)  # the smaller into the larger
        for worker in workers:
            worker.join()
    finally:  # after an error, the workers still running are stopped (terminate leaves an exited one alone)
        for worker in workers:
            worker.terminate()
        inbox.cancel_join_thread()  # else exiting waits forever to hand batches to the stopped workers
    return counts


def learn_merges(chunk_counts, num_merges):
    """Learn up to num_merges merges from {chunk: count}; returns a list of (left, right) ids.

    Every distinct chunk is a word: a list of ids with its count. pair_counts holds the
    count of every adjacent pair over all words, and where[pair] the words that may hold
    it. A merge edits only the words listed for its pair, and only the pairs touching
    each merged spot, so the corpus is never recounted.
    The best pair comes from a max-heap of (-count, pair) with lazy invalidation: a pair's
    count only grows in the merge that creates its newer id (it is pushed then) and only
    shrinks afterwards, so a popped entry whose count is out of date is pushed back with
    the current count. Ties go to the smallest (left id, right id), i.e. to the pair of
    older tokens; the result does not depend on the order of the chunks.
    """
    words = [list(chunk.encode("utf-8")) for chunk in chunk_counts]
    counts = list(chunk_counts.values())
    pair_counts, where = defaultdict(int), defaultdict(list)
    for index, (word, count) in enumerate(zip(words, counts)):
        for pair in map(int.__add__, [a * PAIR for a in word[:-1]], word[1:]):
            pair_counts[pair] += count
            where[pair].append(index)
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)

    merges = []
    start = next_report = time.time()
    while len(merges) < num_merges and heap:
        negative_count, pair = heapq.heappop(heap)
        count = pair_counts.get(pair, 0)
        if count != -negative_count:
            if count > 0:
                heapq.heappush(heap, (-count, pair))
            continue
        new_id = 256 + len(merges)
        a, b = divmod(pair, PAIR)
        merges.append((a, b))
        new_pairs = set()
        for index in where.pop(pair):
            word, count = words[index], counts[index]
            end = len(word) - 1  # pairs start at positions 0 .. end - 1
            i = 0
            while True:
                try:
                    i = word.index(a, i, end)
                except ValueError:
                    break
                if word[i + 1] != b:
                    i += 1
                    continue
                if i > 0:
                    left = word[i - 1]
                    pair_counts[left * PAIR + a] -= count
                    left_pair = left * PAIR + new_id
                    pair_counts[left_pair] += count
                    new_pairs.add(left_pair)
                    where[left_pair].append(index)
                if i < end - 1:
                    right = word[i + 2]
                    pair_counts[b * PAIR + right] -= count
                    right_pair = new_id * PAIR + right
                    pair_counts[right_pair] += count
                    new_pairs.add(right_pair)
                    where[right_pair].append(index)
                word[i:i + 2] = (new_id,)
                end -= 1
                i += 1
        del pair_counts[pair]
        for new_pair in new_pairs:
            if pair_counts[new_pair] > 0:
                heapq.heappush(heap, (-pair_counts[new_pair], new_pair))
        if time.time() >= next_report + PROGRESS_SECONDS:
            next_report = time.time()
            print(f"bpe: merge {len(merges)}/{num_merges} (pair count {-negative_count:,}) "
                  f"in {next_report - start:.0f} s", file=sys.stderr)
    return merges


class _Cache(dict):
    """text -> its ids as uint16 bytes; missing text is encoded and remembered, up to `size` texts."""

    def __init__(self, encode, size):  # dict.__new__ makes the empty dict: nothing to pass to dict.__init__
        self.encode, self.size = encode, size

    def __missing__(self, text):
        if len(self) >= self.size:
            self.clear()
        ids = self[text] = self.encode(text)
        return ids


class Tokenizer:
    def __init__(self, merges, special_tokens=(EOT,), pattern_text=SPLIT_PATTERN, normalization=None):
        """normalization: None (text is encoded as it is) or normalize()'s options
        {"normalize_text": bool, "remove_diacritics": bool}, applied by every encode."""
        self.merges = [tuple(pair) for pair in merges]
        self.normalization = normalization
        self.special_tokens = {token: 256 + len(self.merges) + i for i, token in enumerate(special_tokens)}
        self.vocab_size = 256 + len(self.merges) + len(self.special_tokens)
        self.eot_id = self.special_tokens.get(EOT)  # the document separator; None if there is none
        self.pattern_text = pattern_text
        self.pattern = regex.compile(pattern_text)
        self.ranks = {a * PAIR + b: 256 + i for i, (a, b) in enumerate(self.merges)}
        self.token_bytes = {i: bytes([i]) for i in range(256)}
        for i, (a, b) in enumerate(self.merges, 256):
            self.token_bytes[i] = self.token_bytes[a] + self.token_bytes[b]
        self.token_bytes.update({i: token.encode("utf-8") for token, i in self.special_tokens.items()})
        self.chunk_cache = _Cache(self._encode_chunk, CACHE_CHUNKS)
        self.word_cache = _Cache(lambda word: self._encode_chunks(" " + word), CACHE_WORDS)
        self.split_at_spaces = pattern_text == SPLIT_PATTERN  # see SPACE_AFTER_WHITESPACE

    @classmethod
    def train(cls, texts, vocab_size, special_tokens=(EOT,), num_proc=1, normalization=None):
        """Learn a tokenizer of vocab_size ids (bytes + merges + special tokens) from texts,
        which must already be in the form `normalization` gives (prepare.py normalizes them once).

        texts may be any iterable of str, e.g. a generator over a corpus too big for memory.
        A corpus with too few distinct pairs yields fewer merges (a smaller vocabulary).
        """
        special_tokens = tuple(special_tokens)
        if len(set(special_tokens)) != len(special_tokens) or not all(
                isinstance(token, str) and token for token in special_tokens):
            raise UsageError(f"special tokens must be distinct non-empty strings, got {special_tokens}")
        if not 256 + len(special_tokens) <= vocab_size <= MAX_VOCAB_SIZE:
            raise UsageError(f"vocab_size must be between {256 + len(special_tokens)} and "
                             f"{MAX_VOCAB_SIZE} (ids are stored as uint16), got {vocab_size}")
        start = time.time()
        chunk_counts = count_chunks(texts, num_proc)
        counted = time.time()
        print(f"bpe: {len(chunk_counts):,} distinct chunks counted in {counted - start:.0f} s", file=sys.stderr)
        num_merges = vocab_size - 256 - len(special_tokens)
        merges = learn_merges(chunk_counts, num_merges)
        print(f"bpe: {len(merges):,} merges learned in {time.time() - counted:.0f} s", file=sys.stderr)
        if len(merges) < num_merges:
            print(f"bpe: the corpus ran out of pairs after {len(merges)} merges, so the vocabulary "
                  f"has {256 + len(merges) + len(special_tokens)} ids, not {vocab_size}", file=sys.stderr)
        return cls(merges, special_tokens, normalization=normalization)

    # encoding

    def normalize(self, text, tidy_spaces=True):
        """The text in the form this tokenizer's training text had (see normalize)."""
        if self.normalization is None:
            return text
        return normalize(text, **self.normalization, tidy_spaces=tidy_spaces)

    def _encode_chunk(self, chunk):
        """Apply the merges to one chunk, lowest id (earliest merge) first, as training did; uint16 bytes.

        pair_ranks[j] is the id that (ids[j], ids[j+1]) merges into, or NO_MERGE.
        Merging the leftmost lowest pair one at a time equals merging all its
        occurrences left to right, since pairs with the new id rank after it.
        """
        ids = list(chunk.encode("utf-8"))
        get = self.ranks.get
        pair_ranks = [get(a * PAIR + b, NO_MERGE) for a, b in zip(ids, ids[1:])]
        while pair_ranks:
            new_id = min(pair_ranks)
            if new_id == NO_MERGE:
                break
            i = pair_ranks.index(new_id)
            ids[i:i + 2] = (new_id,)
            around = []
            if i > 0:
                around.append(get(ids[i - 1] * PAIR + new_id, NO_MERGE))
            if i + 1 < len(ids):
                around.append(get(new_id * PAIR + ids[i + 1], NO_MERGE))
            pair_ranks[max(i - 1, 0):i + 2] = around
        return array("H", ids).tobytes()

    def _encode_chunks(self, text):
        """uint16 bytes of text cut into chunks by the split pattern."""
        return b"".join(map(self.chunk_cache.__getitem__, self.pattern.findall(text)))

    def _encode_plain(self, text):
        """uint16 bytes of text in which special tokens are plain characters: cut at its spaces where
        that gives the pattern's chunks (see SPACE_AFTER_WHITESPACE), else by the pattern."""
        if not self.split_at_spaces or SPACE_AFTER_WHITESPACE.search(text):
            return self._encode_chunks(text)
        words = text.split(" ")
        return self._encode_chunks(words[0]) + b"".join(
            map(self.word_cache.__getitem__, islice(words, 1, None)))

    def encode_array(self, text, allowed_special=(), normalized=False):
        """encode(), as an array of uint16 ("H"): two bytes an id, as a token file holds them.
        normalized=True says that text is already in this tokenizer's normalized form (prepare.py
        normalizes each document once, for its split key), so it is encoded as it is."""
        if not normalized:
            text = self.normalize(text)
        if allowed_special == "all":
            allowed_special = self.special_tokens
        if unknown := set(allowed_special) - set(self.special_tokens):
            raise UsageError(f"not special tokens of this tokenizer: {sorted(unknown)}")
        if not allowed_special:
            return array("H", self._encode_plain(text))
        alternatives = "|".join(map(regex.escape, sorted(allowed_special, key=len, reverse=True)))
        parts = regex.split(f"({alternatives})", text)  # plain text, then a special token and plain text after it
        ids = array("H", self._encode_plain(parts[0]))
        for special, plain in zip(parts[1::2], parts[2::2]):
            ids.append(self.special_tokens[special])
            ids.frombytes(self._encode_plain(plain))
        return ids

    def encode(self, text, allowed_special=()):
        """Encode text, normalized first; special tokens are recognised only if named in
        allowed_special (or "all")."""
        return self.encode_array(text, allowed_special).tolist()

    # decoding

    def decode_bytes(self, ids):
        try:
            return b"".join([self.token_bytes[i] for i in ids])
        except KeyError:  # an id outside the vocabulary, or an integer type that hashes apart
            return b"".join([self.token_bytes.get(int(i), REPLACEMENT) for i in ids])

    def decode(self, ids):
        """Text of ids; bytes that are not valid UTF-8 (e.g. half a character) become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    # saving and loading: one JSON file, one merge per line, no pickle

    def to_json(self):
        header = json.dumps({"version": FORMAT_VERSION, "type": "byte-level BPE", "normalization": self.normalization,
                             "pattern": self.pattern_text, "special_tokens": self.special_tokens},
                            ensure_ascii=False, indent=1)
        merges = ",\n".join(f"  [{a}, {b}]" for a, b in self.merges)
        return f'{header[:-2]},\n "merges": [\n{merges}\n ]\n}}\n'

    @classmethod
    def from_json(cls, text):
        try:
            data = json.loads(text)
        except (ValueError, TypeError) as e:
            raise UsageError(f"tokenizer is not valid JSON: {e}") from e
        if not isinstance(data, dict) or "version" not in data:
            raise UsageError("not a tokenizer file: no version field")
        if data["version"] not in (1, FORMAT_VERSION):  # version 1 had no normalization
            raise UsageError(f"tokenizer format version {data['version']!r} is not supported "
                             f"(this code reads versions 1 and {FORMAT_VERSION})")
        normalization = data.get("normalization")
        if normalization is not None and (not isinstance(normalization, dict) or sorted(normalization) != [
                "normalize_text", "remove_diacritics"] or not all(isinstance(v, bool) for v in normalization.values())):
            raise UsageError("corrupt tokenizer: normalization must be null or "
                             '{"normalize_text": bool, "remove_diacritics": bool}')
        merges, special_tokens = data.get("merges"), data.get("special_tokens")
        if not isinstance(merges, list) or not all(
                isinstance(pair, list) and len(pair) == 2
                and all(type(i) is int and 0 <= i < 256 + n for i in pair)
                for n, pair in enumerate(merges)):
            raise UsageError("corrupt tokenizer: merges must be [left, right] pairs of earlier ids")
        if not isinstance(special_tokens, dict) or "" in special_tokens or list(special_tokens.values()) != list(
                range(256 + len(merges), 256 + len(merges) + len(special_tokens))):
            raise UsageError("corrupt tokenizer: special tokens must take the ids after the merges")
        if 256 + len(merges) + len(special_tokens) > MAX_VOCAB_SIZE:
            raise UsageError(f"corrupt tokenizer: more than {MAX_VOCAB_SIZE} ids")
        try:  # everything else is checked: the constructor can fail only in compiling the pattern
            return cls(merges, list(special_tokens), data.get("pattern"), normalization)
        except (regex.error, TypeError) as e:
            raise UsageError(f"corrupt tokenizer: bad split pattern: {e}") from e

    def save(self, path):
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.write(self.to_json())

    @classmethod
    def load(cls, path):
        try:
            with open(path, encoding="utf-8") as f:
                return cls.from_json(f.read())
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"cannot read tokenizer file {path}: {e}") from e
        except UsageError as e:
            raise UsageError(f"{path}: {e}") from e
