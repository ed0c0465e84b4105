"""``lcha ingest`` and ``lcha worker``: their arguments, and the database password kept off
the command line.

``--db`` takes a conninfo without a password: libpq gets it from ``$PGPASSWORD``,
``--passfile``, ``~/.pgpass`` or a prompt (``-W``).  A password in ``--db`` still works but is
warned about, since every local user can read a process's arguments.  Handlers import their
modules lazily so ``lcha --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from langchain_ha._usage import UsageError

DB_HELP = ("writer conninfo (libpq, multi-host allowed) without a password: it comes from "
           "$PGPASSWORD, --passfile, ~/.pgpass or --password-prompt (a password here is "
           "visible to every local user)")


def _add_db_password(p: argparse.ArgumentParser) -> None:
    p.add_argument("--passfile", type=Path, help="libpq password file (0600) for --db")
    p.add_argument("-W", "--password-prompt", action="store_true",
                   help="ask for the password (never on the command line)")


def _conninfo(args: argparse.Namespace, value: str, option: str) -> str:
    """``value`` (from the command line) with its password source applied; a password in
    ``value`` itself works but is warned about."""
    import getpass

    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        params = conninfo_to_dict(value)
    except ProgrammingError:
        raise UsageError(f"{option}: not a libpq conninfo (key=value pairs or a URL)") from None
    if params.get("password"):
        print(f"lcha {args.command}: warning: {option} holds a password, which every local "
              "user can read in the process list; use $PGPASSWORD, --passfile or -W",
              file=sys.stderr)
    if args.passfile is not None:
        value = make_conninfo(value, passfile=str(args.passfile))
    if args.password_prompt:
        value = make_conninfo(value, password=getpass.getpass(f"password for {option}: "))
    return value


def add_store_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``lcha ingest PATH`` (enqueues ingestion tasks) and ``lcha worker`` (runs
    them)."""
    p = sub.add_parser("ingest", help="enqueue ingestion of text/markdown/jsonl files")
    p.add_argument("path", help="a file or a directory (searched recursively; symlinks in it "
                   "are skipped, never followed)")
    p.add_argument("--db", required=True, help=DB_HELP)
    _add_db_password(p)
    p.add_argument("--collection", default="default")
    p.add_argument("--chunk-size", type=int, default=1000)
    p.add_argument("--chunk-overlap", type=int, default=150)

    def ingest(args: argparse.Namespace) -> int:
        import asyncio

        from langchain_ha.store.runner import run_ingest

        conninfo = _conninfo(args, args.db, "--db")
        skipped: list[Path] = []
        try:
            ids = asyncio.run(
                run_ingest(
                    conninfo, Path(args.path), collection=args.collection,
                    chunk_size=args.chunk_size, overlap=args.chunk_overlap, skipped=skipped,
                )
            )
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        except Exception as exc:
            return _db_error("ingest", exc)
        for link in skipped:
            print(f"lcha ingest: skipped {link}: a symlink (never followed)", file=sys.stderr)
        print(f"enqueued {len(ids)} ingestion task(s): {ids}")
        return 0

    p.set_defaults(handler=ingest)

    w = sub.add_parser("worker", help="run durable task workers (SIGTERM finishes current tasks)")
    w.add_argument("--db", required=True, help=DB_HELP)
    _add_db_password(w)
    w.add_argument("--reader", help="reader conninfo (default: derived from --db; the same "
                   "password source)")
    w.add_argument("--concurrency", type=int, default=2)
    w.add_argument("--lease-s", type=float, default=10.0)
    w.add_argument("--heartbeat-s", type=float, default=2.0)
    w.add_argument("--poll-s", type=float, default=0.2)
    w.add_argument("--backoff-base-s", type=float, default=1.0)
    w.add_argument(
        "--embeddings-url", help="OpenAI-compatible base URL (key: $LCHA_EMBEDDINGS_API_KEY)"
    )
    w.add_argument("--embeddings-model", default="text-embedding-3-small")
    w.add_argument("--dimensions", type=int, default=256)
    w.add_argument(
        "--handlers", action="append", default=[], metavar="MODULE:ATTR",
        help="extra task handlers: a dict {kind: async fn(payload, ctx)} (repeatable)",
    )

    def work(args: argparse.Namespace) -> int:
        import asyncio
        import logging

        from langchain_ha.store.runner import EmbeddingSettings, WorkerSettings, run_worker

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        reader = _conninfo(args, args.reader, "--reader") if args.reader else None
        settings = WorkerSettings(
            db=_conninfo(args, args.db, "--db"), reader=reader, concurrency=args.concurrency,
            lease_s=args.lease_s,
            heartbeat_s=args.heartbeat_s, poll_s=args.poll_s, backoff_base_s=args.backoff_base_s,
            embeddings=EmbeddingSettings(
                url=args.embeddings_url, model=args.embeddings_model, dimensions=args.dimensions
            ),
            handler_specs=tuple(args.handlers),
        )
        try:
            return asyncio.run(run_worker(settings))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        except Exception as exc:
            return _db_error("worker", exc)

    w.set_defaults(handler=work)


def _db_error(command: str, exc: Exception) -> int:
    """Print a database failure as one line (redacted: a message may quote a conninfo);
    else raise."""
    import psycopg
    import psycopg_pool

    from langchain_ha._redact import redact

    if not isinstance(exc, psycopg.Error | psycopg_pool.PoolTimeout | OSError):
        raise exc
    print(redact(f"lcha {command}: database error: {type(exc).__name__}: {exc}"),
          file=sys.stderr)
    return 1
