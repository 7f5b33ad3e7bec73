"""Pairing a worker with a host (comfy_nodes/pairing/): the one-time code's limits, the SPAKE2 exchange over the
host's HTTP API (the standalone host's app on a QueueService with a CURVE broker), what it refuses (a wrong code, a
replayed or tampered message, a host that does not know the code), who may do what, and the worker's kept keys.
The runs between real processes are in test_pairing_e2e.py."""

from __future__ import annotations

import os
import stat
import urllib.parse

import pytest
import pytest_asyncio

from comfy_nodes import _native as native
from comfy_nodes.pairing import client as pairing_client
from comfy_nodes.pairing import codes as codes_mod
from comfy_nodes.pairing import exchange
from comfy_nodes.pairing.codes import CodeBook, PairingRefused

pytestmark = pytest.mark.skipif(not native.curve_available(), reason="libzmq without CURVE")
TOKEN = "pairing-test-admin-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
JSON = {"Content-Type": "application/json"}


# ---- the codes ---------------------------------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now


def test_a_code_is_six_digits_valid_ten_minutes_and_used_once():
    clock = Clock()
    book = CodeBook(clock)
    code = book.issue()
    assert len(code.code) == 6 and code.code.isdigit()
    assert code.expires_at - code.issued_at == 600
    taken = book.take("1.2.3.4")
    book.succeed(taken)
    with pytest.raises(PairingRefused, match="used already") as e:
        book.take("1.2.3.4")
    assert e.value.status == 410
    code = book.issue()
    clock.now += 600
    with pytest.raises(PairingRefused, match="expired"):
        book.take("1.2.3.4")
    assert book.current() is None


def test_a_code_is_void_after_five_failed_tries_and_a_new_one_voids_the_old():
    book = CodeBook(Clock())
    old = book.issue()
    book.issue()
    assert old.void, "issuing a code voids the one before"
    for i in range(codes_mod.MAX_TRIES):
        c = book.take("src")
        book.fail(c, "src", "wrong")
        assert c.tries_left == codes_mod.MAX_TRIES - 1 - i
    with pytest.raises(PairingRefused, match="void"):
        book.take("src")
    assert [r["type"] for r in book.refusals()] == ["pairing_failed"] * 5 + ["no_code"]


def test_open_exchanges_hold_their_tries_so_no_more_than_five_guesses_run_at_once():
    book = CodeBook(Clock())
    book.issue()
    held = [book.take(f"s{i}") for i in range(codes_mod.MAX_TRIES)]
    with pytest.raises(PairingRefused, match="taken by exchanges still open"):
        book.take("s9")
    book.succeed(held[0])  # one pairs: the code is used, the others cannot pair with it any more
    with pytest.raises(PairingRefused, match="used"):
        book.take("s9")


def test_attempts_are_limited_per_source_and_refusals_are_kept_bounded():
    book = CodeBook(Clock())
    for _ in range(codes_mod.PER_SOURCE):
        book.admit("10.0.0.1", "start")
    with pytest.raises(PairingRefused) as e:
        book.admit("10.0.0.1", "start")
    assert e.value.status == 429
    book.admit("10.0.0.2", "start")  # another source is counted on its own
    for i in range(codes_mod.MAX_REFUSALS + 50):
        book.refuse(f"s{i}", 403, "pairing_failed", "x", "finish")
    kept = book.refusals()
    assert len(kept) == codes_mod.MAX_REFUSALS and kept[-1]["source"] == f"s{codes_mod.MAX_REFUSALS + 49}"


# ---- the exchange over HTTP ------------------------------------------------------------------------------


@pytest.fixture
def broker_keys():
    return native.curve_keypair()


@pytest.fixture
def curve_service(tmp_path, broker_keys):
    from comfy_nodes.service import BrokerSettings, QueueService

    configured = native.curve_keypair()[0]
    svc = QueueService(
        tmp_path / "host",
        threads=8,
        broker=BrokerSettings(
            bind="tcp://127.0.0.1:0", heartbeat=0.2, curve_secret_key=broker_keys[1], allowed_worker_keys=[configured]
        ),
    )
    svc.configured_key = configured
    try:
        yield svc
    finally:
        svc.close()


@pytest_asyncio.fixture
async def host(aiohttp_client, curve_service):
    from comfy_nodes.host.standalone import build_app

    return await aiohttp_client(build_app(curve_service, token=TOKEN))


async def new_code(host) -> str:
    r = await host.post("/comfymq/pairing/code", headers={**ADMIN, **JSON})
    assert r.status == 201, await r.text()
    body = await r.json()
    assert body["fingerprint"] == exchange.fingerprint(host.server.app["service"].broker.public_key)
    return body["code"]


class WorkerSide:
    """The worker's half of the exchange, step by step (client.pair runs the same steps over urllib)."""

    def __init__(self, code: str, public_key: str | None = None, name: str = "gpu-box"):
        self.side = exchange.Side("worker", code)
        self.public, self.secret = (public_key, None) if public_key else native.curve_keypair()
        self.name = name

    async def start(self, host):
        r = await host.post("/comfymq/pairing/start", json={"version": 1, "msg": exchange.b64(self.side.message)})
        self.start_status, self.start_body = r.status, await r.json()
        if r.status == 200:
            self.session = self.start_body["session"]
            self.keys = self.side.finish(self.session, exchange.unb64(self.start_body["msg"], "msg"))
        return r.status

    def finish_body(self) -> dict:
        box = self.keys.seal("worker", {"public_key": self.public, "name": self.name})
        return {
            "session": self.session,
            "confirm": exchange.b64(self.keys.confirm("worker")),
            "worker_key_box": exchange.b64(box),
        }

    async def finish(self, host, body=None):
        r = await host.post("/comfymq/pairing/finish", json=body or self.finish_body())
        return r.status, await r.json()


async def overview(host) -> dict:
    r = await host.get("/comfymq/pairing", headers=ADMIN)
    assert r.status == 200, await r.text()
    return await r.json()


@pytest.mark.asyncio
async def test_the_right_code_pairs_and_both_sides_get_the_others_key(host, curve_service, broker_keys):
    code = await new_code(host)
    w = WorkerSide(code)
    assert await w.start(host) == 200
    status, body = await w.finish(host)
    assert status == 200, body
    w.keys.check_confirm("host", exchange.unb64(body["confirm"], "confirm"))  # the host knew the code
    info = w.keys.open("host", exchange.unb64(body["host_key_box"], "host_key_box"))
    assert info["broker_public_key"] == broker_keys[0]
    assert info["broker_port"] == int(curve_service.broker.endpoint.rsplit(":", 1)[1])
    # durable (a store document) and in the allow-list after the configured keys
    assert curve_service.store.get_doc("paired/" + w.public) is not None
    assert curve_service.paired.allowed() == [curve_service.configured_key, w.public]
    seen = await overview(host)
    assert [(p["public_key"], p["name"]) for p in seen["workers"]] == [(w.public, "gpu-box")]
    assert seen["code"] is None, "the code is used up"
    assert await WorkerSide(code).start(host) == 410, "a code pairs once"


@pytest.mark.asyncio
async def test_a_wrong_code_is_refused_counted_and_voids_the_code_after_five_tries(host, curve_service):
    code = await new_code(host)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    for i in range(codes_mod.MAX_TRIES):
        w = WorkerSide(wrong)
        assert await w.start(host) == 200  # (a start says nothing: SPAKE2 answers any message)
        status, body = await w.finish(host)
        assert status == 403 and body["error"]["type"] == "pairing_failed", body
        left = (await overview(host))["code"]
        assert (left["tries_left"] if left else 0) == codes_mod.MAX_TRIES - 1 - i
    right = WorkerSide(code)
    assert await right.start(host) == 410, "void: the right code is refused too"
    assert "void" in right.start_body["error"]["message"]
    assert curve_service.paired.keys() == []
    refusals = (await overview(host))["refusals"]
    assert sum(r["type"] == "pairing_failed" for r in refusals) == codes_mod.MAX_TRIES
    assert all(r["source"] == "127.0.0.1" for r in refusals)


@pytest.mark.asyncio
async def test_replayed_and_tampered_messages_fail_and_count_as_tries(host, curve_service):
    code = await new_code(host)
    w = WorkerSide(code)
    assert await w.start(host) == 200
    good = w.finish_body()
    # tampered: the confirmation, then (a new exchange) the key box
    bad = dict(good, confirm=exchange.b64(bytes(32)))
    status, body = await w.finish(host, bad)
    assert status == 403 and "confirmation" in body["error"]["message"]
    status, body = await w.finish(host, good)
    assert status == 403, "the session is gone after its one finish: the untampered message is a replay now"
    w2 = WorkerSide(code)
    assert await w2.start(host) == 200
    good2 = w2.finish_body()
    box = bytearray(exchange.unb64(good2["worker_key_box"], "box"))
    box[-1] ^= 1
    status, body = await w2.finish(host, dict(good2, worker_key_box=exchange.b64(bytes(box))))
    assert status == 403 and "does not open" in body["error"]["message"]
    assert (await overview(host))["code"]["tries_left"] == codes_mod.MAX_TRIES - 3
    # a replayed start opens an exchange nobody can finish: it holds a try
    replay = await host.post("/comfymq/pairing/start", json={"version": 1, "msg": exchange.b64(w.side.message)})
    assert replay.status == 200
    assert (await overview(host))["code"]["tries_left"] == codes_mod.MAX_TRIES - 4
    # a message from another exchange (w's finish against a new session) does not open either
    w3 = WorkerSide(code)
    assert await w3.start(host) == 200
    status, _ = await w3.finish(host, dict(good, session=w3.session))
    assert status == 403
    assert curve_service.paired.keys() == []
    assert (await overview(host))["code"]["tries_left"] == 0, "five tries spent (one still held by the replayed start)"
    assert await WorkerSide(code).start(host) == 410


@pytest.mark.asyncio
async def test_a_host_that_does_not_know_the_code_pairs_nobody_and_learns_no_code(host, curve_service):
    """A fake host (same name, its own key) that runs SPAKE2 with a guess: the worker refuses it, keeps nothing; the
    worker's confirmation lets it check its one guess and no other, not even the right code afterwards."""
    code = await new_code(host)
    worker = exchange.Side("worker", code)
    guess = f"{(int(code) + 7) % 10**6:06d}"
    fake = exchange.Side("host", guess)
    fake_keys = fake.finish("s1", worker.message)
    worker_keys = worker.finish("s1", fake.message)
    confirm = worker_keys.confirm("worker")
    with pytest.raises(exchange.BadMessage):
        fake_keys.check_confirm("worker", confirm)  # its one guess: wrong
    # forged host answers: the worker checks the host's confirmation before anything else
    with pytest.raises(exchange.BadMessage):
        worker_keys.check_confirm("host", fake_keys.confirm("host"))
    # offline, with the whole transcript, no candidate (the right code among them) checks out
    got_through = 0
    for candidate in [code] + [f"{i:06d}" for i in range(0, 10**6, 50_000)]:
        again = exchange.Side("host", candidate)
        keys = exchange.Keys.derive(bytes(32), exchange.transcript("s1", worker.message, again.message))
        try:
            again_keys = again.finish("s1", worker.message)
        except exchange.BadMessage:
            continue
        for k in (keys, again_keys):
            try:
                k.check_confirm("worker", confirm)
                got_through += 1
            except exchange.BadMessage:
                pass
    assert got_through == 0
    assert curve_service.paired.keys() == []


def test_the_client_refuses_a_host_that_cannot_prove_the_code(tmp_path, monkeypatch):
    """client.pair against a fake host that answers every step itself: PairingError, nothing kept."""
    fake = {}

    def fake_post(url, body, timeout):
        if url.endswith("/start"):
            fake["side"] = exchange.Side("host", "000000")
            fake["keys"] = fake["side"].finish("s", exchange.unb64(body["msg"], "msg"))
            return {"session": "s", "msg": exchange.b64(fake["side"].message)}
        keys = fake["keys"]
        box = keys.seal("host", {"broker_public_key": native.curve_keypair()[0], "broker_port": 5557})
        return {"confirm": exchange.b64(keys.confirm("host")), "host_key_box": exchange.b64(box)}

    monkeypatch.setattr(pairing_client, "_post", fake_post)
    with pytest.raises(pairing_client.PairingError, match="did not prove"):
        pairing_client.pair("http://fake.lan:8188", "123456")
    assert not (tmp_path / pairing_client.FILE_NAME).exists()


@pytest.mark.asyncio
async def test_a_host_without_curve_answers_409_saying_how(aiohttp_client, tmp_path):
    from comfy_nodes.host.standalone import build_app
    from comfy_nodes.service import BrokerSettings, QueueService

    svc = QueueService(tmp_path / "plain", threads=4, broker=BrokerSettings(bind="tcp://127.0.0.1:0"))
    try:
        c = await aiohttp_client(build_app(svc))
        for path, body in (("/comfymq/pairing/code", {}), ("/comfymq/pairing/start", {"msg": "AA=="})):
            r = await c.post(path, json=body)
            assert r.status == 409, await r.text()
            assert "COMFYMQ_CURVE_SECRET_KEY" in (await r.json())["error"]["message"]
        assert not svc.broker.public_key, "the plaintext broker stays plaintext"
        assert (await (await c.get("/comfymq/pairing")).json())["enabled"] is False
    finally:
        svc.close()


@pytest.mark.asyncio
async def test_the_exchange_needs_no_token_but_everything_else_needs_an_admin(host, curve_service):
    r = await host.post("/comfymq/pairing/code", headers=JSON)
    assert r.status == 401
    submit = curve_service.tokens.add("alice", "submit")
    r = await host.post("/comfymq/pairing/code", headers={"Authorization": f"Bearer {submit}", **JSON})
    assert r.status == 403
    assert (await host.get("/comfymq/pairing")).status == 401
    assert (await host.get("/comfymq/pairing", headers={"Authorization": f"Bearer {submit}"})).status == 403
    key = urllib.parse.quote(native.curve_keypair()[0], safe="")
    assert (await host.delete(f"/comfymq/pairing/workers/{key}", headers=JSON)).status == 401
    code = await new_code(host)
    w = WorkerSide(code)
    assert await w.start(host) == 200  # no token
    status, _ = await w.finish(host)
    assert status == 200
    # the site rules still apply: a page on another site cannot drive the exchange
    r = await host.post(
        "/comfymq/pairing/start", json={"msg": "AA=="}, headers={"Origin": "http://evil.example", **JSON}
    )
    assert r.status == 403


@pytest.mark.asyncio
async def test_unpairing_removes_the_key_at_once_and_keeps_configured_ones(host, curve_service):
    code = await new_code(host)
    w = WorkerSide(code)
    await w.start(host)
    assert (await w.finish(host))[0] == 200
    key = urllib.parse.quote(w.public, safe="")
    r = await host.delete(f"/comfymq/pairing/workers/{key}", headers={**ADMIN, **JSON})
    assert r.status == 200 and (await r.json()) == {"unpaired": w.public, "still_allowed": False}
    assert curve_service.paired.allowed() == [curve_service.configured_key]
    assert curve_service.store.get_doc("paired/" + w.public) is None
    r = await host.delete(f"/comfymq/pairing/workers/{key}", headers={**ADMIN, **JSON})
    assert r.status == 404


# ---- the worker's kept keys and the config hook ----------------------------------------------------------


def paired_example(host_url="http://host.lan:8190") -> pairing_client.Paired:
    pub, sec = native.curve_keypair()
    return pairing_client.Paired(
        host_url=host_url,
        broker="tcp://host.lan:5557",
        broker_public_key=native.curve_keypair()[0],
        fingerprint="x",
        worker_public_key=pub,
        worker_secret_key=sec,
        name="box",
        paired_at=1,
    )


def test_the_kept_keys_are_readable_by_the_user_only_and_a_later_worker_uses_them(tmp_path):
    from comfy_nodes.config import load_config

    data = tmp_path / "data"
    p = paired_example()
    path = pairing_client.save(data, p)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [f.name for f in data.iterdir()] == [pairing_client.FILE_NAME], "no temp file left"
    cfg = load_config({"COMFYMQ_DATA_DIR": str(data)}, user_dir=str(tmp_path / "user"))
    assert (cfg.role, cfg.broker, cfg.host_url) == ("worker", p.broker, p.host_url)
    assert (cfg.broker_public_key, cfg.worker_public_key, cfg.worker_secret_key) == (
        p.broker_public_key,
        p.worker_public_key,
        p.worker_secret_key,
    )
    # configured keys win: the file is not used at all
    own = native.curve_keypair()
    cfg = load_config(
        {
            "COMFYMQ_DATA_DIR": str(data),
            "COMFYMQ_ROLE": "both",
            "COMFYMQ_WORKER_PUBLIC_KEY": own[0],
            "COMFYMQ_WORKER_SECRET_KEY": own[1],
        },
        user_dir=str(tmp_path / "user"),
    )
    assert cfg.role == "both" and cfg.worker_public_key == own[0] and cfg.broker_public_key is None
    assert pairing_client.forget(data) and not pairing_client.forget(data)


def test_a_damaged_pairing_file_is_a_config_error_naming_it(tmp_path):
    from comfy_nodes.config import ConfigError, load_config

    (tmp_path / pairing_client.FILE_NAME).write_text('{"broker": 1}')
    with pytest.raises(ConfigError, match=pairing_client.FILE_NAME):
        load_config({"COMFYMQ_DATA_DIR": str(tmp_path)})


def test_a_paired_key_is_allowed_after_a_restart(tmp_path, broker_keys):
    """Durable: a new QueueService on the same data dir gives its broker the paired keys; a worker with them joins."""
    from conftest import wait_for

    from comfy_nodes.service import BrokerSettings, QueueService

    pub, sec = native.curve_keypair()
    settings = BrokerSettings(bind="tcp://127.0.0.1:0", heartbeat=0.2, curve_secret_key=broker_keys[1])
    svc = QueueService(tmp_path / "host", threads=4, broker=settings)
    svc.paired.add(pub, "box", "127.0.0.1")
    svc.close()
    svc = QueueService(tmp_path / "host", threads=4, broker=settings)
    try:
        worker = native.WorkerClient(
            broker=svc.broker.endpoint,
            worker_id="paired-1",
            name="box",
            capabilities={"node_classes": ["TestJob"]},
            heartbeat=0.2,
            broker_public_key=broker_keys[0],
            public_key=pub,
            secret_key=sec,
        )
        try:
            wait_for(lambda: any(w["id"] == "paired-1" and w["online"] for w in svc.broker.workers()), 15)
        finally:
            worker.close(bye=True)
    finally:
        svc.close()
