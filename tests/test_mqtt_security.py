"""Broker authentication (mosquitto password file) and TLS (certificates made here by
openssl), with the agent's own umqtt.simple client."""
import os
import stat

import pytest

from broker_fixtures import (Agent, Certificates, Mosquitto, Watcher, send, still,  # noqa: F401
                             stop_leftovers, wait_until)


def online(watcher, base):
    watcher.wait_for(lambda t, p: t == base + "/availability" and p == b"online", "online")


@pytest.fixture
def auth_broker(tmp_path):
    b = Mosquitto(tmp_path / "broker", users={"cam": "s3cret pass", "viewer": "v"}).start()
    yield b
    b.kill()


def test_username_and_password(tmp_path, auth_broker):
    agent = Agent(tmp_path, auth_broker, mqtt={"username": "cam", "password": "s3cret pass"})
    assert stat.S_IMODE(os.stat(agent.config).st_mode) == 0o600   # it holds the password
    agent.start()
    w = Watcher(auth_broker, [agent.base + "/#"], username="viewer", password="v")
    try:
        online(w, agent.base)
        kind, st = send(w, agent.base, "pan/set", "45", still)
        assert kind == "state" and st["pan"]["position"] == 45.0
    finally:
        w.close()
        agent.close()


def test_a_wrong_password_is_reported_and_retried(tmp_path, auth_broker):
    agent = Agent(tmp_path, auth_broker, mqtt={"username": "cam", "password": "wrong"}).start()
    try:
        wait_until(lambda: "broker refused the connection" in agent.log(), what="the refusal")
        assert "not authorised" in agent.log() or "bad username or password" in agent.log()
        assert agent.alive()
    finally:
        agent.close()


@pytest.fixture
def certs(tmp_path):
    return Certificates(tmp_path / "certs")


def test_tls_with_the_broker_certificate_checked(tmp_path, certs):
    broker = Mosquitto(tmp_path / "broker", tls=certs).start()
    agent = Agent(tmp_path, broker, mqtt={"tls": {"enabled": True, "ca_file": certs.ca}}).start()
    w = Watcher(broker, [agent.base + "/#"], tls=certs)
    try:
        online(w, agent.base)
        kind, st = send(w, agent.base, "tilt/set", "20", still)
        assert kind == "state" and st["tilt"]["position"] == 20.0
    finally:
        w.close()
        agent.close()
        broker.kill()


def test_tls_refuses_a_broker_signed_by_another_ca(tmp_path, certs):
    other = Certificates(tmp_path / "other")
    broker = Mosquitto(tmp_path / "broker", tls=certs).start()
    agent = Agent(tmp_path, broker, mqtt={"tls": {"enabled": True, "ca_file": other.ca}}).start()
    try:
        wait_until(lambda: "retrying with backoff" in agent.log(), what="the refusal")
        assert "CERTIFICATE_VERIFY_FAILED" in agent.log() and agent.alive()
    finally:
        agent.close()
        broker.kill()


def test_tls_with_a_client_certificate(tmp_path):
    certs = Certificates(tmp_path / "certs", require_client_cert=True)
    broker = Mosquitto(tmp_path / "broker", tls=certs).start()
    agent = Agent(tmp_path, broker, mqtt={"tls": {"enabled": True, "ca_file": certs.ca,
                                                  "cert_file": certs.client_cert,
                                                  "key_file": certs.client_key}}).start()
    try:
        wait_until(lambda: "connected to" in agent.log(), what="the agent to connect")
    finally:
        agent.close()
    # the same broker turns away a client without a certificate
    bare = Agent(tmp_path / "bare", broker, mqtt={"tls": {"enabled": True, "ca_file": certs.ca}})
    bare.start()
    try:
        wait_until(lambda: "retrying with backoff" in bare.log(), what="the refusal")
        assert "connected to" not in bare.log()
    finally:
        bare.close()
        broker.kill()
