-- Gate scan groups: plan the statements of tracecode_gate_scans once per connection, not at every call.
--
-- PL/pgSQL plans each statement with the call's arguments (a custom plan) until five calls have shown a
-- generic plan to cost no more than the custom ones. With the group's arrays as parameters the custom plans
-- always look cheaper (they see a group of a few scans, the generic plan assumes ten), so every call planned
-- every statement again: about a tenth of the function's CPU at the group sizes a busy gate sees (perf, bench
-- /gate.py). The generic plans are the plans wanted anyway: index probes per scan (LATERAL ... LIMIT 1, and
-- = ANY of an array on the primary keys), whatever the group's size, so nothing is decided differently.
ALTER FUNCTION tracecode_gate_scans(bigint[], text[], text[], bytea[], text[], numeric[], text[], text[], date)
    SET plan_cache_mode = force_generic_plan;
