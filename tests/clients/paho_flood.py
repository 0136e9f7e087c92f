#!/usr/bin/env python3
"""An open-loop MQTT gateway written with paho-mqtt (a client nobody here wrote).

Publishes COUNT JSON records (one per message, QoS 1) of one station as fast as the server
acknowledges them (at most 1,000 handed to paho and not yet acknowledged: paho scans its
whole queue on every acknowledgement, so an unbounded queue would make the client, not the
server, the bottleneck), and appends the time stamp of every record the server acknowledged
with success to OUT, one per line, flushed as it comes. paho reconnects by itself when the
server goes away (kill -9) and sends again what was not acknowledged.

    paho_flood.py --port P --version 311|5 --topic T --station S --param SO2 --unit mg/Nm3 \
        --t0 MS --count N --out FILE [--timeout SECONDS]

Exits 0 once every record was acknowledged, 1 when the timeout came first.
"""

import argparse
import json
import sys
import threading
import time

import paho.mqtt.client as mqtt


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--version", choices=["311", "5"], required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--station", required=True)
    ap.add_argument("--param", required=True)
    ap.add_argument("--unit", required=True)
    ap.add_argument("--t0", type=int, required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--timeout", type=float, default=120.0)
    a = ap.parse_args()

    protocol = mqtt.MQTTv311 if a.version == "311" else mqtt.MQTTv5
    kwargs = {"clean_session": False} if a.version == "311" else {}
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"paho-flood-{a.version}-{a.t0}",
        protocol=protocol,
        **kwargs,
    )
    client.max_inflight_messages_set(100)
    client.max_queued_messages_set(0)
    window = threading.Semaphore(1000)
    client.reconnect_delay_set(min_delay=0.05, max_delay=0.5)

    times = {}  # mid -> record time, until acknowledged
    early = {}  # mid -> reason code, acknowledged before publish() returned its mid
    acked = 0
    lock = threading.Lock()
    done = threading.Event()
    out = open(a.out, "a", buffering=1)

    def settle(ts, reason_code):
        # Called with `lock` held.
        nonlocal acked
        window.release()
        if reason_code.is_failure:
            return
        out.write(f"{ts}\n")
        acked += 1
        if acked == a.count:
            done.set()

    def on_publish(_client, _userdata, mid, reason_code, _properties):
        # paho holds its own locks here: never wait for the publishing thread.
        with lock:
            ts = times.pop(mid, None)
            if ts is None:
                early[mid] = reason_code
            else:
                settle(ts, reason_code)

    client.on_publish = on_publish
    connect = {"clean_start": False} if a.version == "5" else {}
    while True:
        try:
            client.connect(a.host, a.port, keepalive=5, **connect)
            break
        except OSError:
            time.sleep(0.05)
    client.loop_start()
    for i in range(a.count):
        ts = a.t0 + i * 1000
        payload = json.dumps(
            {
                "station": a.station,
                "ts": ts,
                "seq": i,
                "readings": [
                    {"param": a.param, "value": float(i % 400), "unit": a.unit, "status": "00"}
                ],
            }
        )
        window.acquire()
        info = client.publish(a.topic, payload, qos=1)
        with lock:
            reason_code = early.pop(info.mid, None)
            if reason_code is None:
                times[info.mid] = ts
            else:
                settle(ts, reason_code)
    finished = done.wait(a.timeout)
    client.loop_stop()
    out.close()
    print(f"acknowledged {acked} of {a.count}", file=sys.stderr)
    return 0 if finished else 1


if __name__ == "__main__":
    sys.exit(main())
