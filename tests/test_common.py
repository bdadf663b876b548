import os
import re

import numpy as np
import pytest

from common import UsageError, atomic_path, configure, first_line, load_tokens, parse_config

DEFAULTS = {"batch_size": 16, "learning_rate": 6e-4, "compile": False, "out_dir": "out", "peak_flops": None}


@pytest.mark.parametrize("arg, key, expected", [
    ("--batch_size=32", "batch_size", 32),
    ("--learning_rate=1e-3", "learning_rate", 1e-3),
    ("--learning_rate=1", "learning_rate", 1.0),  # ints widen to floats
    ("--compile=True", "compile", True),
    ("--out_dir=out-fawiki", "out_dir", "out-fawiki"),  # bare words stay strings
    ("--out_dir='123'", "out_dir", "123"),
    ("--peak_flops=1.5e11", "peak_flops", 1.5e11),  # None defaults accept any type
])
def test_override_parses_literals(arg, key, expected):
    config, positional = configure(DEFAULTS, [arg])
    assert config[key] == expected and type(config[key]) is type(expected)
    assert positional == []


@pytest.mark.parametrize("arg, message", [
    ("--batch_sise=32", "unknown config key 'batch_sise' in the command line; did you mean batch_size?"),
    ("--batch_size=0.5", "expects int, got float"),
    ("--compile=1", "expects bool, got int"),
    ("--batch_size=None", "expects int, got NoneType"),  # only a None default accepts None
    ("--batch_size={[]: 1}", "expects int, got str"),  # no literal (a list cannot be a key): a string
    ("--batch_size", "expected --key=value"),
    ("missing_config.py", "config file not found"),
])
def test_bad_arguments_are_one_line_errors(arg, message):
    with pytest.raises(UsageError, match=re.escape(message)) as err:
        configure(DEFAULTS, [arg])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_config_file_then_command_line(tmp_path):
    config_file = tmp_path / "cfg.py"
    config_file.write_text("import math\nbatch_size = 8\nlearning_rate = math.sqrt(1e-6)\n")
    config, _ = configure(DEFAULTS, [str(config_file), "--batch_size=4"])
    assert config["batch_size"] == 4 and config["learning_rate"] == pytest.approx(1e-3)


def test_config_file_unknown_key_names_the_file(tmp_path):
    config_file = tmp_path / "cfg.py"
    config_file.write_text("learning_rat = 1e-3\n")
    with pytest.raises(UsageError, match=r"unknown config key 'learning_rat' in .*cfg.py; did you mean learning_rate"):
        configure(DEFAULTS, [str(config_file)])


def test_positional_arguments_pass_through_without_config_files():
    config, positional = configure(DEFAULTS, ["dump.xml.bz2", "extra.py", "--batch_size=2"], config_files=False)
    assert positional == ["dump.xml.bz2", "extra.py"] and config["batch_size"] == 2


def test_parse_config_takes_config_files_and_options_only(tmp_path):
    config_file = tmp_path / "cfg.py"
    config_file.write_text("batch_size = 8\n")
    assert parse_config(DEFAULTS, [str(config_file), "--compile=True"]) == {
        **DEFAULTS, "batch_size": 8, "compile": True}
    with pytest.raises(UsageError, match="unexpected argument 'data.txt': give config files"):
        parse_config(DEFAULTS, ["--batch_size=2", "data.txt"])


def test_atomic_path_replaces_only_on_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="crash mid-write"):
        with atomic_path(str(target)) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]  # no temp file left behind
    with atomic_path(str(target)) as tmp:
        with open(tmp, "w") as f:
            f.write("new")
    assert target.read_text() == "new"


def test_atomic_path_output_has_umask_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        with atomic_path(str(tmp_path / "f.json")) as tmp:
            open(tmp, "w").close()
    finally:
        os.umask(umask)
    assert (os.stat(tmp_path / "f.json").st_mode & 0o777) == 0o644


def test_load_tokens(tmp_path):
    np.array([1, 2, 65535], dtype=np.uint16).tofile(tmp_path / "val.bin")
    tokens = load_tokens(str(tmp_path / "val.bin"))
    assert isinstance(tokens, np.memmap) and tokens.dtype == np.uint16 and tokens.tolist() == [1, 2, 65535]
    (tmp_path / "odd.bin").write_bytes(b"\x01\x02\x03")
    with pytest.raises(UsageError, match="odd.bin is not a uint16 token file"):
        load_tokens(str(tmp_path / "odd.bin"))
    with pytest.raises(UsageError, match=re.escape("token file not found: missing.bin (run prepare.py first)")):
        load_tokens("missing.bin")


@pytest.mark.parametrize("error, expected, named", [
    (ValueError("bad value\n  at line 2"), "bad value", "ValueError: bad value"),
    (RuntimeError("  \n"), "RuntimeError", "RuntimeError"), (KeyError(), "KeyError", "KeyError")])
def test_first_line_of_an_error(error, expected, named):
    assert first_line(error) == expected
    assert first_line(error, name=True) == named
