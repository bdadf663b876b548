"""
prepare.py against its peers, in one run: how clean its text is next to WikiExtractor's and
mwparserfromhell's on the same pages, and its throughput and memory next to WikiExtractor's on
dumps of growing size (the real fawiki dump is ~1.5 GB compressed).

    pip install wikiextractor mwparserfromhell       # the peers; nothing else needs them
    python bench/bench_prepare.py                    # 50 and 200 MB of XML, a few minutes on 2 cores
    python bench/bench_prepare.py --sizes=5,10       # a quick check that everything runs

Cleaning, per 10,000 words of output, on the genuine pages of the fawiki sample, each cleaner given
the same wikitext in this process (ours: wikitext.clean_wikitext; WikiExtractor 3.1: its
Extractor.clean_text, templates not expanded since a dump of articles holds no template pages;
mwparserfromhell: parse(text).strip_code()), every output normalized the same way afterwards:
- markup leftovers: "{{", "}}", "[[", "]]", runs of "|" and "<tag" openings;
- glued words: a word of the output (punctuation at its edges aside) that never occurs in the page's
  own wikitext read with links and bold or italic quotes taken away (so neither the author's
  compounds nor a link with a suffix, [[کتاب]]ها, count), and that is either two Persian words
  joined by punctuation with no space (است.جملهٔ) or a word absent from a word list built from
  ../shared/data/persian/news.jsonl (words seen at least word_min_count times there) that splits into
  two listed words of two letters or more: words the cleaner ran together;
- prose kept: the page's prose words are the Persian words of its wikitext that a reader sees in the
  running text, found by a scanner here that shares no code with any cleaner: outside templates,
  tables, file and category links, comments and <ref>/<math>/<gallery> elements, and for a link
  only its label. The share kept is how many of them (counted with multiplicity) the output has.
Then each cleaner renders CONSTRUCTS, paragraphs of our own with one construct each that the
three pages lack (references and templates between words, block tags, stray braces ...), and
the benchmark counts those whose text equals what a reader of the rendered article sees.

Throughput: each dump repeats the genuine pages of the fawiki sample with new titles and ids, so
every article is distinct, and is written as .xml.bz2 like the real dump (or .xml with
--compress=False) into a temporary folder outside the repository. prepare.py then runs on it in
a child process with a tokenizer trained beforehand on the sample pages (or --tokenizer=PATH),
so the figures are those of the pipeline: decompression, XML parsing, cleaning, normalization
and encoding, in one pass since there is no tokenizer to train; WikiExtractor then runs on the
same file with as many processes, templates not expanded as in the cleaning comparison (it writes
text and does not tokenize). Peak memory is read two
ways, both sampled from /proc every 0.2 s (bench/measure.py, Linux only): the largest single
process and the sum over the program and its worker processes.
The sample's three pages are long (19-88 K characters of wikitext); the average fawiki article
is much shorter, which costs more per-page overhead and lowers MB/s somewhat.
"""

import bz2
import html
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections import Counter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import bpe  # noqa: E402
import common  # noqa: E402
import measure  # noqa: E402
import wikitext  # noqa: E402

DEFAULTS = dict(
    data_dir=os.environ.get("SHARED_DATA", os.path.join(ROOT, "..", "shared", "data")),  # real text
    sizes=(50, 200),  # MB of XML in each generated dump (--sizes=5,10); memory should not grow with it
    compress=True,  # write .xml.bz2 as the real dump is (False: plain .xml)
    num_proc=2,  # prepare.py --num_proc and WikiExtractor --processes
    tokenizer="",  # an existing tokenizer.json; "" trains one of vocab_size on the sample pages first
    vocab_size=4096,  # for that tokenizer
    peer=True,  # also time WikiExtractor on each dump
    quality=True,  # compare the three cleaners' text on the sample's pages
    word_min_count=2,  # a word is in the list of known words if news.jsonl has it at least this often
    work_dir=tempfile.gettempdir(),  # dumps and outputs go in a temporary folder here, removed after
    out=os.path.join(ROOT, "bench", "results", "prepare.json"),  # figures as JSON; "" writes none
)
PREPARE = os.path.join(ROOT, "prepare.py")
PERSIAN_LETTERS = "\u0621-\u064a\u067e\u0686\u0698\u06a9\u06af\u06cc\u0654\u200c"
PERSIAN_WORD = re.compile(f"[{PERSIAN_LETTERS}]{{2,}}")
# two words joined by sentence punctuation with no space after it: است.جملهٔ
PUNCTUATION_GLUE = re.compile(f"[{PERSIAN_LETTERS}]{{2,}}[.،؛:!?؟]+[{PERSIAN_LETTERS}]{{2,}}")
TOKEN_EDGES = re.compile(r"^[^\w\u200c]+|[^\w\u200c]+$")
MARKUP_OR_SPACE = re.compile(r"[\s<>{}|\[\]=&]+")
LEFTOVERS = {"{{": re.compile(r"\{\{"), "}}": re.compile(r"\}\}"), "[[": re.compile(r"\[\["),
             "]]": re.compile(r"\]\]"), "|": re.compile(r"\|+"), "<tag": re.compile(r"</?[a-zA-Z]")}


def sample_pages(config):
    """The sample dump's text before its first page, its pages, and what follows the last one."""
    path = os.path.join(config["data_dir"], "fawiki", "fawiki-sample-pages-articles.xml.bz2")
    if not os.path.isfile(path):
        raise common.UsageError(f"sample dump not found: {path} (set --data_dir)")
    with bz2.open(path, "rt", encoding="utf-8") as f:
        xml = f.read()
    start, end = xml.index("<page>"), xml.rindex("</page>") + len("</page>")
    return xml[:start], re.findall(r"<page>.*?</page>", xml[start:end], re.S), xml[end:], path


# -----------------------------------------------------------------------------
# cleaning quality

def known_words(config):
    path = os.path.join(config["data_dir"], "persian", "news.jsonl")
    if not os.path.isfile(path):
        raise common.UsageError(f"news.jsonl not found: {path} (set --data_dir)")
    counts = Counter()
    with open(path, encoding="utf-8") as f:
        for line in f:
            counts.update(PERSIAN_WORD.findall(bpe.normalize(json.loads(line)["text"])))
    return {word for word, n in counts.items() if n >= config["word_min_count"]}


def prose_words(wikitext):
    """The Persian words a reader sees in the running text (see the docstring), as a Counter."""
    text = re.sub(r"<!--.*?(?:-->|$)", " ", html.unescape(wikitext), flags=re.S)
    text = re.sub(r"<(ref|math|gallery|timeline|score|syntaxhighlight|chem|ce)\b[^>]*?(?:/>|>.*?</\1\s*>)",
                  " ", text, flags=re.S | re.I)
    visible, stack, link = [], [], []  # stack: "t" template or table, "f" file/category link, "l" link
    for token in re.split(r"(\{\{|\}\}|\{\||\|\}|\[\[|\]\])", text):
        hidden = "t" in stack or "f" in stack
        if token in ("{{", "{|"):
            stack.append("t")
        elif token in ("}}", "|}"):
            if "t" in stack:
                del stack[len(stack) - 1 - stack[::-1].index("t"):]
        elif token == "[[":
            stack.append("l")
            link.append("")
        elif token == "]]":
            if stack and stack[-1] in "lf":
                label = link.pop().rpartition("|")[2] if stack.pop() == "l" else ""
                if not ("t" in stack or "f" in stack):
                    (link.__setitem__(-1, link[-1] + label) if link else visible.append(label))
        elif stack and stack[-1] == "l" and not link[-1] and re.match(
                r"\s*(?:پرونده|تصویر|رده|file|image|category|[a-z]{2,3})\s*:", token, re.I):
            stack[-1] = "f"  # a file, category or interlanguage link: nothing to read
            link.pop()
        elif stack and stack[-1] == "l":
            link[-1] += token
        elif not hidden:
            visible.append(token)
    return Counter(PERSIAN_WORD.findall(bpe.normalize(" ".join(visible))))


def cleaners():
    """name -> function(title, wikitext) -> text, for our cleaner and each peer that is installed."""
    found = {"prepare.py": lambda title, text: wikitext.clean_wikitext(text)}
    try:
        from wikiextractor.extract import Extractor
        found["WikiExtractor 3.1"] = lambda title, text: "\n".join(
            Extractor(1, 1, "", title, []).clean_text(text, expand_templates=False, html_safe=False))
    except ImportError:
        print("WikiExtractor not installed (pip install wikiextractor): left out", file=sys.stderr)
    try:
        import mwparserfromhell
        found["mwparserfromhell strip_code"] = lambda title, text: mwparserfromhell.parse(text).strip_code()
    except ImportError:
        print("mwparserfromhell not installed (pip install mwparserfromhell): left out", file=sys.stderr)
    return found


# Constructs of fawiki articles that the sample's three pages lack or hold once, each in a short
# paragraph of our own, with the text a reader of the rendered article sees (spacing aside).
CONSTRUCTS = [
    ("<ref> between sentences", "این شهر بزرگ است.<ref>کتاب تاریخ، ص ۱۲</ref>جمعیت آن زیاد است.",
     "این شهر بزرگ است. جمعیت آن زیاد است."),
    ("self-closing <ref />", 'رود از شهر می‌گذرد<ref name="الف" />و به دریا می‌ریزد.',
     "رود از شهر می‌گذرد و به دریا می‌ریزد."),
    ("{{سخ}} between words", "نام نخست{{سخ}}نام دوم", "نام نخست نام دوم"),
    ("{{-}} between blocks", "پایان بخش{{-}}آغاز بخش", "پایان بخش آغاز بخش"),
    ("{{فاصله نشکن}}", "فاصله ۱۰{{فاصله نشکن}}کیلومتر است.", "فاصله ۱۰ کیلومتر است."),
    ("<br /> between lines", "بیت نخست<br />بیت دوم", "بیت نخست بیت دوم"),
    ("adjacent <div>s", "<div>بخش یک</div><div>بخش دو</div>", "بخش یک بخش دو"),
    ("<center> before text", "<center>عنوان</center>متن اصلی", "عنوان متن اصلی"),
    ("{{nowrap|...}}", "شهر {{nowrap|تهران بزرگ}} است.", "شهر تهران بزرگ است."),
    ("{{نستعلیق|...}}", "بیت {{نستعلیق|دل و جان}} است.", "بیت دل و جان است."),
    ("a link label with brackets", "او [[جنگ|نبرد [دوم]]] را دید.", "او نبرد [دوم] را دید."),
    ("a parameter's default", "مقدار {{{1|پیش‌فرض}}} است.", "مقدار پیش‌فرض است."),
    ("<nowiki>", "نوشتن <nowiki>[[پیوند]]</nowiki> ساده است.", "نوشتن [[پیوند]] ساده است."),
    ("a stray brace in a template", "فرمول {{math|x ∈ {1, 2}}} را ببینید. جملهٔ بعد می‌ماند.",
     "فرمول x ∈ {1, 2} را ببینید. جملهٔ بعد می‌ماند."),
    ("a parser function", "او {{#if: ۱۳۰۰ | در سال ۱۳۰۰ |}} زاده شد.", "او در سال ۱۳۰۰ زاده شد."),
    ("a table between paragraphs", "بند یک.\n{| class=\"wikitable\"\n|-\n| خانه\n|}\nبند دو.",
     "بند یک. خانه بند دو."),
]


def compare_constructs():
    """Per cleaner: how many CONSTRUCTS it renders as the article shows them, and which it misses."""
    def same(text):
        return " ".join(bpe.normalize(text).split())

    results = {}
    for name, clean in cleaners().items():
        rendered = [(construct, same(clean("آزمون", wikitext)), same(shown)) for construct, wikitext, shown in CONSTRUCTS]
        missed = [(construct, text) for construct, text, shown in rendered if text != shown]
        results[name] = dict(rendered=len(CONSTRUCTS) - len(missed), of=len(CONSTRUCTS), missed=missed)
    return results


def is_glued(token, known):
    """Two words run together: across punctuation, or a word unknown to the list that is two known ones."""
    if PUNCTUATION_GLUE.fullmatch(token):
        return True
    return bool(PERSIAN_WORD.fullmatch(token)) and token not in known and any(
        token[:i] in known and token[i:] in known for i in range(2, len(token) - 1))


def compare_cleaners(pages, config):
    """Per cleaner: words out, leftovers and glued words per 10,000 words, share of prose kept."""
    known = known_words(config)
    articles = []
    for page in pages:
        title = html.unescape(re.search(r"<title>(.*?)</title>", page, re.S)[1])
        text = html.unescape(re.search(r"<text[^>]*>(.*?)</text>", page, re.S)[1])
        # the page's words as its author joined them: a link or bold text followed by a suffix
        # ([[کتاب]]ها, '''کتاب'''ها) shows one word
        joined = re.sub(r"\[\[(?:[^\[\]|]*\|)?|\]\]|''+", "", text)
        page_tokens = {TOKEN_EDGES.sub("", token)
                       for token in MARKUP_OR_SPACE.split(bpe.normalize(joined))}
        articles.append((title, text, prose_words(text), page_tokens))
    results = {}
    for name, clean in cleaners().items():
        words, leftovers, glued, kept, seconds = 0, Counter(), Counter(), 0, 0.0
        for title, text, prose, page_tokens in articles:
            start = time.process_time()
            output = bpe.normalize(clean(title, text))
            seconds += time.process_time() - start
            words += len(output.split())
            leftovers.update({mark: len(pattern.findall(output)) for mark, pattern in LEFTOVERS.items()})
            found = Counter(PERSIAN_WORD.findall(output))
            kept += sum(min(n, found[word]) for word, n in prose.items())
            tokens = [TOKEN_EDGES.sub("", token) for token in output.split()]
            glued.update(token for token in tokens if token not in page_tokens and is_glued(token, known))
        per = 10_000 / max(words, 1)
        results[name] = dict(
            words=words, cpu_seconds=seconds,
            leftovers_per_10k_words={mark: n * per for mark, n in leftovers.items()},
            leftovers_total_per_10k_words=sum(leftovers.values()) * per,
            glued_per_10k_words=sum(glued.values()) * per, glued_examples=[w for w, _ in glued.most_common(8)],
            prose_kept=kept / max(1, sum(sum(prose.values()) for _, _, prose, _ in articles)))
    return results


# -----------------------------------------------------------------------------
# throughput and memory

def write_dump(path, header, pages, footer, size_mb, compress):
    """Repeat the pages, each copy with a new title and new ids, until the XML holds size_mb MB."""
    written, copy = 0, 0
    with (bz2.open(path, "wt", encoding="utf-8") if compress else open(path, "w", encoding="utf-8")) as f:
        f.write(header)
        while written < size_mb * 1e6:
            for page in pages:
                copy += 1
                page = re.sub(r"</title>", f" {copy}</title>", page, count=1)
                page = re.sub(r"<id>\d+</id>", f"<id>{copy}</id>", page)
                f.write(page)
                written += len(page.encode("utf-8"))
        f.write(footer)
    return written, copy


def run_prepare(args):
    return measure.run_measured([sys.executable, PREPARE, *args], cwd=ROOT)


def run_wikiextractor(dump, out_dir, num_proc):
    # --no-templates, as ours: without it, WikiExtractor first reads the whole dump once more to collect
    # template pages, which a dump of articles has none of
    return measure.run_measured([sys.executable, "-m", "wikiextractor.WikiExtractor", dump, "--no-templates",
                                 "--processes", str(num_proc), "--quiet", "--output", out_dir], cwd=ROOT)


def measure_throughput(config, header, pages, footer, sample_path, work):
    tokenizer = config["tokenizer"]
    if not tokenizer:
        run_prepare([sample_path, f"--out_dir={work}/tokenizer", f"--vocab_size={config['vocab_size']}",
                     "--num_proc=1"])
        tokenizer = os.path.join(work, "tokenizer", "tokenizer.json")
    results = []
    for size in map(float, config["sizes"]):
        dump = os.path.join(work, f"dump-{size:g}mb.xml" + (".bz2" if config["compress"] else ""))
        xml_bytes, n_pages = write_dump(dump, header, pages, footer, size, config["compress"])
        out_dir = os.path.join(work, f"out-{size:g}mb")
        args = [dump, f"--out_dir={out_dir}", f"--tokenizer={tokenizer}", f"--num_proc={config['num_proc']}"]
        run = run_prepare(args)
        with open(os.path.join(out_dir, "meta.json"), encoding="utf-8") as f:
            splits = json.load(f)["splits"]
        result = dict(
            xml_mb=xml_bytes / 1e6, file_mb=os.path.getsize(dump) / 1e6, pages=n_pages, seconds=run["seconds"],
            xml_mb_per_s=xml_bytes / 1e6 / run["seconds"],
            tokens=sum(s["tokens"] for s in splits.values()),
            text_mb=sum(s["bytes"] for s in splits.values()) / 1e6,
            peak_rss_largest_process_mb=run["peak_rss_largest_process_mb"],
            peak_rss_all_processes_mb=run["peak_rss_all_processes_mb"])
        shutil.rmtree(out_dir)
        if config["peer"]:
            run = run_wikiextractor(dump, out_dir, config["num_proc"])
            result["wikiextractor"] = dict(
                seconds=run["seconds"], xml_mb_per_s=xml_bytes / 1e6 / run["seconds"],
                peak_rss_largest_process_mb=run["peak_rss_largest_process_mb"],
                peak_rss_all_processes_mb=run["peak_rss_all_processes_mb"])
            shutil.rmtree(out_dir)
        results.append(result)
        os.remove(dump)
    return results


def print_quality(quality):
    print("cleaning the sample's pages, per 10,000 words of output")
    marks = "".join(f"{mark:>6}" for mark in LEFTOVERS)
    print(f"{'cleaner':>28}{'words':>8}{'leftovers':>11}{marks}{'glued':>8}{'prose kept':>12}")
    for name, r in quality.items():
        marks = "".join(f"{r['leftovers_per_10k_words'][mark]:6.1f}" for mark in LEFTOVERS)
        print(f"{name:>28}{r['words']:8,}{r['leftovers_total_per_10k_words']:11.1f}{marks}"
              f"{r['glued_per_10k_words']:8.1f}{r['prose_kept']:12.1%}")
    for name, r in quality.items():
        print(f"glued words, {name}: {' '.join(r['glued_examples']) or '-'}")


def print_constructs(constructs):
    print("constructs of fawiki articles, in paragraphs of our own, rendered as the article shows them:")
    for name, r in constructs.items():
        print(f"{name:>28}: {r['rendered']}/{r['of']}; missed: "
              + ("; ".join(f"{construct} -> {text!r}" for construct, text in r["missed"]) or "-"))


def print_throughput(config, results):
    print(f"prepare.py --num_proc={config['num_proc']}, {'bz2' if config['compress'] else 'plain'} XML"
          + (f"; WikiExtractor --processes {config['num_proc']} on the same file" if config["peer"] else ""))
    print(f"{'XML MB':>8}{'file MB':>9}{'pages':>8}{'seconds':>9}{'XML MB/s':>10}"
          f"{'tokens':>12}{'peak RSS, largest process':>27}{'all processes':>15}")
    for r in results:
        print(f"{r['xml_mb']:8.0f}{r['file_mb']:9.1f}{r['pages']:8,}{r['seconds']:9.1f}"
              f"{r['xml_mb_per_s']:10.2f}{r['tokens']:12,}"
              f"{r['peak_rss_largest_process_mb']:24.0f} MB{r['peak_rss_all_processes_mb']:12.0f} MB")
        if "wikiextractor" in r:
            peer = r["wikiextractor"]
            print(f"{'WikiExtractor':>34}{peer['seconds']:9.1f}{peer['xml_mb_per_s']:10.2f}{'':>12}"
                  f"{peer['peak_rss_largest_process_mb']:24.0f} MB{peer['peak_rss_all_processes_mb']:12.0f} MB"
                  f"   prepare.py / WikiExtractor MB/s: {r['xml_mb_per_s'] / peer['xml_mb_per_s']:.2f}x")


def main():
    config, _ = common.configure(DEFAULTS, sys.argv[1:], config_files=False)
    header, pages, footer, sample_path = sample_pages(config)
    quality = compare_cleaners(pages, config) if config["quality"] else {}
    constructs = compare_constructs() if config["quality"] else {}
    if quality:
        print_quality(quality)
        print_constructs(constructs)
    os.makedirs(config["work_dir"], exist_ok=True)
    work = tempfile.mkdtemp(dir=config["work_dir"], prefix="bench-prepare-")
    try:
        results = measure_throughput(config, header, pages, footer, sample_path, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_throughput(config, results)
    if config["out"]:
        with common.atomic_path(config["out"]) as tmp:
            with open(tmp, "w") as f:
                json.dump(dict(config=config, quality=quality, constructs=constructs, results=results), f, indent=1,
                          ensure_ascii=False)


if __name__ == "__main__":
    common.run(main)
