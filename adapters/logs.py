"""JSON-lines logging with secret redaction, structured events, and state-dump files.

This module owns the root logger's Vigil handlers (a file under ``logs_dir`` and, optionally,
stderr), the redaction rules they apply, and the ``state-dump-*.json`` files in ``logs_dir``.

The caller never writes: the root logger holds one ``QueueHandler`` that freezes the record
(message merged with its args, exception text formatted) and puts it on a queue; a
``QueueListener`` thread (``vigil-log-writer``) redacts, encodes and writes it. A line costs
the caller a few microseconds instead of the JSON encoding, the regexes and the file and
stderr writes (~100-1000 us under load). The order of lines is the order of the calls.
Flushing: ``flush_logging`` waits until every line queued before it is written;
``shutdown_logging`` and an ``atexit`` hook stop the writer after it has written everything
queued, so a clean exit (engine stop, SIGTERM, end of ``main``) loses no line. A process
killed outright (SIGKILL, OOM) loses the lines still queued: at most the few milliseconds
before the kill. Extra fields are encoded on the writer thread, so a mutable field (a dict,
a list) changed right after the call may be written with the change; pass immutable values.

One line per record: ``ts`` (ISO-8601 UTC), ``level``, ``logger``, ``event`` (``LOG`` unless
given), ``message``, ``thread``, every extra field, and ``exc`` when there is an exception.
Extra fields may be msgspec structs, Decimals (written as strings), enums or anything with a
``str``; a field that cannot be encoded is written as its ``repr``, never dropped with the line.
In a rehearsal of LIVE (``configure_logging(rehearsal=True)``) every line also carries
``"rehearsal": "REHEARSAL"`` and its message starts with ``REHEARSAL ``.

Redaction runs in a handler filter, so it covers records from every library, not only ours:
each configured secret value, ``Bearer <credential>``, ``token=<value>`` (and ``password=``,
``api_key=``...), and any extra field whose name says it is a secret.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import os
import queue
import re
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

__all__ = [
    "REDACTED",
    "ErrorRepeats",
    "JsonFormatter",
    "RedactingFilter",
    "Redactor",
    "configure_logging",
    "current_redactor",
    "flush_logging",
    "log_event",
    "shutdown_logging",
    "write_state_dump",
]

REDACTED = "[REDACTED]"
_REHEARSAL = "REHEARSAL"
_REHEARSAL_PREFIX = "REHEARSAL "

# Shorter "secrets" would shred ordinary words in every line; nothing that short is secret.
_MIN_SECRET_LENGTH = 4
_SECRET_KEY_WORDS = r"(?:token|password|passwd|secret|api_?key|enctoken|authorization)"
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/]+=*")
_KEY_EQUALS = re.compile(rf"(?i)\b(\w*{_SECRET_KEY_WORDS})=([^\s&\"',;]+)")
_JSON_KEY = re.compile(rf"(?i)(\"\w*{_SECRET_KEY_WORDS}\"\s*:\s*\")([^\"]*)(\")")
_SECRET_FIELD_NAME = re.compile(rf"(?i)^\w*{_SECRET_KEY_WORDS}$")
# Each of the three patterns above needs one of these words, so text without any of them
# skips the three substitutions (one search instead of three subs: most lines have none).
_ANY_SECRET_WORD = re.compile(rf"(?i)bearer|{_SECRET_KEY_WORDS}")

# Attributes every LogRecord has; anything else on a record came in through ``extra``.
_RECORD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys() | {"message", "asctime"}
)
_OUTPUT_KEYS = frozenset({"ts", "level", "logger", "event", "message", "thread", "exc"})
# Where JsonFormatter keeps a record's line, so the file and stderr handlers encode it once.
_LINE_ATTRIBUTE = "_vigil_json_line"
_DUMP_KIND = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_WRITER_THREAD_NAME = "vigil-log-writer"
_FLUSH_TIMEOUT_S = 5.0

_configure_lock = threading.Lock()
_current_redactor: Redactor | None = None


class Redactor:
    """Replaces secret values and secret-looking patterns in text and nested values."""

    def __init__(self, secrets: Sequence[str] = ()) -> None:
        values = {secret for secret in secrets if secret and len(secret) >= _MIN_SECRET_LENGTH}
        # Longest first, so a secret that contains another is replaced whole.
        ordered = sorted(values, key=len, reverse=True)
        self.secret_values: tuple[str, ...] = tuple(ordered)
        self._secrets = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def text(self, value: str) -> str:
        """``value`` with every secret and secret-looking pattern replaced by ``[REDACTED]``."""
        if self._secrets is not None:
            value = self._secrets.sub(REDACTED, value)
        if _ANY_SECRET_WORD.search(value) is None:
            return value
        value = _BEARER.sub(rf"\1 {REDACTED}", value)
        value = _KEY_EQUALS.sub(rf"\1={REDACTED}", value)
        return _JSON_KEY.sub(rf"\1{REDACTED}\3", value)

    def value(self, value: Any, *, name: str | None = None) -> Any:
        """A JSON-ready copy of ``value`` with secrets redacted (structs become dicts)."""
        if (
            name is not None
            and _SECRET_FIELD_NAME.match(name)
            and not isinstance(value, bool)  # "has_token": true says nothing secret
            and value not in (None, "")
        ):
            return REDACTED
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, bool | int | float) or value is None:
            return value
        if isinstance(value, Mapping):
            return {str(key): self.value(item, name=str(key)) for key, item in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.value(item) for item in value]
        try:
            builtin = msgspec.to_builtins(value, enc_hook=str)
        except Exception:
            return self.text(repr(value))
        if isinstance(builtin, str):
            return self.text(builtin)
        return self.value(builtin, name=name)


class RedactingFilter(logging.Filter):
    """Handler filter: rewrites the record's message, extra fields and exception text."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor
        self._exception_formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        # Records are shared between handlers; redacting twice is harmless.
        record.msg = self.redactor.text(_safe_message(record))
        record.args = None
        for key, value in list(vars(record).items()):
            if key not in _RECORD_ATTRIBUTES:
                setattr(record, key, self.redactor.value(value, name=key))
        if record.exc_info and not record.exc_text:
            record.exc_text = self._exception_formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redactor.text(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor.text(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring for the keys).

    ``rehearsal``: LIVE is being rehearsed on the paper venue (``EngineConfig.rehearsal``):
    every line carries ``"rehearsal": "REHEARSAL"`` and its message starts with
    ``REHEARSAL ``, so no line read out of context can pass for real LIVE trading.
    """

    def __init__(self, *, rehearsal: bool = False) -> None:
        super().__init__()
        self.rehearsal = rehearsal

    def format(self, record: logging.LogRecord) -> str:
        encoded = record.__dict__.get(_LINE_ATTRIBUTE)
        if encoded is not None:
            return str(encoded)
        line: dict[str, Any] = {
            "ts": _iso_utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "event": str(getattr(record, "event", None) or "LOG"),
            "message": _safe_message(record),
            "thread": record.threadName,
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and key not in _OUTPUT_KEYS and key != _LINE_ATTRIBUTE:
                line[key] = value
        if self.rehearsal:
            # After the extra fields: an extra named "rehearsal" cannot hide the tag.
            line["rehearsal"] = _REHEARSAL
            if not line["message"].startswith(_REHEARSAL_PREFIX):
                line["message"] = _REHEARSAL_PREFIX + line["message"]
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        encoded = _encode_line(line)
        setattr(record, _LINE_ATTRIBUTE, encoded)
        return encoded


class _FlushRequest:
    """Queued behind the records to flush; the writer sets ``written`` when it reaches it."""

    def __init__(self) -> None:
        self.written = threading.Event()


class _RecordQueueHandler(logging.handlers.QueueHandler):
    """The root logger's only Vigil handler: freezes a record and queues it for the writer."""

    def __init__(self, records: queue.SimpleQueue[Any]) -> None:
        super().__init__(records)  # type: ignore[arg-type]  # SimpleQueue has put_nowait too
        self.listener: _RecordWriter | None = None
        self._exception_formatter = logging.Formatter()

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # The stdlib's prepare() folds the traceback into the message; the JSON line keeps it
        # apart in "exc". What must be decided on the caller is decided here: the message with
        # its args (they may change after the call) and the exception's text (its frames move
        # on). A copy, because other handlers (pytest's capture) see the same record and the
        # writer rewrites its fields while redacting; a __dict__ copy is 5x cheaper than
        # copy.copy.
        frozen = record.__class__.__new__(record.__class__)
        frozen.__dict__.update(record.__dict__)
        frozen.msg = _safe_message(record)
        frozen.args = None
        if record.exc_info:
            if not frozen.exc_text:
                frozen.exc_text = self._exception_formatter.formatException(record.exc_info)
            frozen.exc_info = None
        return frozen

    def flush(self) -> None:
        """Wait until every record queued before this call is written (at most 5 s)."""
        listener = self.listener
        if listener is not None:
            listener.wait_written(_FLUSH_TIMEOUT_S)


class _RecordWriter(logging.handlers.QueueListener):
    """The writer thread: redacts each queued record once, then hands it to the file and
    stderr handlers (which share its encoded line)."""

    def __init__(
        self,
        records: queue.SimpleQueue[Any],
        handlers: Sequence[logging.Handler],
        redaction: RedactingFilter,
    ):
        super().__init__(records, *handlers, respect_handler_level=True)  # type: ignore[arg-type]
        self.redaction = redaction

    def start(self) -> None:
        super().start()
        assert self._thread is not None  # type: ignore[attr-defined]
        self._thread.name = _WRITER_THREAD_NAME  # type: ignore[attr-defined]

    def is_running(self) -> bool:
        thread = self._thread  # type: ignore[attr-defined]
        return thread is not None and thread.is_alive()

    def handle(self, record: Any) -> None:
        if isinstance(record, _FlushRequest):
            record.written.set()
            return
        try:
            self.redaction.filter(record)
        except Exception as error:
            # A field whose repr raises must cost that one line, not the writer thread and
            # every line after it. Nothing of the record is printed: it is not redacted.
            sys.stderr.write(
                f"vigil-log-writer: dropped a line of logger {record.name!r} that could not "
                f"be redacted: {type(error).__name__}\n"
            )
            return
        for handler in self.handlers:
            if record.levelno < handler.level:
                continue
            try:
                handler.handle(record)
            except Exception:
                handler.handleError(record)  # as above: one line, never the writer

    def wait_written(self, timeout_s: float) -> bool:
        if not self.is_running():
            return True  # stopped: everything queued was written before the thread ended
        request = _FlushRequest()
        self.queue.put_nowait(request)
        return request.written.wait(timeout_s)

    def stop(self) -> None:
        if self.is_running():
            super().stop()


def configure_logging(
    *,
    logs_dir: str | Path,
    level: str = "INFO",
    secrets: Sequence[str] = (),
    file_name: str = "vigil.log",
    stream: bool = True,
    rehearsal: bool = False,
) -> None:
    """Send every logger's records, as redacted JSON lines, to ``logs_dir/file_name`` and
    (when ``stream``) to stderr.

    The root logger gets one queue handler; a writer thread (``vigil-log-writer``) writes
    the lines (see the module docstring for what that means at exit and after a kill).

    Idempotent: a second call replaces the handlers the first one installed (writing what
    they had queued, then closing them), so a new ``logs_dir`` or secret list takes effect
    and nothing is duplicated. Handlers that others put on the root logger are left alone.

    Args:
        logs_dir: created if missing.
        level: root level name (``DEBUG``, ``INFO``, ...).
        secrets: values to redact wherever they appear (tokens, passwords, API keys).
        file_name: log file inside ``logs_dir``; reopened if rotated away (logrotate).
        stream: also write to stderr.
        rehearsal: tag every line REHEARSAL (see ``JsonFormatter``); the launcher passes
            ``EngineConfig.rehearsal``.

    Raises:
        ValueError: ``level`` is not a logging level name.
        OSError: ``logs_dir`` cannot be created or the file cannot be opened.
    """
    numeric_level = logging.getLevelName(level.upper())
    if not isinstance(numeric_level, int):
        raise ValueError(f"log level was {level!r}; use DEBUG, INFO, WARNING, ERROR or CRITICAL")
    directory = Path(logs_dir)
    directory.mkdir(parents=True, exist_ok=True)
    redactor = Redactor(secrets)
    formatter = JsonFormatter(rehearsal=rehearsal)
    handlers: list[logging.Handler] = [
        logging.handlers.WatchedFileHandler(directory / file_name, encoding="utf-8")
    ]
    if stream:
        handlers.append(logging.StreamHandler(sys.stderr))
    for handler in handlers:
        handler.setFormatter(formatter)
    records: queue.SimpleQueue[Any] = queue.SimpleQueue()
    queue_handler = _RecordQueueHandler(records)
    queue_handler.listener = _RecordWriter(records, handlers, RedactingFilter(redactor))
    queue_handler._vigil = True  # type: ignore[attr-defined]

    global _current_redactor
    with _configure_lock:
        root = logging.getLogger()
        _remove_vigil_handlers(root)
        queue_handler.listener.start()
        root.addHandler(queue_handler)
        root.setLevel(numeric_level)
        # The lines carry no process id or name: skip computing them for every record (the
        # logging docs' "Optimization" switches; threadName stays, it is the "thread" key).
        logging.logProcesses = False
        logging.logMultiprocessing = False
        _current_redactor = redactor


def flush_logging(timeout_s: float = _FLUSH_TIMEOUT_S) -> bool:
    """Wait until every line logged before this call is written to the file and stderr.

    Returns:
        True when written; False when the writer did not get there within ``timeout_s``
        (a stuck disk or stderr pipe); the lines stay queued and are written later.
    """
    deadline = time.monotonic() + timeout_s
    for handler in list(logging.getLogger().handlers):
        listener = getattr(handler, "listener", None)
        if isinstance(listener, _RecordWriter):
            remaining = max(0.0, deadline - time.monotonic())
            if not listener.wait_written(remaining):
                return False
    return True


def shutdown_logging() -> None:
    """Write every queued line, then remove and close the handlers ``configure_logging``
    installed (tests, shutdown). Lines logged afterwards reach no Vigil handler."""
    global _current_redactor
    with _configure_lock:
        _remove_vigil_handlers(logging.getLogger())
        _current_redactor = None


def _write_synchronously_from_now_on() -> None:
    # At exit: write what is queued, then put the file and stderr handlers on the root logger
    # directly, so lines logged by later exit hooks are not queued for a writer that is gone.
    # logging's own exit hook (registered first, so it runs after this one) closes them.
    with _configure_lock:
        root = logging.getLogger()
        for handler in list(root.handlers):
            listener = getattr(handler, "listener", None)
            if getattr(handler, "_vigil", False) and isinstance(listener, _RecordWriter):
                listener.stop()
                root.removeHandler(handler)
                for target in listener.handlers:
                    target.addFilter(listener.redaction)
                    target._vigil = True  # type: ignore[attr-defined]
                    root.addHandler(target)


atexit.register(_write_synchronously_from_now_on)


def log_event(
    logger: logging.Logger,
    event: str,
    message: str,
    *,
    level: int = logging.INFO,
    **fields: Any,
) -> None:
    """Log ``message`` with ``event`` (e.g. ``MODE_SWITCH``, ``KILL_SWITCH``) and extra fields.

    Fields may be msgspec structs, Decimals, enums or plain values. A field whose name a
    ``LogRecord`` already uses (``name``, ``msg``, ``args``...) is written with a ``_`` suffix
    instead of raising.
    """
    extra = {"event": event}
    for key, value in fields.items():
        safe_key = f"{key}_" if key in _RECORD_ATTRIBUTES or key in _OUTPUT_KEYS else key
        extra[safe_key] = value
    logger.log(level, "%s", message, extra=extra, stacklevel=2)


def current_redactor(extra_secrets: Sequence[str] = ()) -> Redactor:
    """The redactor the log handlers use, plus ``extra_secrets``: for text that leaves the
    process another way (``/status``, ``/debug/actors``), redacted exactly as the logs are.

    Without ``configure_logging`` (tests, tools) it redacts ``extra_secrets`` and the patterns.
    """
    with _configure_lock:
        configured = _current_redactor
    if configured is None:
        return Redactor(extra_secrets)
    return Redactor([*configured.secret_values, *extra_secrets])


class ErrorRepeats:
    """Log a repeating error once, then one summary line per window with its count.

    A failure that repeats on every timer tick (storage down, a child that crashes at every
    start) must not write a line, a traceback and a dump each time: the first occurrence of a
    key is logged in full; repeats within ``window_ns`` are counted; the first call after the
    window (or ``flush``/``resolved``) writes ``same error xN in Ws: <message>``.

    Not thread-safe: each actor owns its own, used from its own thread. Time is passed in
    (the actor's clock), so tests on a manual clock see exact windows.
    """

    def __init__(self, logger: logging.Logger, *, window_ns: int) -> None:
        self._logger = logger
        self._window_ns = window_ns
        # key -> [window start, repeats since, last message, event, level, fields]
        self._open: dict[str, list[Any]] = {}

    def error(
        self,
        key: str,
        message: str,
        /,
        *,
        now_ns: int,
        event: str = "ERROR",
        level: int = logging.ERROR,
        exc_info: bool = False,
        **fields: Any,
    ) -> bool:
        """Record one occurrence; returns True when it was logged in full (the first)."""
        entry = self._open.get(key)
        if entry is None:
            self._open[key] = [now_ns, 0, message, event, level, fields]
            extra = {"event": event, "repeat_key": key, **fields}
            self._logger.log(level, "%s", message, extra=extra, exc_info=exc_info, stacklevel=2)
            return True
        entry[1] += 1
        entry[2] = message
        if now_ns - entry[0] >= self._window_ns:
            self._summarise(key, entry, now_ns)
        return False

    def flush(self, now_ns: int) -> None:
        """Write the summaries of windows that have ended (call from a timer)."""
        for key, entry in list(self._open.items()):
            if now_ns - entry[0] < self._window_ns:
                continue
            if entry[1]:
                self._summarise(key, entry, now_ns)
            else:
                del self._open[key]  # quiet for a whole window: the next one is news again

    def resolved(self, key: str, now_ns: int) -> None:
        """The condition is over: summarise what was counted and forget the key."""
        entry = self._open.pop(key, None)
        if entry is not None and entry[1]:
            self._summarise(key, entry, now_ns, forget=True)

    def _summarise(self, key: str, entry: list[Any], now_ns: int, *, forget: bool = False) -> None:
        started, count, message, event, level, fields = entry
        seconds = (now_ns - started) / 1_000_000_000
        self._logger.log(
            level,
            "same error x%d in %.0fs: %s",
            count,
            seconds,
            message,
            extra={**fields, "event": event, "repeat_key": key, "repeats": count},
        )
        if not forget:
            entry[0], entry[1] = now_ns, 0


def write_state_dump(
    logs_dir: str | Path, dump: Mapping[str, Any], *, kind: str, now_ns: int
) -> Path:
    """Write ``dump`` as pretty JSON to ``logs_dir/state-dump-<kind>-<UTC timestamp>.json``.

    Decimals are written as strings, structs as objects. Secrets are redacted with the rules
    ``configure_logging`` installed (the patterns alone when it was not called). The file
    appears whole (written aside, then renamed); a second dump in the same millisecond gets
    a ``-1`` suffix rather than overwriting the first.

    Args:
        logs_dir: created if missing.
        dump: the state to write (e.g. every actor's ``snapshot()``).
        kind: ``sigusr1``, ``crash``, ``manual``...: letters, digits, ``_`` and ``-`` only.
        now_ns: the dump time, epoch nanoseconds (from the injected clock).

    Returns:
        The path written.

    Raises:
        ValueError: ``kind`` has other characters (it becomes part of a file name).
        OSError: the file cannot be written.
    """
    if not _DUMP_KIND.match(kind):
        raise ValueError(f"state dump kind was {kind!r}; use 1-64 letters, digits, '_' or '-' only")
    directory = Path(logs_dir)
    directory.mkdir(parents=True, exist_ok=True)
    redactor = _current_redactor or Redactor()
    body = msgspec.json.format(msgspec.json.encode(redactor.value(dict(dump))), indent=2) + b"\n"
    stamp = _file_stamp(now_ns)
    temporary = directory / f".state-dump-{kind}-{stamp}.{os.getpid()}.{threading.get_ident()}"
    temporary.write_bytes(body)
    try:
        suffix = 0
        while True:
            numbered = f"-{suffix}" if suffix else ""
            target = directory / f"state-dump-{kind}-{stamp}{numbered}.json"
            try:
                # link() never replaces an existing file, so a concurrent dump cannot be lost.
                os.link(temporary, target)
            except FileExistsError:
                suffix += 1
                continue
            return target
    finally:
        temporary.unlink(missing_ok=True)


def _remove_vigil_handlers(root: logging.Logger) -> None:
    for handler in list(root.handlers):
        if getattr(handler, "_vigil", False):
            root.removeHandler(handler)
            listener = getattr(handler, "listener", None)
            if isinstance(listener, _RecordWriter):
                listener.stop()  # writes everything queued first
                for target in listener.handlers:
                    target.close()
            handler.close()


def _safe_message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:
        # A bad format string must not lose the line (logging would print a traceback instead).
        return f"{record.msg!r} % {record.args!r}"


def _iso_utc(created: float) -> str:
    moment = datetime.fromtimestamp(created, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _file_stamp(now_ns: int) -> str:
    seconds, nanos = divmod(now_ns, 1_000_000_000)
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    return f"{moment:%Y%m%dT%H%M%S}.{nanos // 1_000_000:03d}Z"


def _fallback(value: Any) -> Any:
    return str(value)


def _encode_line(line: dict[str, Any]) -> str:
    try:
        return msgspec.json.encode(line, enc_hook=_fallback).decode("utf-8")
    except Exception:
        safe = {}
        for key, value in line.items():
            try:
                msgspec.json.encode(value, enc_hook=_fallback)
                safe[key] = value
            except Exception:
                safe[key] = repr(value)
        return msgspec.json.encode(safe).decode("utf-8")
