// The linearizability checker of the testbed's ZooKeeper histories (recorded by
// e2e/python/zkjudge.py `history`), on porcupine as etcd's robustness tests use it.
// Built by quorate-testbed's lincheck module (e2e/src/lincheck.rs) into the cache.
module quorate.local/testbed/lincheck

go 1.22

require github.com/anishathalye/porcupine v1.3.1
