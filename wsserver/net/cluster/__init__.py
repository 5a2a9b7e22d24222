"""Cluster mode (`cluster.redis_url`, SPEC 11): the tasks that connect a node to
Redis. Imported only when cluster mode starts."""
