"""`camhost ctl` and friends: each way a broker connection fails gets its own sentence,
against real listeners (mosquitto with a password file, a plain HTTP server, a silent
socket, a closed port, a TLS mismatch)."""
import socket
import threading

import pytest

from broker_fixtures import Certificates, Mosquitto, free_port, stop_leftovers  # noqa: F401
from camhost import mqttclient
from camhost.errors import CamhostError
from camhost.mqttclient import Link


def failure(url):
    with pytest.raises(CamhostError) as e:
        Link(url).close()
    assert e.value.exit_code == 4
    return str(e.value)


def test_nothing_listening():
    msg = failure("mqtt://127.0.0.1:%d" % free_port())
    assert msg.startswith("nothing is listening at mqtt://127.0.0.1:")


def test_an_http_server_is_not_an_mqtt_broker():
    """A web server answers the CONNECT bytes with a 400 and hangs up, as nginx does."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve():
        conn, _ = listener.accept()
        conn.recv(100)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        conn.close()
    threading.Thread(target=serve, daemon=True).start()
    try:
        msg = failure("mqtt://127.0.0.1:%d" % listener.getsockname()[1])
    finally:
        listener.close()
    assert "is not an MQTT broker" in msg and "password" not in msg, msg


def test_a_listener_that_never_answers(monkeypatch):
    monkeypatch.setattr(mqttclient, "CONNECT_TIMEOUT_S", 1)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    try:
        msg = failure("mqtt://127.0.0.1:%d" % silent.getsockname()[1])
    finally:
        silent.close()
    assert "sent no MQTT answer in 1 s" in msg and "password" not in msg, msg


def test_bad_credentials_and_no_credentials(tmp_path):
    broker = Mosquitto(tmp_path, users={"cam": "secret"}).start()
    try:
        msg = failure("mqtt://cam:wrong@127.0.0.1:%d" % broker.port)
        assert "a wrong user name or password" in msg and "135" not in msg, msg
        msg = failure("mqtt://127.0.0.1:%d" % broker.port)
        assert "requires a user name and password" in msg, msg
        Link("mqtt://cam:secret@127.0.0.1:%d" % broker.port).close()
    finally:
        broker.kill()


def test_tls_to_a_broker_whose_certificate_is_not_trusted(tmp_path):
    certs = Certificates(tmp_path / "certs")
    broker = Mosquitto(tmp_path / "b", tls=certs).start()
    try:
        msg = failure("mqtts://127.0.0.1:%d" % broker.port)   # no ?ca=: not trusted
    finally:
        broker.kill()
    assert msg.startswith("TLS with mqtts://127.0.0.1:") and "?ca=" in msg, msg
