"""How ``nextbest serve`` logs: one JSON line per record, in the supervisor and in
every worker, and which library lines an operator is spared.

Apart from the metrics and the request middleware (:mod:`nextbest.api.observability`),
which need the app's modules: the supervisor configures its logging with these alone
and starts its workers without importing the model's libraries first.
"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, ClassVar

from nextbest.storage.db import without_row_values

# The id of the request being handled, for every line logged meanwhile. Set and not
# reset: uvicorn runs each request in a task of its own (a copy of the context), and
# logs an unhandled exception after the app returns, in that task.
CURRENT_REQUEST_ID: ContextVar[str | None] = ContextVar("nextbest_request_id", default=None)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``extra`` fields.

    A PostgreSQL error's message (logged, or in a traceback) holds the values of the
    row it failed on: they are left out (:func:`without_row_values`)."""

    # uvicorn adds ``color_message``, its message again with terminal colour codes:
    # noise in a JSON line, which already has the message.
    _skip = frozenset(logging.makeLogRecord({}).__dict__) | {
        "message",
        "asctime",
        "color_message",
    }

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,  # which worker process
            "message": without_row_values(record.getMessage()),
        }
        out.update({k: v for k, v in record.__dict__.items() if k not in self._skip})
        if "request_id" not in out and (request_id := CURRENT_REQUEST_ID.get()) is not None:
            # Logged while a request was handled (a database error, a traceback):
            # the line names it, as the request's access line does.
            out["request_id"] = request_id
        if record.exc_info:
            out["exception"] = without_row_values(self.formatException(record.exc_info))
        return json.dumps(out, default=str)


class ServeLogFilter(logging.Filter):
    """What the libraries under ``nextbest serve`` log, weighed for an operator.

    - uvicorn's supervisor logs a worker that died (killed by the kernel for memory,
      a crash) at INFO, the level of routine lines: raised to WARNING, with
      ``event: worker_died``, so that alerts on warnings see it; under `nextbest
      serve`'s own supervisor, which logs that line itself with the exit code and
      the signal, dropped.
    - Alembic describes its database context ("Context impl SQLiteImpl.", "Will
      assume non-transactional DDL.") each time a worker checks the schema: dropped;
      the migrations it runs ("Running upgrade ...") are kept.
    """

    _alembic_noise = ("Context impl ", "Will assume ")
    # Set by `nextbest serve`'s own supervisor (api/workers.py), which says how each
    # worker died (its exit code, the signal): uvicorn's bare line is dropped then.
    deaths_said_by_supervisor: ClassVar[bool] = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "alembic.runtime.migration":
            return not str(record.msg).startswith(self._alembic_noise)
        if record.name == "uvicorn.error" and record.levelno == logging.INFO:
            message = record.getMessage()
            if message.startswith("Child process [") and message.endswith("] died"):
                if self.deaths_said_by_supervisor:
                    return False
                record.levelno, record.levelname = logging.WARNING, "WARNING"
                record.event = "worker_died"
        return True


def logging_config(level: str = "INFO") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for serving: JSON lines on stderr, every process."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "filters": {"serve": {"()": f"{__name__}.ServeLogFilter"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "filters": ["serve"],
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            "uvicorn": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": level, "propagate": True},
            # One line per plugin Alembic sets up at every start: noise, not news.
            "alembic.runtime.plugins": {"level": "WARNING"},
        },
    }
