"""What the command line says when the database or the environment cannot be used: one line
on stderr naming the problem and a non-zero exit, never a traceback or a password."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from tests.cli.conftest import ALLOTMENT, Run, cli_env

# Nothing listens on port 1; the password must never be shown.
UNREACHABLE = {
    "postgresql": "postgresql://postgres:s3cret-pw@127.0.0.1:1/none",
    "sqlite": "sqlite:////nonexistent-folder/allotment.db",
}


def run(database_url: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ALLOTMENT, *args], env={**cli_env(database_url), **(env or {})}, capture_output=True,
        text=True, timeout=60, check=False,
    )


@pytest.mark.parametrize("kind", sorted(UNREACHABLE))
@pytest.mark.parametrize("command", [["migrate"], ["keys", "list"], ["keys", "create"], ["keys", "revoke", "key_x"]])
def test_unreachable_database_is_one_line_without_the_password(kind: str, command: list[str]) -> None:
    """A database that cannot be opened is named in one error line, exit 1, without its password."""
    done = run(UNREACHABLE[kind], *command)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith(("error: cannot use the database", "error: DATABASE_URL")), done.stderr
    assert "Traceback" not in done.stderr and "s3cret-pw" not in done.stderr
    assert len(done.stderr.strip().splitlines()) <= 3, done.stderr


def test_import_into_an_unreachable_database_exits_2(tmp_path: Path) -> None:
    """`import` against a database it cannot open is refused with exit 2, as an unusable file is."""
    path = tmp_path / "events.jsonl"
    path.write_text('{"id": "a", "source": "s", "type": "t", "subject": "u"}\n')
    done = run(UNREACHABLE["postgresql"], "import", str(path))
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error:") and "Traceback" not in done.stderr
    assert "s3cret-pw" not in done.stderr


@pytest.mark.parametrize("url", ["mysql://user@host/db", "not a url"])
def test_database_url_of_another_kind_is_refused_by_name(url: str) -> None:
    """A DATABASE_URL that is neither SQLite nor PostgreSQL is refused naming the variable."""
    done = run(url, "keys", "list")
    assert done.returncode == 1
    assert done.stderr.startswith("error: DATABASE_URL") and "Traceback" not in done.stderr


def test_keys_on_a_database_not_migrated_say_to_migrate(tmp_path: Path) -> None:
    """`keys list` on a database without the schema tells to run `allotment migrate`."""
    done = run(f"sqlite:///{tmp_path / 'empty.db'}", "keys", "list")
    assert done.returncode == 1
    assert "allotment migrate" in done.stderr and "Traceback" not in done.stderr


def test_setting_that_is_not_a_number_is_refused_by_name(tmp_path: Path) -> None:
    """An environment setting that must be a number and is not is named, with its value."""
    done = run(f"sqlite:///{tmp_path / 'a.db'}", "migrate", env={"ALLOTMENT_MAX_BATCH_EVENTS": "lots"})
    assert done.returncode == 1
    assert "ALLOTMENT_MAX_BATCH_EVENTS" in done.stderr and "'lots'" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("command", [
    ["keys", "list"], ["keys", "create"], ["keys", "revoke", "key_x"], ["export"], ["import", "{file}"],
])
def test_an_unknown_tenant_is_a_usage_error_naming_the_option(allotment: Run, tmp_path: Path,
                                                              command: list[str]) -> None:
    """Every command taking `--tenant` refuses one naming no tenant in one line, exit 2."""
    (tmp_path / "events.jsonl").write_text("")
    args = [arg.replace("{file}", str(tmp_path / "events.jsonl")) for arg in command]
    done = allotment(*args, "--tenant", "ten_nope")
    assert (done.returncode, done.stderr.strip()) == (2, "error: --tenant: tenant 'ten_nope' not found")


def test_no_tenant_yet_names_a_command_that_makes_one(allotment: Run) -> None:
    """Before any tenant exists, `keys list` points at a command that creates one, and it does."""
    done = allotment("keys", "list")
    assert done.returncode == 1
    assert "allotment keys create" in done.stderr
    assert allotment("keys", "create").returncode == 0
    assert allotment("keys", "list").returncode == 0


def test_serve_without_migrating_a_database_not_migrated_says_to_migrate(tmp_path: Path) -> None:
    """`serve --no-migrate` on a database without the schema tells to run `allotment migrate`."""
    done = run(f"sqlite:///{tmp_path / 'empty.db'}", "serve", "--no-migrate", "--port", "0")
    assert done.returncode == 1
    assert "allotment migrate" in done.stderr and "Traceback" not in done.stderr, done.stderr
