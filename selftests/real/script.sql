-- An allocation-heavy SQLite session (in memory); deterministic output.
CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, grp INTEGER, payload BLOB);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20000)
INSERT INTO t(id, name, grp, payload)
  SELECT x, 'name-' || x, x % 97, zeroblob(x % 500) FROM c;
CREATE INDEX t_grp ON t(grp, name);
SELECT count(*), sum(length(payload)), max(name) FROM t;
SELECT grp, count(*), min(name), max(id) FROM t GROUP BY grp ORDER BY grp LIMIT 10;
UPDATE t SET name = name || '-' || upper(name) WHERE id % 3 = 0;
DELETE FROM t WHERE id % 5 = 0;
SELECT count(*), sum(id), group_concat(substr(name, 1, 12), '|') FROM
  (SELECT name, id FROM t WHERE grp = 42 ORDER BY name);
CREATE TABLE u AS SELECT a.id AS a, b.id AS b FROM t a JOIN t b ON a.grp = b.grp
  WHERE a.id < 400 AND b.id < 400;
SELECT count(*), sum(a * b) % 1000003 FROM u;
VACUUM;
SELECT printf('%.3f', avg(length(name))) FROM t;
