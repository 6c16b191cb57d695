"""deploy/qdrant-cluster holds together, checked without Docker or a Qdrant server.

The compose file, vecguard.toml (through vecguard's config loader and the qdrant plugin's option checks, with the
client replaced so nothing connects) and haproxy.cfg are read together: the store's url leads to Qdrant, two or more
`vecguard serve` replicas sit behind the balancer, its upstreams are exactly those replicas, health-checked on
/readyz, the replication factor fits the nodes, and no replica shares its keyword files with another. Each check is
shown to fail on a copy of the example with that one thing broken.
"""

from __future__ import annotations

import importlib.util
import json
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlparse

import pytest
import yaml
from vecguard.config import is_positive_int, load_config
from vecguard.errors import VecguardError
from vecguard.registry import Registry

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "deploy" / "qdrant-cluster"
CONFIG_IN_CONTAINER = "/etc/vecguard/vecguard.toml"
QDRANT_PORT = 6333
SECTION_KEYWORDS = {"global", "defaults", "frontend", "backend", "listen", "resolvers", "peers", "userlist", "cache"}


# ---------------------------------------------------------------- reading the example


def command_words(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(word) for word in command]


def dockerfile_command(folder: Path, service: dict[str, Any]) -> list[str]:
    """The CMD of the Dockerfile a service builds from ([] when it builds none)."""
    build = service.get("build")
    if not isinstance(build, dict):
        return []
    dockerfile = (folder / build.get("context", ".") / build.get("dockerfile", "Dockerfile")).resolve()
    commands = [line[4:] for line in dockerfile.read_text().splitlines() if line.startswith("CMD ")]
    return json.loads(commands[-1]) if commands else []


def runs_serve(folder: Path, service: dict[str, Any]) -> bool:
    words = command_words(service) or dockerfile_command(folder, service)
    text = " ".join(words)
    return "vecguard serve" in text or words[:2] == ["vecguard", "serve"]


def is_qdrant(service: dict[str, Any]) -> bool:
    return str(service.get("image", "")).split(":")[0] == "qdrant/qdrant"


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source, for short-syntax volumes (``source:target[:mode]``)."""
    found = {}
    for volume in service.get("volumes", []):
        source, target = str(volume).split(":")[:2]
        found[target] = source
    return found


def haproxy(text: str) -> dict[tuple[str, str], list[list[str]]]:
    """(section kind, name) -> its lines as words, comments dropped."""
    sections: dict[tuple[str, str], list[list[str]]] = {}
    current: list[list[str]] = []
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        if words[0] in SECTION_KEYWORDS and not raw[0].isspace():
            current = sections.setdefault((words[0], words[1] if len(words) > 1 else ""), [])
        else:
            current.append(words)
    return sections


def frontend_backends(sections: dict[tuple[str, str], list[list[str]]]) -> dict[int, str]:
    """Port bound by a frontend -> its default backend."""
    found = {}
    for (kind, _), lines in sections.items():
        if kind != "frontend":
            continue
        ports = [int(words[1].rsplit(":", 1)[1]) for words in lines if words[0] == "bind"]
        backend = next((words[1] for words in lines if words[0] == "default_backend"), None)
        for port in ports:
            found[port] = backend
    return found


def upstreams(sections: dict[tuple[str, str], list[list[str]]], backend: str) -> list[tuple[str, int]]:
    lines = sections.get(("backend", backend), [])
    servers = []
    for words in lines:
        if words[0] == "server":
            host, port = words[2].rsplit(":", 1)
            servers.append((host, int(port)))
    return servers


def health_check(sections: dict[tuple[str, str], list[list[str]]], backend: str) -> list[str]:
    return next(
        (words[2:] for words in sections.get(("backend", backend), []) if words[:2] == ["option", "httpchk"]), []
    )


def build_store_offline(config: Any) -> mock.MagicMock:
    """Build the config's store through the registry with qdrant-client's QdrantClient replaced: every option check
    of the plugin runs, nothing connects. The replaced class, to see how it was called."""
    import qdrant_client

    with mock.patch.object(qdrant_client, "QdrantClient") as client_class:
        Registry.discover().build("store", *config.plugin_options("store"), config.base_dir)
    return client_class


def example_problems(folder: Path) -> list[str]:
    """What is inconsistent in the example in ``folder``, one line each ([] when nothing)."""
    problems: list[str] = []
    compose = yaml.safe_load((folder / "docker-compose.yml").read_text())
    services: dict[str, dict[str, Any]] = compose["services"]
    nodes = sorted(name for name, service in services.items() if is_qdrant(service))
    replicas = sorted(name for name, service in services.items() if runs_serve(folder, service))

    try:
        config = load_config(folder / "vecguard.toml")
        client_class = build_store_offline(config)
    except VecguardError as exc:
        return [f"vecguard.toml: {exc}"]
    store = config.section("store")
    if store.get("plugin") != "qdrant" or not store.get("url"):
        return ['vecguard.toml: [store] must be plugin = "qdrant" with a url']
    if client_class.call_args is None or client_class.call_args.kwargs.get("url") != store["url"]:
        problems.append(f"the qdrant store did not connect to [store] url {store['url']!r}: {client_class.call_args}")

    # The Qdrant cluster: the first node starts it, the others bootstrap from it; every node in cluster mode.
    if len(nodes) < 3:
        problems.append(f"a cluster needs 3 Qdrant nodes or more (a majority survives one loss), found {nodes}")
    for name in nodes:
        environment = services[name].get("environment", {})
        if str(environment.get("QDRANT__CLUSTER__ENABLED", "")).lower() != "true":
            problems.append(f"{name}: QDRANT__CLUSTER__ENABLED is not true")
    bootstraps = {name: _flag(command_words(services[name]), "--bootstrap") for name in nodes}
    first = [name for name, peer in bootstraps.items() if peer is None]
    if len(first) != 1:
        problems.append(f"exactly one Qdrant node must start the cluster (no --bootstrap), found {first}")
    for name, peer in bootstraps.items():
        uri = _flag(command_words(services[name]), "--uri")
        if uri != f"http://{name}:6335":
            problems.append(f"{name}: --uri must be its own peer-to-peer address http://{name}:6335, got {uri!r}")
        if peer is not None and (urlparse(peer).hostname not in first or urlparse(peer).port != 6335):
            problems.append(f"{name}: --bootstrap {peer!r} is not the first node's peer-to-peer address")

    # The qdrant plugin passes its creation options to the server unchecked, when the first write creates the
    # collection: a wrong type would surface there, so the example's are checked here.
    for key in ("shard_number", "replication_factor", "write_consistency_factor", "hnsw_m", "hnsw_ef_construct"):
        if store.get(key) is not None and not is_positive_int(store[key]):
            return [*problems, f"[store] {key} must be a whole number >= 1, got {store[key]!r}"]
    if store.get("on_disk") not in (None, True, False):
        return [*problems, f"[store] on_disk must be true or false, got {store['on_disk']!r}"]
    rf = store.get("replication_factor") or 1
    if rf > len(nodes):
        problems.append(f"[store] replication_factor {rf} is more than the {len(nodes)} Qdrant nodes can hold")
    if (store.get("write_consistency_factor") or 1) > rf:
        problems.append(f"[store] write_consistency_factor exceeds replication_factor {rf}: no write could succeed")

    # The balancer: its published port leads to exactly the replicas, checked on /readyz.
    balancers = [name for name, service in services.items() if str(service.get("image", "")).startswith("haproxy")]
    if len(balancers) != 1:
        return [*problems, f"expected one haproxy service, found {balancers}"]
    lb = services[balancers[0]]
    cfg_source = mounts(lb).get("/usr/local/etc/haproxy/haproxy.cfg")
    sections = haproxy((folder / cfg_source).read_text()) if cfg_source else {}
    routes = frontend_backends(sections)
    published = [int(str(port).rsplit(":", 1)[1]) for port in lb.get("ports", [])]
    api = [routes[port] for port in published if port in routes]
    if len(replicas) < 2:
        problems.append(f"two or more `vecguard serve` replicas are needed behind the balancer, found {replicas}")
    if len(api) != 1:
        problems.append(f"the balancer must publish one port that leads to the replicas, published {published}")
    else:
        serve_port = config.tables["server"]["port"]
        servers = upstreams(sections, api[0])
        if sorted(servers) != sorted((name, serve_port) for name in replicas):
            problems.append(f"the balancer's upstreams {servers} are not exactly the replicas {replicas}:{serve_port}")
        if health_check(sections, api[0]) != ["GET", "/readyz"]:
            problems.append(f"backend {api[0]} must check GET /readyz, checks {health_check(sections, api[0])}")

    # The store's url leads to Qdrant: a node's REST port, or a balancer port whose upstreams are the nodes.
    url = urlparse(store["url"])
    if url.hostname not in services:
        problems.append(f"[store] url {store['url']!r} names no service of the compose file ({sorted(services)})")
    elif url.hostname in balancers:
        servers = upstreams(sections, routes.get(url.port or 80, ""))
        if not servers or sorted(servers) != sorted((name, QDRANT_PORT) for name in nodes):
            problems.append(f"[store] url {store['url']!r}: the balancer's port leads to {servers}, not the nodes")
        elif health_check(sections, routes[url.port]) != ["GET", "/readyz"]:
            problems.append("the balancer's Qdrant backend must check GET /readyz on each node")
    elif url.hostname not in nodes or url.port != QDRANT_PORT:
        problems.append(f"[store] url {store['url']!r} is not a Qdrant node's REST port {QDRANT_PORT}")

    # Every vecguard process reads this toml, and keeps its keyword files in a volume of its own.
    processes = [name for name, service in services.items() if "build" in service]  # built from the Dockerfile
    keyword = str(config.section("keyword").get("path", ""))
    seen: dict[str, str] = {}
    for name in processes:
        volumes = mounts(services[name])
        if volumes.get(CONFIG_IN_CONTAINER) != "./vecguard.toml":
            problems.append(f"{name}: ./vecguard.toml is not mounted at {CONFIG_IN_CONTAINER}")
        holder = next((target for target in volumes if keyword == target or keyword.startswith(target + "/")), None)
        if keyword and holder is None:
            problems.append(f"{name}: no volume holds [keyword] path {keyword}")
        elif keyword:
            source = volumes[holder]
            if source in seen:
                problems.append(f"{name} and {seen[source]} share the volume {source!r} for their keyword files")
            seen[source] = name
        token_env = config.tables["server"]["write_token_env"]
        if token_env and name in replicas and token_env not in services[name].get("environment", {}):
            problems.append(f"{name}: [server] write_token_env {token_env} is not in its environment")

    # The indexer waits for as many nodes as there are.
    for name in processes:
        words = command_words(services[name])
        script = next(
            (i for i, word in enumerate(" ".join(words).split()) if word.endswith("prepare_cluster.py")), None
        )
        if script is not None:
            waited = int(" ".join(words).split()[script + 2])
            if waited != len(nodes):
                problems.append(
                    f"{name}: prepare_cluster.py waits for {waited} nodes, the compose file has {len(nodes)}"
                )
    return problems


def _flag(words: list[str], flag: str) -> str | None:
    return words[words.index(flag) + 1] if flag in words and words.index(flag) + 1 < len(words) else None


# ---------------------------------------------------------------- the tests


def test_the_example_is_consistent() -> None:
    assert example_problems(EXAMPLE) == []


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path.name}: the test's edit no longer applies"
    path.write_text(text.replace(old, new, 1))


def _drop_service(name: str) -> Callable[[Path], None]:
    def drop(folder: Path) -> None:
        path = folder / "docker-compose.yml"
        compose = yaml.safe_load(path.read_text())
        del compose["services"][name]
        path.write_text(yaml.safe_dump(compose))

    return drop


BROKEN = {
    "url to a missing service": (
        lambda f: _edit(f / "vecguard.toml", 'url = "http://lb:6333"', 'url = "http://qdrant:6333"'),
        "names no service",
    ),
    "url to the API port": (
        lambda f: _edit(f / "vecguard.toml", 'url = "http://lb:6333"', 'url = "http://lb:8000"'),
        "not the nodes",
    ),
    "url to a node's peer port": (
        lambda f: _edit(f / "vecguard.toml", 'url = "http://lb:6333"', 'url = "http://qdrant-2:6335"'),
        "REST port",
    ),
    "one replica": (_drop_service("vecguard-2"), "two or more"),
    "a replica the balancer does not know": (
        lambda f: _edit(f / "haproxy.cfg", "    server vecguard-2 vecguard-2:8000\n", ""),
        "not exactly the replicas",
    ),
    "an upstream that is no replica": (
        lambda f: _edit(f / "haproxy.cfg", "vecguard-2 vecguard-2:8000", "vecguard-2 vecguard-3:8000"),
        "not exactly the replicas",
    ),
    "upstreams on another port": (
        lambda f: _edit(f / "vecguard.toml", "port = 8000", "port = 8080"),
        "not exactly the replicas",
    ),
    "no readiness check": (
        lambda f: _edit(f / "haproxy.cfg", "option httpchk GET /readyz", "option httpchk GET /healthz"),
        "must check GET /readyz",
    ),
    "replication beyond the nodes": (
        lambda f: _edit(f / "vecguard.toml", "replication_factor = 2", "replication_factor = 4"),
        "more than the 3 Qdrant nodes",
    ),
    "write consistency beyond the replicas": (
        lambda f: _edit(f / "vecguard.toml", "write_consistency_factor = 2", "write_consistency_factor = 3"),
        "no write could succeed",
    ),
    "a shard count in quotes": (
        lambda f: _edit(f / "vecguard.toml", "shard_number = 6", 'shard_number = "6"'),
        "shard_number must be a whole number",
    ),
    "on_disk as a string": (
        lambda f: _edit(f / "vecguard.toml", "on_disk = true", 'on_disk = "yes"'),
        "on_disk must be true or false",
    ),
    "a misspelt store option": (
        lambda f: _edit(f / "vecguard.toml", "shard_number = 6", "shards = 6"),
        "unknown option 'shards'",
    ),
    "an unknown quantization": (
        lambda f: _edit(f / "vecguard.toml", "on_disk = true", 'on_disk = true\nquantization = "binary"'),
        "quantization must be",
    ),
    "a payload index of an unknown type": (
        lambda f: _edit(f / "vecguard.toml", 'court = "keyword"', 'court = "text"'),
        "payload_indexes must map",
    ),
    "a node outside the cluster": (
        lambda f: _edit(
            f / "docker-compose.yml", 'QDRANT__CLUSTER__ENABLED: "true"', 'QDRANT__CLUSTER__ENABLED: "false"'
        ),
        "QDRANT__CLUSTER__ENABLED is not true",
    ),
    "a node that bootstraps from nobody": (
        lambda f: _edit(
            f / "docker-compose.yml", "--bootstrap http://qdrant-1:6335 --uri http://qdrant-3", "--uri http://qdrant-3"
        ),
        "exactly one Qdrant node",
    ),
    "two nodes": (_drop_service("qdrant-3"), "3 Qdrant nodes or more"),
    "replicas sharing keyword files": (
        lambda f: _edit(f / "docker-compose.yml", "- keyword-2:/var/lib/vecguard", "- keyword-1:/var/lib/vecguard"),
        "share the volume",
    ),
    "the indexer waiting for too few nodes": (
        lambda f: _edit(f / "docker-compose.yml", "vecguard.toml 3 &&", "vecguard.toml 2 &&"),
        "waits for 2 nodes",
    ),
}


@pytest.mark.parametrize("broken", sorted(BROKEN))
def test_each_check_fails_on_a_copy_with_that_one_thing_broken(broken: str, tmp_path: Path) -> None:
    folder = tmp_path / "deploy" / "qdrant-cluster"  # the Dockerfile is found from the build context, as in the repo
    shutil.copytree(EXAMPLE, folder)
    breaks, expected = BROKEN[broken]
    breaks(folder)
    problems = example_problems(folder)
    assert any(expected in problem for problem in problems), problems


def test_the_store_options_pass_the_plugin_checks_without_connecting() -> None:
    config = load_config(EXAMPLE / "vecguard.toml")
    client_class = build_store_offline(config)
    client_class.assert_called_once_with(url="http://lb:6333", api_key=None)
    store = config.section("store")
    assert (store["shard_number"], store["replication_factor"], store["write_consistency_factor"]) == (6, 2, 2)
    assert store["on_disk"] is True and store["payload_indexes"] == {"year": "integer", "court": "keyword"}


def test_the_sample_documents_carry_the_indexed_fields_with_their_types() -> None:
    indexes = load_config(EXAMPLE / "vecguard.toml").section("store")["payload_indexes"]
    python_type = {"integer": int, "keyword": str, "float": float, "bool": bool}
    compose = yaml.safe_load((EXAMPLE / "docker-compose.yml").read_text())
    indexer = " ".join(command_words(compose["services"]["indexer"]))
    source = indexer.split("/documents/", 1)[1].split()[0]
    lines = (EXAMPLE / "documents" / source).read_text(encoding="utf-8").splitlines()
    assert len(lines) >= 5
    for line in lines:
        metadata = json.loads(line)["metadata"]
        for field, kind in indexes.items():
            assert type(metadata[field]) is python_type[kind], (field, metadata)


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed (Debian package haproxy)")
def test_haproxy_accepts_the_config() -> None:
    checked = subprocess.run(
        ["haproxy", "-c", "-f", str(EXAMPLE / "haproxy.cfg")], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _prepare_cluster() -> Any:
    spec = importlib.util.spec_from_file_location("prepare_cluster", EXAMPLE / "prepare_cluster.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_companion_prepare_cluster_makes_is_the_one_vecguard_uses(tmp_path: Path) -> None:
    """prepare_cluster.py makes `<collection>.vecguard` before vecguard would; vecguard must then lock and record
    its changes there (checked in qdrant-client's local mode, which runs the same records)."""
    from qdrant_client import QdrantClient

    prepare = _prepare_cluster()
    folder = tmp_path / "qdrant"
    client = QdrantClient(path=str(folder))
    with pytest.warns(UserWarning, match="[Pp]ayload index"):  # local mode keeps no payload indexes
        assert prepare.create_companion(client, "docs", nodes=3) is True
    assert prepare.create_companion(client, "docs", nodes=3) is False  # there already: left as it is
    client.close()

    import numpy as np

    store = Registry.discover().build(
        "store", "qdrant", {"path": str(folder), "collection": "docs", "local_mode": True}, tmp_path
    )
    try:
        before = store.change_token()
        with store.lock_writes(5, "test"):
            store.upsert(["a#0"], np.ones((1, 4), dtype=np.float32) / 2, [{"text": "a", "metadata": {}}])
        assert store.change_token() == before + 1
        assert store.changes_since(before) == ["a#0"]
    finally:
        store.close()


def test_prepare_cluster_refuses_a_config_without_a_server(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "local.toml"
    config.write_text('[store]\nplugin = "qdrant"\npath = "data"\n')
    assert _prepare_cluster().main([str(config), "3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "[store] must be plugin" in err


def test_prepare_cluster_waits_then_names_what_it_saw() -> None:
    prepare = _prepare_cluster()
    answers = iter([ConnectionError("refused"), 1, 2, 3])

    class Cluster:
        def cluster_status(self) -> Any:
            answer = next(answers)
            if isinstance(answer, Exception):
                raise answer
            return mock.Mock(status="enabled", peers={str(i): None for i in range(answer)})

    assert prepare.wait_for_peers(Cluster(), 3, timeout=5, poll=0) == 3
    single = mock.Mock(cluster_status=lambda: mock.Mock(status="disabled"))
    with pytest.raises(RuntimeError, match="did not reach 3 nodes in 0 s; last seen: 1 of 3 nodes"):
        prepare.wait_for_peers(single, 3, timeout=0, poll=0)
