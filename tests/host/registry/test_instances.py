"""Contract: what an instance is granted ends with it; a cashier's new QR replaces its own
unfinished one; a request repeated with its idempotency key is not applied twice."""

import pytest

from host.registry import (
    Actor,
    AllBusy,
    IdempotencyMismatch,
    IdempotentRequest,
    Limits,
    NotFound,
    Superseded,
    open_registry,
)
from host.registry.rules import IDEMPOTENCY_TTL_S
from tests.host.registry.conftest import Shop

PRESENCE_S = 3


async def strict_shop(registry):
    """Agent a with its own unit u1 online; b with u2."""
    shop = await Shop(registry).open("strict", units=("u1", "u2"))
    await shop.pair("a", "u1")
    await shop.pair("b", "u2")
    await shop.connect("u1", "u2", ttl_s=600)
    return shop


def request(key, txn_id, fingerprint="qr upi://pay", caller="agent:a"):
    return IdempotentRequest(caller, key, fingerprint, txn_id)


# A reservation is held by the instance that made it


async def test_a_reservation_ends_when_its_instance_stops_renewing(store_url, clock):
    async with (
        open_registry(store_url, clock=clock) as api,
        open_registry(store_url, clock=clock) as doomed,
    ):
        await strict_shop(api)
        await doomed.join("s2", PRESENCE_S)
        await doomed.reserve_for_agent("a", "t1", ttl_s=120)

        clock.advance(PRESENCE_S + 0.1)  # s2 was killed: nobody renews it

        assert (await api.get_device("u1")).txn_id is None
        with pytest.raises(NotFound, match="ended with server s2"):
            await doomed.complete("t1", Actor.agent("a"))
        reservation = await api.reserve_for_agent("a", "t2", ttl_s=120)
        assert reservation.device_id == "u1"
        released = [e for e in await api.audit(device_id="u1") if e.txn_id == "t1"]
        assert released[-1].action == "release"


async def test_a_renewed_instance_keeps_what_it_holds(store_url, clock):
    async with (
        open_registry(store_url, clock=clock) as api,
        open_registry(store_url, clock=clock) as other,
    ):
        await strict_shop(api)
        await other.join("s2", PRESENCE_S)
        await other.reserve_for_agent("a", "t1", ttl_s=120)
        for _ in range(5):
            clock.advance(PRESENCE_S - 1)
            assert await other.renew(PRESENCE_S)

        assert (await api.get_device("u1")).txn_id == "t1"
        assert (await other.complete("t1", Actor.agent("a"))).device_id == "u1"


async def test_a_restarted_instance_holds_nothing_from_before_its_restart(store_url, clock):
    async with open_registry(store_url, clock=clock) as first_run:
        await strict_shop(first_run)  # joins as "api"
        await first_run.reserve_for_agent("a", "t1", ttl_s=120)
    async with open_registry(store_url, clock=clock) as second_run:
        await second_run.join("api", PRESENCE_S)

        assert (await second_run.get_device("u1")).txn_id is None
        assert (await second_run.reserve_for_agent("a", "t2")).device_id == "u1"


async def test_an_instance_that_lapsed_is_told_so_and_gets_nothing_back(store_url, clock):
    async with (
        open_registry(store_url, clock=clock) as api,
        open_registry(store_url, clock=clock) as paused,
    ):
        await strict_shop(api)
        first = await paused.join("s2", PRESENCE_S)
        await paused.reserve_for_agent("a", "t1", ttl_s=120)
        clock.advance(PRESENCE_S + 5)  # SIGSTOP past its presence

        assert await paused.renew(PRESENCE_S) is False
        assert await paused.join("s2", PRESENCE_S) == first + 1
        assert (await api.get_device("u1")).txn_id is None
        assert "s2" in {i.server_id for i in await api.instances()}


async def test_a_reservation_outlives_the_death_of_another_instance(store_url, clock):
    async with (
        open_registry(store_url, clock=clock) as api,
        open_registry(store_url, clock=clock) as other,
    ):
        await strict_shop(api)
        await other.join("s2", PRESENCE_S)
        await api.reserve_for_agent("a", "t1", ttl_s=120)
        clock.advance(PRESENCE_S + 1)

        assert await other.renew(PRESENCE_S) is False
        assert (await api.get_device("u1")).txn_id == "t1"


async def test_the_sweeper_tidies_what_dead_instances_held(store_url, clock):
    async with (
        open_registry(store_url, clock=clock) as api,
        open_registry(store_url, clock=clock) as doomed,
    ):
        await strict_shop(api)
        await doomed.join("s2", PRESENCE_S)
        await doomed.reserve_for_agent("a", "t1", ttl_s=120)
        clock.advance(PRESENCE_S + 1)

        assert (await api.sweep())["reservations"] == 1
        assert [r.txn_id for r in await api.store.read(lambda tx: tx.reservations())] == []


# A cashier's new QR replaces its own unfinished one


async def test_a_new_qr_supersedes_the_agents_unfinished_transaction(registry):
    shop = await strict_shop(registry)
    await registry.reserve_for_agent("a", "t1")

    replacement = await registry.reserve_for_agent("a", "t2")

    assert replacement.device_id == "u1"
    for finish in (registry.complete, registry.cancel):
        with pytest.raises(Superseded, match="replaced by the agent's next QR, transaction t2"):
            await finish("t1", Actor.agent("a"))
    entries = [e for e in await registry.audit(device_id="u1") if e.txn_id == "t1"]
    assert entries[-1].action == "superseded"
    assert (await shop.registry.complete("t2", Actor.agent("a"))).device_id == "u1"


async def test_a_request_may_ask_not_to_supersede(registry):
    await strict_shop(registry)
    await registry.reserve_for_agent("a", "t1")

    with pytest.raises(AllBusy):
        await registry.reserve_for_agent("a", "t2", supersede=False)

    assert (await registry.get_device("u1")).txn_id == "t1"


async def test_a_pool_unit_reserved_by_another_agent_is_never_superseded(registry):
    await Shop(registry).open("pool", units=("u1",))
    await Shop(registry).connect("u1", ttl_s=600)
    await registry.reserve_for_agent("b", "t1")

    with pytest.raises(AllBusy):
        await registry.reserve_for_agent("a", "t2")

    assert (await registry.get_device("u1")).txn_id == "t1"


# Requests repeated with their idempotency key


async def test_a_retry_of_an_answered_request_gets_its_answer_and_changes_nothing(registry):
    await strict_shop(registry)
    first = request("k1", "t1")
    await registry.reserve_for_agent("a", "t1", request=first)
    await registry.answer_request(first, 201, {"txn_id": "t1"})

    again = await registry.reserve_for_agent("a", "t-other", request=request("k1", "t-other"))

    assert (again.status, again.response) == (201, {"txn_id": "t1"})
    assert (await registry.get_device("u1")).txn_id == "t1"
    reserves = [e for e in await registry.audit(device_id="u1") if e.action == "reserve"]
    assert [e.txn_id for e in reserves] == ["t1"]


async def test_a_key_reused_for_another_request_is_refused(registry):
    await strict_shop(registry)
    await registry.reserve_for_agent("a", "t1", request=request("k1", "t1"))

    with pytest.raises(IdempotencyMismatch) as refusal:
        await registry.reserve_for_agent("a", "t2", request=request("k1", "t2", "qr other"))

    assert (refusal.value.code, refusal.value.status) == ("idempotency_key_reused", 409)
    assert (await registry.get_device("u1")).txn_id == "t1"


async def test_a_retry_after_its_instance_died_finishes_the_same_transaction(store_url, clock):
    async with (
        open_registry(store_url, clock=clock) as survivor,
        open_registry(store_url, clock=clock) as doomed,
    ):
        await strict_shop(survivor)
        await doomed.join("s2", PRESENCE_S)
        await doomed.reserve_for_agent("a", "t1", request=request("k1", "t1"))
        clock.advance(PRESENCE_S + 1)

        retried = await survivor.reserve_for_agent("a", "t9", request=request("k1", "t9"))

        assert (retried.txn_id, retried.device_id) == ("t1", "u1")
        assert (retried.server_id, retried.epoch) == survivor.instance
        assert (await survivor.complete("t1", Actor.agent("a"))).device_id == "u1"


async def test_a_retry_while_its_first_attempt_is_alive_takes_the_transaction_over(
    store_url, clock
):
    async with (
        open_registry(store_url, clock=clock) as one,
        open_registry(store_url, clock=clock) as two,
    ):
        await strict_shop(one)
        await two.join("s2", 3600)
        await one.reserve_for_agent("a", "t1", request=request("k1", "t1"))

        retried = await two.reserve_for_agent("a", "t9", request=request("k1", "t9"))

        assert (retried.txn_id, retried.server_id) == ("t1", "s2")
        reserves = [e for e in await two.audit(device_id="u1") if e.action == "reserve"]
        assert [e.txn_id for e in reserves] == ["t1"]


async def test_completing_twice_with_one_key_completes_once(registry):
    await strict_shop(registry)
    await registry.reserve_for_agent("a", "t1")
    key = request("k2", "t1", "complete t1")
    answer = {"txn_id": "t1", "result": "paid"}

    first = await registry.complete("t1", Actor.agent("a"), key, answer)
    second = await registry.complete("t1", Actor.agent("a"), key, answer)

    assert first.device_id == "u1"
    assert (second.status, second.response) == (200, answer)
    completes = [e for e in await registry.audit(device_id="u1") if e.action == "complete"]
    assert len(completes) == 1
    with pytest.raises(NotFound):
        await registry.complete("t1", Actor.agent("a"))


async def test_a_caller_keeps_at_most_its_cap_of_keys_the_oldest_forgotten(store_url, clock):
    async with open_registry(
        store_url, clock=clock, limits=Limits(idempotency_keys_per_caller=2)
    ) as registry:
        await strict_shop(registry)
        for n in range(3):
            clock.advance(1)
            await registry.reserve_for_agent("a", f"t{n}", request=request(f"k{n}", f"t{n}"))

        count = await registry.store.read(lambda tx: tx.count_idempotent_requests("agent:a"))
        assert count == 2
        assert await registry.idempotent_answer(request("k0", "t0")) is None


async def test_keys_expire_after_their_documented_time(registry, clock):
    await strict_shop(registry)
    first = request("k1", "t1")
    await registry.reserve_for_agent("a", "t1", request=first)
    await registry.answer_request(first, 201, {"txn_id": "t1"})
    await registry.complete("t1", Actor.agent("a"))
    clock.advance(IDEMPOTENCY_TTL_S)

    assert await registry.idempotent_answer(first) is None
    assert (await registry.sweep())["idempotency_keys"] == 1
