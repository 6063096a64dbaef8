"""The gateway's response caches: exact (the same normalized request) and semantic (the same conversation,
a similar last user turn), in-process or in Redis. The gateway calls the facade, response_cache.ResponseCache."""
