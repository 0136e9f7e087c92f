#!/usr/bin/env python3
"""What quantrac's device endpoint answers a paho-mqtt client (a client nobody here wrote),
MQTT 5 and 3.1.1. Prints one JSON object with what it saw; the Rust test checks it.

    paho_reasons.py --port P --prefix PREFIX --zone Z --station S --other OTHER \
        --user U --password PW
"""

import argparse
import json
import sys
import threading
import time

import paho.mqtt.client as mqtt


def connect(port, version, user, password, client_id):
    protocol = mqtt.MQTTv5 if version == 5 else mqtt.MQTTv311
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
    c.username_pw_set(user, password)
    connected = threading.Event()
    gone = threading.Event()
    state = {"connack": None, "disconnect": None}

    def on_connect(_c, _u, _f, reason_code, _p):
        state["connack"] = str(reason_code)
        connected.set()

    def on_disconnect(_c, _u, _f, reason_code, _p):
        state["disconnect"] = str(reason_code)
        gone.set()

    c.on_connect = on_connect
    c.on_disconnect = on_disconnect
    c.reconnect_delay_set(60, 60)  # no reconnect during the checks
    c.connect("127.0.0.1", port, keepalive=30)
    c.loop_start()
    connected.wait(10)
    return c, state, gone


def publish_and_wait(client, topic, payload):
    """The PUBACK's reason code (and reason string) for one QoS 1 message."""
    got = threading.Event()
    answer = {}

    def on_publish(_c, _u, mid, reason_code, properties):
        answer["code"] = reason_code.value
        answer["reason"] = getattr(properties, "ReasonString", None) if properties else None
        got.set()

    client.on_publish = on_publish
    info = client.publish(topic, payload, qos=1)
    got.wait(10)
    answer["mid"] = info.mid
    return answer


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--zone", required=True)
    ap.add_argument("--station", required=True)
    ap.add_argument("--other", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    a = ap.parse_args()
    base = f"{a.prefix}/quantrac/v1/{a.zone}"
    now = int(time.time() * 1000) - 60_000
    good = json.dumps(
        {"station": a.station, "ts": now, "readings": [
            {"param": "COD", "value": 50.0, "unit": "mg/L", "status": "00"}]}
    )
    seen = {}

    # MQTT 5: every outcome has its reason code.
    c, state, _ = connect(a.port, 5, a.user, a.password, "paho-reasons-5")
    seen["v5_connack"] = state["connack"]
    seen["v5_stored"] = publish_and_wait(c, f"{base}/{a.station}/telemetry/json", good)
    seen["v5_unknown_topic"] = publish_and_wait(c, f"{base}/{a.station}/telemetry/xml", good)
    seen["v5_malformed"] = publish_and_wait(c, f"{base}/{a.station}/telemetry/json", "{oops")
    seen["v5_not_allowed"] = publish_and_wait(c, f"{base}/{a.other}/telemetry/json", good)
    c.disconnect()
    c.loop_stop()

    # A wrong password: refused at CONNECT.
    c, state, _ = connect(a.port, 5, a.user, "wrong", "paho-reasons-bad")
    seen["v5_bad_password_connack"] = state["connack"]
    c.loop_stop()

    # MQTT 3.1.1: acknowledged when stored; a topic the device may not publish on ends the
    # connection (3.1.1 has no negative acknowledgement).
    c, state, gone = connect(a.port, 4, a.user, a.password, "paho-reasons-311")
    seen["v311_connack"] = state["connack"]
    seen["v311_stored"] = publish_and_wait(c, f"{base}/{a.station}/telemetry/json", good)
    c.publish(f"{base}/{a.other}/telemetry/json", good, qos=1)
    seen["v311_not_allowed_closed"] = gone.wait(10)
    c.loop_stop()
    print(json.dumps(seen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
