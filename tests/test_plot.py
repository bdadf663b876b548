import json
import struct
import subprocess
import sys

import pytest

import plot
from common import UsageError
from conftest import ROOT


def write_log(run_dir, steps=6, eval_every=3, seconds_per_step=30.0):
    """A log.jsonl as train.py writes it: the run's description, then steps and evaluations."""
    run_dir.mkdir(parents=True, exist_ok=True)
    records = [{"iter": 0, "params": 1000, "device": "cpu"}]
    for i in range(steps + 1):
        if i % eval_every == 0:
            records.append({"iter": i, "train_loss": 6.0 - 0.3 * i, "val_loss": 6.1 - 0.3 * i,
                            "train_s": i * seconds_per_step})
        if i > 0:
            records.append({"iter": i, "loss": 6.0 - 0.25 * i, "lr": 1e-3, "train_s": i * seconds_per_step})
    (run_dir / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return run_dir


def png_size(path):
    """(width, height) of a PNG file, read from its IHDR chunk after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture
def figures(monkeypatch):
    """The figures plot.plot drew, kept open for inspection instead of closed."""
    drawn, close = [], plot.plt.close
    monkeypatch.setattr(plot.plt, "close", drawn.append)
    yield drawn
    for figure in drawn:
        close(figure)


def test_writes_a_png_of_one_run_beside_its_log(tmp_path, figures, capsys):
    run_dir = write_log(tmp_path / "run")
    plot.main([str(run_dir)])
    assert png_size(run_dir / "loss.png") == (9 * 120, round(5.5 * 120))  # figsize in inches x dpi
    assert f"wrote {run_dir / 'loss.png'}" in capsys.readouterr().out
    (axes,) = figures[0].axes
    assert axes.get_xlabel() == "optimizer step"
    steps, train, val = axes.get_lines()
    assert list(steps.get_xdata()) == [1, 2, 3, 4, 5, 6]
    assert list(val.get_xdata()) == [0, 3, 6] and list(val.get_ydata()) == pytest.approx([6.1, 5.2, 4.3])
    assert list(train.get_ydata()) == pytest.approx([6.0, 5.1, 4.2])


def test_several_runs_against_training_minutes(tmp_path, figures):
    runs = [write_log(tmp_path / "a"), write_log(tmp_path / "b", seconds_per_step=90.0)]
    out = tmp_path / "figures" / "compare.png"
    plot.main([*map(str, runs), f"--out={out}", "--x=minutes"])
    assert png_size(out) == (1080, 660)
    assert not (runs[0] / "loss.png").exists()
    (axes,) = figures[0].axes
    assert axes.get_xlabel() == "training minutes"
    lines = axes.get_lines()
    assert len(lines) == 6  # steps, train and val of each run
    assert list(lines[2].get_xdata()) == pytest.approx([0, 1.5, 3.0])  # run a: 30 s a step
    assert list(lines[5].get_xdata()) == pytest.approx([0, 4.5, 9.0])  # run b: 90 s a step
    assert [text.get_text() for text in axes.get_legend().get_texts()] == [
        "a train", "a val (last 4.300)", "b train", "b val (last 4.300)"]


@pytest.mark.parametrize("log, message", [
    (None, "no log at"),
    ('{"iter": 1, "loss": 5.0, "train_s": 1}\nnot json\n', "line 2 is not JSON"),
    ('[1, 2]\n', "line 1 is not a train.py log record"),
    ('{"iter": 0, "params": 1000}\n', "holds no training steps or evaluations yet"),
])
def test_a_bad_log_is_a_one_line_error_and_writes_nothing(tmp_path, log, message):
    good, bad = write_log(tmp_path / "good"), tmp_path / "bad"
    bad.mkdir()
    if log is not None:
        (bad / "log.jsonl").write_text(log, encoding="utf-8")
    with pytest.raises(UsageError, match=message):
        plot.main([str(good), str(bad)])
    assert not (good / "loss.png").exists()


@pytest.mark.parametrize("args, message", [
    ([], "give one or more run directories"),
    (["--x=steps"], "x must be 'iter' or 'minutes', got 'steps'"),
    (["--y=loss"], "unknown config key 'y'"),
])
def test_bad_options_are_one_line_errors(tmp_path, args, message):
    run_dir = write_log(tmp_path / "run")
    with pytest.raises(UsageError, match=message):
        plot.main(([str(run_dir)] if args else []) + args)


def test_command_line_error_is_one_line_without_a_traceback(tmp_path):
    result = subprocess.run([sys.executable, "plot.py", str(tmp_path / "nowhere")], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: no log at {tmp_path / 'nowhere' / 'log.jsonl'} "
                                                  f"(give the out_dir of a train.py run)"]
