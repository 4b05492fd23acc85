"""Other libraries' agents on the same task and evaluation (bench.solve runs them as
`python -m bench.peers.NAME`); harness.py is their shared adapter."""
