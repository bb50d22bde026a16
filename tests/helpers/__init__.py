"""Helpers of the test suite, imported by the tests (fixtures stay in the `conftest.py`s):
`waiting` (bounded waits, free ports), `kafka` (topics, reading records back), `service` (the
reference service's settings and app), `processes` (the service as a process) and `cluster`
(partition layouts and recoveries on the three-broker cluster)."""
