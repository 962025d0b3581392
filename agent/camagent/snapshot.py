"""Relaying majestic's /image.jpg to MQTT without holding the image.

So far only the MQTT side's header: a QoS 0 PUBLISH whose remaining length
is known from the HTTP Content-Length before the first image byte arrives,
so the image can follow in small chunks straight from the HTTP socket.
"""


def publish_head(topic, body_len, retain=False):
    """Fixed header + topic of a QoS 0 PUBLISH carrying body_len bytes."""
    if isinstance(topic, str):
        topic = topic.encode()
    remaining = 2 + len(topic) + body_len
    if remaining > 268435455:
        raise ValueError("snapshot too big for one MQTT packet")
    head = bytearray()
    head.append(0x31 if retain else 0x30)
    while True:
        byte = remaining & 0x7F
        remaining >>= 7
        if remaining:
            head.append(byte | 0x80)
        else:
            head.append(byte)
            break
    head.append(len(topic) >> 8)
    head.append(len(topic) & 0xFF)
    head.extend(topic)
    return bytes(head)
