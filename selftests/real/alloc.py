# An allocation-heavy Python script (run with PYTHONMALLOC=malloc so that
# every object goes through malloc).  Deterministic output.
import hashlib
import json
import random

random.seed(12345)

# many small objects: dicts, tuples, strings, lists that grow and shrink
people = []
for i in range(20000):
    people.append({
        "id": i,
        "name": "user%05d" % i,
        "tags": [random.choice("abcdefgh") for _ in range(random.randint(0, 6))],
        "score": random.random(),
    })

by_tag = {}
for p in people:
    for t in p["tags"]:
        by_tag.setdefault(t, []).append(p["id"])
print("tags:", {t: len(v) for t, v in sorted(by_tag.items())})

people.sort(key=lambda p: (-p["score"], p["id"]))
print("top:", [p["name"] for p in people[:5]])

# big objects: strings and bytes that move when they grow
blob = b""
for i in range(2000):
    blob += hashlib.sha256(str(i).encode()).digest()
print("blob:", len(blob), hashlib.sha256(blob).hexdigest())

text = json.dumps(people[:3000], sort_keys=True)
back = json.loads(text)
print("json:", len(text), back[1234]["name"], hashlib.md5(text.encode()).hexdigest())

# churn: build and drop
total = 0
for round in range(50):
    garbage = [str(x) * (x % 7) for x in range(2000)]
    total += sum(map(len, garbage))
    del garbage
print("churn:", total)

class Node:
    __slots__ = ("value", "next")

    def __init__(self, value, nxt):
        self.value = value
        self.next = nxt

head = None
for i in range(30000):
    head = Node(i, head)
n, s = 0, 0
while head:
    n, s, head = n + 1, s + head.value, head.next
print("list:", n, s)
