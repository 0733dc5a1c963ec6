"""The embedded broker, the run lease with its fencing token, and one clear line when Redis is down."""
from __future__ import annotations

import os
import signal
import stat
import socket
import subprocess
import sys
import threading
import time

import pytest
import redis

from supersmm_tasks import broker
from supersmm_tasks.errors import SupersmmError
from supersmm_tasks.lease import Lease, LeaseLost, holder
from supersmm_tasks.run_keys import fence_key, lease_key


@pytest.fixture
def embedded_home(tmp_path, monkeypatch):
    monkeypatch.setenv("SUPERSMM_HOME", str(tmp_path))
    monkeypatch.delenv("SUPERSMM_BROKER_URL", raising=False)
    monkeypatch.delenv("SUPERSMM_RESULT_BACKEND", raising=False)
    yield tmp_path
    broker.stop_embedded()


@pytest.mark.integration
def test_embedded_broker_is_private_persistent_and_reused(embedded_home):
    url = broker.broker_url()
    assert url.startswith("redis+socket://")
    socket_path = url[len("redis+socket://"):]
    assert socket_path.startswith(str(embedded_home / ".supersmm"))
    assert stat.S_IMODE(os.stat(socket_path).st_mode) & 0o077 == 0
    broker.client().set("survives", "a restart")

    assert broker.ensure_embedded() == url
    assert broker.stop_embedded() is True
    assert broker.embedded_url_if_running() is None

    assert broker.ensure_embedded() == url
    assert broker.client().get("survives") == "a restart"


@pytest.mark.integration
def test_celery_and_a_second_process_reuse_the_embedded_broker(embedded_home):
    url = broker.ensure_embedded()
    seen = subprocess.run(
        [sys.executable, "-c", "from supersmm_tasks import app; print(app.conf.broker_url); print(app.conf.result_backend)"],
        capture_output=True, text=True, timeout=60, env=os.environ.copy())
    assert seen.returncode == 0, seen.stderr
    assert seen.stdout.split() == [url, url]


@pytest.mark.integration
def test_embedded_broker_falls_back_to_loopback_with_a_password_when_the_socket_path_is_too_long(tmp_path, monkeypatch):
    home = tmp_path / ("long_folder_name_" * 6)
    monkeypatch.setenv("SUPERSMM_HOME", str(home))
    monkeypatch.delenv("SUPERSMM_BROKER_URL", raising=False)
    try:
        url = broker.broker_url()
        assert url.startswith("redis://:") and "@127.0.0.1:" in url
        assert broker.connect(url).ping()
        without_password = url.replace(url[len("redis://"):url.index("@") + 1], "")
        with pytest.raises(SupersmmError, match="password|NOAUTH|Authentication"):
            broker.connect(without_password)
    finally:
        broker.stop_embedded()


def test_lease_is_exclusive_and_each_acquisition_gets_a_larger_fencing_token(redis_server):
    client = redis_server.client()
    first = Lease.acquire(client, "primus", worker="w1", ttl_s=5)
    assert first is not None and holder(client, "primus") == "w1"
    assert Lease.acquire(client, "primus", worker="w2", ttl_s=5) is None
    first.release()
    second = Lease.acquire(client, "primus", worker="w2", ttl_s=5)
    assert second.token > first.token
    with pytest.raises(LeaseLost):
        first.guard()
    second.guard()


def test_a_holder_paused_past_its_ttl_is_fenced_off(redis_server):
    client = redis_server.client()
    stalled = Lease.acquire(client, "primus", worker="stalled", ttl_s=0.3)  # no heartbeat: as if SIGSTOPped
    time.sleep(0.5)
    successor = Lease.acquire(client, "primus", worker="successor", ttl_s=5)
    assert successor is not None
    with pytest.raises(LeaseLost):
        stalled.guard()
    assert holder(client, "primus") == "successor"
    stalled.release()  # a stale release must not free the successor's lease
    assert holder(client, "primus") == "successor"


def test_heartbeat_keeps_the_lease_beyond_its_ttl(redis_server):
    client = redis_server.client()
    lease = Lease.acquire(client, "primus", worker="w1", ttl_s=1.2)  # renewed every 0.4 s
    lease.start_heartbeat()
    time.sleep(3)
    assert Lease.acquire(client, "primus", worker="w2", ttl_s=1.2) is None
    lease.guard()
    lease.release()
    assert holder(client, "primus") is None


def test_one_heartbeat_thread_keeps_every_lease_of_the_process_until_each_is_given_up(redis_server):
    client = redis_server.client()
    leases = [Lease.acquire(client, run, worker="w1", ttl_s=1.2) for run in ("a", "b", "c")]
    for lease in leases:
        lease.start_heartbeat()
    leases[1].give_up()  # stops renewing it at once (a handover deletes it next): it expires in its TTL
    time.sleep(3)
    assert [Lease.acquire(client, run, worker="w2", ttl_s=1.2) is None for run in ("a", "b", "c")] == [True, False, True]
    for lease in (leases[0], leases[2]):
        lease.guard()
    heartbeats = [thread for thread in threading.enumerate() if "lease" in thread.name]
    assert len(heartbeats) == 1, [thread.name for thread in heartbeats]
    for lease in leases:
        lease.release()


def test_a_forked_child_renews_only_its_own_leases(redis_server):
    client = redis_server.client()
    parents = Lease.acquire(client, "parent", worker="w1", ttl_s=1.2)
    parents.start_heartbeat()
    child = os.fork()
    if child == 0:  # the child keeps a lease of its own for 3 s, then exits 0 if it held it all along
        code = 1
        try:
            own = Lease.acquire(redis_server.client(), "child", worker="w2", ttl_s=1.2)
            own.start_heartbeat()
            time.sleep(3)
            own.guard()
            code = 0
        finally:
            os._exit(code)
    parents.give_up()  # the parent stops renewing its lease: the child must not keep it alive
    time.sleep(2)
    assert holder(client, "parent") is None
    deadline = time.monotonic() + 15
    while (ended := os.waitpid(child, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    if ended[0] == 0:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        pytest.fail("the forked child hung taking a lease of its own")
    assert os.waitstatus_to_exitcode(ended[1]) == 0
    assert holder(client, "child") == "w2"


def test_a_token_handed_out_again_after_a_redis_rolled_back_is_not_the_old_holders(redis_server):
    client = redis_server.client()
    old = Lease.acquire(client, "primus", worker="w1", ttl_s=30)
    # A replica promoted without the last writes: the lease and the counter's INCR are lost together.
    client.delete(lease_key("primus"))
    client.set(fence_key("primus"), old.token - 1)
    new = Lease.acquire(client, "primus", worker="w1", ttl_s=30)  # the same token, even the same worker name
    assert new.token == old.token

    with pytest.raises(LeaseLost):
        old.guard()
    old.release()
    new.guard()
    assert holder(client, "primus") == "w1" and client.pttl(lease_key("primus")) > 25_000


def test_the_heartbeat_marks_a_superseded_lease_lost(redis_server):
    client = redis_server.client()
    lease = Lease.acquire(client, "primus", worker="w1", ttl_s=1.2)
    lease.start_heartbeat()
    client.delete(lease_key("primus"))  # as a Redis that failed over without it
    successor = Lease.acquire(client, "primus", worker="successor", ttl_s=30)
    assert successor is not None
    deadline = time.monotonic() + 5
    while not lease.lost and time.monotonic() < deadline:  # renewed every 0.4 s
        time.sleep(0.1)
    assert lease.lost
    with pytest.raises(LeaseLost):
        lease.guard()
    lease.release()
    assert holder(client, "primus") == "successor"


def test_lease_and_fencing_counter_survive_a_redis_restart(redis_server):
    client = redis_server.client()
    lease = Lease.acquire(client, "primus", worker="w1", ttl_s=30)
    redis_server.restart()
    lease.guard()  # the same client reconnects; the lease is still ours
    lease.release()
    again = Lease.acquire(redis_server.client(), "primus", worker="w1", ttl_s=30)
    assert again.token > lease.token


@pytest.mark.integration
@pytest.mark.parametrize("command", [["pause", "primus"], ["enqueue", "primus"]])  # status: test_status.py
def test_an_unreachable_broker_gives_one_clear_line(tmp_path, command):
    closed_port = redis_server_port_that_is_closed()
    env = {**os.environ, "SUPERSMM_HOME": str(tmp_path), "SUPERSMM_BROKER_URL": f"redis://127.0.0.1:{closed_port}/0"}
    (tmp_path / "model" / "primus_model").mkdir(parents=True)
    (tmp_path / "model" / "primus_model" / "config.json").write_text('{"dataset": "primus"}')
    result = subprocess.run([sys.executable, "-m", "supersmm_tasks.cli", *command],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"127.0.0.1:{closed_port}" in lines[0] and "unreachable" in lines[0]


def redis_server_port_that_is_closed() -> int:
    return broker.free_loopback_port()


def test_connect_names_the_broker_without_its_password():
    with pytest.raises(SupersmmError) as error:
        broker.connect(f"redis://:secret@127.0.0.1:{redis_server_port_that_is_closed()}/0")
    assert "secret" not in str(error.value) and "unreachable" in str(error.value)
    assert isinstance(broker.client("redis+socket:///tmp/nowhere.sock"), redis.Redis)


@pytest.mark.integration
def test_workers_bring_back_an_embedded_broker_that_died_but_not_one_stopped_on_purpose(embedded_home):
    url = broker.ensure_embedded()
    broker.client(url).set("kept", "yes")
    os.kill(int((embedded_home / ".supersmm" / "broker" / "redis.pid").read_text()), signal.SIGKILL)
    time.sleep(0.5)
    assert broker.embedded_url_if_running() is None

    broker.restart_embedded_if_crashed()
    assert broker.embedded_url_if_running() == url
    assert broker.client(url).get("kept") == "yes"

    broker.stop_embedded()
    broker.restart_embedded_if_crashed()
    assert broker.embedded_url_if_running() is None


@pytest.mark.integration
@pytest.mark.parametrize("url", [
    "sentinel://", "sentinel://127.0.0.1;sentinel://127.0.0.1:26379", "amqp://guest:s3cret@host//",
    "redis://:s3cret@127.0.0.1:notaport/0", "http://127.0.0.1:6379", "redis://:s3cret@[::1",
    "redis://:s3cret@127.0.0.1:6379/0?socket_timeout=soon", "rediss://:s3cret@127.0.0.1:6380/0",
    "rediss://:s3cret@127.0.0.1:6380/0?ssl_cert_reqs=CERT_REQUIRED", "unix://tmp/redis.sock",
    "unix://:s3cret@/tmp/redis.sock?db=2",
])
@pytest.mark.parametrize("command", [["supersmm_tasks.cli", "status"], ["celery", "-A", "supersmm_tasks", "worker"]])
def test_a_broker_url_the_project_cannot_use_is_one_clear_line(tmp_path, url, command):
    env = {**os.environ, "SUPERSMM_HOME": str(tmp_path), "SUPERSMM_BROKER_URL": url}
    result = subprocess.run([sys.executable, "-m", *command], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "cannot be used" in lines[0] and "SUPERSMM_BROKER_URL" in lines[0] and "s3cret" not in lines[0]


def test_sentinels_that_name_no_master_are_one_short_line_without_the_password():
    url = f"sentinel://:s3cret@127.0.0.1:{broker.free_loopback_port()};sentinel://127.0.0.1:{broker.free_loopback_port()}"
    with pytest.raises(SupersmmError) as error:
        broker.connect(url)
    message = str(error.value)
    assert "unreachable" in message and "'mymaster'" in message and "SUPERSMM_SENTINEL_MASTER" in message
    assert "s3cret" not in message and "\n" not in message and len(message) < 300, message


def test_passwords_are_hidden_in_urls_that_cannot_be_parsed():
    assert broker.redact("redis://:s3cret@[::1") == "redis://:***@[::1"
    assert broker.redact("redis://user:p%40ss@host:6379/0?x=a@b") == "redis://user:***@host:6379/0?x=a@b"
    assert broker.redact("redis://host:6379/0?x=a@b") == "redis://host:6379/0?x=a@b"  # no password, nothing hidden


def test_sentinel_urls_are_accepted_and_name_their_master(monkeypatch):
    url = "sentinel://:pw@10.0.0.1:26379;sentinel://10.0.0.2:26379;sentinel://10.0.0.3:26380"
    assert broker.checked_url(url) == url
    monkeypatch.delenv("SUPERSMM_SENTINEL_MASTER", raising=False)
    assert broker.sentinel_master() == "mymaster"
    monkeypatch.setenv("SUPERSMM_SENTINEL_MASTER", "trainers")
    assert broker.sentinel_master() == "trainers"
    assert broker.redact(url) == "sentinel://:***@10.0.0.1:26379;sentinel://10.0.0.2:26379;sentinel://10.0.0.3:26380"


def test_celery_speaks_json_only_messages_results_and_events():
    from supersmm_tasks.celery_app import app

    conf = app.conf
    assert (conf.task_serializer, conf.result_serializer, conf.event_serializer) == ("json", "json", "json")
    assert list(conf.accept_content) == ["json"] and list(conf.result_accept_content) == ["json"]


def test_a_tls_broker_cut_off_during_the_handshake_is_unreachable_not_refused():
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def accept_and_close():  # a proxy with nothing behind it
        for _ in range(5):
            connection, _ = listener.accept()
            connection.close()

    threading.Thread(target=accept_and_close, daemon=True).start()
    with pytest.raises(broker.BrokerUnreachable, match="is unreachable"):
        broker.connect(f"rediss://:s3cret@127.0.0.1:{listener.getsockname()[1]}/0?ssl_cert_reqs=none")
    with pytest.raises(broker.BrokerUnreachable):
        broker.connect(f"redis://127.0.0.1:{broker.free_loopback_port()}/0")
    listener.close()
