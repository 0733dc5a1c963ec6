"""The chunk queue protocol on a real Redis: a trainer hands its run over to the next chunk in one step."""
from __future__ import annotations

from supersmm_tasks import broker, chunk_queue, lease, reconciler, run_keys


def claimed(home, name: str) -> chunk_queue.Claim:
    """Run NAME queued (3 chunks of 1 epoch) and its first chunk claimed, as a worker that took the message does."""
    home.enqueue(name, epochs=3, chunk=1)
    connection = broker.client()
    task_id = chunk_queue.pending_chunk(connection, name)["task_id"]
    claim = chunk_queue.claim(connection, name, task_id, "trainer@test")
    assert claim is not None
    return claim


def test_handing_over_releases_the_lease_and_queues_the_next_chunk_in_one_step(training_home):
    connection = broker.client()
    claim = claimed(training_home, "handed")
    assert lease.holder(connection, "handed") == "trainer@test"

    marker = chunk_queue.queue_next_chunk(connection, "handed", handing_over=claim.lease)

    assert marker is not None and marker["queue"] == "supersmm" and marker["priority"] == 5
    assert lease.holder(connection, "handed") is None
    assert chunk_queue.pending_chunk(connection, "handed") == marker
    assert not reconciler.MessageSnapshot(connection).nowhere(marker["task_id"], "supersmm")  # its message is queued
    assert reconciler.reconcile_once(connection) == []  # nothing for the reconciler to heal
    claim.lease.release()  # the task's `finally`: already handed over, it must not touch the new state
    assert chunk_queue.pending_chunk(connection, "handed") == marker


def test_a_trainer_that_lost_its_lease_neither_releases_the_new_holders_lease_nor_queues(training_home):
    connection = broker.client()
    stale = claimed(training_home, "taken").lease
    connection.delete(run_keys.lease_key("taken"))  # stale's lease expired...
    successor = lease.Lease.acquire(connection, "taken", "successor@test")  # ...and another trainer took the run
    assert successor is not None and successor.token > stale.token

    assert chunk_queue.queue_next_chunk(connection, "taken", handing_over=stale) is None

    assert lease.holder(connection, "taken") == "successor@test"
    assert chunk_queue.pending_chunk(connection, "taken") == {}
    successor.release()


def test_a_live_foreground_route_sends_the_next_chunk_to_its_queue_and_priority(training_home):
    connection = broker.client()
    claim = claimed(training_home, "routed")
    connection.hset(run_keys.route_key("routed"), mapping={"queue": "foreground-routed", "priority": 0})

    marker = chunk_queue.queue_next_chunk(connection, "routed", handing_over=claim.lease)

    assert (marker["queue"], marker["priority"]) == ("foreground-routed", 0)
    assert chunk_queue.pending_chunk(connection, "routed") == marker
    assert not reconciler.MessageSnapshot(connection).nowhere(marker["task_id"], "foreground-routed")


def test_a_run_whose_config_cannot_route_its_chunk_is_skipped_and_the_others_still_heal(training_home, caplog):
    import json

    from supersmm_tasks import paths

    for name in ("aaa", "zzz"):  # queued, with no chunk pending: what the reconciler heals
        training_home.create(name, epochs=3, chunk=1)
    config = json.loads(paths.config_path("aaa").read_text())
    paths.config_path("aaa").write_text(json.dumps({**config, "priority": "high"}))  # edited by hand
    connection = broker.client()

    assert reconciler.reconcile_once(connection) == ["zzz"]

    assert chunk_queue.pending_chunk(connection, "aaa") == {}
    assert f"skipping run aaa: {paths.config_path('aaa')}: priority 'high' is not a whole number from 0 to 9" \
        in caplog.text


def test_a_marker_that_cannot_be_read_is_replaced_and_stops_no_other_run(training_home):
    for name in ("garbled", "plain"):
        training_home.create(name, epochs=3, chunk=1)
    connection = broker.client()
    connection.set(run_keys.pending_key("garbled"), "{not json")  # a value damaged by hand or a bad restore

    assert reconciler.reconcile_once(connection) == ["garbled", "plain"]

    for name in ("garbled", "plain"):
        marker = chunk_queue.pending_chunk(connection, name)
        assert marker and not reconciler.MessageSnapshot(connection).nowhere(marker["task_id"], marker["queue"])


def test_the_reconciler_heals_a_run_whose_state_file_is_gone_without_writing_it(training_home):
    from supersmm_tasks import paths

    training_home.create("stateless", epochs=3, chunk=1)
    paths.state_path("stateless").unlink()  # lost: rebuilt from the run's files by whoever next trains it

    assert reconciler.reconcile_once(broker.client()) == ["stateless"]

    assert not paths.state_path("stateless").exists()  # the reconciler holds no lease: it writes no run file
    assert chunk_queue.pending_chunk(broker.client(), "stateless")["first_epoch"] == 1
