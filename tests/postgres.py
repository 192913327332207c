"""A real PostgreSQL server for the case store's tests, and the `case_store_url` fixture over every backend.

Test modules load this file as a plugin (`pytest_plugins = ["postgres"]`), so its fixtures exist once per
session; `postgres_server()` is a server of one's own, as a context manager. Backends: `sqlite` (a file per
test); `postgresql`, the PostgreSQL 16 that the `pgserver` wheel bundles with pgvector (the store ranks in the
database); `postgresql-numpy`, Debian's server under /usr/lib/postgresql/*/bin where it is installed (no
pgvector: the store ranks with NumPy, as on SQLite).

Each server is started once per session in a folder of its own, on a free port of 127.0.0.1 with trust
authentication, and stopped (`pg_ctl stop -m fast`) at the end; every test gets a new database. PostgreSQL
refuses to run as root: as root, the server runs as the user `nobody` (`setpriv`), its folder given to it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

SERVER_USER = "nobody"
DATABASE_USER = "postgres"


def pgserver_bin() -> Path | None:
    """The bin folder of pgserver's bundled PostgreSQL (found without importing pgserver, which starts nothing
    but imports much), or None."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return folder if (folder / "postgres").exists() else None


def debian_bin() -> Path | None:
    """The bin folder of Debian's newest PostgreSQL server package, or None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda path: int(path.parts[-3]))
    return found[-1].parent if found else None


SERVERS = {"postgresql": pgserver_bin, "postgresql-numpy": debian_bin}
BACKENDS = ["sqlite", "postgresql"] + (["postgresql-numpy"] if debian_bin() else [])


class PostgresServer:
    """One PostgreSQL server of `bin_dir` in a folder of its own (see the module's docstring); a context manager."""

    def __init__(self, bin_dir: Path):
        self.bin_dir = bin_dir
        self.port = 0
        self.folder: Path | None = None
        self._as_user: list[str] = []

    def __enter__(self) -> PostgresServer:
        # As root, the server's folder must be one `nobody` can reach: pytest's temporary folders are root's only.
        root = os.geteuid() == 0
        self.folder = Path(tempfile.mkdtemp(prefix="deepxray-pg-", dir="/tmp" if root else None))
        try:
            if root:
                user = pwd.getpwnam(SERVER_USER)
                os.chown(self.folder, user.pw_uid, user.pw_gid)
                if not _reachable_by_others(self.bin_dir):
                    self.bin_dir = _copied_install(self.bin_dir, self.folder / "site")
                self._as_user = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]
            self._run("initdb", "-D", self.data, "-U", DATABASE_USER, "-A", "trust", "-E", "UTF8", "--locale=C",
                      "--no-sync")  # fmt: skip
            self._start()
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            if (Path(self.data) / "postmaster.pid").exists():
                self._run("pg_ctl", "stop", "-D", self.data, "-m", "fast", "-w")
        finally:
            self._remove()

    @property
    def data(self) -> str:
        return str(self.folder / "data")

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{DATABASE_USER}@127.0.0.1:{self.port}/{database}"

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        """A new, empty database for one test (its URL), dropped afterwards."""
        name = f"test_{uuid.uuid4().hex[:12]}"
        self._sql(f'CREATE DATABASE "{name}"')
        try:
            yield self.url(name)
        finally:
            self._sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _sql(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={DATABASE_USER} dbname=postgres") as connection:
            connection.autocommit = True  # CREATE and DROP DATABASE run outside a transaction
            connection.execute(statement)

    def _start(self) -> None:
        for attempt in range(3):  # a free port may be taken by someone else before the server binds it
            self.port = _free_port()
            options = (f"-h 127.0.0.1 -p {self.port} -k {self.folder} -c fsync=off -c synchronous_commit=off "
                       "-c full_page_writes=off")  # fmt: skip
            try:
                self._run("pg_ctl", "start", "-D", self.data, "-w", "-t", "60", "-l", str(self.folder / "log"),
                          "-o", options)  # fmt: skip
                return
            except subprocess.CalledProcessError:
                if attempt == 2:
                    raise

    def _run(self, program: str, *args: str) -> None:
        # A clean environment: the session's TMPDIR and HOME are root's own, which the server user cannot use.
        environment = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "TZ": "UTC"}
        command = [*self._as_user, str(self.bin_dir / program), *args]
        result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=120, cwd="/")
        if result.returncode:
            log = self.folder / "log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise subprocess.CalledProcessError(result.returncode, command, result.stdout, result.stderr + tail)

    def _remove(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def _copied_install(bin_dir: Path, site: Path) -> Path:
    """A copy of pgserver's install (bin, lib, share: 34 MB) and of the libraries its binaries load by relative
    path (`../../../pgserver.libs`), laid out as in site-packages under `site`; its bin folder.

    For a virtual environment inside a root-only folder (CI's is under `mktemp -d`): the server user cannot run
    binaries there."""
    install, package = bin_dir.parent, bin_dir.parent.parent
    shutil.copytree(install, site / package.name / install.name, symlinks=True)
    libraries = package.parent / f"{package.name}.libs"
    if libraries.is_dir():
        shutil.copytree(libraries, site / libraries.name, symlinks=True)
    return site / package.name / install.name / bin_dir.name


def _reachable_by_others(folder: Path) -> bool:
    """Whether a user other than the owner can enter `folder` and every folder above it."""
    return all(path.stat().st_mode & 0o001 for path in [folder, *folder.parents])


@contextlib.contextmanager
def postgres_server(kind: str = "postgresql") -> Iterator[str]:
    """A server of `kind` of its own and the URL of a database on it, for a caller that needs one outside the
    session's (a module fixture, say); stopped afterwards. Skips (fails in CI) where it is not installed."""
    bin_dir = SERVERS[kind]()
    if bin_dir is None:
        no_server(kind)
    with PostgresServer(bin_dir) as server, server.database() as url:
        yield url


def no_server(kind: str) -> None:
    """Skip (fail in CI, where the test extra brings pgserver) a test whose server is not installed here."""
    message = f"no PostgreSQL server for {kind} here (pip install -e '.[test]' brings pgserver's)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


class RunningServers(dict):
    """kind -> its running server, each started on first use; `stack` stops them."""

    def __init__(self, stack: contextlib.ExitStack):
        super().__init__()
        self.stack = stack

    def __missing__(self, kind: str) -> PostgresServer:
        bin_dir = SERVERS[kind]()
        if bin_dir is None:
            no_server(kind)
        self[kind] = self.stack.enter_context(PostgresServer(bin_dir))
        return self[kind]


@pytest.fixture(scope="session")
def postgres_servers() -> Iterator[RunningServers]:
    """The session's PostgreSQL servers, started when a test first needs one and all stopped at the end."""
    with contextlib.ExitStack() as stack:
        yield RunningServers(stack)


@pytest.fixture(params=BACKENDS)
def case_store_url(request, tmp_path, postgres_servers) -> Iterator[str]:
    """The SQLAlchemy URL of an empty case store on each backend (`request.param` names it)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store' / 'cases.sqlite'}"
        return
    with postgres_servers[request.param].database() as url:
        yield url


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
