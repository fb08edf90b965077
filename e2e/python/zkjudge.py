#!/usr/bin/env python3
"""zkjudge: an independent ZooKeeper client (kazoo) that judges quorate's work.

Every subcommand prints one JSON object on stdout. Exit status: 0 when the command succeeded and
(for checks) everything matched, 1 when a check found a problem, 2 on an error (the JSON then has
an "error" key).

  write        --hosts H [--auth user:pw] --prefix /p --count N [--size B] [--acl open|creator]
  verify       --hosts H [--auth user:pw] --prefix /p --count N [--size B]
  dump         --hosts H [--auth user:pw] [--path /] [--exclude /zookeeper ...]
  acl          --hosts H [--auth user:pw] --path /p [--set JSON]
               the ACL of one znode (set first to JSON, a list of {perms, scheme, id})
  writer       --hosts H [--auth user:pw] --prefix /w --seconds S --out FILE [--interval-ms MS]
  check-acked  --hosts H [--auth user:pw] --file FILE
  populate     --hosts H [--auth user:pw] --prefix /p --count N [--size B]
               a varied tree of about N znodes under /p: nested paths, binary data, a subtree
               readable only by digest user `app`, persistent-sequential children, an empty and
               a zero-length node
  create-seq   --hosts H [--auth user:pw] --path /parent/name-
               create one persistent-sequential node; prints the path the server gave it
  hold         --hosts H [--auth user:pw] --path /p/e ... --seconds S --ready FILE --stop FILE
               one session creates the ephemeral znodes (their parents persistent) and holds
               them; FILE --ready is written once they exist; when --stop exists (or after S
               seconds) it reports whether its session stayed alive and which of its ephemerals
               are still there, owned by it
  history      --hosts H [--auth user:pw] --prefix /h --keys K --clients C --seconds S --ops N
               --out FILE [--seed X] [--interval-ms MS] [--local-reads]
               C concurrent clients (one session each) do random reads, writes and versioned
               compare-and-set on K keys for at most S seconds and N operations in all; every
               completed operation is one JSON line in FILE, for a linearizability checker.
               A read is a sync, then a get (ZooKeeper serves plain reads from the member's
               local state, which may lag: only sequentially consistent); --local-reads skips
               the sync

Every subcommand also takes --sasl user:pw: a SASL DIGEST-MD5 login, made before any --auth
digest (servers that enforce client authentication refuse a session without it), and --tls-ca
FILE: TLS to every host (their secure client ports), trusting the CA certificates in FILE and
checking each host's name or address against its certificate.

The content of znode i under a prefix is a pure function of (prefix, i, size), so `verify` can run
in a later process, against another ensemble (after a restore), with nothing but the arguments.
"""

import argparse
import base64
import hashlib
import json
import logging
import os
import random
import sys
import signal
import threading
import time

from kazoo.client import KazooClient
from kazoo.exceptions import (
    BadVersionError,
    KazooException,
    NodeExistsError,
    NoNodeError,
    SessionExpiredError,
)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.retry import KazooRetry
from kazoo.security import ACL, Id, Permissions

BATCH = 256


class JudgeError(Exception):
    pass


def content(prefix, i, size):
    """The data of znode i under prefix: a repeated digest, `size` bytes long."""
    seed = hashlib.sha256(f"{prefix}#{i}".encode()).hexdigest().encode()
    reps = size // len(seed) + 1
    return (seed * reps)[:size]


def node_path(prefix, i):
    return f"{prefix.rstrip('/')}/n{i:08d}"


def connect(args, timeout=30.0, hosts=None, randomize_hosts=True):
    auth = []
    if args.auth:
        if ":" not in args.auth:
            raise JudgeError("--auth must be user:password")
        auth.append(("digest", args.auth))
    retry = dict(max_tries=-1, delay=0.1, backoff=1.5, max_delay=1.0, deadline=timeout)
    sasl = None
    if getattr(args, "sasl", None):
        if ":" not in args.sasl:
            raise JudgeError("--sasl must be user:password")
        user, password = args.sasl.split(":", 1)
        sasl = {"mechanism": "DIGEST-MD5", "username": user, "password": password}
    client = KazooClient(
        hosts=hosts or args.hosts,
        randomize_hosts=randomize_hosts,
        timeout=args.session_timeout,
        auth_data=auth,
        sasl_options=sasl,
        use_ssl=bool(getattr(args, "tls_ca", None)),
        ca=getattr(args, "tls_ca", None),
        verify_certs=True,
        check_hostname=bool(getattr(args, "tls_ca", None)),
        connection_retry=KazooRetry(**retry),
        command_retry=KazooRetry(**retry),
    )
    client.start(timeout=timeout)
    return client


def close(client):
    try:
        client.stop()
        client.close()
    except Exception:  # noqa: BLE001 - closing is best effort
        pass


def wait_all(pairs):
    """pairs: [(key, async_result)] -> [(key, value or exception)]."""
    out = []
    for key, res in pairs:
        try:
            out.append((key, res.get(timeout=30)))
        except Exception as e:  # noqa: BLE001 - reported per node
            out.append((key, e))
    return out


def cmd_write(args):
    client = connect(args)
    try:
        started = time.monotonic()
        acl = None
        if args.acl == "creator":
            acl = [ACL(Permissions.ALL, Id("auth", ""))]
        client.ensure_path(args.prefix, acl=acl)
        written = 0
        failures = []
        for lo in range(0, args.count, BATCH):
            pending = []
            for i in range(lo, min(lo + BATCH, args.count)):
                path = node_path(args.prefix, i)
                pending.append((path, client.create_async(path, content(args.prefix, i, args.size), acl=acl)))
            for path, res in wait_all(pending):
                if isinstance(res, Exception):
                    failures.append(f"{path}: {type(res).__name__}")
                else:
                    written += 1
        report = {
            "written": written,
            "prefix": args.prefix,
            "count": args.count,
            "size": args.size,
            "failures": failures[:20],
            "failure_count": len(failures),
            "seconds": round(time.monotonic() - started, 3),
        }
        return report, 0 if not failures else 1
    finally:
        close(client)


def cmd_verify(args):
    client = connect(args)
    try:
        started = time.monotonic()
        client.sync(args.prefix)
        missing, mismatched = [], []
        for lo in range(0, args.count, BATCH):
            pending = [(i, client.get_async(node_path(args.prefix, i))) for i in range(lo, min(lo + BATCH, args.count))]
            for i, res in wait_all(pending):
                path = node_path(args.prefix, i)
                if isinstance(res, NoNodeError):
                    missing.append(path)
                elif isinstance(res, Exception):
                    raise JudgeError(f"reading {path}: {type(res).__name__}: {res}")
                elif res[0] != content(args.prefix, i, args.size):
                    mismatched.append(path)
        children = client.get_children(args.prefix) if client.exists(args.prefix) else []
        ok = not missing and not mismatched
        report = {
            "ok": ok,
            "checked": args.count,
            "children": len(children),
            "missing_count": len(missing),
            "mismatched_count": len(mismatched),
            "missing": missing[:20],
            "mismatched": mismatched[:20],
            "seconds": round(time.monotonic() - started, 3),
        }
        return report, 0 if ok else 1
    finally:
        close(client)


def acl_json(acls):
    return [{"perms": a.perms, "scheme": a.id.scheme, "id": a.id.id} for a in acls]


def cmd_dump(args):
    client = connect(args)
    try:
        root = args.path.rstrip("/") or "/"
        excluded = set(e.rstrip("/") for e in args.exclude)
        client.sync(root)
        nodes = {}
        level = [root]
        while level:
            next_level = []
            for lo in range(0, len(level), BATCH):
                batch = level[lo:lo + BATCH]
                got = wait_all([(p, client.get_async(p)) for p in batch])
                acls = dict(wait_all([(p, client.get_acls_async(p)) for p in batch]))
                kids = dict(wait_all([(p, client.get_children_async(p)) for p in batch]))
                for path, res in got:
                    if isinstance(res, NoNodeError):
                        continue  # deleted during the walk
                    if isinstance(res, Exception):
                        raise JudgeError(f"reading {path}: {type(res).__name__}: {res}")
                    data, stat = res
                    acl = acls[path]
                    if isinstance(acl, Exception):
                        raise JudgeError(f"reading the ACL of {path}: {type(acl).__name__}: {acl}")
                    children = kids[path]
                    if isinstance(children, NoNodeError):
                        continue
                    if isinstance(children, Exception):
                        raise JudgeError(f"listing {path}: {type(children).__name__}: {children}")
                    owner = stat.ephemeralOwner
                    # A session id carries its server's id in the high byte; container nodes are
                    # 0x80 followed by zeros, TTL nodes have the high byte 0xFF.
                    unsigned = owner & 0xFFFFFFFFFFFFFFFF
                    ephemeral = owner != 0 and unsigned != 0x8000000000000000 and (unsigned >> 56) != 0xFF
                    nodes[path] = {
                        "path": path,
                        "data": base64.b64encode(data or b"").decode(),
                        "acl": acl_json(acl[0]),
                        "ephemeral": ephemeral,
                        "ephemeral_owner": owner,
                        "version": stat.version,
                        "czxid": stat.czxid,
                        "mzxid": stat.mzxid,
                        "pzxid": stat.pzxid,
                        "children": [],
                        "_names": sorted(children),
                    }
                    for name in sorted(children):
                        child = ("" if path == "/" else path) + "/" + name
                        if child not in excluded:
                            next_level.append(child)
            level = next_level

        def build(path):
            node = nodes[path]
            names = node.pop("_names")
            for name in names:
                child = ("" if path == "/" else path) + "/" + name
                if child in nodes:
                    node["children"].append(build(child))
            return node

        if root not in nodes:
            raise JudgeError(f"{root} does not exist")
        return build(root), 0
    finally:
        close(client)


def cmd_acl(args):
    client = connect(args)
    try:
        if args.set is not None:
            wanted = [ACL(e["perms"], Id(e["scheme"], e["id"])) for e in json.loads(args.set)]
            client.set_acls(args.path, wanted)
        client.sync(args.path)
        acls, _ = client.get_acls(args.path)
        return {"acl": acl_json(acls)}, 0
    finally:
        close(client)


def binary(prefix, i, size):
    """Deterministic binary data (every byte value occurs) for node i."""
    seed = hashlib.sha256(f"bin:{prefix}#{i}".encode()).digest()
    reps = size // len(seed) + 1
    return (seed * reps)[:size]


def cmd_populate(args):
    client = connect(args)
    try:
        base = args.prefix.rstrip("/")
        app = ACL(Permissions.READ | Permissions.WRITE, Id("digest", "app:" + base64.b64encode(hashlib.sha1(b"app:app-password").digest()).decode()))
        client.ensure_path(base)
        made = 1
        # Nested paths: base/tree/dDD/eEE/nNNNN, binary data of varied sizes.
        leaves = max(args.count - 200, 10)
        dirs = set()
        pairs = []
        for i in range(leaves):
            d = f"{base}/tree/d{i % 20:02d}/e{(i // 20) % 25:02d}"
            dirs.add(d)
            pairs.append((f"{d}/n{i:06d}", binary(base, i, 1 + (i * 37) % args.size)))
        for d in sorted(dirs):
            client.ensure_path(d)
        made += len(dirs) + 20 + 1
        for lo in range(0, len(pairs), BATCH):
            wait_all([(p, client.create_async(p, data)) for p, data in pairs[lo:lo + BATCH]])
        made += len(pairs)
        # A restricted subtree: only digest user app (and super) can read it.
        client.create(f"{base}/secret", b"top secret", acl=[app])
        client.create(f"{base}/secret/key", b"\x00\x01\x02", acl=[app])
        made += 2
        # Sequential children: the parent's counter must survive a restore.
        client.ensure_path(f"{base}/queue")
        for i in range(50):
            client.create(f"{base}/queue/item-", f"item {i}".encode(), sequence=True)
        # Delete a few so the counter is above the count of children.
        for name in sorted(client.get_children(f"{base}/queue"))[:5]:
            client.delete(f"{base}/queue/{name}")
        made += 1 + 45
        client.create(f"{base}/empty", b"")
        made += 1
        return {"created": made, "prefix": base}, 0
    finally:
        close(client)


def cmd_create_seq(args):
    client = connect(args)
    try:
        path = client.create(args.path, b"after restore", sequence=True)
        return {"path": path}, 0
    finally:
        close(client)


def cmd_hold(args):
    """Holds ephemeral znodes in one session until told to stop; reports what survived."""
    deadline = time.monotonic() + args.seconds

    def watchdog():
        time.sleep(args.seconds + 30)
        os._exit(3)

    threading.Thread(target=watchdog, daemon=True).start()
    states = []
    client = connect(args)
    try:
        client.add_listener(lambda state: states.append(str(state)))
        session = client.client_id[0]
        for path in args.path:
            parent = path.rsplit("/", 1)[0]
            if parent:
                client.ensure_path(parent)
            client.create(path, b"held", ephemeral=True)
        with open(args.ready, "w", encoding="utf-8") as f:
            f.write(f"{session}\n")
        while time.monotonic() < deadline and not os.path.exists(args.stop):
            time.sleep(0.1)
        present, missing = [], []
        for path in args.path:
            try:
                stat = client.exists(path)
            except KazooException:
                stat = None
            if stat is not None and stat.ephemeralOwner == session:
                present.append(path)
            else:
                missing.append(path)
        alive = client.client_id is not None and client.client_id[0] == session and "LOST" not in states
        report = {
            "session": session,
            "alive": alive,
            "states": list(states),
            "present": present,
            "missing": missing,
        }
        return report, 0 if alive and not missing else 1
    finally:
        close(client)


def cmd_writer(args):
    """Writes sequential znodes for at most --seconds (or until SIGTERM), recording every
    acknowledged write with the time of its acknowledgement (seconds since the start)."""
    started = time.monotonic()
    deadline = started + args.seconds
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def watchdog():
        # Hard bound: whatever kazoo does, this process is gone shortly after the deadline.
        time.sleep(args.seconds + 30)
        os._exit(3)

    threading.Thread(target=watchdog, daemon=True).start()
    run = base64.b32encode(os.urandom(5)).decode().lower()
    errors = {}
    attempts = acked = failing = 0
    client = None
    with open(args.out, "w", encoding="utf-8") as out:
        while time.monotonic() < deadline and not stop.is_set():
            if client is None:
                try:
                    client = connect(args, timeout=max(0.5, min(10.0, deadline - time.monotonic())))
                    client.ensure_path(args.prefix)
                except Exception as e:  # noqa: BLE001 - counted, then retried until the deadline
                    errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
                    if client is not None:
                        close(client)
                    client = None
                    time.sleep(0.2)
                    continue
            attempts += 1
            data = f"{run}:{attempts}".encode()
            try:
                remaining = max(0.1, deadline - time.monotonic())
                path = client.create_async(args.prefix.rstrip("/") + "/w-", data, sequence=True).get(
                    timeout=min(args.op_timeout, remaining + 1.0)
                )
            except (KazooException, KazooTimeoutError) as e:
                # Not acknowledged (it may or may not have been applied): not recorded.
                errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
                failing += 1
                if isinstance(e, SessionExpiredError) or failing >= 40:
                    # An expired session (or a client stuck on dead members) never recovers by
                    # itself: start over with a new session.
                    close(client)
                    client = None
                    failing = 0
                time.sleep(0.05)
                continue
            failing = 0
            acked += 1
            at = round(time.monotonic() - started, 4)
            out.write(json.dumps({"path": path, "data": data.decode(), "t": at}) + "\n")
            out.flush()
            if args.interval_ms > 0:
                time.sleep(args.interval_ms / 1000.0)
    if client is not None:
        close(client)
    report = {
        "acked": acked,
        "attempts": attempts,
        "errors": errors,
        "run": run,
        "out": args.out,
        "seconds": round(time.monotonic() - started, 3),
    }
    return report, 0


def cmd_check_acked(args):
    entries = []
    with open(args.file, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                entries.append(json.loads(line))
    client = connect(args)
    try:
        started = time.monotonic()
        parents = sorted({e["path"].rsplit("/", 1)[0] or "/" for e in entries})
        for parent in parents:
            client.sync(parent)
        missing, mismatched = [], []
        for lo in range(0, len(entries), BATCH):
            batch = entries[lo:lo + BATCH]
            for e, res in wait_all([(e, client.get_async(e["path"])) for e in batch]):
                if isinstance(res, NoNodeError):
                    missing.append(e["path"])
                elif isinstance(res, Exception):
                    raise JudgeError(f"reading {e['path']}: {type(res).__name__}: {res}")
                elif res[0].decode(errors="replace") != e["data"]:
                    mismatched.append(e["path"])
        ok = not missing and not mismatched
        report = {
            "ok": ok,
            "acked": len(entries),
            "missing_count": len(missing),
            "mismatched_count": len(mismatched),
            "missing": missing[:20],
            "mismatched": mismatched[:20],
            "seconds": round(time.monotonic() - started, 3),
        }
        return report, 0 if ok else 1
    finally:
        close(client)


# Errors after which a write is known not to have taken effect: the server refused it.
DEFINITE_ERRORS = (BadVersionError, NoNodeError)


def history_key(prefix, i):
    return f"{prefix.rstrip('/')}/k{i}"


# Set by SIGTERM: clients finish the operation in flight, then the summary is printed.
STOP = threading.Event()


class History:
    """The shared state of a `history` run: the op budget, the out file and the counts."""

    def __init__(self, out, ops, deadline):
        self.lock = threading.Lock()
        self.out = out
        self.budget = ops
        self.deadline = deadline
        self.by_kind = {kind: {"ok": 0, "failed": 0, "unknown": 0} for kind in ("get", "set", "cas")}
        self.errors = {}
        self.recorded = 0

    def take(self):
        """Claims one operation of the budget; False when the budget or the time is used up,
        or when the recorder was asked to stop (SIGTERM)."""
        with self.lock:
            if self.budget <= 0 or time.monotonic() >= self.deadline or STOP.is_set():
                return False
            self.budget -= 1
            return True

    def record(self, entry):
        with self.lock:
            self.out.write(json.dumps(entry, sort_keys=True) + "\n")
            self.out.flush()
            if entry["op"] in self.by_kind:
                self.by_kind[entry["op"]][entry["outcome"]] += 1
                self.recorded += 1
            error = entry.get("output", {}).get("error")
            if error:
                self.errors[error] = self.errors.get(error, 0) + 1

    def count_error(self, name):
        with self.lock:
            self.errors[name] = self.errors.get(name, 0) + 1


def history_client(args, cid, hosts, keys, shared, seed):
    """One client: its own session (first trying host `cid` of the list), random operations
    until the budget or the time runs out."""
    rng = random.Random(seed * 1000003 + cid)
    # Client cid starts at member cid (mod n), so every member serves some client.
    rotated = hosts[cid % len(hosts):] + hosts[:cid % len(hosts)]

    def open_client():
        # Until the deadline or a stop: the ensemble may be without a quorum for a while.
        while not STOP.is_set():
            remaining = shared.deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                return connect(args, timeout=max(0.5, min(10.0, remaining)), hosts=",".join(rotated), randomize_hosts=False)
            except Exception as e:  # noqa: BLE001 - counted, then retried until the deadline
                shared.count_error(type(e).__name__)
                time.sleep(0.2)
        return None

    client = open_client()
    if client is None:
        return
    known = {}  # key -> the version this client last read or wrote
    counter = 0
    try:
        while shared.take():
            key = rng.choice(keys)
            roll = rng.random()
            if roll < 0.5 or (roll >= 0.75 and key not in known):
                kind = "get"
            elif roll < 0.75:
                kind = "set"
            else:
                kind = "cas"
            entry = {"client": cid, "op": kind, "key": key, "input": {}}
            if kind != "get":
                counter += 1
                value = f"c{cid}-{counter}"
                entry["input"]["value"] = value
                if kind == "cas":
                    entry["input"]["version"] = known[key]
            else:
                entry["input"]["read"] = "local" if args.local_reads else "sync"
            remaining = max(0.1, shared.deadline - time.monotonic())
            timeout = min(args.op_timeout, remaining + 1.0)
            entry["call"] = time.monotonic_ns()
            try:
                if kind == "get":
                    if not args.local_reads:
                        client.sync_async(key).get(timeout=timeout)
                    data, stat = client.get_async(key).get(timeout=timeout)
                    entry["output"] = {"value": data.decode(errors="replace"), "version": stat.version}
                    known[key] = stat.version
                else:
                    version = entry["input"]["version"] if kind == "cas" else -1
                    stat = client.set_async(key, value.encode(), version=version).get(timeout=timeout)
                    entry["output"] = {"version": stat.version}
                    known[key] = stat.version
                entry["outcome"] = "ok"
            except DEFINITE_ERRORS as e:
                entry["output"] = {"error": type(e).__name__}
                entry["outcome"] = "failed"
                known.pop(key, None)
            except (KazooException, KazooTimeoutError) as e:
                # Connection loss, session expiry, a timeout: the write may or may not have
                # taken effect.
                entry["output"] = {"error": type(e).__name__}
                entry["outcome"] = "unknown"
                known.pop(key, None)
            entry["return"] = time.monotonic_ns()
            shared.record(entry)
            if entry["outcome"] == "unknown":
                # Wait for the session to come back rather than piling up unknown operations.
                # kazoo stops reconnecting once its retry policy's deadline passes (a quorum
                # lost for longer): then a new client takes over.
                lost_at = time.monotonic()
                while not client.connected and not STOP.is_set() and time.monotonic() < shared.deadline:
                    if time.monotonic() - lost_at > 15.0:
                        close(client)
                        client = open_client()
                        if client is None:
                            return
                        lost_at = time.monotonic()
                    time.sleep(0.02)
            if args.interval_ms > 0:
                time.sleep(args.interval_ms / 1000.0)
    finally:
        close(client)


def cmd_history(args):
    """Records a history of reads, writes and versioned compare-and-set for a linearizability
    checker (one JSON line per operation)."""
    if args.keys < 1 or args.clients < 1 or args.ops < 0 or args.seconds <= 0:
        raise JudgeError("--keys and --clients must be at least 1, --ops at least 0, --seconds positive")
    started = time.monotonic()
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")

    def watchdog():
        # Hard bound: whatever kazoo does, this process is gone shortly after the deadline.
        time.sleep(args.seconds + 60)
        os._exit(3)

    threading.Thread(target=watchdog, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: STOP.set())
    keys = [history_key(args.prefix, i) for i in range(args.keys)]
    hosts = [h for h in args.hosts.split(",") if h]
    with open(args.out, "w", encoding="utf-8") as out:
        # A fault may already be under way: keep trying until the run's own deadline.
        setup = None
        while setup is None:
            try:
                setup = connect(args)
            except KazooTimeoutError:
                if STOP.is_set() or time.monotonic() - started >= args.seconds:
                    raise
        try:
            # The setup runs while the operator may be restarting members: every call is retried
            # on connection loss (a create that landed before the loss then finds its node).
            setup.retry(setup.ensure_path, args.prefix)
            shared = History(out, args.ops, 0)
            for key in keys:
                try:
                    setup.retry(setup.create, key, b"init")
                except NodeExistsError:
                    pass  # a key of an earlier run: its current state is the initial one
                call = time.monotonic_ns()
                setup.retry(setup.sync, key)
                data, stat = setup.retry(setup.get, key)
                # The initial state of the register, before any client runs.
                shared.record({
                    "client": -1, "op": "init", "key": key, "input": {},
                    "output": {"value": data.decode(errors="replace"), "version": stat.version},
                    "call": call, "return": time.monotonic_ns(), "outcome": "ok",
                })
        finally:
            close(setup)
        shared.deadline = started + args.seconds
        def run_client(cid):
            try:
                history_client(args, cid, hosts, keys, shared, seed)
            except Exception as e:  # noqa: BLE001 - reported in the summary, not hidden
                logging.exception("client %d stopped", cid)
                shared.count_error(f"client-crashed:{type(e).__name__}")

        threads = [
            threading.Thread(target=run_client, args=(cid,), daemon=True)
            for cid in range(args.clients)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    by_outcome = {o: sum(k[o] for k in shared.by_kind.values()) for o in ("ok", "failed", "unknown")}
    report = {
        "operations": shared.recorded,
        "by_kind": shared.by_kind,
        "by_outcome": by_outcome,
        "errors": shared.errors,
        "clients": args.clients,
        "keys": args.keys,
        "prefix": args.prefix,
        "seed": seed,
        "out": args.out,
        "seconds": round(time.monotonic() - started, 3),
    }
    return report, 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="zkjudge", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--hosts", required=True, help="connect string, e.g. 127.0.0.11:2181,127.0.0.12:2181")
        p.add_argument("--auth", help="digest user:password")
        p.add_argument("--sasl", help="SASL DIGEST-MD5 login user:password, made before --auth")
        p.add_argument("--tls-ca", help="TLS to every host, trusting the CA certificates of this PEM file")
        p.add_argument("--session-timeout", type=float, default=10.0, help="session timeout in seconds")
        return p

    p = common(sub.add_parser("write", help="create N znodes with known content"))
    p.add_argument("--prefix", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--acl", choices=["open", "creator"], default="open")

    p = common(sub.add_parser("verify", help="read back znodes made by write"))
    p.add_argument("--prefix", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--size", type=int, default=64)

    p = common(sub.add_parser("dump", help="print the tree as JSON"))
    p.add_argument("--path", default="/")
    p.add_argument("--exclude", action="append", default=[], help="a subtree to leave out (repeatable)")

    p = common(sub.add_parser("acl", help="print the ACL of one znode (after setting it with --set)"))
    p.add_argument("--path", required=True)
    p.add_argument("--set", help='the new ACL as JSON: [{"perms": 31, "scheme": "world", "id": "anyone"}]')

    p = common(sub.add_parser("writer", help="bounded continuous writer of sequential znodes"))
    p.add_argument("--prefix", required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--out", required=True, help="file of acknowledged writes (JSON lines)")
    p.add_argument("--interval-ms", type=float, default=0.0)
    p.add_argument("--op-timeout", type=float, default=10.0)

    p = common(sub.add_parser("check-acked", help="every acknowledged write is readable"))
    p.add_argument("--file", required=True)

    p = common(sub.add_parser("populate", help="a varied tree of about N znodes"))
    p.add_argument("--prefix", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--size", type=int, default=512)

    p = common(sub.add_parser("create-seq", help="create one persistent-sequential node"))
    p.add_argument("--path", required=True)

    p = common(sub.add_parser("hold", help="hold ephemeral znodes in one session until told to stop"))
    p.add_argument("--path", action="append", required=True, help="an ephemeral znode (repeatable)")
    p.add_argument("--seconds", type=float, required=True, help="at most this long")
    p.add_argument("--ready", required=True, help="written once the ephemerals exist")
    p.add_argument("--stop", required=True, help="stop once this file exists")

    p = common(sub.add_parser("history", help="record a history of get, set and compare-and-set"))
    p.add_argument("--prefix", required=True)
    p.add_argument("--keys", type=int, required=True)
    p.add_argument("--clients", type=int, required=True)
    p.add_argument("--seconds", type=float, required=True, help="at most this long")
    p.add_argument("--ops", type=int, required=True, help="at most this many operations in all")
    p.add_argument("--out", required=True, help="the history (JSON lines)")
    p.add_argument("--seed", type=int, help="seed of the random choices (printed in the report)")
    p.add_argument("--interval-ms", type=float, default=0.0, help="pause of each client between operations")
    p.add_argument("--op-timeout", type=float, default=10.0)
    p.add_argument("--local-reads", action="store_true", help="plain reads, without a sync first")

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers = {
        "write": cmd_write,
        "verify": cmd_verify,
        "dump": cmd_dump,
        "acl": cmd_acl,
        "writer": cmd_writer,
        "check-acked": cmd_check_acked,
        "populate": cmd_populate,
        "create-seq": cmd_create_seq,
        "history": cmd_history,
        "hold": cmd_hold,
    }
    try:
        report, code = handlers[args.command](args)
    except (JudgeError, KazooException, KazooTimeoutError, OSError) as e:
        report, code = {"error": f"{type(e).__name__}: {e}"}, 2
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
