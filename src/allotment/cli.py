"""The `allotment` command line: serve, worker, migrate, keys, import, export, demo."""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import socket
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import asyncpg  # type: ignore[import-untyped]
import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from allotment.config import SettingError, Settings
from allotment.db import database_problem, shown_url, url_problem
from allotment.errors import AllotmentError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from sqlalchemy.ext.asyncio import AsyncSession

    from allotment.db import Database
    from allotment.tenancy.models import ApiKey

T = TypeVar("T")

# Messages are whole lines: a terminal wraps them, a log keeps them greppable.
err = Console(stderr=True, soft_wrap=True, highlight=False)


class _Cli(typer.Typer):
    """The command line, saying what went wrong outside it (the environment, the database)
    in one line with exit status 1, instead of a traceback."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except SettingError as exc:
            err.print(f"error: {exc}", markup=False)
        except (OSError, SQLAlchemyError, asyncpg.PostgresError) as exc:
            where = shown_url(os.environ.get("DATABASE_URL", Settings.database_url))
            err.print(f"error: cannot use the database at {where}: {database_problem(exc)}", markup=False)
        sys.exit(1)


app = _Cli(help="Allotment: usage metering and entitlement enforcement.", no_args_is_help=True,
           rich_markup_mode="markdown")  # paragraphs reflow to the terminal; `code` shows as code
keys_app = typer.Typer(help="API keys of a tenant.", no_args_is_help=True, rich_markup_mode="markdown")
app.add_typer(keys_app, name="keys")
tenants_app = typer.Typer(help="Tenants: vendors sharing one database, none seeing another's rows.",
                          no_args_is_help=True, rich_markup_mode="markdown")
app.add_typer(tenants_app, name="tenants")


def _settings() -> Settings:
    settings = Settings.from_env()
    problem = url_problem(settings.database_url)
    if problem:
        raise SettingError(problem)
    _require_sqlite_folder(settings.database_url)
    return settings


def _require_sqlite_folder(database_url: str) -> None:
    """SQLite makes a missing file but not its folder; said here, before a driver thread
    reports it from a closed event loop."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database.startswith(":memory:"):
        return
    folder = Path(url.database).parent
    if not folder.is_dir():
        raise SettingError(f"DATABASE_URL: the folder {str(folder)!r} of the SQLite database does not exist")


@app.command()
def migrate() -> None:
    """Bring the database schema to the newest migration."""
    from allotment.migrate import upgrade

    settings = _settings()
    upgrade(settings.database_url)
    err.print(f"database is at the newest migration ({shown_url(settings.database_url)})")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    no_migrate: Annotated[bool, typer.Option("--no-migrate", help="Do not migrate on start.")] = False,
) -> None:
    """Migrate, create the default tenant on first start, and serve the API."""
    from allotment import serving
    from allotment.bootstrap import ensure_default_tenant
    from allotment.db import Database
    from allotment.migrate import upgrade

    settings = _settings()
    _require_free_port(host, port)
    if not no_migrate:
        upgrade(settings.database_url)

    async def boot() -> str | None:
        db = Database(settings)
        try:
            if no_migrate:
                await _require_migrated(db)
            return (await ensure_default_tenant(db))[1]
        finally:
            await db.dispose()

    secret = asyncio.run(boot())
    url = f"http://{host}:{port}"
    err.print(f"Allotment on {url}  (database: {shown_url(settings.database_url)})")
    err.print(f"API docs: {url}/docs")
    if secret:
        err.print("First start: an admin API key was created. It is shown only this once:")
        print(secret, flush=True)
    made = None  # the workers' shared metrics folder, when this command made it
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        made = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="allotment-metrics-")
    try:
        serving.serve(host=host, port=port, workers=workers, log_level="warning", access_log=False)
    finally:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)


def _require_free_port(host: str, port: int) -> None:
    """Workers bind their port with SO_REUSEPORT, which would as gladly share it with another
    running server (the kernel spreading requests over both, each on its own database): so the
    port is first bound alone, which fails while anything listens on it."""
    probe = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # connections closing still may linger
        probe.bind((host, port))
    except OSError as exc:
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        reason = "is in use (another server listens on it; choose another with --port)" \
            if exc.errno == errno.EADDRINUSE else f"cannot be listened on: {exc.strerror or exc}"
        err.print(f"error: {where} {reason}", markup=False)
        raise typer.Exit(1) from None
    finally:
        probe.close()


@app.command()
def worker(
    no_migrate: Annotated[bool, typer.Option("--no-migrate", help="Do not migrate on start.")] = False,
) -> None:
    """Deliver webhooks and fold rollups without serving HTTP; run as many as you like.

    Workers share the database's queues (SKIP LOCKED on PostgreSQL), so adding one adds
    throughput and never sends a message twice at the same time. SIGTERM stops it cleanly.
    """
    import signal

    from allotment.db import Database
    from allotment.logging import configure_logging
    from allotment.migrate import upgrade
    from allotment.worker.delivery import DeliveryOptions, run_delivery
    from allotment.worker.folder import run_folder
    from allotment.worker.stopping import stop_loops

    settings = _settings()
    configure_logging(json=settings.log_json)
    if not no_migrate:
        upgrade(settings.database_url)

    async def run() -> None:
        db = Database(settings)
        options = DeliveryOptions.from_settings(settings)
        stop = asyncio.Event()
        loops = [asyncio.ensure_future(run_folder(db, stop)),
                 asyncio.ensure_future(run_delivery(db, options, stop))]
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            # Rounds in flight end with their transactions; a send is bounded by its timeout.
            await stop_loops(stop, loops, grace=options.timeout + 5)
            await db.dispose()

    err.print(
        f"Allotment worker: delivering webhooks, folding rollups (database: {shown_url(settings.database_url)})"
    )
    asyncio.run(run())


async def _with_session(fn: Callable[[AsyncSession], Awaitable[T]]) -> T:
    from allotment.db import Database

    db = Database(_settings())
    try:
        await _require_migrated(db)
        async with db.transaction() as session:
            return await fn(session)
    finally:
        await db.dispose()


async def _require_migrated(db: Database) -> None:
    """Commands that only read or change rows leave the schema alone: they need it current."""
    from allotment.migrate import current_revision_of, head_revision

    async with db.read_engine.connect() as conn:
        current = await conn.run_sync(current_revision_of)
    if current != head_revision():
        err.print(f"error: the database is not migrated (at {current or 'no migration'}, "
                  f"the newest is {head_revision()}): run `allotment migrate` first", markup=False)
        raise typer.Exit(1)


def _option_error(option: str, exc: Exception) -> NoReturn:
    """An option naming something that is not there: a usage error, like a malformed option."""
    err.print(f"error: {option}: {exc}", markup=False)
    raise typer.Exit(2)


async def _tenant_id(session: AsyncSession, tenant: str | None) -> str:
    from allotment.errors import NotFound
    from allotment.tenancy import service as tenancy

    if tenant:
        try:
            return (await tenancy.get_tenant(session, tenant)).id
        except NotFound as exc:
            _option_error("--tenant", exc)
    first = await tenancy.first_tenant(session)
    if first is None:
        err.print("no tenant yet: `allotment keys create` (or the first `allotment serve`) makes one", markup=False)
        raise typer.Exit(1)
    return first.id


@keys_app.command("create")
def keys_create(
    scope: Annotated[str, typer.Option(help="admin, ingest or read.")] = "admin",
    name: Annotated[str, typer.Option(help="A label for the key.")] = "cli key",
    tenant: Annotated[str | None, typer.Option(help="Tenant id (default: the first).")] = None,
) -> None:
    """Create a key; only the secret is printed on stdout, so scripts can capture it."""
    from allotment.bootstrap import ensure_default_tenant
    from allotment.db import Database
    from allotment.migrate import upgrade
    from allotment.tenancy import service as tenancy
    from allotment.types import utcnow

    settings = _settings()
    upgrade(settings.database_url)

    async def run() -> str:
        db = Database(settings)
        try:
            if tenant is None:
                await ensure_default_tenant(db, first_key=False)
            async with db.transaction() as session:
                tenant_id = await _tenant_id(session, tenant)
                _, secret = await tenancy.create_key(session, tenant_id, scope=scope, name=name, at=utcnow())
                return secret
        finally:
            await db.dispose()

    try:
        print(asyncio.run(run()))
    except AllotmentError as exc:  # domain errors explain themselves
        err.print(f"error: {exc}")
        raise typer.Exit(2) from None


@keys_app.command("list")
def keys_list(tenant: Annotated[str | None, typer.Option(help="Tenant id.")] = None) -> None:
    """List keys (never their secrets)."""
    from allotment.tenancy import service as tenancy

    async def run(session: AsyncSession) -> list[ApiKey]:
        return await tenancy.list_keys(session, await _tenant_id(session, tenant))

    keys = asyncio.run(_with_session(run))  # an unknown --tenant is said by _tenant_id
    _print_table(
        ("id", "name", "scope", "hint", "created", "revoked"),
        [(key.id, key.name, key.scope, key.hint + "…", _when(key.created_at), _when(key.revoked_at)) for key in keys],
    )


def _print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    out = Console()
    if not out.is_terminal:  # piped: whole values, tab-separated, never cut to a width
        for row in (header, *rows):
            print("\t".join(row))
        return
    table = Table(*header)
    table.columns[0].no_wrap = True  # the id is what other commands take, so never elide it
    for row in rows:
        table.add_row(*row)
    out.print(table)


def _when(at: datetime | None) -> str:
    return at.isoformat(timespec="seconds") if at else ""


@keys_app.command("revoke")
def keys_revoke(key_id: str, tenant: Annotated[str | None, typer.Option(help="Tenant id.")] = None) -> None:
    """Revoke a key by id; requests with it get 401 from then on."""
    from allotment.errors import NotFound
    from allotment.tenancy import service as tenancy
    from allotment.types import utcnow

    async def run(session: AsyncSession) -> ApiKey:
        return await tenancy.revoke_key(session, await _tenant_id(session, tenant), key_id, at=utcnow())

    try:
        asyncio.run(_with_session(run))
    except NotFound as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(1) from None
    err.print(f"revoked {key_id}")


@tenants_app.command("create")
def tenants_create(name: Annotated[str, typer.Argument(help="The vendor's name.")]) -> None:
    """Create a tenant and its first admin key; only the key's secret is printed on stdout."""
    from allotment.db import Database
    from allotment.migrate import upgrade
    from allotment.tenancy import service as tenancy
    from allotment.types import utcnow

    settings = _settings()
    upgrade(settings.database_url)

    async def run() -> tuple[str, str]:
        db = Database(settings)
        try:
            # On an empty database this is the first tenant: the default of `--tenant`-less commands.
            async with db.transaction() as session:
                tenant = await tenancy.create_tenant(session, name, at=utcnow())
                _, secret = await tenancy.create_key(session, tenant.id, scope="admin", name="first admin key",
                                                     at=tenant.created_at)
                return tenant.id, secret
        finally:
            await db.dispose()

    try:
        tenant_id, secret = asyncio.run(run())
    except AllotmentError as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(2) from None
    err.print(f"tenant {tenant_id} created; its first admin key is shown only this once:", markup=False)
    print(secret)


@tenants_app.command("list")
def tenants_list() -> None:
    """List tenants with the ids `--tenant` takes."""
    from allotment.tenancy import service as tenancy

    tenants = asyncio.run(_with_session(tenancy.list_tenants))
    _print_table(("id", "name", "created"), [(t.id, t.name, _when(t.created_at)) for t in tenants])


@app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSON Lines or CSV file of events.")],
    tenant: Annotated[str | None, typer.Option(help="Tenant id (default: the first).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=10_000, help="Events per transaction.")] = 1000,
) -> None:
    """Import events from a file with the same validation and de-duplication as the API.

    JSON Lines: one CloudEvent per line.

    CSV: a header of id, source, type, subject, optional time, and `data.<name>` columns or one `data` column of JSON.

    Run again after an interruption to resume after the last committed batch.

    Exit code 0: all accepted or already known; 1: some lines rejected; 2: file unusable.
    """

    from allotment.importer import run_import

    raise typer.Exit(run_import(_settings(), path, tenant=tenant, batch_size=batch_size))


@app.command()
def export(
    output: Annotated[Path | None, typer.Option("--output", "-o", dir_okay=False,
                                                help="File to write (default: stdout).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="jsonl (CloudEvents) or csv.")] = "jsonl",
    tenant: Annotated[str | None, typer.Option(help="Tenant id (default: the first).")] = None,
    from_: Annotated[str | None, typer.Option("--from", help="Events at or after this RFC 3339 time.")] = None,
    to: Annotated[str | None, typer.Option(help="Events before this RFC 3339 time.")] = None,
    type_: Annotated[str | None, typer.Option("--type", help="Only events of this type.")] = None,
    subject: Annotated[list[str] | None, typer.Option(help="Only this subject's events (repeatable).")] = None,
    customer: Annotated[list[str] | None, typer.Option(help="Only this customer's events (repeatable).")] = None,
) -> None:
    """Export stored events (each once, in the order they were stored) as JSON Lines or CSV.

    `allotment import` reads the file back, into another tenant or another Allotment.
    """
    from allotment.db import Database
    from allotment.errors import NotFound
    from allotment.exporter import EventSelection, run_export
    from allotment.exporter.run import FORMATS

    if fmt not in FORMATS:
        err.print(f"error: --format: must be one of {', '.join(FORMATS)}, not {fmt!r}", markup=False)
        raise typer.Exit(2)
    selection = EventSelection(start=_option_time("--from", from_), end=_option_time("--to", to),
                               type=type_, subjects=subject or None, customers=customer or None)
    settings = _settings()

    async def check() -> None:
        db = Database(settings)
        try:
            await _require_migrated(db)
        finally:
            await db.dispose()

    asyncio.run(check())
    try:
        raise typer.Exit(run_export(settings, output, tenant=tenant, fmt=fmt, selection=selection))
    except NotFound as exc:
        _option_error(f"--{exc.kind}", exc)


@app.command()
def demo(
    seconds: Annotated[float | None, typer.Option(
        min=0, help="Live traffic for this long, then stop (default: until Ctrl-C; 0: none).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random usage, for the same demo again.")] = 1,
) -> None:
    """Create a demo tenant from the vendor stories (an AI platform, seat licences, prepaid EV
    charging, a phone bundle, a gym) with a month of usage, then send live traffic.

    Prints the demo tenant's admin key on stdout; run `allotment serve` on the same database to
    watch it.
    """
    from allotment.demo import run_demo

    raise typer.Exit(run_demo(_settings(), seconds=seconds, seed=seed))


def _option_time(option: str, text: str | None) -> datetime | None:
    from allotment.types import as_utc

    if text is None:
        return None
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        at = None
    if at is None or at.tzinfo is None:
        err.print(f"error: {option}: {text!r} is not an RFC 3339 time with an offset "
                  "(e.g. 2026-11-01T00:00:00Z)", markup=False)
        raise typer.Exit(2)
    return as_utc(at)


if __name__ == "__main__":
    app()
