"""Make a Qdrant cluster ready for vecguard: wait until every node has joined, then create the collection's companion
(``<collection>.vecguard``: vecguard's write lock and change feed) with a copy on every node.

    python prepare_cluster.py CONFIG NODES [--timeout SECONDS]

CONFIG is the vecguard TOML file ([store] url, api_key, collection); NODES the number of Qdrant nodes to wait for.
Exit status 0 when the cluster is ready, 2 (one line on stderr) when it is not, or the config is wrong.

Why the companion is made here: vecguard creates it on the first write with Qdrant's defaults, one copy of each
shard, so the node holding the lock or the feed's head would stop every replica's searches and writes when it is
down, however the data is replicated. Made here first, with one shard and a copy on every node (writes need a
majority of them), vecguard finds it and uses it as it is. It holds what vecguard would put there: vectors of size 1
(DOT) and an integer index on ``seq``.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from vecguard.backends.sharing import companion_name
from vecguard.config import load_config
from vecguard.errors import VecguardError


def peer_count(client: Any) -> int:
    """The number of nodes in the cluster the client talks to (1 when the server runs without cluster mode)."""
    status = client.cluster_status()
    return 1 if status.status == "disabled" else len(status.peers)


def wait_for_peers(client: Any, nodes: int, timeout: float, poll: float = 1.0) -> int:
    """Wait until the cluster has ``nodes`` nodes; how many it has. RuntimeError naming what was seen on timeout."""
    deadline = time.monotonic() + timeout
    seen = "no answer"
    while True:
        try:
            count = peer_count(client)
        except Exception as exc:  # not up yet: connection refused, 502 from the balancer, consensus not formed
            seen = f"no answer ({type(exc).__name__}: {str(exc)[:200]})"
        else:
            if count >= nodes:
                return count
            seen = f"{count} of {nodes} nodes"
        if time.monotonic() >= deadline:
            raise RuntimeError(f"the Qdrant cluster did not reach {nodes} nodes in {timeout:g} s; last seen: {seen}")
        time.sleep(poll)


def create_companion(client: Any, collection: str, nodes: int) -> bool:
    """Create ``collection``'s companion with one shard copied on every node, unless it exists; True if created."""
    from qdrant_client import models

    name = companion_name(collection)
    if client.collection_exists(name):
        return False
    client.create_collection(
        name,
        vectors_config=models.VectorParams(size=1, distance=models.Distance.DOT),
        shard_number=1,
        replication_factor=nodes,
        write_consistency_factor=nodes // 2 + 1,
    )
    client.create_payload_index(name, field_name="seq", field_schema=models.PayloadSchemaType.INTEGER)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="the vecguard TOML file: [store] plugin = qdrant with url")
    parser.add_argument("nodes", type=int, help="the number of Qdrant nodes to wait for")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the nodes (300)")
    args = parser.parse_args(argv)
    try:
        store = load_config(args.config).section("store")
        if store.get("plugin") != "qdrant" or not store.get("url"):
            raise VecguardError(f'{args.config}: [store] must be plugin = "qdrant" with a url (a server)')
        if args.nodes < 1:
            raise VecguardError(f"NODES must be a whole number >= 1, got {args.nodes}")
        from qdrant_client import QdrantClient

        client = QdrantClient(url=store["url"], api_key=store.get("api_key"), timeout=30)
        count = wait_for_peers(client, args.nodes, args.timeout)
        collection = store.get("collection", "vecguard")
        made = create_companion(client, collection, count)
    except (VecguardError, RuntimeError) as exc:
        print(f"prepare_cluster: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # the server refused: one line, not a traceback
        print(f"prepare_cluster: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    what = "created" if made else "already there"
    print(f"prepare_cluster: {count} Qdrant nodes; {companion_name(collection)!r} {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
