-- Indexes for queries by type within a time range (the audit and reporting
-- path): the rows of one type in a window are found without reading the
-- type's whole history.

CREATE INDEX {p}events_by_type_time ON {s}{p}events (event_type, recorded_at, position);
