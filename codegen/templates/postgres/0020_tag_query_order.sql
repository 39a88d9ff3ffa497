-- Queries by tag come in log order (position). The primary key of
-- {p}event_tags keeps each tenant's entries of a tag in transaction order,
-- for append conditions; this index keeps a tag's entries by position, so
-- a page of a tag with many events reads its first entries instead of
-- sorting them all. An event carries a tag once, so the index is unique:
-- a second entry for one event and tag (only a hand-written row could be
-- one) is refused rather than listing the event twice.

CREATE UNIQUE INDEX {p}event_tags_by_position ON {s}{p}event_tags (tag, position);
