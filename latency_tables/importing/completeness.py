"""Is an OFA / ProxylessNAS lookup table whole? A file cut at a row boundary is valid YAML, so the
parser cannot tell; the rows themselves can.

A whole table prices at least one network end to end: a stem (`Conv`), blocks whose shapes chain
from the stem's output to the final expand's input (`Conv_1`), and a classifier (`Logits`); and each
block shape carries the same grid of choices (expansion x kernel) as the others. A cut file loses the
rows after the cut: block shapes no chain reaches, or a shape with only part of its grid.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Iterable

from latency_tables.lookup.keys import parse_op_key

Shape = tuple[int, ...]


def missing_parts(keys: Iterable[str], expand_meaning: str) -> list[str]:
    """What a whole table would have and these rows lack (empty: whole), in words a user can act on."""
    fields = [parse_op_key(k) for k in keys]
    problems = _fixed_rows(fields)
    blocks = [f for f in fields if f["op"] == "expanded_conv"]
    problems += _chain(fields, blocks)
    problems += _grids(blocks, expand_meaning)
    return problems


def _fixed_rows(fields: list[dict[str, Any]]) -> list[str]:
    ops = {f["op"] for f in fields}
    return [f"no '{op}' row ({what})" for op, what in (("Conv", "the stem"), ("Conv_1", "the final expand"),
                                                       ("Logits", "the classifier")) if op not in ops]


def _chain(fields: list[dict[str, Any]], blocks: list[dict[str, Any]]) -> list[str]:
    """Every stem must reach a head through the block shapes, and every block shape must be on such a path."""
    nxt: dict[Shape, set[Shape]] = defaultdict(set)
    prev: dict[Shape, set[Shape]] = defaultdict(set)
    for b in blocks:
        nxt[b["input"]].add(b["output"])
        prev[b["output"]].add(b["input"])
    starts = {f["output"] for f in fields if f["op"] == "Conv"}
    heads = {f["input"] for f in fields if f["op"] == "Conv_1"}
    if not starts or not heads:
        return []
    reach = _closure(starts, nxt)
    back = _closure(heads, prev)
    out = []
    if not reach & heads:
        out.append(f"the block rows never lead from the stem's output ({_fmt(sorted(starts)[0])}) to the final "
                   f"expand's input ({_fmt(sorted(heads)[0])})")
    dead = sorted({b["output"] for b in blocks if b["input"] in reach} - back - heads)
    if dead:
        out.append(f"no row continues from {', '.join(_fmt(s) for s in dead[:3])}"
                   f"{' and %d more' % (len(dead) - 3) if len(dead) > 3 else ''}")
    orphan = sorted({b["input"] for b in blocks} - reach)
    if orphan:
        out.append(f"no row leads to {', '.join(_fmt(s) for s in orphan[:3])}"
                   f"{' and %d more' % (len(orphan) - 3) if len(orphan) > 3 else ''}")
    return out


def _grids(blocks: list[dict[str, Any]], expand_meaning: str) -> list[str]:
    """Block shapes whose choices are a strict part of the table's usual grid."""
    grids: dict[tuple[Any, ...], set[tuple[float, int]]] = defaultdict(set)
    for b in blocks:
        pos = (b["input"], b["output"], b.get("stride"), b.get("idskip", 0), b.get("se", 0), b.get("hs", 0))
        e = float(b["expand"])
        ratio = round(e / b["input"][2], 2) if expand_meaning == "channels" else e
        grids[pos].add((ratio, int(b["kernel"])))
    searchable = [frozenset(g) for g in grids.values() if {e for e, _ in g} != {1.0}]
    if not searchable:
        return []
    usual = Counter(searchable).most_common(1)[0][0]
    short = [(pos, g) for pos, g in grids.items() if g < usual]
    return [f"block {_fmt(pos[0])} -> {_fmt(pos[1])} has {len(g)} of the {len(usual)} choices the other blocks have "
            f"(missing {', '.join(f'e{e:g} k{k}' for e, k in sorted(usual - g))})" for pos, g in short]


def _closure(seed: set[Shape], edges: dict[Shape, set[Shape]]) -> set[Shape]:
    seen, todo = set(seed), list(seed)
    while todo:
        for n in edges.get(todo.pop(), ()):
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return seen


def _fmt(shape: Shape) -> str:
    return "x".join(str(d) for d in shape)
