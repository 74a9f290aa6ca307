"""Step ordering, as yip builds its DAG.

Within a file steps run in order; each file runs after the previous one (lexical order);
`after: [{name: "<file or doc name>.<step name>"}]` replaces a step's implicit dependency on the
step before it. The result is a stable topological order: among steps that are ready, the
one that came first in the files runs first.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field

from kairos.stages.model import StageDoc, Step


@dataclass
class Op:
    name: str
    stage: str
    step: Step
    index: int
    deps: list[str] = field(default_factory=list)   # the step before it in its file
    chain: list[str] = field(default_factory=list)  # the previous file's steps
    after: list[str] = field(default_factory=list)  # explicit `after:` names


def doc_ops(doc: StageDoc, stage: str, start: int) -> list[Op]:
    """Ops for one document's steps of `stage`, named as yip names them (no deps yet)."""
    steps = doc.stages.get(stage, [])
    names = [s.name for s in steps]
    duplicated = len(set(names)) != len(names)
    ops: list[Op] = []
    for i, step in enumerate(steps):
        name = f"{step.name}.{i}" if duplicated else step.name
        if name == "":
            name = str(i)
        ops.append(Op(name=f"{doc.root_name}.{name}", stage=stage, step=step, index=start + i,
                      after=list(step.after)))
    return ops


def build_ops(stage: str, docs: Sequence[StageDoc]) -> list[Op]:
    """All ops of `stage` across documents: names made unique, then each step depends on
    the one before it in its file, and every step of a file on the previous file's steps."""
    groups: list[list[Op]] = []
    count = 0
    for doc in docs:
        current = doc_ops(doc, stage, count)
        if current:
            groups.append(current)
            count += len(current)
    ops = [op for group in groups for op in group]
    _unique_names(ops)
    prev: list[Op] = []
    for group in groups:
        anchors = [p.name for p in prev if not p.after]
        for i, op in enumerate(group):
            if i and not op.after:
                op.deps.append(group[i - 1].name)
            op.chain.extend(anchors)
        prev = group
    return ops


def _unique_names(ops: list[Op]) -> None:
    """Two files may share a `name:` (Kairos ships two "Default config"): suffix .1, .2, …"""
    seen: dict[str, int] = {}
    taken = {op.name for op in ops}
    for op in ops:
        count = seen.get(op.name, 0)
        seen[op.name] = count + 1
        if count:
            new = f"{op.name}.{count}"
            while new in taken:
                count += 1
                new = f"{op.name}.{count}"
            taken.add(new)
            op.name = new


# Edge strength: an explicit `after` wins over the in-file order, which wins over the file
# order. yip would reject a cycle between them (e.g. a step waiting for a later file while
# that file waits for the step's file); here the weakest edges inside the cycle give way.
STRENGTH = {"after": 2, "file": 1, "chain": 0}


def _edges(ops: list[Op], warnings: list[str]) -> dict[str, dict[str, str]]:
    names = {op.name for op in ops}
    edges: dict[str, dict[str, str]] = {op.name: {} for op in ops}
    for op in ops:
        for kind, deps in (("chain", op.chain), ("file", op.deps), ("after", op.after)):
            for dep in deps:
                if dep not in names:
                    if kind == "after":
                        warnings.append(f"step '{op.name}': 'after: {dep}' names no step of "
                                        f"stage '{op.stage}'; ignored")
                elif dep != op.name:
                    edges[op.name][dep] = kind
    return edges


def _kahn(ops: list[Op], edges: dict[str, dict[str, str]]) -> list[Op]:
    by_name = {op.name: op for op in ops}
    pending = {name: len(deps) for name, deps in edges.items()}
    dependents: dict[str, list[str]] = {op.name: [] for op in ops}
    for name, deps in edges.items():
        for dep in deps:
            dependents[dep].append(name)
    ready = [(op.index, op.name) for op in ops if pending[op.name] == 0]
    heapq.heapify(ready)
    result: list[Op] = []
    while ready:
        _, name = heapq.heappop(ready)
        result.append(by_name[name])
        for child in dependents[name]:
            pending[child] -= 1
            if pending[child] == 0:
                heapq.heappush(ready, (by_name[child].index, child))
    return result


def _cycles(nodes: set[str], edges: dict[str, dict[str, str]]) -> list[set[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for start in sorted(nodes):
        if start in index:
            continue
        work = [(start, iter(sorted(d for d in edges[start] if d in nodes)))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(d for d in edges[child] if d in nodes))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def order(ops: list[Op]) -> tuple[list[Op], list[str]]:
    """A stable topological order of `ops`, and warnings (unknown `after`, cycles)."""
    warnings: list[str] = []
    edges = _edges(ops, warnings)
    while True:
        result = _kahn(ops, edges)
        if len(result) == len(ops):
            return result, warnings
        done = {op.name for op in result}
        components = _cycles({op.name for op in ops} - done, edges)
        relaxed = False
        for kind in ("chain", "file"):
            for component in components:
                for name in component:
                    for dep in [d for d, k in edges[name].items() if k == kind and d in component]:
                        del edges[name][dep]
                        relaxed = True
            if relaxed:
                break
        if not relaxed:
            stuck = [op for op in ops if op.name not in done]
            warnings.append("steps with circular 'after' dependencies run in file order: "
                            + ", ".join(op.name for op in stuck))
            return result + stuck, warnings
