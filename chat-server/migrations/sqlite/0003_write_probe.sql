-- One row that readiness checks rewrite to find out whether the database takes
-- writes again after they failed (a full disk, a lost connection).
CREATE TABLE write_probe (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    probed_at  BIGINT  NOT NULL
);
INSERT INTO write_probe (id, probed_at) VALUES (1, 0);
