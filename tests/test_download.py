"""Streaming a dump over HTTP: User-Agent, error statuses, resuming after a dropped or stalled
connection, multistream bz2, the published checksum and --save_dump, against a local server."""

import bz2
import hashlib
import http.server
import re
import sys
import threading
import time
import types

import pytest

import prepare
from common import UsageError

DUMP_PATH = "/fawiki/latest/fawiki-latest-pages-articles.xml.bz2"
SUMS_PATH = "/fawiki/latest/fawiki-latest-sha1sums.txt"
LISTED_NAME = "fawiki-20250601-pages-articles.xml.bz2"  # the sums file names dated files


def page(number, title, text):
    return (f"<page><title>{title}</title><ns>0</ns><id>{number}</id><revision><id>{number}</id>"
            f'<text xml:space="preserve">{text}</text></revision></page>')


TOPICS = ["تهران", "شیراز", "اصفهان", "تبریز", "مشهد", "کرمان", "یزد", "رشت"]


def multistream_dump(pages_per_stream=25, streams=8):
    """A dump as Wikimedia writes the multistream kind: a header stream, streams of pages, a footer stream."""
    parts = ['<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/"><siteinfo><sitename>ویکی‌پدیا'
             "</sitename></siteinfo>"]
    for s in range(streams):
        pages = []
        for p in range(pages_per_stream):
            n = s * pages_per_stream + p
            city = TOPICS[n % len(TOPICS)]
            text = (f"'''{city} {n}''' شهری در [[ایران]] است.&lt;ref&gt;منبع {n}&lt;/ref&gt; "
                    f"جمعیت آن در سال {1300 + n} برابر {n * 7919 % 100000} نفر بود و "
                    f"{{{{جعبه|نام={city}}}}} مردم آن به زبان فارسی سخن می‌گویند. ") * 3
            pages.append(page(n + 1, f"{city} {n}", text))
        parts.append("".join(pages))
    parts.append("</mediawiki>")
    return b"".join(bz2.compress(part.encode()) for part in parts)


DUMP = multistream_dump()


class Server:
    """A dump server on 127.0.0.1 whose misbehaviour each test sets: refuse an agent, drop or stall
    the connection once at a byte, ignore Range, answer a path with an error status, change the dump
    after a drop. It honours If-Range as RFC 9110 says: Range is ignored unless If-Range is absent or
    matches the dump's Last-Modified or its ETag, which must be strong."""

    def __init__(self):
        self.files = {DUMP_PATH: DUMP, SUMS_PATH: sums_file(DUMP)}
        self.refused_agent = "Python-urllib/"  # Python's default User-Agent, as Wikimedia refuses it
        self.drop_at = self.stall_at = None  # the next response stops after this many body bytes, once
        self.ignore_range = False
        self.etag, self.last_modified = '"dump-1"', "Sun, 01 Jun 2025 08:00:00 GMT"
        self.changed = None  # (dump, ETag, Last-Modified) served after the first drop or stall
        self.range_status = None  # an HTTP status to answer every request for a range with
        self.status = {}  # path -> HTTP status to answer with
        self.requests = []  # (path, User-Agent, Range, If-Range) of each request
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                agent, byte_range, if_range = (self.headers["User-Agent"] or "", self.headers["Range"],
                                               self.headers["If-Range"])
                server.requests.append((self.path, agent, byte_range, if_range))
                if len(server.requests) > 50:
                    return self.send_error(500, "too many requests")
                if agent.startswith(server.refused_agent):
                    return self.send_error(403, "Forbidden")
                status = server.status.get(self.path) or (byte_range and server.range_status)
                if status:
                    self.send_response(status)
                    self.send_header("Retry-After", "30")
                    self.send_header("Content-Length", "0")
                    return self.end_headers()
                if self.path not in server.files:
                    return self.send_error(404, "Not Found")
                body, start = server.files[self.path], 0
                strong_etag = server.etag if server.etag and not server.etag.startswith("W/") else None
                if byte_range and not server.ignore_range and if_range in (None, strong_etag, server.last_modified):
                    start = int(byte_range.removeprefix("bytes=").rstrip("-"))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                for name, value in (("ETag", server.etag), ("Last-Modified", server.last_modified)):
                    if value:
                        self.send_header(name, value)
                self.end_headers()
                for cut in ("drop_at", "stall_at") if self.path == DUMP_PATH else ():
                    at = getattr(server, cut)
                    if at is not None and start <= at < len(body):
                        setattr(server, cut, None)
                        if server.changed:
                            server.files[DUMP_PATH], server.etag, server.last_modified = server.changed
                        self.wfile.write(body[start:at])
                        self.wfile.flush()
                        if cut == "stall_at":
                            time.sleep(1.0)  # longer than the client's timeout in these tests
                        return  # the connection closes before Content-Length bytes were sent
                self.wfile.write(body[start:])

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}{DUMP_PATH}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def sums_file(dump_bytes, name=LISTED_NAME):
    other = hashlib.sha1(b"another file").hexdigest()
    return (f"{other}  fawiki-20250601-pages-meta-current.xml.bz2\n"
            f"{hashlib.sha1(dump_bytes).hexdigest()}  {name}\n").encode()


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setattr(prepare, "DOWNLOAD_TIMEOUT", 0.3)
    monkeypatch.setattr(prepare, "DOWNLOAD_BACKOFF", 0.01)
    server = Server()
    yield server
    server.close()


@pytest.fixture
def pauses(monkeypatch):
    """The pauses before each reconnection, in seconds, recorded instead of slept."""
    pauses = []
    monkeypatch.setattr(prepare, "time", types.SimpleNamespace(sleep=pauses.append))
    return pauses


@pytest.fixture(scope="module")
def local_documents(tmp_path_factory):
    path = tmp_path_factory.mktemp("local") / "fawiki-latest-pages-articles.xml.bz2"
    path.write_bytes(DUMP)
    documents = list(prepare.iter_documents(str(path)))
    assert len(documents) == 200 and documents[0].startswith("تهران 0\n\nتهران 0 شهری در ایران است. جمعیت")
    return documents


def download(url, **options):
    report = prepare.new_report()
    config = {**prepare.DEFAULTS, "min_chars": 0, **options}
    return [document for _, _, document in prepare.read_documents(url, report, config)], report


STREAM_STARTS = [m.start() for m in re.finditer(b"BZh91AY&SY", DUMP)]  # stream header + block magic


def test_dump_is_several_streams():
    assert len(STREAM_STARTS) == 10 and STREAM_STARTS[0] == 0


@pytest.mark.parametrize("misbehaviour, at", [
    (None, None),
    ("drop_at", len(DUMP) // 2),
    ("drop_at", STREAM_STARTS[3]),  # exactly where a bz2 stream starts
    ("drop_at", STREAM_STARTS[3] + 1),
    ("drop_at", 0),  # before the first byte: a plain new request
    ("stall_at", len(DUMP) // 3),
])
def test_streamed_documents_equal_the_local_files(server, pauses, capsys, local_documents, misbehaviour, at):
    if misbehaviour:
        setattr(server, misbehaviour, at)
    documents, report = download(server.url)
    assert documents == local_documents
    ranges = [byte_range for path, _, byte_range, _ in server.requests if path == DUMP_PATH]
    assert ranges == ([None] if misbehaviour is None else [None, f"bytes={at}-" if at else None])
    assert [agent for _, agent, _, _ in server.requests] == [prepare.USER_AGENT] * len(server.requests)
    assert report["bytes_read"] == len(DUMP)
    assert report["checksum"] == f"sha1 matches {server.url.rpartition('/')[0]}/fawiki-latest-sha1sums.txt"
    # one reconnection, after the first pause, for the reason the server gave
    assert pauses == ([] if misbehaviour is None else [prepare.DOWNLOAD_BACKOFF])
    reconnections = [line for line in capsys.readouterr().err.splitlines() if "reconnecting in" in line]
    if misbehaviour is None:
        assert reconnections == []
    else:
        problem = "the connection closed early" if misbehaviour == "drop_at" else "TimeoutError"
        assert len(reconnections) == 1 and reconnections[0].startswith(problem)
        assert f" at byte {at:,} of {len(DUMP):,}; reconnecting in " in reconnections[0]


def test_default_python_agent_gets_a_clear_403(server):
    with pytest.raises(UsageError, match=r"^HTTP 403 Forbidden from 127\.0\.0\.1:\d+: .*set --user_agent="):
        download(server.url, user_agent=f"Python-urllib/{sys.version_info.major}.{sys.version_info.minor}")


@pytest.mark.parametrize("status, message", [
    (404, r"^HTTP 404 Not Found from 127\.0\.0\.1:\d+: no such dump: http://"),
    (429, r"^HTTP 429 Too Many Requests from 127\.0\.0\.1:\d+: rate limited, retry later \(after 30 s\)$"),
    (410, r"^HTTP 410 Gone from 127\.0\.0\.1:\d+: while downloading http://"),
])
def test_error_status_says_what_to_do(server, status, message):
    server.status[DUMP_PATH] = status
    with pytest.raises(UsageError, match=message):
        download(server.url)


def test_server_that_ignores_range_after_a_drop_is_a_clear_error(server):
    server.ignore_range, server.drop_at = True, len(DUMP) // 2
    with pytest.raises(UsageError, match=r"sent the whole file again instead of the rest from byte "):
        download(server.url)


def test_server_that_ignores_range_is_fine_when_nothing_was_received(server, local_documents):
    server.ignore_range, server.drop_at = True, 0
    assert download(server.url)[0] == local_documents


def resumed_if_ranges(server):
    return [if_range for path, _, byte_range, if_range in server.requests if path == DUMP_PATH and byte_range]


def test_resume_asks_for_the_rest_of_the_same_file(server, pauses, local_documents):
    server.drop_at = len(DUMP) // 2
    assert download(server.url)[0] == local_documents
    assert resumed_if_ranges(server) == ['"dump-1"']


def test_weak_etag_resumes_with_last_modified(server, pauses, local_documents):
    # a server ignores Range when If-Range holds a weak ETag: resuming with it would get the whole file
    server.etag, server.drop_at = 'W/"dump-1"', len(DUMP) // 2
    assert download(server.url)[0] == local_documents
    assert resumed_if_ranges(server) == [server.last_modified]


@pytest.mark.parametrize("validators", [True, False])
def test_dump_changed_during_the_download_is_never_spliced(server, pauses, validators):
    half, new_dump = len(DUMP) // 2, multistream_dump(streams=9)
    del server.files[SUMS_PATH]  # no published checksum to catch it at the end
    server.drop_at, server.changed = half, (new_dump, '"dump-2"', "Mon, 02 Jun 2025 08:00:00 GMT")
    if validators:  # If-Range: the server sends the new dump whole
        sent = "the whole file again"
    else:  # nothing to send as If-Range: the size in Content-Range tells that the dump changed
        server.etag = server.last_modified = None
        server.changed = (new_dump, None, None)
        sent = f"'bytes {half}-{len(new_dump) - 1}/{len(new_dump)}'"
    message = f"sent {sent} instead of the rest from byte {half:,} of {len(DUMP):,} (it ignores Range requests, or "
    with pytest.raises(UsageError, match=re.escape(message + "the dump changed meanwhile); run again")):
        download(server.url)


def test_connection_that_keeps_failing_gives_up(server, monkeypatch):
    monkeypatch.setattr(prepare, "DOWNLOAD_RETRIES", 3)
    server.drop_at, server.range_status = len(DUMP) // 2, 503
    with pytest.raises(UsageError, match=r"failed at byte [\d,]+ of [\d,]+: HTTP 503 .*3 reconnections in a"):
        download(server.url)
    assert sum(byte_range is not None for _, _, byte_range, _ in server.requests) == 3


def test_checksum_mismatch_stops_the_stream(server):
    server.files[SUMS_PATH] = sums_file(b"a different dump")
    with pytest.raises(UsageError, match=r"sha1 [0-9a-f]{40}, but [0-9a-f]{40} is published"):
        download(server.url)


@pytest.mark.parametrize("sums, note", [
    (None, "does not exist"),
    (b"0123  fawiki-20250601-pages-meta-history.xml.bz2\n", "does not list fawiki-latest-pages-articles"),
])
def test_missing_checksum_is_noted(server, local_documents, sums, note):
    if sums is None:
        del server.files[SUMS_PATH]
    else:
        server.files[SUMS_PATH] = sums
    documents, report = download(server.url)
    assert documents == local_documents
    assert report["checksum"].startswith("not checked: ") and note in report["checksum"]


def test_early_stop_is_not_checked(server):
    documents, report = download(server.url, max_articles=5)
    assert len(documents) == 5
    assert report["checksum"].startswith("not checked: reading stopped at byte ")


def run_main(monkeypatch, *args):
    monkeypatch.setattr(sys, "argv", ["prepare.py", *map(str, args)])
    prepare.main()


def test_checksum_mismatch_leaves_no_outputs(server, monkeypatch, tmp_path):
    out_dir, saved = tmp_path / "out", tmp_path / "dumps" / "fawiki.xml.bz2"
    server.files[SUMS_PATH] = sums_file(b"a different dump")
    with pytest.raises(UsageError, match="is published for this dump"):
        run_main(monkeypatch, server.url, f"--out_dir={out_dir}", "--num_proc=1", "--vocab_size=300",
                 f"--save_dump={saved}")
    assert list(out_dir.iterdir()) == [] and list(saved.parent.iterdir()) == []


def test_save_dump_keeps_the_served_bytes(server, monkeypatch, tmp_path, local_documents):
    out_dir, saved = tmp_path / "out", tmp_path / "fawiki.xml.bz2"
    server.drop_at = len(DUMP) // 2  # a resumed download is saved whole too
    run_main(monkeypatch, server.url, f"--out_dir={out_dir}", "--num_proc=1", "--vocab_size=300",
             f"--save_dump={saved}")
    assert saved.read_bytes() == DUMP
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert list(prepare.iter_documents(str(saved))) == local_documents
    meta = (out_dir / "meta.json").read_text(encoding="utf-8")
    assert '"checksum": "sha1 matches http://127.0.0.1' in meta


def test_save_dump_of_a_partial_read_writes_nothing(server, tmp_path):
    saved = tmp_path / "fawiki.xml.bz2"
    documents, _ = download(server.url, max_articles=3, save_dump=str(saved))
    assert len(documents) == 3 and list(tmp_path.iterdir()) == []


def test_save_dump_needs_one_download(monkeypatch, tmp_path):
    local = tmp_path / "a.jsonl"
    local.write_text('{"text": "متن"}\n', encoding="utf-8")
    with pytest.raises(UsageError, match="--save_dump keeps one downloaded dump"):
        run_main(monkeypatch, local, f"--out_dir={tmp_path / 'out'}", f"--save_dump={tmp_path / 'd.bz2'}")


def test_save_dump_refuses_max_articles(monkeypatch, tmp_path):
    with pytest.raises(UsageError, match="--save_dump keeps a whole dump, which --max_articles stops reading early"):
        run_main(monkeypatch, "--max_articles=5", f"--out_dir={tmp_path / 'out'}", f"--save_dump={tmp_path / 'd.bz2'}")


@pytest.mark.parametrize("option, message", [
    ("--save_dump=/proc/nope/fawiki.xml.bz2", "cannot write --save_dump=/proc/nope/fawiki.xml.bz2: No such file"),
    ("--out_dir=/proc", "cannot write to out_dir /proc: No such file"),  # /proc holds no new directories
])
def test_unwritable_output_is_one_line(server, monkeypatch, tmp_path, option, message):
    with pytest.raises(UsageError, match=message):
        run_main(monkeypatch, server.url, f"--out_dir={tmp_path / 'out'}", "--num_proc=1", option)


def test_truncated_download_is_one_line(server):
    server.files[DUMP_PATH] = DUMP[:len(DUMP) * 2 // 3]
    del server.files[SUMS_PATH]
    with pytest.raises(UsageError, match=r"pages-articles\.xml\.bz2: truncated file .* pages / "):
        download(server.url)


def test_unreachable_host_says_so(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    with pytest.raises(UsageError, match=r"cannot download http://127\.0\.0\.1:9/.*connect.*pass the file"):
        download(f"http://127.0.0.1:9{DUMP_PATH}")
