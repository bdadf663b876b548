"""
What every script shares: nanoGPT-style configuration (config files and --key=value
overrides), one-line errors for bad input, atomic file writes and
prepare.py's token files. It imports no torch: prepare.py runs without it.

    config = parse_config(DEFAULTS)  # config files and --key=value only
    config, inputs = configure(DEFAULTS, sys.argv[1:], config_files=False)  # and positional inputs

Each script keeps its defaults at module level with a short comment each and passes
them here as a dict. Python config files given on the command line are executed in
order, then --key=value overrides apply; values are parsed as Python literals (bare
words stay strings) and must match the type of the default.
"""

import ast
import contextlib
import difflib
import os
import sys
import tempfile

import numpy as np


class UsageError(Exception):
    """Bad input the user can fix. Scripts report it in one line, without a traceback."""


def _checked(key, value, defaults, source):
    """The value of a known key, type-checked against its default: ints widen to floats, and a
    default of None (e.g. compile: decided at run time) accepts anything."""
    if key not in defaults:
        close = difflib.get_close_matches(key, list(defaults), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UsageError(f"unknown config key '{key}' in {source}{hint}")
    default = defaults[key]
    same_kind = isinstance(value, bool) == isinstance(default, bool)  # True is an int, but no valid one
    if default is None or same_kind and isinstance(value, type(default)):
        return value
    if same_kind and isinstance(default, float) and isinstance(value, int):
        return float(value)
    raise UsageError(f"config key '{key}' in {source} expects {type(default).__name__}, "
                     f"got {type(value).__name__} {value!r}")


def _parse_value(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError):  # TypeError: e.g. {[]: 1}, a list as a key
        return text  # bare words such as --device=cuda or --out_dir=out stay strings


def configure(defaults, argv, config_files=True):
    """Return (config, positional). With config_files, positional *.py args are executed as configs."""
    config = dict(defaults)
    positional = []
    for arg in argv:
        if arg.startswith("--"):
            key, sep, text = arg[2:].partition("=")
            if not sep:
                raise UsageError(f"expected --key=value, got '{arg}'")
            config[key] = _checked(key, _parse_value(text), defaults, "the command line")
        elif config_files and arg.endswith(".py"):
            if not os.path.isfile(arg):
                raise UsageError(f"config file not found: {arg}")
            scope = {}
            try:
                with open(arg, encoding="utf-8") as f:
                    exec(compile(f.read(), arg, "exec"), scope)
            except Exception as e:  # a broken config file is the user's to fix
                raise UsageError(f"cannot run config file {arg}: {type(e).__name__}: {e}") from e
            for key, value in scope.items():
                if key.startswith("_") or callable(value) or type(value).__name__ == "module":
                    continue
                config[key] = _checked(key, value, defaults, arg)
        else:
            positional.append(arg)
    return config, positional


def check_choice(key, value, allowed):
    """Refuse a setting that is none of `allowed`, in one line that names them."""
    if value not in allowed:
        names = [repr(choice) for choice in allowed]
        raise UsageError(f"{key} must be {', '.join(names[:-1])} or {names[-1]}, got {value!r}")


def parse_config(defaults, argv=None):
    """configure() for a script that reads only config files and --key=value (argv: sys.argv[1:] by
    default): any other argument is an error."""
    config, positional = configure(defaults, sys.argv[1:] if argv is None else argv)
    if positional:
        raise UsageError(f"unexpected argument {positional[0]!r}: give config files (*.py) and --key=value")
    return config


def first_line(error, name=False):
    """The first line of an exception's message, for one-line errors; name: after the type's name
    ("OSError: ..."). An exception without a message reads as its type's name alone."""
    text = str(error).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(error).__name__}: {line}" if name and line else line or type(error).__name__


def run(main):
    """Call main(); turn a UsageError into one line on stderr and exit code 1."""
    try:
        main()
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)  # reading the umask means setting it, so it is set back at once
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; outputs get the usual permissions
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_tokens(path):
    """A token file as a read-only uint16 array that stays on disk (np.memmap)."""
    if not os.path.isfile(path):
        raise UsageError(f"token file not found: {path} (run prepare.py first)")
    try:
        return np.memmap(path, dtype=np.uint16, mode="r")
    except ValueError as e:  # empty file, or an odd number of bytes
        raise UsageError(f"{path} is not a uint16 token file: {e}") from e
