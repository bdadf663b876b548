"""
prepare.py at the size of the real fawiki dump, end to end, against HF tokenizers training on the
same text: time and peak memory of every stage, on a synthetic dump built from the shared Persian
text (the real one cannot be downloaded here).

    pip install tokenizers                          # the peer; nothing else needs it
    python bench/bench_full_dump.py                 # ~800 MB of text in ~1 M articles, vocab 32,768
    python bench/bench_full_dump.py --text_mb=40    # a quick check that everything runs

The real dump holds ~1 M articles and ~800 MB of clean text. In the shared Persian text (news,
poetry and the fawiki samples: ~10 M words) the distinct words grow like n^0.7 with the words read,
and a tokenizer's memory and merge time follow the distinct chunks, not the bytes, so the corpus
must reproduce that growth, not just the size. It is built like this:
- base: every document of news.jsonl, poems.jsonl, the fawiki paragraphs and the sample dump,
  cleaned and normalized by prepare.py, cut at line breaks into article-sized pages of 150-750
  characters (the real dump averages ~800 bytes, ~450 Persian characters, per article);
- copies: the base is repeated until text_mb, and copy k (k = 2, 3, ...) renames W1 * (k^growth -
  (k-1)^growth) word types, W1 being the base's distinct words, so that after k copies the corpus
  has about W1 * k^growth distinct words: Heaps' law with the base's own exponent. A renamed type
  keeps its count (so the new words have the base's frequency profile: half of them occur once);
  its new form joins the start of the word to the end of another (کتابخانه + دانشگاه -> کتابگاه),
  which gives letter sequences that BPE must learn as it would new names and compounds. The
  thousand most frequent words are never renamed;
- markup: each page is written as wikitext (a bold lead word, links on ~10% of words, a
  citation template in <ref> after a third of the sentences, an infobox on 30% of pages, a
  category) in a MediaWiki XML export with one redirect page per article, bz2-compressed like the
  real dump; the cleaner takes the markup off again.
HF tokenizers (ByteLevel pre-tokenizer, BpeTrainer, RAYON_NUM_THREADS=num_proc) trains on the pages'
plain text, which is what the cleaner gives back (the title, a blank line, the text). prepare.py
trains on its train split (98% of the pages) and encodes everything; its stages are cut by the
lines it prints. The corpus is kept in work_dir and reused by later runs with the same settings.
"""

import bz2
import html
import json
import os
import random
import shutil
import sys
import time
from collections import Counter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import bench_bpe  # noqa: E402
import common  # noqa: E402
import measure  # noqa: E402
import prepare  # noqa: E402

DEFAULTS = dict(
    data_dir=os.environ.get("SHARED_DATA", os.path.join(ROOT, "..", "shared", "data")),  # real text
    text_mb=800.0,  # MB of clean text in the synthetic dump (the real one: ~800 MB)
    growth=0.7,  # distinct words grow like (words read)^growth, as in the shared text
    vocab_size=32768,  # for both tokenizers
    num_proc=2,  # prepare.py --num_proc and HF's threads
    seed=0,  # of the corpus's renames, page lengths and markup
    peer=True,  # also train HF tokenizers on the same text
    work_dir="/tmp/bench-full-dump",  # the corpus (kept for the next run) and prepare.py's output
    out=os.path.join(ROOT, "bench", "results", "full_dump.json"),  # figures as JSON; "" writes none
    hf_child="",  # internal: train HF tokenizers on this JSONL file and print its figures
)
BASE_FILES = ("persian/news.jsonl", "persian/poems.jsonl", "fawiki/fawiki-bio-paragraphs.jsonl",
              "fawiki/fawiki-sample-pages-articles.xml.bz2")
PAGE_CHARS = (150, 750)  # a page's text length is drawn uniformly from this range
KEEP_FREQUENT = 1000  # the most frequent words are never renamed
LINK_SHARE, PIPED_LINK_SHARE, REF_SHARE, INFOBOX_SHARE = 0.08, 0.02, 0.33, 0.3
COUNTED = "distinct chunks counted"  # bpe.py's line at the end of counting, which gives their number
STAGES = [("training a tokenizer", "count chunks"), (COUNTED, "learn merges"), ("merges learned", "encode")]
PAGE = """  <page>
    <title>{title}</title>
    <ns>0</ns>
    <id>{id}</id>{redirect}
    <revision>
      <id>{id}</id>
      <timestamp>2026-11-01T00:00:00Z</timestamp>
      <contributor>
        <username>Bench</username>
        <id>1</id>
      </contributor>
      <model>wikitext</model>
      <format>text/x-wiki</format>
      <text bytes="{size}" xml:space="preserve">{text}</text>
    </revision>
  </page>
"""
HEADER = """<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/" version="0.11" xml:lang="fa">
  <siteinfo>
    <sitename>ویکی‌پدیا</sitename>
    <dbname>fawiki</dbname>
  </siteinfo>
"""
FOOTER = "</mediawiki>\n"


# -----------------------------------------------------------------------------
# the synthetic corpus

def base_pages(config, rng):
    """The shared text cleaned and normalized by prepare.py, as a list of pages (lists of lines)."""
    pages = []
    for name in BASE_FILES:
        path = os.path.join(config["data_dir"], name)
        if not os.path.isfile(path):
            raise common.UsageError(f"data file not found: {path} (set --data_dir)")
        for document in prepare.iter_documents(path, num_proc=1):
            page, size, target = [], 0, rng.randint(*PAGE_CHARS)
            for line in document.split("\n"):
                if not line:
                    continue
                page.append(line)
                size += len(line)
                if size >= target:
                    pages.append(page)
                    page, size, target = [], 0, rng.randint(*PAGE_CHARS)
            if size >= prepare.DEFAULTS["min_chars"]:
                pages.append(page)
    return pages


def is_word(token):
    return len(token) >= 2 and token.replace("\u200c", "").isalpha()


def new_word(rng, word, donors, taken):
    """The start of word joined to the end of a donor word, spelled like no word so far."""
    while True:
        donor = donors[rng.randrange(len(donors))]
        candidate = word[:rng.randint(1, len(word) - 1)] + donor[rng.randint(1, len(donor) - 1):]
        if (candidate not in taken and not candidate.startswith("\u200c") and not candidate.endswith("\u200c")
                and "\u200c\u200c" not in candidate):
            taken.add(candidate)
            return candidate


def renames(rng, copy, word_counts, growth, taken):
    """{word: new word} for copy number `copy` (1 = the base, unchanged)."""
    if copy == 1:
        return {}
    distinct = len(word_counts)
    wanted = round(distinct * (copy ** growth - (copy - 1) ** growth))
    frequent = {word for word, _ in word_counts.most_common(KEEP_FREQUENT)}
    candidates = [word for word in word_counts if word not in frequent and is_word(word)]
    chosen = rng.sample(candidates, min(wanted, len(candidates)))
    return {word: new_word(rng, word, candidates, taken) for word in chosen}


def wikitext(rng, lines):
    """A page's lines as wikitext that wikitext.clean_wikitext turns back into them."""
    out = []
    for number, line in enumerate(lines):
        tokens = line.split(" ")
        for i, token in enumerate(tokens):
            draw = rng.random()
            if number == 0 and i == 0 and is_word(token):
                tokens[i] = f"'''{token}'''"
            elif draw < LINK_SHARE and is_word(token):
                tokens[i] = f"[[{token}]]"
            elif draw < LINK_SHARE + PIPED_LINK_SHARE and is_word(token):
                tokens[i] = f"[[{token} (ابهام)|{token}]]"
            elif token.endswith(".") and rng.random() < REF_SHARE:
                tokens[i] = (f"{token}<ref>{{{{یادکرد وب|عنوان={tokens[0]}|نشانی=https://example.org/"
                             f"{rng.randrange(10**6)}|تاریخ بازبینی=۱ آذر ۱۴۰۵}}}}</ref>")
        out.append(" ".join(tokens))
    text = "\n\n".join(out)
    if rng.random() < INFOBOX_SHARE:
        text = f"{{{{جعبه اطلاعات\n| نام = {lines[0][:20]}\n| تصویر = Example.jpg\n}}}}\n{text}"
    return text + "\n\n[[رده:مقاله‌های آزمایشی]]"


def build_corpus(config, dump_path, plain_path):
    """Write the synthetic dump and the plain text of its pages; returns figures about them."""
    rng = random.Random(config["seed"])
    pages = base_pages(config, rng)
    word_counts = Counter(token for page in pages for line in page for token in line.split(" "))
    taken = set(word_counts)
    text_bytes = xml_bytes = articles = copy = 0
    with bz2.open(dump_path, "wt", encoding="utf-8") as dump, open(plain_path, "w", encoding="utf-8") as plain:
        dump.write(HEADER)
        while text_bytes < config["text_mb"] * 1e6:
            copy += 1
            rename = renames(rng, copy, word_counts, config["growth"], taken)
            for page in pages:
                lines = [" ".join([rename.get(token, token) for token in line.split(" ")]) for line in page]
                title = " ".join(lines[0].split(" ")[:2])
                text = wikitext(rng, lines)
                articles += 1
                for xml in (PAGE.format(title=html.escape(title), id=2 * articles, redirect="",
                                        size=len(text.encode()), text=html.escape(text, quote=False)),
                            PAGE.format(title=f"{html.escape(title)} {articles}", id=2 * articles + 1,
                                        redirect=f'\n    <redirect title="{html.escape(title)}" />', size=0,
                                        text=f"#تغییرمسیر [[{html.escape(title)}]]")):
                    dump.write(xml)
                    xml_bytes += len(xml.encode())
                document = f"{title}\n\n" + "\n\n".join(lines)
                plain.write(json.dumps({"text": document}, ensure_ascii=False) + "\n")
                text_bytes += len(document.encode())
                if text_bytes >= config["text_mb"] * 1e6:
                    break
        dump.write(FOOTER)
    return dict(articles=articles, redirects=articles, copies=copy, text_mb=text_bytes / 1e6,
                xml_mb=(xml_bytes + len(HEADER) + len(FOOTER)) / 1e6, dump_mb=os.path.getsize(dump_path) / 1e6,
                base_distinct_words=len(word_counts), distinct_words=len(taken))


def corpus(config):
    """The corpus of these settings, built now or reused from an earlier run."""
    settings = {key: config[key] for key in ("text_mb", "growth", "seed")}
    folder = os.path.join(config["work_dir"], "corpus")
    dump_path, plain_path = os.path.join(folder, "dump.xml.bz2"), os.path.join(folder, "plain.jsonl")
    about_path = os.path.join(folder, "corpus.json")
    if os.path.isfile(about_path):
        with open(about_path, encoding="utf-8") as f:
            about = json.load(f)
        if about["settings"] == settings:
            print(f"reusing the corpus in {folder}")
            return dump_path, plain_path, about
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    start = time.time()
    about = dict(settings=settings, **build_corpus(config, dump_path, plain_path))
    print(f"built the corpus in {time.time() - start:.0f} s: {about['articles']:,} articles, "
          f"{about['text_mb']:.0f} MB of text, {about['xml_mb']:.0f} MB of XML, {about['dump_mb']:.0f} MB as bz2")
    with common.atomic_path(about_path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(about, f, indent=1)
    return dump_path, plain_path, about


# -----------------------------------------------------------------------------
# the runs

def hf_child(config):
    """Train HF tokenizers on a JSONL file, in this process; its figures as one JSON line."""
    def texts():
        with open(config["hf_child"], encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)["text"]

    tokenizer, trainer = bench_bpe.hf_bpe(config["vocab_size"])
    start = time.time()
    tokenizer.train_from_iterator(texts(), trainer)
    print(json.dumps(dict(train_s=time.time() - start, vocab_size=tokenizer.get_vocab_size())))


def run_prepare(config, dump_path):
    out_dir = os.path.join(config["work_dir"], "out")
    shutil.rmtree(out_dir, ignore_errors=True)
    run = measure.run_measured([sys.executable, os.path.join(ROOT, "prepare.py"), dump_path, f"--out_dir={out_dir}",
                                f"--vocab_size={config['vocab_size']}", f"--num_proc={config['num_proc']}"],
                               first_stage="read, clean, normalize", markers=STAGES, cwd=ROOT)
    distinct = next(line for line in run.pop("log").splitlines() if COUNTED in line)
    run["distinct_chunks"] = int(distinct.split()[1].replace(",", ""))
    with open(os.path.join(out_dir, "meta.json"), encoding="utf-8") as f:
        meta = json.load(f)
    run.update(splits=meta["splits"], inputs=meta["inputs"])
    shutil.rmtree(out_dir)
    return run


def run_hf(config, plain_path):
    run = measure.run_measured([sys.executable, os.path.abspath(__file__), f"--hf_child={plain_path}",
                                f"--vocab_size={config['vocab_size']}"], first_stage="train",
                               env=bench_bpe.hf_env(config["num_proc"]))
    run.update(json.loads(run.pop("log").strip().splitlines()[-1]))
    return run


def print_results(config, about, ours, hf):
    print(f"\nsynthetic dump: {about['articles']:,} articles (+ as many redirects), {about['text_mb']:.0f} MB "
          f"of text, {about['xml_mb']:.0f} MB of XML, {about['dump_mb']:.0f} MB bz2; "
          f"{ours['distinct_chunks']:,} distinct chunks; vocab {config['vocab_size']:,}, {config['num_proc']} processes")
    print(f"{'stage':34}{'seconds':>9}{'peak RSS, all processes':>26}{'largest process':>18}")
    for stage in ours["stages"]:
        print(f"{'prepare.py: ' + stage['name']:34}{stage['seconds']:9.0f}"
              f"{stage['peak_rss_all_processes_mb']:23.0f} MB{stage['peak_rss_largest_process_mb']:15.0f} MB")
    print(f"{'prepare.py: end to end':34}{ours['seconds']:9.0f}{ours['peak_rss_all_processes_mb']:23.0f} MB"
          f"{ours['peak_rss_largest_process_mb']:15.0f} MB")
    tokenizer_s = sum(s["seconds"] for s in ours["stages"] if s["name"] in ("count chunks", "learn merges"))
    print(f"{'bpe.py training (count + merges)':34}{tokenizer_s:9.0f}")
    if hf:
        # its train_from_iterator alone, not the start of its process: ours is timed from its stage's start
        print(f"{'HF tokenizers training':34}{hf['train_s']:9.0f}{hf['peak_rss_all_processes_mb']:23.0f} MB"
              f"{hf['peak_rss_largest_process_mb']:15.0f} MB   (bpe.py/HF time {tokenizer_s / hf['train_s']:.2f}x)")


def main():
    config, _ = common.configure(DEFAULTS, sys.argv[1:], config_files=False)
    if config["hf_child"]:
        return hf_child(config)
    os.makedirs(config["work_dir"], exist_ok=True)
    dump_path, plain_path, about = corpus(config)
    ours = run_prepare(config, dump_path)
    hf = run_hf(config, plain_path) if config["peer"] else None
    print_results(config, about, ours, hf)
    if config["out"]:
        with common.atomic_path(config["out"]) as tmp, open(tmp, "w", encoding="utf-8") as f:
            json.dump(dict(config=config, corpus=about, prepare=ours, hf=hf), f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    common.run(main)
