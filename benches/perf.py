#!/usr/bin/env python3
"""Regenerates docs/performance.md: quantrac's stored rate against the broker's ceiling.

Usage (from the repository root; needs only cargo, python3 and mosquitto):

    python3 benches/perf.py                      # the full baseline, about 15 minutes
    python3 benches/perf.py --quick              # shorter runs, one encoding (a smoke test)
    python3 benches/perf.py --out /tmp/perf.md   # write elsewhere
    python3 benches/perf.py --questdb http://127.0.0.1:9000 --questdb-only
                                                 # only the QuestDB row (see run_questdb)

What it does, on this machine, in one run:

1. Builds quantrac and firmware-sim in release mode, writes a generated seed set with
   `firmware-sim seeds` (STATIONS x PARAMS, 10,000 x 8 by default), and fills a database
   with PREFILL seconds of load (about two million readings): every quantrac below starts
   from a copy of it, so that rates are those of a store that already holds data (an
   empty SQLite file is several times faster and would flatter every figure).
2. For each way in (quantrac's own device endpoint, and a private Mosquitto configured as
   deploy/mosquitto/mosquitto.conf recommends) and each encoding:
   a. the ceiling (Mosquitto only: the endpoint has no broker; its ceiling is the store's,
      `cargo bench --bench store_write`): `firmware-sim ceiling` publishes the load traffic
      as fast as the broker acknowledges it for SECONDS to a subscriber that does nothing,
      and times the delivery of the last message;
   b. quantrac's maximum: `quantrac serve` (default settings: SQLite, sync = full)
      on that broker; `firmware-sim load --rate 0` publishes the same traffic for SECONDS as
      fast as quantrac stores it (pausing while 50,000 readings are not yet stored) and times
      until quantrac has stored the last reading;
   c. latency at half that maximum: `firmware-sim load --rate <max/2>` for STEADY seconds;
      publish-to-store and publish-to-alert percentiles.
3. Memory: quantrac with 10,000 stations registered, an empty database, a steady load from
   all of them; peak resident memory.
4. Open loop through Mosquitto (a private one with deploy/mosquitto/mosquitto.conf's
   settings: persistence, 1,000 in flight, 1,000,000 queued per client): `firmware-sim
   open-loop` publishes OPEN_LOOP_MESSAGES messages as fast as Mosquitto acknowledges them,
   never pausing for quantrac, then waits until quantrac's stored count stops moving:
   published, acknowledged, stored, drain time, and whether every acknowledged reading was
   stored (a stall cannot hide behind a closed loop's pauses).
5. The device endpoint against the store alone, the same rows: `firmware-sim load --rate
   0` through quantrac's own endpoint, then `examples/store_alone` writing the same
   stations x parameters, one record per message, round-robin, with presence and record
   counters, into a copy of the same database, directly through the store's writer.
6. Memory with 10,000 connected devices: `firmware-sim connections` opens one MQTT
   connection per station to the endpoint, each publishing its own station; quantrac's
   resident memory once all are connected, and its peak.
7. Backfill: a fleet catching up after an outage. BACKFILL_STATIONS stations x 8
   parameters each send 60 days of 5-minute history (17,280 records) as backlog arrays of
   100 records, over 8 connections at once (`firmware-sim backfill`), into an empty
   database through the device endpoint; readings stored per second, JSON and bincode,
   and JSON with SQLite's own checkpoint size (4 MiB) for comparison. With
   `--baseline-quantrac PATH` the same JSON backfill also runs with that binary (an
   earlier build), for a before/after ratio measured in the same run.
8. Writes the tables, the machine, the commit and the raw JSON into the document.

`--only rates,memory,open-loop,endpoint-vs-store,connections,backfill` runs some of the parts (the
document then has only their sections: write it elsewhere with --out).

A load that quantrac does not store completely within a minute after publishing stops is
reported as such (the load tool compares quantrac's stored count with what it published).
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"),
                       "release")
QUANTRAC = os.path.join(RELEASE, "quantrac")
SIM = os.path.join(RELEASE, "firmware-sim")
STORE_ALONE = os.path.join(RELEASE, "examples", "store_alone")
PARTS = ["rates", "memory", "open-loop", "endpoint-vs-store", "connections", "backfill"]
# The parts that start from the prefilled template database.
TEMPLATE_PARTS = {"rates", "open-loop", "endpoint-vs-store"}
# mqtt.endpoint.receive_maximum's default: unacknowledged messages one connection may have.
ENDPOINT_WINDOW = 256
BACKFILL_STATIONS = 100
BACKFILL_RECORDS = 17280  # 60 days of 5-minute records
BACKFILL_TARGET = 400000  # readings/s (issue 10)
NODE_RED = 40000  # readings/s: Node-RED 4.1's best flow on this kind of machine (issue 10)
ENCODINGS = ["json", "bincode", "tt10"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, seconds=20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {seconds} s")


def wait_ready(api, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(api + "/readyz", timeout=1) as r:
                if json.load(r).get("ready"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"quantrac at {api} not ready after {seconds} s")


def stop(process):
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def sim(*args, program=SIM):
    """Runs firmware-sim; returns its JSON report (the last line of stdout)."""
    result = subprocess.run(
        [program, *args], capture_output=True, text=True,
        env={**os.environ, "RUST_LOG": "warn", "RUST_BACKTRACE": "0"},
    )
    lines = result.stdout.strip().splitlines()
    if lines and lines[-1].startswith("{"):
        # A load that was not stored completely still reports (with "complete": false).
        return json.loads(lines[-1])
    raise RuntimeError(f"{os.path.basename(program)} {' '.join(args)} failed:\n{result.stderr[-3000:]}")


class Mosquitto:
    """A private Mosquitto with the recommended no-loss settings (no persistence), or with
    `production`, those of deploy/mosquitto/mosquitto.conf (persistence in `work`, at most
    1,000,000 messages queued for a client)."""

    def __init__(self, work, production=False):
        self.port = free_port()
        name = "mosquitto-production" if production else "mosquitto"
        conf = os.path.join(work, name + ".conf")
        with open(conf, "w") as f:
            if production:
                store = os.path.join(work, name + "-data")
                os.makedirs(store, exist_ok=True)
                f.write(
                    f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                    f"persistence true\npersistence_location {store}/\nautosave_interval 60\n"
                    "max_inflight_messages 1000\nmax_queued_messages 1000000\n"
                    "max_queued_bytes 0\npersistent_client_expiration 7d\n"
                )
            else:
                f.write(
                    f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                    "max_inflight_messages 1000\nmax_queued_messages 0\nmax_queued_bytes 0\n"
                )
        self.log = open(os.path.join(work, name + ".log"), "w")
        self.process = subprocess.Popen(
            ["mosquitto", "-c", conf], stdout=self.log, stderr=subprocess.STDOUT
        )
        wait_port(self.port)
        self.url = f"mqtt://127.0.0.1:{self.port}"

    def close(self):
        stop(self.process)
        self.log.close()


def quantrac_env(seeds, data, api_port, broker_url=None, broker_port=None):
    env = {
        **os.environ,
        "QUANTRAC_REGISTRY__SEEDS": seeds,
        "QUANTRAC_STORAGE__PATH": data,
        "QUANTRAC_API__LISTEN": f"127.0.0.1:{api_port}",
        "QUANTRAC_LOG__LEVEL": "warn",
        "QUANTRAC_MQTT__CLIENT_ID": f"quantrac-perf-{api_port}",
        # The load tool connects without device credentials, and polls the API far more
        # often than the default rate limits allow a token.
        "QUANTRAC_MQTT__ENDPOINT__ALLOW_ANONYMOUS": "true",
        "QUANTRAC_API__RATE_LIMIT__PER_TOKEN_PER_SECOND": "100000",
        "QUANTRAC_API__RATE_LIMIT__PER_TOKEN_BURST": "100000",
        "QUANTRAC_API__RATE_LIMIT__PER_ADDRESS_PER_SECOND": "100000",
        "QUANTRAC_API__RATE_LIMIT__PER_ADDRESS_BURST": "100000",
        # Between runs the alert probe's station is silent; after such a gap quantrac holds
        # readings for `alerts.lateness` (30 s) before judging them, longer than a run.
        "QUANTRAC_ALERTS__LATENESS": "1s",
        "RUST_BACKTRACE": "0",
    }
    env.pop("RUST_LOG", None)
    if broker_url:
        env["QUANTRAC_MQTT__URL"] = broker_url
    if broker_port:
        env["QUANTRAC_MQTT__ENDPOINT__LISTEN"] = f"127.0.0.1:{broker_port}"
    return env


class Quantrac:
    """`quantrac serve` on a copy of `template` (a data directory) or an empty one."""

    def __init__(self, work, name, seeds, broker_url=None, template=None, extra_env=None,
                 program=QUANTRAC):
        self.api_port = free_port()
        self.broker_port = None if broker_url else free_port()
        self.url = broker_url or f"mqtt://127.0.0.1:{self.broker_port}"
        data = os.path.join(work, "data-" + name)
        self.data = data
        shutil.rmtree(data, ignore_errors=True)
        if template:
            shutil.copytree(template, data)
        self.log = open(os.path.join(work, f"quantrac-{name}.log"), "w")
        env = quantrac_env(seeds, data, self.api_port, broker_url, self.broker_port)
        env.update(extra_env or {})
        self.process = subprocess.Popen(
            [program, "serve"], env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT
        )
        self.api = f"http://127.0.0.1:{self.api_port}"
        wait_ready(self.api)
        # A token for the load tool (it reads /metrics and the readings API).
        self.token = subprocess.run(
            [QUANTRAC, "token", "create", "--role", "viewer", "--name", "perf"],
            env=env, cwd=ROOT, check=True, capture_output=True, text=True,
        ).stdout.strip()

    def close(self):
        stop(self.process)
        self.log.close()


def traffic(seeds, args, encoding, seconds):
    return [
        "--seeds", seeds, "--stations", str(args.stations), "--params", str(args.params),
        "--encoding", encoding, "--duration", f"{seconds}s",
    ]


def run(args):
    work = tempfile.mkdtemp(prefix="quantrac-perf-")
    print(f"working in {work}", file=sys.stderr)
    parts = args.only
    subprocess.run(
        ["cargo", "build", "--release", "--locked", "--workspace", "--bins"],
        cwd=ROOT, check=True,
    )
    if "endpoint-vs-store" in parts:
        subprocess.run(["cargo", "build", "--release", "--locked", "--example", "store_alone"],
                       cwd=ROOT, check=True)
    seeds = os.path.join(work, "seeds")
    big = os.path.join(work, "seeds-10k")
    subprocess.run([SIM, "seeds", "--out", seeds, "--stations", str(args.stations),
                    "--params", str(args.params)], check=True)
    subprocess.run([SIM, "seeds", "--out", big, "--stations", "10000", "--params", "8"],
                   check=True)
    out = {}
    template = None
    if TEMPLATE_PARTS & set(parts):
        print(f"prefill: {args.prefill} s of load into a template database", file=sys.stderr)
        q = Quantrac(work, "template", seeds)
        try:
            out["prefill"] = sim("load", "--broker", q.url, "--api", q.api, "--token", q.token,
                                 "--client-id", "perf-prefill", "--rate", "0",
                                 *traffic(seeds, args, "bincode", args.prefill))
        finally:
            q.close()
        template = q.data
    encodings = ENCODINGS[:1] if args.quick else ENCODINGS
    mosquitto = Mosquitto(work)
    try:
        if "rates" in parts:
            out["rates"] = rates(args, work, seeds, template, mosquitto, encodings)
        if "memory" in parts:
            print("memory: 10,000 stations", file=sys.stderr)
            q = Quantrac(work, "memory", big)
            try:
                out["memory"] = sim(
                    "load", "--broker", q.url, "--api", q.api, "--token", q.token,
                    "--client-id", "perf-mem", "--seeds", big, "--stations", "10000",
                    "--params", "8", "--encoding", "json", "--rate", str(args.memory_rate),
                    "--duration", f"{args.steady}s")
            finally:
                q.close()
    finally:
        mosquitto.close()
    if "open-loop" in parts:
        out["open_loop"] = open_loop(args, work, seeds, template)
    if "endpoint-vs-store" in parts:
        out["endpoint_vs_store"] = endpoint_vs_store(args, work, seeds, template)
    if "connections" in parts:
        out["connections"] = connections(args, work, big)
    if "backfill" in parts:
        out["backfill"] = backfill(args, work)
    write(args, out)
    if args.keep:
        print(f"kept {work} (logs, databases)", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)


def rates(args, work, seeds, template, mosquitto, encodings):
    results = []
    for broker in ["endpoint", "mosquitto"]:
        for encoding in encodings:
            # quantrac's own device endpoint has no broker in front of it: its ceiling is
            # the store's (see endpoint_vs_store), not measured here.
            top = None
            if broker == "mosquitto":
                print(f"{broker} {encoding}: ceiling", file=sys.stderr)
                top = sim("ceiling", "--broker", mosquitto.url, "--client-id", "perf-ceiling",
                          *traffic(seeds, args, encoding, args.seconds))
            print(f"{broker} {encoding}: quantrac at its maximum, then at half",
                  file=sys.stderr)
            q = Quantrac(work, f"{broker}-{encoding}", seeds,
                         mosquitto.url if broker == "mosquitto" else None, template)
            try:
                common = ["--broker", q.url, "--api", q.api, "--token", q.token, "--client-id", "perf-load"]
                peak = sim("load", *common, "--rate", "0",
                           *traffic(seeds, args, encoding, args.seconds))
                half = max(1, int(peak["stored_per_second"] / 2))
                steady = sim("load", *common, "--rate", str(half),
                             *traffic(seeds, args, encoding, args.steady))
            finally:
                q.close()
                shutil.rmtree(q.data, ignore_errors=True)
            results.append({"broker": broker, "encoding": encoding, "ceiling": top,
                            "max": peak, "half": steady})
    return results


def open_loop(args, work, seeds, template):
    """`firmware-sim open-loop` through a Mosquitto with the production settings."""
    print(f"open loop: {args.open_loop_messages} messages through Mosquitto", file=sys.stderr)
    broker = Mosquitto(work, production=True)
    try:
        q = Quantrac(work, "open-loop", seeds, broker.url, template)
        try:
            return sim("open-loop", "--broker", q.url, "--api", q.api, "--token", q.token,
                       "--client-id", "perf-open-loop", "--seeds", seeds,
                       "--stations", str(args.stations), "--params", str(args.params),
                       "--encoding", "json", "--messages", str(args.open_loop_messages))
        finally:
            q.close()
            shutil.rmtree(q.data, ignore_errors=True)
    finally:
        broker.close()


def endpoint_vs_store(args, work, seeds, template):
    """The endpoint's stored rate, then the store alone writing the same rows, each on a
    fresh copy of the template database."""
    print("endpoint against the store alone", file=sys.stderr)
    q = Quantrac(work, "endpoint-vs-store", seeds, None, template)
    try:
        # One device connection may have at most mqtt.endpoint.receive_maximum (256)
        # messages not yet acknowledged: the publisher's window is set to that, and the
        # store alone gets the same window, so that both sides batch alike.
        endpoint = sim("load", "--broker", q.url, "--api", q.api, "--token", q.token,
                       "--client-id", "perf-endpoint", "--rate", "0",
                       "--inflight", str(ENDPOINT_WINDOW),
                       *traffic(seeds, args, "json", args.seconds))
    finally:
        q.close()
        shutil.rmtree(q.data, ignore_errors=True)
    data = os.path.join(work, "data-store-alone")
    shutil.rmtree(data, ignore_errors=True)
    shutil.copytree(template, data)
    try:
        alone = sim("--data", data, "--seeds", seeds, "--stations", str(args.stations),
                    "--params", str(args.params), "--seconds", str(args.seconds),
                    "--window", str(ENDPOINT_WINDOW), program=STORE_ALONE)
    finally:
        shutil.rmtree(data, ignore_errors=True)
    return {"endpoint": endpoint, "store_alone": alone,
            "ratio": endpoint["stored_per_second"] / alone["stored_per_second"]}


def connections(args, work, big):
    """10,000 MQTT connections to the endpoint, one per station."""
    print("memory: 10,000 connected devices", file=sys.stderr)
    q = Quantrac(work, "connections", big)
    interval = 10000 * 8 / args.memory_rate
    try:
        return sim("connections", "--address", f"127.0.0.1:{q.broker_port}", "--api", q.api,
                   "--token", q.token, "--seeds", big, "--stations", "10000", "--params", "8",
                   "--encoding", "json", "--interval", f"{interval * 1000:.0f}ms",
                   "--duration", f"{args.steady}s")
    finally:
        q.close()


def backfill(args, work):
    """Every station sends its history as backlog arrays into an empty database."""
    seeds = os.path.join(work, "seeds-backfill")
    subprocess.run([SIM, "seeds", "--out", seeds, "--stations", str(BACKFILL_STATIONS),
                    "--params", "8", "--interval", "5m"], check=True)
    records = max(100, BACKFILL_RECORDS // 10) if args.quick else BACKFILL_RECORDS
    cases = [("json", {}, QUANTRAC, "this build"),
             ("bincode", {}, QUANTRAC, "this build"),
             ("json", {"QUANTRAC_STORAGE__CHECKPOINT_MB": "4"}, QUANTRAC,
              "this build, storage.checkpoint_mb = 4")]
    if args.baseline_quantrac:
        cases.append(("json", {}, os.path.abspath(args.baseline_quantrac),
                      f"baseline: {os.path.basename(args.baseline_quantrac)}"))
    results = []
    for encoding, env, program, label in cases:
        print(f"backfill: {label}, {encoding}", file=sys.stderr)
        q = Quantrac(work, "backfill", seeds, extra_env=env, program=program)
        try:
            r = sim("backfill", "--broker", q.url, "--api", q.api, "--token", q.token,
                    "--client-id", "perf-backfill", "--seeds", seeds, "--encoding", encoding,
                    "--records-per-station", str(records), "--per-message", "100",
                    "--connections", "8")
        finally:
            q.close()
            shutil.rmtree(q.data, ignore_errors=True)
        results.append({"quantrac": label, **r})
    return results


def backfill_section(args, results):
    first = results[0]
    lines = [
        "",
        "## Backfill: a fleet catching up after an outage",
        "",
        f"`firmware-sim backfill`: {first['stations']} stations x {first['params']} parameters, each",
        f"sending {fmt(first['records_per_station'])} records of 5-minute history (60 days) oldest first,",
        f"as backlog arrays of {first['per_message']} records, over {first['connections']} MQTT connections",
        "at once (station i on connection i mod 8, one message per station in turn), through",
        "quantrac's own device endpoint into an empty embedded store (`storage.sync = \"full\"`).",
        "Readings stored per second, from the first publish until the last reading is stored",
        "(every message is acknowledged only once durable). Target: 400,000 readings/s, 10 x",
        f"Node-RED 4.1's best flow on this kind of machine ({fmt(NODE_RED)} readings/s, quoted in",
        "issue 10, not measured here).",
        "",
        "| quantrac | encoding | readings | stored (readings/s) | / Node-RED | complete | peak memory | target (400,000/s) |",
        "|---|---|---:|---:|---:|---|---:|---|",
    ]
    for r in results:
        rate = r["stored_per_second"]
        peak = (r.get("quantrac_peak_rss_bytes") or 0) / 1e6
        lines.append(
            f"| {r['quantrac']} | {r['encoding']} | {fmt(r['readings_published'])} | {fmt(rate)} "
            f"| {rate / NODE_RED:.1f} x | {'yes' if r['complete'] else 'NO'} | {peak:.0f} MB "
            f"| {'met' if rate >= BACKFILL_TARGET and r['complete'] else 'not met'} |"
        )
    base = [r for r in results if r["quantrac"].startswith("baseline")]
    if base:
        ratio = results[0]["stored_per_second"] / base[0]["stored_per_second"]
        lines += ["", f"This build / baseline (JSON, same run): **{ratio:.2f} x**."]
    return lines


def machine():
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        mosquitto = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout
        mosquitto = mosquitto.splitlines()[0] if mosquitto else "mosquitto"
    except OSError:
        mosquitto = "mosquitto"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=ROOT).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, cwd=ROOT).stdout.strip()
    return (f"{os.cpu_count()} x {cpu}, Linux {platform.release()}; {mosquitto}; "
            f"commit {commit}{' (with uncommitted changes)' if dirty else ''}")


def fmt(n):
    return f"{n:,.0f}"


def write(args, out):
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    prefill = out.get("prefill")
    lines = [
        "# Performance baseline",
        "",
        f"Generated by `python3 benches/perf.py` on {now}. Machine: {machine()}.",
        "Regenerate it after a change that could move these figures; compare ratios, not",
        "absolute rates, across machines.",
        "",
        f"Traffic: {args.stations} stations x {args.params} parameters (a generated seed set),",
        "one record of 8 calm readings per message, QoS 1, round-robin over the stations,",
        "published by `firmware-sim` from a separate process. Everything (publisher, broker,",
        "quantrac) shares the machine's cores. quantrac runs with its defaults: the embedded",
        "SQLite store with `storage.sync = \"full\"` (every acknowledged reading is on disk),",
        "starting from a database that already holds "
        + (f"{fmt(prefill['readings_stored'])} readings" if prefill else "(no prefill in this run)"),
        "of the same fleet; only `alerts.lateness` is 1 s instead of 30 s (the alert probe's",
        "station is silent between runs, and the first readings after a gap wait that long for",
        "stragglers before they are judged: longer than a run).",
    ]
    if "rates" in out:
        lines += rates_sections(args, out["rates"])
    if "memory" in out:
        lines += memory_section(args, out["memory"])
    if "connections" in out:
        lines += connections_section(args, out["connections"])
    if "endpoint_vs_store" in out:
        lines += endpoint_vs_store_section(args, out["endpoint_vs_store"])
    if "open_loop" in out:
        lines += open_loop_section(args, out["open_loop"])
    if "backfill" in out:
        lines += backfill_section(args, out["backfill"])
    lines += [
        "",
        "## Where the time goes",
        "",
        "See the *Performance* section of the README for the criterion benches (decode,",
        "validate, rule evaluation, store batch writes) and `docs/performance-notes.md` for the",
        "profile that explains the gap between quantrac and the ceiling.",
        "",
        "## Raw results",
        "",
        "```json",
        json.dumps(out, indent=1),
        "```",
        "",
    ]
    with open(args.out, "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {args.out}", file=sys.stderr)


def rates_sections(args, results):
    lines = [
        "",
        "## Stored rate against the broker's ceiling",
        "",
        f"Both columns publish for {args.seconds} s. *Ceiling*: as fast as the broker",
        "acknowledges, readings delivered per second to a subscriber that does nothing with them",
        "(first publish to last delivery). *quantrac*: as fast as quantrac stores (publishing",
        "pauses while 50,000 readings are not stored yet), readings stored per second by",
        "quantrac's own count (first publish to last reading stored). *Complete*: every reading",
        "published was stored.",
        "",
        "| broker | encoding | ceiling (readings/s) | quantrac (readings/s) | quantrac / ceiling | complete | target (90%) |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for r in results:
        if r["ceiling"] is None:
            lines.append(
                f"| {r['broker']} | {r['encoding']} | no broker (see the store alone below) "
                f"| {fmt(r['max']['stored_per_second'])} | - "
                f"| {'yes' if r['max']['complete'] else 'NO'} | - |"
            )
            continue
        ratio = r["max"]["stored_per_second"] / r["ceiling"]["readings_per_second"]
        lines.append(
            f"| {r['broker']} | {r['encoding']} | {fmt(r['ceiling']['readings_per_second'])} "
            f"| {fmt(r['max']['stored_per_second'])} | {ratio:.0%} "
            f"| {'yes' if r['max']['complete'] else 'NO'} | {'met' if ratio >= 0.9 else 'not met'} |"
        )
    lines += [
        "",
        "## Latency at half the maximum rate",
        "",
        f"`firmware-sim load --rate <half of quantrac's maximum above>` for {args.steady} s.",
        "*Store*: from publish until the reading is returned by the readings API (sampled every",
        "20 ms). *Alert*: from publish of a reading that crosses a limit until its alert event",
        "arrives on the MQTT alert topic (20 probes a second). Milliseconds.",
        "",
        "| broker | encoding | rate (readings/s) | complete | store p50 | store p95 | store p99 | alert p50 | alert p99 | target (store p99 < 100 ms) |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        h = r["half"]
        s, a = h["publish_to_store_ms"], h["publish_to_alert_ms"]
        lines.append(
            f"| {r['broker']} | {r['encoding']} | {fmt(h['stored_per_second'])} "
            f"| {'yes' if h['complete'] else 'NO'} | {s['p50']:.1f} | {s['p95']:.1f} | {s['p99']:.1f} | {a['p50']:.1f} | {a['p99']:.1f} "
            f"| {'met' if s['p99'] < 100 and h['complete'] else 'not met'} |"
        )
    return lines


def memory_section(args, memory):
    peak_mb = (memory.get("quantrac_peak_rss_bytes") or 0) / 1e6
    s = memory["publish_to_store_ms"]
    return [
        "",
        "## Memory with 10,000 stations",
        "",
        "quantrac with 10,000 stations x 8 parameters registered (device endpoint and embedded store),",
        f"every station reporting through one publisher connection, {fmt(memory['stored_per_second'])} readings/s for",
        f"{args.steady} s: peak resident memory **{peak_mb:.0f} MB** (target: below 200 MB,",
        f"{'met' if peak_mb < 200 else 'not met'}); publish-to-store p99 {s['p99']:.1f} ms;",
        f"CPU {memory.get('quantrac_cpu_seconds') or 0:.1f} s for the run.",
    ]


def connections_section(args, c):
    peak_mb = (c.get("quantrac_peak_rss_bytes") or 0) / 1e6
    connected_mb = (c.get("quantrac_rss_connected_bytes") or 0) / 1e6
    return [
        "",
        "## Memory with 10,000 connected devices",
        "",
        "`firmware-sim connections`: one MQTT connection per station to the device endpoint",
        "(client id = station id), 10,000 stations x 8 parameters registered, an empty",
        "database; once all are connected, each publishes its own station's record, spread",
        f"evenly, for {args.steady} s. {fmt(c['connections'])} connections "
        f"({c['connections_failed']} failed) opened in {c['connect_seconds']:.1f} s;",
        f"{fmt(c['stored_per_second'])} readings/s stored, {'all' if c['complete'] else 'NOT all'} "
        f"of the {fmt(c['readings_acknowledged'])} acknowledged.",
        f"Resident memory with every device connected: **{connected_mb:.0f} MB**; peak: "
        f"**{peak_mb:.0f} MB** (target: below 200 MB, {'met' if peak_mb < 200 else 'not met'}).",
    ]


def endpoint_vs_store_section(args, r):
    e, a = r["endpoint"], r["store_alone"]
    return [
        "",
        "## The device endpoint against the store alone",
        "",
        "The same rows both ways, each on a fresh copy of the prefilled database, for",
        f"{args.seconds} s: *endpoint*, `firmware-sim load --rate 0` (JSON) through quantrac's own",
        "device endpoint (devices -> endpoint -> pipeline -> embedded store); *store alone*,",
        "`examples/store_alone`: the same stations x parameters, one record per message,",
        "round-robin, each message with its station's presence and record counter as ingest",
        "writes them, handed straight to the store's writer (no MQTT, decoding, validation or",
        f"alerts). Both with at most {ENDPOINT_WINDOW} messages not yet durable (one device",
        "connection's `receive_maximum`; the publisher's QoS 1 window is set to it).",
        "",
        "| endpoint (readings/s) | store alone (readings/s) | endpoint / store alone | target (90%) |",
        "|---:|---:|---:|---|",
        f"| {fmt(e['stored_per_second'])} | {fmt(a['stored_per_second'])} | {r['ratio']:.0%} "
        f"| {'met' if r['ratio'] >= 0.9 else 'not met'} |",
    ]


def open_loop_section(args, o):
    verdict = "yes" if o["all_acknowledged_stored"] else "**NO**"
    return [
        "",
        "## Open loop through Mosquitto",
        "",
        "`firmware-sim open-loop` through a private Mosquitto with the production settings of",
        "`deploy/mosquitto/mosquitto.conf` (persistence, 1,000 in flight, 1,000,000 messages",
        f"queued per client): {fmt(o['messages_published'])} messages of {o['params']} readings",
        "published as fast as Mosquitto acknowledges them, never pausing while quantrac is",
        "behind; then the run waits until quantrac's stored count stops moving (10 s without",
        "change, at most 300 s). A closed loop slows down with quantrac; here a stall shows as",
        "acknowledged readings never stored.",
        "",
        "| published | acknowledged | stored | publish (s) | published (readings/s) | drain after the last ack (s) | stored (readings/s) | every acknowledged reading stored |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
        f"| {fmt(o['readings_published'])} | {fmt(o['readings_acknowledged'])} "
        f"| {fmt(o['readings_stored'])} | {o['publish_seconds']:.1f} "
        f"| {fmt(o['published_per_second'])} | {o['drain_seconds']:.1f} "
        f"| {fmt(o['stored_per_second'])} | {verdict} |",
    ]


# --- QuestDB (`--questdb URL`) -------------------------------------------------------------
# Kept apart from the embedded-store rows above: its own functions, its own section of the
# document (replaced in place between the markers below, the rest of the file left as is).

QUESTDB_BEGIN = "<!-- perf.py --questdb: begin -->"
QUESTDB_END = "<!-- perf.py --questdb: end -->"


class QuestDbEnv:
    """While active, every `quantrac serve` started by Quantrac() stores into QuestDB
    (quantrac_env copies os.environ), in a table of this run's own."""

    def __init__(self, http, pg, table):
        self.vars = {
            "QUANTRAC_STORAGE__BACKEND": "questdb",
            "QUANTRAC_STORAGE__QUESTDB__HTTP": http,
            "QUANTRAC_STORAGE__QUESTDB__PG": pg,
            "QUANTRAC_STORAGE__QUESTDB__TABLE": table,
        }

    def __enter__(self):
        os.environ.update(self.vars)

    def __exit__(self, *exc):
        for k in self.vars:
            os.environ.pop(k, None)


def questdb_sql(http, sql):
    url = http.rstrip("/") + "/exec?" + urllib.parse.urlencode({"query": sql})
    with urllib.request.urlopen(url, timeout=60) as r:
        return json.load(r)


def questdb_bare_ilp(args, rows, stations, table_prefix):
    """QuestDB's own ILP ceiling: benches/questdb_year.rs `ilp` (a bare sender)."""
    env = {
        **os.environ,
        "QUANTRAC_BENCH_QUESTDB_URL": args.questdb,
        "QUANTRAC_BENCH_QUESTDB_PG": args.questdb_pg,
        "QUANTRAC_BENCH_TABLE": table_prefix,
        "QUANTRAC_BENCH_ILP_ROWS": str(rows),
        "QUANTRAC_BENCH_ILP_STATIONS": str(stations),
        "QUANTRAC_BENCH_ILP_FLUSH": str(args.questdb_flush),
    }
    result = subprocess.run(
        ["cargo", "bench", "--locked", "--bench", "questdb_year", "--", "ilp"],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines or not lines[-1].startswith("{"):
        raise RuntimeError(f"questdb_year ilp failed:\n{result.stderr[-3000:]}")
    return json.loads(lines[-1])


def run_questdb(args):
    """Stored rate through Mosquitto into QuestDB, against the broker's ceiling and QuestDB's
    own ILP ceiling for the same rows, in one run."""
    global QUANTRAC, SIM
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    QUANTRAC = os.path.join(target, "release", "quantrac")
    SIM = os.path.join(target, "release", "firmware-sim")
    work = tempfile.mkdtemp(prefix="quantrac-perf-questdb-")
    print(f"questdb: working in {work}", file=sys.stderr)
    subprocess.run(["cargo", "build", "--release", "--locked", "--workspace", "--bins"],
                   cwd=ROOT, check=True)
    subprocess.run(["cargo", "bench", "--locked", "--bench", "questdb_year", "--no-run"],
                   cwd=ROOT, check=True)
    seeds = os.path.join(work, "seeds")
    subprocess.run([SIM, "seeds", "--out", seeds, "--stations", str(args.stations),
                    "--params", str(args.params)], check=True)
    encoding = args.questdb_encoding
    table = f"perf_{int(time.time())}"
    mosquitto = Mosquitto(work)
    try:
        print(f"questdb: mosquitto ceiling ({encoding})", file=sys.stderr)
        top = sim("ceiling", "--broker", mosquitto.url, "--client-id", "perf-ceiling",
                  *traffic(seeds, args, encoding, args.seconds))
        print("questdb: quantrac through mosquitto into QuestDB", file=sys.stderr)
        with QuestDbEnv(args.questdb, args.questdb_pg, table):
            q = Quantrac(work, "questdb", seeds, mosquitto.url)
            try:
                peak = sim("load", "--broker", q.url, "--api", q.api, "--token", q.token,
                           "--client-id", "perf-load", "--rate", "0",
                           *traffic(seeds, args, encoding, args.seconds))
                request = urllib.request.Request(
                    q.api + "/metrics", headers={"Authorization": f"Bearer {q.token}"})
                with urllib.request.urlopen(request, timeout=10) as m:
                    metrics = m.read().decode()
            finally:
                q.close()
        # Every row QuestDB holds (the ones stored before the load: none, a fresh table).
        in_questdb = questdb_sql(args.questdb, f"SELECT count() FROM {table}")["dataset"][0][0]
    finally:
        mosquitto.close()
    print("questdb: bare ILP sender, the same number of rows", file=sys.stderr)
    bare = questdb_bare_ilp(args, peak["readings_stored"], args.stations, table)
    try:
        questdb_sql(args.questdb, f"DROP TABLE {table}")
    except OSError as e:
        print(f"questdb: could not drop {table}: {e}", file=sys.stderr)
    writer = {line.split()[0]: line.split()[-1] for line in metrics.splitlines()
              if line.startswith("quantrac_store") and not line.startswith("#")}
    result = {"encoding": encoding, "ceiling": top, "max": peak, "bare_ilp": bare,
              "rows_in_questdb": in_questdb, "store_metrics": writer}
    write_questdb(args, result)
    if args.keep:
        print(f"kept {work} (logs)", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)


def write_questdb(args, r):
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    broker = r["ceiling"]["readings_per_second"]
    ilp = r["bare_ilp"]["acked_per_second"]
    stored = r["max"]["stored_per_second"]
    smaller = min(broker, ilp)
    build = questdb_sql(args.questdb, "SELECT build()")["dataset"][0][0]
    lines = [
        QUESTDB_BEGIN,
        "## QuestDB: stored rate against the broker's and QuestDB's ceilings",
        "",
        f"Generated by `python3 benches/perf.py --questdb {args.questdb} --questdb-only` on {now}.",
        f"Machine: {machine()}. QuestDB: {build}, on the same machine (loopback).",
        "",
        f"Traffic: {args.stations} stations x {args.params} parameters, {r['encoding']}, one record",
        f"per message, QoS 1, published for {args.seconds} s. quantrac runs with its defaults",
        "except `storage.backend = \"questdb\"` (a fresh table; alerts, presence and rule state",
        "in the local SQLite file with `sync = \"full\"`), on a private Mosquitto.",
        "*Broker ceiling*: `firmware-sim ceiling` on that Mosquitto (delivered to a subscriber",
        "that does nothing). *QuestDB ILP ceiling*: one bare ILP/HTTP sender",
        "(`cargo bench --bench questdb_year -- ilp`) writing the same number of rows of the same",
        f"stations and parameters, flushing every {r['bare_ilp']['flush_rows']:,} rows, rate until",
        "the last request was acknowledged. *quantrac*: readings acknowledged by QuestDB per",
        "second, by quantrac's own count (first publish to last reading stored).",
        "",
        "| broker ceiling (readings/s) | QuestDB ILP ceiling (rows/s) | quantrac into QuestDB (readings/s) | quantrac / smaller ceiling | complete | target (90%) |",
        "|---:|---:|---:|---:|---|---|",
        f"| {fmt(broker)} | {fmt(ilp)} | {fmt(stored)} | {stored / smaller:.0%} "
        f"| {'yes' if r['max']['complete'] else 'NO'} | {'met' if stored >= 0.9 * smaller else 'not met'} |",
        "",
        f"Rows in QuestDB after quantrac's run: {r['rows_in_questdb']:,} "
        f"({r['max']['readings_published']:,} readings published). The bare sender's rows were",
        f"all visible to queries {r['bare_ilp']['visible_seconds']:.2f} s after its start "
        f"({fmt(r['bare_ilp']['visible_per_second'])} rows/s); its flush p50 "
        f"{r['bare_ilp']['flush_p50_ms']:.1f} ms, p99 {r['bare_ilp']['flush_p99_ms']:.1f} ms.",
        "Where the time goes: `docs/performance-notes.md`, *QuestDB ingest*.",
        "",
        "```json",
        json.dumps(r, indent=1),
        "```",
        QUESTDB_END,
    ]
    section = "\n".join(lines) + "\n"
    try:
        with open(args.out) as f:
            text = f.read()
    except FileNotFoundError:
        text = ""
    if QUESTDB_BEGIN in text and QUESTDB_END in text:
        head, rest = text.split(QUESTDB_BEGIN, 1)
        tail = rest.split(QUESTDB_END, 1)[1].lstrip("\n")
        text = head + section + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(args.out, "w") as f:
        f.write(text)
    print(f"wrote the QuestDB section of {args.out}", file=sys.stderr)


def questdb_sections(path):
    """The QuestDB sections of the document (this row's, and the one written from
    benches/questdb_year.rs between `<!-- questdb_year: begin/end -->`), kept across a
    regeneration of the rest."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return []
    kept = []
    for begin, end in [("<!-- questdb_year: begin -->", "<!-- questdb_year: end -->"),
                       (QUESTDB_BEGIN, QUESTDB_END)]:
        if begin in text and end in text:
            kept.append(begin + text.split(begin, 1)[1].split(end, 1)[0] + end)
    return kept


def restore_questdb_sections(path, kept):
    with open(path) as f:
        text = f.read()
    missing = [k for k in kept if k.split("\n", 1)[0] not in text]
    if missing:
        with open(path, "w") as f:
            f.write(text.rstrip("\n") + "\n\n" + "\n\n".join(missing) + "\n")


def add_questdb_options(parser):
    parser.add_argument("--questdb", metavar="URL",
                        help="also measure quantrac on this QuestDB (ILP/HTTP address)")
    parser.add_argument("--questdb-pg", default="postgresql://admin:quest@127.0.0.1:8812/qdb",
                        help="that QuestDB's PostgreSQL-wire address")
    parser.add_argument("--questdb-only", action="store_true",
                        help="run only the QuestDB row (updates its section of --out)")
    parser.add_argument("--questdb-encoding", default="json", choices=ENCODINGS)
    parser.add_argument("--questdb-flush", type=int, default=10000,
                        help="rows per request of the bare ILP sender")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stations", type=int, default=10000)
    parser.add_argument("--params", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=8, help="seconds of maximum-rate publishing")
    parser.add_argument("--steady", type=int, default=15, help="seconds of fixed-rate load")
    parser.add_argument("--memory-rate", type=int, default=20000,
                        help="readings/s of the 10,000-station memory run")
    parser.add_argument("--prefill", type=int, default=30,
                        help="seconds of load that fill the template database")
    parser.add_argument("--open-loop-messages", type=int, default=50000,
                        help="messages of the open-loop run through Mosquitto")
    parser.add_argument("--only", default=",".join(PARTS),
                        help=f"comma-separated parts to run, of {','.join(PARTS)}")
    parser.add_argument("--quick", action="store_true", help="json only, short runs")
    parser.add_argument("--baseline-quantrac",
                        help="an earlier quantrac binary to run the JSON backfill with too")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "performance.md"))
    add_questdb_options(parser)
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.steady, args.prefill = 2, 5, 5
        args.open_loop_messages = min(args.open_loop_messages, 10000)
    args.only = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = [p for p in args.only if p not in PARTS]
    if unknown:
        parser.error(f"--only: unknown part(s) {', '.join(unknown)}; parts: {', '.join(PARTS)}")
    if not args.questdb_only:
        kept = questdb_sections(args.out)
        run(args)
        restore_questdb_sections(args.out, kept)
    if args.questdb:
        run_questdb(args)


if __name__ == "__main__":
    main()
