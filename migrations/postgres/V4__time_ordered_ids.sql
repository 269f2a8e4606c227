-- Task ids are time-ordered (UUIDv7) whoever inserts the row: the daemon makes them in Rust,
-- and this default makes them for plain `INSERT INTO tasks` from other services.
--
-- Why: a random id lands on a random leaf of the primary key on every insert, claim and finish
-- (each is a new row version with a new index entry), spreading writes over the whole index;
-- time-ordered ids keep them on the few right-most leaves. And the primary key now serves
-- "newest first" listing, so tasks_created_idx is dropped: it took an entry on the insert,
-- the claim and the finish of every task (each a new row version).
CREATE FUNCTION jct_uuid_v7() RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    -- A random (v4) UUID with its first 48 bits replaced by Unix milliseconds, and its version
    -- nibble turned from 4 (0100) into 7 (0111).
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid
$$;

ALTER TABLE tasks ALTER COLUMN id SET DEFAULT jct_uuid_v7();

DROP INDEX tasks_created_idx;
