"""Entry point of a worker process (started by the supervisor, never by hand)."""

from shardkv.worker.process import main

main()
