"""`python -m shardkv` starts the supervisor, like the `shardkv` command."""

from shardkv.supervisor import main

main()
