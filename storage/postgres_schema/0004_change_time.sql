-- When each change was written, so the other instances can time how long
-- it took to reach them (auth_agent_change_propagation_seconds). Rows an
-- earlier version writes leave it empty.

ALTER TABLE changes ADD COLUMN written_ns bigint;
