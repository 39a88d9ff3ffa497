-- Every instance learns of a forget: each polls for subjects forgotten
-- since it last looked (their tombstones), so it drops their keys and
-- cached state from its memory. This index keeps that poll to the few
-- recent tombstones.

CREATE INDEX {p}subject_keys_forgotten ON {s}{p}subject_keys (forgotten_at)
    WHERE forgotten_at IS NOT NULL;
