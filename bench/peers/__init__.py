"""The peers: small apps serving the same `POST /verification-emails` contract as the service.

- Python (`bench/peers/*.py`): FastAPI apps, each built by a `create_app` factory that uvicorn
  loads; settings from `BENCH_*` variables (`bench.peers.common`).
- Node (`bench/peers/node`): the seed's NestJS stack, installed from its lock file by
  `bench.peers.node_peers`.

Each Python peer is written out whole, as its users would write it: its lifespan, its route
and its publish call in one short file, even where that repeats the shape of another peer.
What they must share to be compared fairly (body model, wire format, `202` body, settings) is
in `bench.peers.common`; a shared app factory would hide the one thing each peer shows.

`bench.contenders` says how each is started and what it is.
"""
