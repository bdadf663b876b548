"""
Time and memory of a command run as a child process, for the benchmarks: wall seconds, and the
peak RSS of its largest process and summed over the program and all its worker processes, both
sampled from /proc every 0.2 s (Linux only). wait4's ru_maxrss is not used: it also counts the
child as it was forked, before exec, with all of the benchmark's own memory. The sum counts pages
that forked workers still share with their parent once per process, so it is an upper bound.

Optionally the run is cut into stages by lines the program prints (stdout or stderr): a stage
starts when its marker line appears and ends when the next one does, and each gets its own
seconds and peaks.
"""

import os
import re
import subprocess
import tempfile
import time

import common

SAMPLE_SECONDS = 0.2


def tree_rss(pid):
    """(sum, largest) of the resident bytes of a process and all its descendants, from /proc."""
    total, largest, pending = 0, 0, [pid]
    while pending:
        pid = pending.pop()
        try:
            with open(f"/proc/{pid}/status") as f:
                rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
            total, largest = total + rss, max(largest, rss)
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    pending += map(int, f.read().split())
        except (OSError, StopIteration, ValueError):
            continue  # the process ended meanwhile
    return total, largest


def run_measured(command, first_stage="run", markers=(), cwd=None, env=None):
    """Run a command to its end; returns dict(seconds, peak_rss_largest_process_mb,
    peak_rss_all_processes_mb, stages, log). markers: (text, stage name) pairs in the order the
    program prints them; the run starts in first_stage."""
    stages = [dict(name=first_stage, start=0.0, peak_rss_all_processes_mb=0.0, peak_rss_largest_process_mb=0.0)]
    pending_markers = list(markers)
    start, output, unfinished = time.time(), [], ""
    with tempfile.NamedTemporaryFile("w+", encoding="utf-8") as log:  # a pipe could fill up and block
        child = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        with open(log.name, encoding="utf-8", errors="replace") as reader:
            while True:
                pid, status = os.waitpid(child.pid, os.WNOHANG)
                now = time.time() - start
                output.append(reader.read())
                *lines, unfinished = re.split(r"[\r\n]", unfinished + output[-1])
                for line in lines:
                    if pending_markers and pending_markers[0][0] in line:
                        stages[-1]["end"] = now
                        stages.append(dict(name=pending_markers.pop(0)[1], start=now,
                                           peak_rss_all_processes_mb=0.0, peak_rss_largest_process_mb=0.0))
                if pid:
                    break
                total, largest = tree_rss(child.pid)
                stage = stages[-1]
                stage["peak_rss_all_processes_mb"] = max(stage["peak_rss_all_processes_mb"], total / 2**20)
                stage["peak_rss_largest_process_mb"] = max(stage["peak_rss_largest_process_mb"], largest / 2**20)
                time.sleep(SAMPLE_SECONDS)
    seconds = time.time() - start
    stages[-1]["end"] = seconds
    for stage in stages:
        stage["seconds"] = stage.pop("end") - stage.pop("start")
    text = "".join(output)
    if os.waitstatus_to_exitcode(status) != 0:
        raise common.UsageError(f"{' '.join(map(str, command))} failed: {text.strip().splitlines()[-1:]}")
    return dict(seconds=seconds,
                peak_rss_largest_process_mb=max(s["peak_rss_largest_process_mb"] for s in stages),
                peak_rss_all_processes_mb=max(s["peak_rss_all_processes_mb"] for s in stages),
                stages=stages, log=text)
