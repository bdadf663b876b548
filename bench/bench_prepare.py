"""
prepare.py on dumps of growing size: throughput (MB of XML per second) and peak memory, to show
that memory stays flat as the dump grows (the real fawiki dump is ~1.5 GB compressed).

    python bench/bench_prepare.py                    # 50 and 200 MB of XML, a few minutes on 2 cores
    python bench/bench_prepare.py --sizes=5,10       # a quick check that everything runs

Each dump repeats the genuine pages of the fawiki sample with new titles and ids, so every
article is distinct, and is written as .xml.bz2 like the real dump (or .xml with
--compress=False) into a temporary folder outside the repository. prepare.py then runs on it in
a child process with a tokenizer trained beforehand on the sample pages (or --tokenizer=PATH),
so the figures are those of the pipeline: decompression, XML parsing, cleaning, normalization
and encoding. Peak memory is read two ways: the largest single process (from wait4) and the
sum over prepare.py and its worker processes, sampled from /proc every 0.2 s (Linux only).
The sample's three pages are long (19-88 K characters of wikitext); the average fawiki article
is much shorter, which costs more per-page overhead and lowers MB/s somewhat.
"""

import bz2
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import common  # noqa: E402

DEFAULTS = dict(
    data_dir=os.environ.get("SHARED_DATA", os.path.join(ROOT, "..", "shared", "data")),  # real text
    sizes=(50, 200),  # MB of XML in each generated dump (--sizes=5,10); memory should not grow with it
    compress=True,  # write .xml.bz2 as the real dump is (False: plain .xml)
    num_proc=2,  # prepare.py --num_proc
    tokenizer="",  # an existing tokenizer.json; "" trains one of vocab_size on the sample pages first
    vocab_size=4096,  # for that tokenizer
    work_dir=tempfile.gettempdir(),  # dumps and outputs go in a temporary folder here, removed after
    out=os.path.join(ROOT, "bench", "results", "prepare.json"),  # figures as JSON; "" writes none
)
PREPARE = os.path.join(ROOT, "prepare.py")


def sample_pages(config):
    """The sample dump's text before its first page, its pages, and what follows the last one."""
    path = os.path.join(config["data_dir"], "fawiki", "fawiki-sample-pages-articles.xml.bz2")
    if not os.path.isfile(path):
        raise common.UsageError(f"sample dump not found: {path} (set --data_dir)")
    with bz2.open(path, "rt", encoding="utf-8") as f:
        xml = f.read()
    start, end = xml.index("<page>"), xml.rindex("</page>") + len("</page>")
    return xml[:start], re.findall(r"<page>.*?</page>", xml[start:end], re.S), xml[end:], path


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


def tree_rss(pid):
    """Resident bytes of a process and all its descendants, from /proc; 0 where /proc is missing."""
    total, pending = 0, [pid]
    while pending:
        pid = pending.pop()
        try:
            with open(f"/proc/{pid}/status") as f:
                total += next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    pending += map(int, f.read().split())
        except (OSError, StopIteration, ValueError):
            continue  # the process ended meanwhile
    return total


def run_prepare(args):
    """Wall seconds, peak RSS of its largest process and peak total RSS of one prepare.py run."""
    start, peak_total = time.time(), 0
    with tempfile.TemporaryFile("w+") as log:  # a file, not a pipe: progress bars could fill a pipe
        child = subprocess.Popen([sys.executable, PREPARE, *args], cwd=ROOT,
                                 stdout=log, stderr=subprocess.STDOUT)
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)  # usage: this child and its workers only
            if pid:
                break
            peak_total = max(peak_total, tree_rss(child.pid))
            time.sleep(0.2)
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            log.seek(0)
            last_line = log.read().strip().splitlines()[-1:]
            raise common.UsageError(f"prepare.py {' '.join(args)} failed: {last_line}")
    # ru_maxrss is in KiB on Linux
    return time.time() - start, usage.ru_maxrss * 1024, peak_total


def main():
    config, _ = common.configure(DEFAULTS, sys.argv[1:], config_files=False)
    sizes = [float(size) for size in config["sizes"]]
    header, pages, footer, sample_path = sample_pages(config)
    os.makedirs(config["work_dir"], exist_ok=True)
    work = tempfile.mkdtemp(dir=config["work_dir"], prefix="bench-prepare-")
    results = []
    try:
        tokenizer = config["tokenizer"]
        if not tokenizer:
            run_prepare([sample_path, f"--out_dir={work}/tokenizer", f"--vocab_size={config['vocab_size']}",
                         "--num_proc=1"])
            tokenizer = os.path.join(work, "tokenizer", "tokenizer.json")
        for size in sizes:
            dump = os.path.join(work, f"dump-{size:g}mb.xml" + (".bz2" if config["compress"] else ""))
            xml_bytes, n_pages = write_dump(dump, header, pages, footer, size, config["compress"])
            out_dir = os.path.join(work, f"out-{size:g}mb")
            args = [dump, f"--out_dir={out_dir}", f"--tokenizer={tokenizer}", f"--num_proc={config['num_proc']}"]
            seconds, peak_process, peak_total = run_prepare(args)
            with open(os.path.join(out_dir, "meta.json"), encoding="utf-8") as f:
                splits = json.load(f)["splits"]
            results.append(dict(
                xml_mb=xml_bytes / 1e6, file_mb=os.path.getsize(dump) / 1e6, pages=n_pages, seconds=seconds,
                xml_mb_per_s=xml_bytes / 1e6 / seconds,
                tokens=sum(s["tokens"] for s in splits.values()),
                text_mb=sum(s["bytes"] for s in splits.values()) / 1e6,
                peak_rss_largest_process_mb=peak_process / 2**20,
                peak_rss_all_processes_mb=peak_total / 2**20))
            os.remove(dump)
            shutil.rmtree(out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"prepare.py --num_proc={config['num_proc']}, {'bz2' if config['compress'] else 'plain'} XML")
    print(f"{'XML MB':>8}{'file MB':>9}{'pages':>8}{'seconds':>9}{'XML MB/s':>10}"
          f"{'tokens':>12}{'peak RSS, largest process':>27}{'all processes':>15}")
    for r in results:
        print(f"{r['xml_mb']:8.0f}{r['file_mb']:9.1f}{r['pages']:8,}{r['seconds']:9.1f}"
              f"{r['xml_mb_per_s']:10.2f}{r['tokens']:12,}"
              f"{r['peak_rss_largest_process_mb']:24.0f} MB{r['peak_rss_all_processes_mb']:12.0f} MB")
    if config["out"]:
        with common.atomic_path(config["out"]) as tmp:
            with open(tmp, "w") as f:
                json.dump(dict(config=config, results=results), f, indent=1)


if __name__ == "__main__":
    common.run(main)
