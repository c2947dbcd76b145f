# Allocation-heavy Python, run with PYTHONMALLOC=malloc so that every object
# goes through the allocator under test: records as dicts, string building,
# a JSON round trip, sorting, and a dict of tuples churned by key.
import json
import sys

scale = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
n = max(1000, int(60000 * scale))

records = [{"id": i, "name": "user%d" % i, "tags": ["t%d" % (i % 7), "x" * (i % 13)],
            "score": (i * 7919) % 1000 / 10.0} for i in range(n)]
text = json.dumps(records)
back = json.loads(text)
back.sort(key=lambda r: (r["score"], r["name"]))
words = " ".join(r["name"] for r in back).split()
index = {}
for i, w in enumerate(words):
    index[w] = (i, w.upper(), len(w))
    if i % 3 == 0:
        index.pop(words[i // 2], None)
total = sum(v[2] for v in index.values())
print(len(text), len(index), total)
