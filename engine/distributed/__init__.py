"""Scale-out on Ray (the optional extra ``attend[distributed]``): distributed ingestion through a
Ray Data pipeline (:mod:`engine.distributed.ingest`) and sharded search over shard actors
(:mod:`engine.distributed.shards`). Ray is imported only inside these modules, so the default
install and the single-node path never load it. See docs/scale-out.md."""
