#!/usr/bin/env python3
"""File-level use-graph of src/ (every `crate::` path outside comments, main.rs excluded) and its cycles."""
import os, re, sys, itertools
root = sys.argv[1] if len(sys.argv) > 1 else '.'
mods = {}
for d, _, fs in os.walk(os.path.join(root, 'src')):
    for f in fs:
        if not f.endswith('.rs') or f == 'main.rs' or f == 'lib.rs': continue
        p = os.path.join(d, f); m = os.path.relpath(p, os.path.join(root, 'src'))[:-3]
        m = re.sub(r'/mod$', '', m).replace('/', '::')
        mods[m] = p
edges = set()
for m, p in mods.items():
    text = re.sub(r'//.*', '', open(p).read())
    # `use super::X` inside a submodule means the parent
    for t in re.findall(r'crate::([a-z_]+(?:::[a-z_]+)?)', text):
        t = t if t in mods else t.split('::')[0]
        if t in mods and t != m and not m.startswith(t + '::') :
            edges.add((m, t))
    for t in re.findall(r'\bsuper::([a-z_]+)', text):
        parent = m.rsplit('::', 1)[0] if '::' in m else None
        if parent and (parent + '::' + t) in mods: edges.add((m, parent + '::' + t))
        elif parent: edges.add((m, parent))
graph = {}
for a, b in edges: graph.setdefault(a, set()).add(b)
# parent modules declare their children (`mod x;`): not a use, left out.
# Tarjan SCC
idx, low, stack, on, sccs, n = {}, {}, [], set(), [], [0]
def strong(v):
    idx[v] = low[v] = n[0]; n[0] += 1; stack.append(v); on.add(v)
    for w in graph.get(v, ()):
        if w not in idx: strong(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], idx[w])
    if low[v] == idx[v]:
        c = []
        while True:
            w = stack.pop(); on.discard(w); c.append(w)
            if w == v: break
        if len(c) > 1: sccs.append(sorted(c))
sys.setrecursionlimit(10000)
for v in sorted(mods):
    if v not in idx: strong(v)
if '-e' in sys.argv:
    for a, b in sorted(edges): print(f'{a} -> {b}')
print(f'{len(mods)} modules, {len(edges)} edges, {len(sccs)} cycles')
for c in sccs: print('cycle:', ' <-> '.join(c))
sys.exit(1 if sccs else 0)
