"""The peers: small apps serving the same `POST /verification-emails` contract as the service.

- Python (`bench/peers/*.py`): FastAPI apps, each built by a `create_app` factory that uvicorn
  loads; settings from `BENCH_*` variables (`bench.peers.common`).
- Node (`bench/peers/node`): the seed's NestJS stack, installed from its lock file by
  `bench.peers.node_peers`.

`bench.contenders` says how each is started and what it is.
"""
