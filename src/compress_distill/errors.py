"""One error policy for every command, and one redaction of secrets for every message.

An *expected* failure -- something the user can fix: params, a missing, corrupt or mistyped input, text that
is not UTF-8, a missing model, a broken template, the Hub or the network -- ends the command with one line on
stderr that says what is wrong, where (file, column, option or params key path) and how to fix it, and exit
code 2.  Anything else is a bug and keeps its traceback.  ``--debug`` (or ``COMPRESS_DISTILL_DEBUG=1``) prints
the traceback of expected failures too.  ``guard`` applies the policy; ``cli.py`` wraps every command with it
once, so stage ``main`` functions carry no handler of their own.

The package's own expected failures subclass ``UserError`` (``ConfigError``, ``SchemaError``, ``StageError``
...).  Library exceptions are recognised by class, and only if their library is already imported (an error
cannot come from a module nobody loaded), so classifying never imports torch or transformers.

``redact`` is the single scrubber of credentials: every line this module prints goes through it, and so do
the openai backend's and the Hub stages' error messages.  This module imports nothing of the package, so
``config`` can use it too.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import math
import os
import re
import sys
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

DEBUG_ENV = "COMPRESS_DISTILL_DEBUG"
EXIT_USER_ERROR = 2  # the exit code of every expected failure (click uses 2 for usage errors as well)

P = ParamSpec("P")
R = TypeVar("R")


class UserError(Exception):
    """Base of the package's expected failures: the message says what is wrong, where and how to fix it."""


class StageError(UserError, RuntimeError):
    """An input a stage cannot work with (e.g. an upstream stage accepted no rows); the message says why."""


# --------------------------------------------------------------------------------------------- redaction
# Credential shapes: OpenAI/Anthropic ``sk-``, Hugging Face ``hf_``, Groq ``gsk_``, GitHub ``ghp_``/``github_pat_``,
# Slack ``xox?-``, and whatever follows ``Bearer`` in an echoed Authorization header.  The prefix is kept
# ("hf_***") so a message still says which credential was involved.
_SHAPED = re.compile(r"\b(sk-|hf_|gsk_|ghp_|gho_|github_pat_|xox[abpr]-)[A-Za-z0-9_\-]{8,}")
_BEARER = re.compile(r"\b((?i:bearer|token)\s+)[^\s'\",;]+")
# Long opaque strings of mixed case and digits: keys with a prefix this list does not know.  '/', '.' and '-' are
# not part of a candidate so paths and model ids (``org/Model-7B-FP8``) are left alone.
_OPAQUE = re.compile(r"[A-Za-z0-9_+=]{32,}")
_OPAQUE_MIN_BITS_PER_CHAR = 4.0  # random base62 of length 32+ scores ~4.6-5.0; words and hex digests < 4
_OPAQUE_UPPER_SHARE = (0.25, 0.75)  # share of upper-case letters; random base62 has 0.5
# Environment variables whose values are secrets wherever they appear (HF_TOKEN, OPENAI_API_KEY ...).
_SECRET_ENV_NAME = re.compile(
    r"(?:^|_)(?:API_?KEY|KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)$", re.IGNORECASE
)
_SECRET_MIN_CHARS = 8  # shorter values ("1", "true") would blank out ordinary words
MASK = "***"


def _bits_per_char(text: str) -> float:
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def _is_opaque(token: str) -> bool:
    letters = [c for c in token if c.isalpha()]
    upper = sum(c.isupper() for c in letters) / max(1, len(letters))
    return (
        any(c.isdigit() for c in token)
        # random keys are about half upper case; CamelCase words and identifiers are mostly lower or upper
        and _OPAQUE_UPPER_SHARE[0] <= upper <= _OPAQUE_UPPER_SHARE[1]
        and _bits_per_char(token) >= _OPAQUE_MIN_BITS_PER_CHAR
    )


def looks_like_credential(value: str) -> bool:
    """True for a value shaped like a key or token (see the patterns above); pure, environment-independent."""
    return bool(
        _SHAPED.search(value)
        or _BEARER.search(value)
        or any(_is_opaque(m.group(0)) for m in _OPAQUE.finditer(value))
    )


def secret_env_values() -> list[str]:
    """Values of the environment variables named like secrets (``*_TOKEN``, ``*_API_KEY`` ...)."""
    return [v for k, v in os.environ.items() if _SECRET_ENV_NAME.search(k) and len(v) >= _SECRET_MIN_CHARS]


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every known secret (``secrets`` and secret-named environment variables) and everything
    shaped like a credential replaced by ``***``."""
    for secret in sorted({s for s in [*secrets, *secret_env_values()] if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _SHAPED.sub(lambda m: m.group(1) + MASK, text)
    text = _BEARER.sub(lambda m: m.group(1) + MASK, text)
    return _OPAQUE.sub(lambda m: MASK if _is_opaque(m.group(0)) else m.group(0), text)


def redact_logs() -> None:
    """Pass every log message (ours and the libraries') through ``redact``; the CLI installs this once."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "redacting", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return record  # a malformed call: logging reports it when the record is emitted
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return record

    factory.redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


# --------------------------------------------------------------------------------------------- debug flag
_debug = False


def set_debug(on: bool) -> None:
    global _debug
    _debug = on


def debug_enabled() -> bool:
    return _debug or os.environ.get(DEBUG_ENV, "").lower() not in ("", "0", "false", "no")


# --------------------------------------------------------------------------------------------- classifying
def _loaded(module: str, *names: str) -> tuple[type[BaseException], ...]:
    """Exception classes ``module.name`` -- only if ``module`` is already imported (see the module doc)."""
    mod = sys.modules.get(module)
    return tuple(getattr(mod, n) for n in names if mod is not None and hasattr(mod, n))


def _network_errors() -> tuple[type[BaseException], ...]:
    return (
        *_loaded(
            "huggingface_hub.errors",
            "HfHubHTTPError",
            "OfflineModeIsEnabled",
            "HFValidationError",
            "LocalEntryNotFoundError",
        ),
        *_loaded("httpx", "HTTPError"),
        *_loaded("requests.exceptions", "RequestException"),
        *_loaded("datasets.exceptions", "DatasetNotFoundError"),
        ConnectionError,
        TimeoutError,
    )


# transformers reports a missing model, an unreachable Hub and offline mode as a bare OSError/ValueError
_MODEL_MISSING = re.compile(
    r"is not a local folder|not a valid model identifier|couldn't connect to|offline mode|"
    r"Repo id must|does not appear to have a file named|Incorrect path_or_model_id|We couldn't connect",
    re.IGNORECASE,
)
_CHAT_TEMPLATE = re.compile(r"chat.template", re.IGNORECASE)


def _one_line(text: str) -> str:
    """Join a multi-line message ("invalid params in X:\\n  - key: ...") into one line."""
    parts = [p.strip().removeprefix("- ").strip() for p in str(text).splitlines()]
    parts = [p for p in parts if p]
    if not parts:
        return ""
    head, rest = parts[0], parts[1:]
    return head + (" " + "; ".join(rest) if rest else "")


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _path_options(options: Mapping[str, Any]) -> dict[str, Path]:
    """The command's file and folder options (Typer passes ``Path``-typed options as ``Path``)."""
    return {k: v for k, v in options.items() if isinstance(v, Path) and k != "params"}


def _option_for(path: str | Path | None, options: Mapping[str, Any]) -> str | None:
    """The option whose value is ``path`` or a folder above it (``--questions``), if any."""
    if not path:
        return None
    target = Path(path).absolute()
    for name, value in _path_options(options).items():
        value = value.absolute()
        if target == value or value in target.parents:
            return _option(name)
    return None


def _where_option(msg: str, options: Mapping[str, Any]) -> str:
    """The suffix " (option --questions)" when ``msg`` mentions the value of a path option (and not the option)."""
    by_length = sorted(_path_options(options).items(), key=lambda kv: -len(str(kv[1])))
    for name, value in by_length:
        if str(value) in msg and _option(name) not in msg:
            return f" (option {_option(name)})"
    return ""


def _parquet_problem(options: Mapping[str, Any]) -> str | None:
    """Which Parquet input is unreadable, or which string column holds bytes that are not UTF-8.

    Run only after a failure: pyarrow's messages for both name neither the file nor the column.
    """
    pq = sys.modules.get("pyarrow.parquet")
    pa = sys.modules.get("pyarrow")
    if pq is None or pa is None:
        return None
    for name, path in _path_options(options).items():
        if not (path.is_file() and path.suffix == ".parquet"):
            continue
        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as err:
            return (
                f"{path} (option {_option(name)}) is not a readable Parquet file, corrupt or truncated "
                f"({_one_line(str(err))}); delete it and re-run the stage that writes it (dvc repro)"
            )
        for field in table.schema:
            if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
                try:
                    table.column(field.name).validate(full=True)
                except pa.ArrowInvalid:
                    return (
                        f"{path} (option {_option(name)}): column {field.name!r} holds bytes that are not "
                        "valid UTF-8; re-encode the file as UTF-8 (or fix the tool that wrote it)"
                    )
    return None


def _text_problem(options: Mapping[str, Any]) -> str | None:
    """The params file, if it is the input that is not UTF-8."""
    params = options.get("params")
    if isinstance(params, Path) and params.is_file():
        try:
            params.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            return f"{params} (option --params) is not valid UTF-8 (byte {err.start}: {err.reason}); save it as UTF-8"
    return None


def _params_keys(value: str, options: Mapping[str, Any]) -> list[str]:
    """Key paths in the command's params file whose value is ``value`` (``teachers.smol.model``)."""
    params = options.get("params")
    if not value or not isinstance(params, (str, Path)) or not Path(params).is_file():
        return []
    import yaml

    try:
        data = yaml.safe_load(Path(params).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []
    found: list[str] = []

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{prefix}.{i}")
        elif node == value:
            found.append(prefix)

    walk(data, "")
    return found


def _params_value(message: str, options: Mapping[str, Any]) -> tuple[str, str]:
    """The first quoted value of ``message`` that params holds, and the suffix " (params key a.b.c in ...)"."""
    for quoted in re.findall(r"'([^'\s]+)'|\"([^\"\s]+)\"", message):
        value = quoted[0] or quoted[1]
        keys = _params_keys(value, options)
        if keys:
            return value, f" (params key {', '.join(keys)} in {options['params']})"
    return "", ""


def _where_in_params(message: str, options: Mapping[str, Any]) -> str:
    return _params_value(message, options)[1]


def _is_local_path(value: str) -> bool:
    """A model value meant as a folder: absolute/relative-looking, or inside a folder that exists here
    (``models/RUN``); ``org/name`` is a Hub id unless ``org/`` is a local folder."""
    return value.startswith(("/", "./", "../", "~")) or Path(value).parent.is_dir() and "/" in value


def _chain(err: BaseException) -> list[BaseException]:
    """``err`` and the exceptions it was raised from (libraries often wrap a network error in an OSError)."""
    out: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in out:
        out.append(current)
        current = current.__cause__  # explicit ``raise ... from``: an implicit context may be unrelated
    return out


def describe(err: BaseException, options: Mapping[str, Any] | None = None) -> str | None:
    """The one line for an expected failure (redacted), or ``None`` for a bug.

    ``options`` are the command's arguments by parameter name; they let the line name the option a file
    came from and the params key a value came from.
    """
    options = options or {}
    line = _classify(err, options)
    return None if line is None else redact(line)


def _classify(err: BaseException, options: Mapping[str, Any]) -> str | None:
    msg = _one_line(str(err))
    if isinstance(err, UserError):
        return msg + _where_option(msg, options)
    for link in _chain(err):
        network = _network_errors()
        link_msg = _one_line(str(link))
        if isinstance(link, network) or (isinstance(link, OSError) and _MODEL_MISSING.search(link_msg)):
            value, where = _params_value(link_msg, options)
            where = where or _where_option(link_msg, options)
            if value and _is_local_path(value) and not Path(value).expanduser().exists():
                return (
                    f"model directory {value} does not exist{where}; fix the path, or produce the model first "
                    "(e.g. dvc repro train@RUN)"
                )
            return (
                f"{type(link).__name__}: {link_msg}{where}; check the model id or local path, the network "
                "(HF_ENDPOINT, proxies), the login (`hf auth login` or HF_TOKEN) and HF_HUB_OFFLINE"
            )
    if isinstance(err, FileNotFoundError | NotADirectoryError) and not err.filename:
        # raised by the package with its own fix-it message ("X does not exist; run the stage ...")
        return msg + _where_option(msg, options)
    if isinstance(err, FileNotFoundError | NotADirectoryError):
        option = _option_for(err.filename, options)
        where = f" (option {option})" if option else _where_in_params(f"'{err.filename}'", options)
        return f"{msg}{where}; check the path, or run the stage that produces it (dvc repro)"
    if isinstance(err, PermissionError):
        return f"{msg}; check the file's permissions or choose another output path"
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return f"{msg}; free disk space (or point the outputs elsewhere) and re-run"
    arrow = _loaded("pyarrow.lib", "ArrowException")
    if isinstance(err, UnicodeError) or (arrow and isinstance(err, arrow)):
        problem = _parquet_problem(options) or _text_problem(options)
        if problem is not None:
            return problem
        if arrow and isinstance(err, arrow) and "Parquet" in msg:
            return f"{msg}; delete the file and re-run the stage that writes it (dvc repro)"
        return None
    jinja = _loaded("jinja2.exceptions", "TemplateError")
    if jinja and isinstance(err, jinja):
        where = ""
        if getattr(err, "filename", None) or getattr(err, "lineno", None):
            where = f" ({getattr(err, 'filename', None) or 'template'} line {getattr(err, 'lineno', '?')})"
        return (
            f"chat template error{where}: {msg}; fix the template (the file named by student.chat_template in "
            "params, or the model folder's chat_template.jinja / tokenizer_config.json)"
        )
    if isinstance(err, ValueError) and _CHAT_TEMPLATE.search(msg) and "tokenizer" in msg:
        return f"{msg}; set student.chat_template to a Jinja template file in params"
    return None


class HubError(UserError, ConnectionError):
    """A Hub or network call failed; the message is redacted and says what to check."""


def is_network_error(err: BaseException) -> bool:
    return any(isinstance(link, _network_errors()) for link in _chain(err))


@contextlib.contextmanager
def hub_errors(what: str, fix: str) -> Iterator[None]:
    """Inside the block, a Hub or network failure becomes one redacted ``HubError``: ``what`` failed, the
    server's reason, and ``fix``.  The original is dropped (``from None``): its text may carry a credential
    that a server echoed back, and ``--debug`` would print it."""
    try:
        yield
    except Exception as err:
        if not is_network_error(err):
            raise
        reason = redact(f"{type(err).__name__}: {_one_line(str(err))}")
        raise HubError(f"{what} failed: {reason}; {fix}") from None


# --------------------------------------------------------------------------------------------- the guard
EXIT_BUG = 1  # what Python itself exits with on an uncaught exception


def report(err: BaseException, options: Mapping[str, Any] | None = None) -> int:
    """Print what the policy shows for ``err`` on stderr and return the exit code: one line and 2 for an
    expected failure (its traceback before it with ``--debug``), the traceback and 1 for a bug.  Tracebacks
    are redacted too: a bug's message may quote a server's answer."""
    line = describe(err, options)
    if line is None or debug_enabled():
        print(redact("".join(traceback.format_exception(err))), file=sys.stderr, end="", flush=True)
    if line is None:
        return EXIT_BUG
    print(f"error: {line}", file=sys.stderr, flush=True)
    return EXIT_USER_ERROR


def guard(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` under the policy (see ``report``); it exits instead of raising."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - every failure is classified; a bug still gets its traceback
            raise SystemExit(report(err, kwargs)) from None

    return wrapper
