"""Redis or its in-process twin: the store (outage breaker, bad-key repair), every key the broker
writes, the Lua scripts, rate limits and idempotency records."""
