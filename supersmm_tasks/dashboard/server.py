"""The dashboard's web server: one static page and a small JSON API that the page polls.

    GET /                                         the page (static/index.html)
    GET /api/config                               refresh period, Flower and TensorBoard links
    GET /api/runs                                 one summary per run
    GET /api/runs/NAME                            summary, loss / val SER per epoch, chunk starts, log tail
    GET /api/runs/NAME/previews                   validation images, truth against prediction
    GET /api/runs/NAME/previews/I/image           the I-th validation image
    GET /api/runs/NAME/previews/I/engraving.svg   its prediction engraved by Verovio
    GET /api/runs/NAME/previews/I/score.musicxml  its prediction as MusicXML, to download
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import ipaddress
import json
import os
import re
import urllib.parse
from datetime import datetime, timezone
from pathlib import Path

import tornado.web

from .. import paths
from ..errors import SupersmmError
from ..run_state import peek_state
from .feed import TrainingLog, log_tail, read_config, run_history, run_names, run_summary
from .previews import PreviewCache

STATIC_DIR = Path(__file__).resolve().parent / "static"
REFRESH_SECONDS = 3
MUSICXML_TYPE = "application/vnd.recordare.musicxml+xml"
# The page and everything it loads come from this server; the browser refuses anything else.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


class Dashboard:
    """What the handlers share: the CSV reader, the preview cache, the links and the credentials."""

    def __init__(self, username: str | None = None, password: str | None = None):
        self.training_log = TrainingLog(paths.training_log_csv())
        self.previews = PreviewCache()
        self.username = username
        self.password = password
        self.links = {"flower": _web_link("SUPERSMM_FLOWER_URL"), "tensorboard": _web_link("SUPERSMM_TENSORBOARD_URL")}

    def runs(self) -> dict:
        table, problem = self.training_log.read()
        now = datetime.now(timezone.utc)
        rows_of = {run: rows for run, rows in table.groupby("run", sort=False)}
        summaries = [run_summary(name, rows_of.get(name, table.iloc[0:0]), now) for name in run_names(table)]
        return {"runs": summaries, "problem": problem}

    def run(self, name: str) -> dict | None:
        table, problem = self.training_log.read()
        rows = table[table["run"] == name]
        if not len(rows) and not paths.run_dir(name).is_dir():
            return None
        tail, log_problem = log_tail(name)
        return {
            "summary": run_summary(name, rows),
            "history": run_history(rows),
            "state": peek_state(name),
            "config": read_config(name),
            "log_tail": tail,
            "log_problem": log_problem,
            "problem": problem,
        }


def _web_link(variable: str) -> str | None:
    """The address in `variable` for a link on the page, without any user name or password in it: the
    page shows its links to whoever opens it, and the browser asks Flower or TensorBoard for their own login.
    The value is never repeated in an error, as it may hold a password."""
    url = os.environ.get(variable, "").strip()
    if not url:
        return None
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # such as an unclosed [ of an IPv6 address
        raise SupersmmError(f"{variable} is not a valid address: give http://HOST:PORT/ or https://HOST:PORT/") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise SupersmmError(f"{variable} must be an http:// or https:// address (its value is not shown: "
                            "it may hold a password)")
    host_and_port = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=host_and_port).geturl()


class BaseHandler(tornado.web.RequestHandler):
    """Security headers and optional HTTP basic auth on every response."""

    def initialize(self, dashboard: Dashboard, **kwargs):
        self.dashboard = dashboard

    def set_default_headers(self):
        self.set_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "no-referrer")

    def prepare(self):
        if self.dashboard.password and not self._authorised():
            self.set_header("WWW-Authenticate", 'Basic realm="SuperSMM dashboard", charset="UTF-8"')
            raise tornado.web.HTTPError(401)

    def _authorised(self) -> bool:
        scheme, _, encoded = self.request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        user_ok = hmac.compare_digest(user.encode(), (self.dashboard.username or "").encode())
        password_ok = hmac.compare_digest(password.encode(), self.dashboard.password.encode())
        return user_ok and password_ok


class JsonHandler(BaseHandler):
    def set_default_headers(self):
        super().set_default_headers()
        self.set_header("Cache-Control", "no-store")

    def write_json(self, value) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(value))

    def write_error(self, status_code: int, **kwargs):
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps({"error": self._reason}))

    def run_name(self, name: str) -> str:
        try:
            return paths.validate_run_name(name)
        except paths.InvalidName:
            raise tornado.web.HTTPError(400, reason="invalid run name") from None


class PageHandler(BaseHandler):
    def get(self):
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.finish((STATIC_DIR / "index.html").read_bytes())


class StaticHandler(BaseHandler, tornado.web.StaticFileHandler):
    def initialize(self, dashboard: Dashboard, path: str):
        BaseHandler.initialize(self, dashboard)
        tornado.web.StaticFileHandler.initialize(self, path)

    @classmethod
    def get_absolute_path(cls, root: str, path: str) -> str:
        if "\x00" in path:  # no file has such a name; the file system would refuse it with a ValueError (a 500)
            raise tornado.web.HTTPError(404)
        return super().get_absolute_path(root, path)


class ConfigHandler(JsonHandler):
    def get(self):
        self.write_json({"refresh_seconds": REFRESH_SECONDS, "links": self.dashboard.links})


class RunsHandler(JsonHandler):
    async def get(self):
        self.write_json(await asyncio.to_thread(self.dashboard.runs))


class RunHandler(JsonHandler):
    async def get(self, name: str):
        detail = await asyncio.to_thread(self.dashboard.run, self.run_name(name))
        if detail is None:
            raise tornado.web.HTTPError(404, reason=f"no run named {name}")
        self.write_json(detail)


class PreviewsHandler(JsonHandler):
    async def get(self, name: str):
        name = self.run_name(name)
        status, previews = await asyncio.to_thread(self.dashboard.previews.lookup, name)
        prefix = f"/api/runs/{name}/previews"
        self.write_json({
            "status": status,
            "error": previews.error if previews else None,
            "images": [image.to_json(i, prefix) for i, image in enumerate(previews.images)] if previews else [],
        })


class PreviewFileHandler(JsonHandler):
    def get(self, name: str, index: str, kind: str):
        image = self.dashboard.previews.image(self.run_name(name), int(index))
        if image is None or (kind == "engraving.svg" and image.engraving is None) or (
                kind == "score.musicxml" and image.score is None):
            raise tornado.web.HTTPError(404, reason="no such preview")
        self.set_header("Cache-Control", "no-cache")
        if kind == "image":
            self.set_header("Content-Type", image.image_type)
            self.finish(image.image)
        elif kind == "score.musicxml":
            self.set_header("Content-Type", MUSICXML_TYPE)
            self.set_header("Content-Disposition", f'attachment; filename="{_file_name(image.id)}.musicxml"')
            self.finish(image.score)
        else:
            self.set_header("Content-Type", "image/svg+xml")
            self.finish(image.engraving)


def _file_name(sample_id: str) -> str:
    """A sample id as a download's file name: anything but letters, digits, - and _ becomes _."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", sample_id)[:100] or "prediction"


class NotFoundHandler(JsonHandler):
    def prepare(self):
        super().prepare()
        raise tornado.web.HTTPError(404, reason="not found")


def make_app(username: str | None = None, password: str | None = None) -> tornado.web.Application:
    dashboard = Dashboard(username, password)
    shared = {"dashboard": dashboard}
    return tornado.web.Application([
        (r"/", PageHandler, shared),
        (r"/static/(.*)", StaticHandler, {**shared, "path": str(STATIC_DIR)}),
        (r"/api/config", ConfigHandler, shared),
        (r"/api/runs", RunsHandler, shared),
        (r"/api/runs/([^/]+)", RunHandler, shared),
        (r"/api/runs/([^/]+)/previews", PreviewsHandler, shared),
        (r"/api/runs/([^/]+)/previews/(\d{1,3})/(image|engraving\.svg|score\.musicxml)", PreviewFileHandler, shared),
    ], default_handler_class=NotFoundHandler, default_handler_args=shared, dashboard=dashboard)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(host: str = "127.0.0.1", port: int = 8050, username: str | None = None, password: str | None = None) -> None:
    """Serve the dashboard until Ctrl-C. Off loopback, a password is required: the page shows logs and paths."""
    if not is_loopback(host) and not password:
        raise SupersmmError(
            f"refusing to serve the dashboard on {host} without a password: "
            "set SUPERSMM_DASHBOARD_PASSWORD in the environment (not --password: `ps` shows command lines), "
            "or bind to 127.0.0.1"
        )
    if password and not username:
        raise SupersmmError("a dashboard password needs a user name (--user)")
    try:
        asyncio.run(_serve_forever(host, port, username, password))
    except KeyboardInterrupt:
        print("dashboard stopped", flush=True)


async def _serve_forever(host: str, port: int, username: str | None, password: str | None) -> None:
    app = make_app(username, password)
    try:
        server = app.listen(port, address=host)
    except OSError as error:
        raise SupersmmError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    shown_host = f"[{host}]" if ":" in host else host
    print(f"SuperSMM dashboard of {paths.home()} on http://{shown_host}:{port}/ (Ctrl-C stops)", flush=True)
    if not is_loopback(host):
        print("warning: basic auth over plain HTTP sends the password readable to the network; "
              "outside a trusted network put the dashboard behind a TLS reverse proxy", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        server.stop()
        app.settings["dashboard"].previews.shutdown()
