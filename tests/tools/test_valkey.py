"""tools.valkey: a real valkey-server on a free loopback port, stopped and restarted."""

import pytest
import valkey

from tools.valkey import (
    ReplicatedValkey,
    ValkeyError,
    ValkeyServer,
    answering_pid,
    running_valkey,
)


def client(server):
    return valkey.Valkey(port=server.port, decode_responses=True)


def test_a_server_answers_on_loopback_at_its_url_and_is_gone_after_stop():
    with running_valkey() as server:
        assert server.url() == f"redis://127.0.0.1:{server.port}/0"
        assert client(server).ping()
        process = server.process

    assert process.poll() is not None
    assert answering_pid(server.port) is None


def test_a_server_without_a_directory_keeps_nothing_across_a_restart():
    with running_valkey() as server:
        client(server).set("unit", "u1")
        port = server.port

        server.restart()

        assert server.port == port
        assert client(server).get("unit") is None


def test_a_journaling_server_keeps_every_acknowledged_write_across_a_crash(tmp_path):
    with running_valkey(tmp_path / "data") as server:
        client(server).set("unit", "u1")

        server.restart(kill=True)

        assert client(server).get("unit") == "u1"


def test_a_taken_port_is_reported_with_where_to_look(tmp_path):
    with running_valkey() as first:
        second = ValkeyServer(port=first.port, log_path=tmp_path / "second.log")

        with pytest.raises(
            ValkeyError, match=f"did not start answering on 127.0.0.1:{first.port}.*second.log"
        ):
            second.start()

        assert "Address already in use" in (tmp_path / "second.log").read_text()
        assert client(first).ping()


def test_a_missing_binary_named_in_the_environment_is_reported(monkeypatch, tmp_path):
    monkeypatch.setenv("QRFLEET_VALKEY_SERVER", str(tmp_path / "valkey-server"))

    with pytest.raises(ValkeyError, match="QRFLEET_VALKEY_SERVER=.* is not an executable file"):
        ValkeyServer()


def test_a_replicated_valkey_copies_writes_to_its_replica_and_sentinels_name_the_primary(tmp_path):
    with ReplicatedValkey(tmp_path, sentinels=3) as valkeys:
        client(valkeys.primary).set("unit", "u1")
        assert client(valkeys.primary).wait(1, 1000) == 1
        assert client(valkeys.replica).get("unit") == "u1"
        assert valkeys.primary_port() == valkeys.primary.port
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in valkeys.sentinels)
        assert valkeys.url(2) == f"redis+sentinel://{hosts}/qrfleet/2"
        processes = [s.process for s in [valkeys.primary, valkeys.replica, *valkeys.sentinels]]

    assert all(p.poll() is not None for p in processes)
