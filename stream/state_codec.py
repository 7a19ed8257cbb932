"""A safe, versioned binary form of in-memory state (checkpoints): no pickle.

Checkpoints are read back from a Kafka topic, so reading one must never run
code the reader did not choose.  This codec follows pickle's *state* protocol
(``__getstate__`` / ``__setstate__``, which paywatch's classes already define)
but none of its ``__reduce__`` machinery:

- containers (list, tuple, dict, OrderedDict, Counter, set, deque, defaultdict),
  numpy arrays and scalars (dtype string, shape and raw bytes), ``array.array``,
  ``random.Random`` (its state: numbers), enums and plain Python values are written
  as tagged msgpack arrays;
- an object is written as its class path and its state; on reading, only
  classes from the allowed packages (:data:`ALLOWED`) are instantiated, with
  ``cls.__new__`` and their own ``__setstate__`` (or plain attribute setting) —
  no constructor, no arbitrary callable;
- functions, methods and partials (a rule's factory, a describer's formatter)
  are not written: reading takes them from the *fresh* object built from the
  running configuration, walked in step with the stored state.  Callers check
  the configuration fingerprint (see :mod:`stream.pipeline`) so the two match.

Objects reached twice are written once (shared parameter objects stay shared).
Any field a class gains is carried without changes here, because state is read
by introspection.

>>> from collections import deque
>>> import numpy as np
>>> blob = encode({"a": [1, (2, 3)], "q": deque([np.arange(3)], maxlen=4)})
>>> back = decode(blob)
>>> back["a"], back["q"].maxlen, back["q"][0].tolist()
([1, (2, 3)], 4, [0, 1, 2])
"""

from __future__ import annotations

import array
import enum
import functools
import importlib
import random
import types
from collections import Counter, OrderedDict, defaultdict, deque
from collections.abc import Callable
from typing import Any, cast

import msgspec
import numpy as np

#: Packages whose classes a checkpoint may name.
ALLOWED = ("stream.", "models.", "river.")
_DEFAULT_FACTORIES: dict[str, Callable[[], Any]] = {
    "int": int,
    "float": float,
    "list": list,
    "dict": dict,
    "set": set,
}

(LIST, TUPLE, DICT, SET, FROZENSET, DEQUE, NDARRAY, NDOBJ, NPSCALAR, OBJ, REF, FRESH) = range(12)
(PYARRAY, ENUM, DEFAULTDICT, TYPE, BIGINT, ODICT, COUNTER, RANDOM) = range(12, 20)
_CALLABLES = (
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    functools.partial,
    staticmethod,
    classmethod,
)
_INT64 = (-(2**63), 2**64 - 1)


class StateCodecError(ValueError):
    """State that cannot be written, or a stored state this version cannot read."""


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _load_class(path: str) -> type:
    module, _, qual = path.partition(":")
    if not module.startswith(ALLOWED) and module not in ("builtins", "collections"):
        raise StateCodecError(f"checkpoint names class {path!r} outside {ALLOWED}")
    if module in ("builtins", "collections"):
        raise StateCodecError(f"checkpoint names builtin class {path!r} as an object")
    obj: Any = importlib.import_module(module)
    for part in qual.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise StateCodecError(f"checkpoint names unknown class {path!r}")
    if not isinstance(obj, type):
        raise StateCodecError(f"checkpoint names {path!r}, which is not a class")
    return obj


def _default_state(o: Any) -> Any:
    getstate = getattr(o, "__getstate__", None)
    if getstate is not None:
        return getstate()
    return dict(o.__dict__)  # pragma: no cover - every object has __getstate__ on 3.11


class _Encoder:
    def __init__(self) -> None:
        self.memo: dict[int, int] = {}
        self.alive: list[Any] = []  # memoised objects stay alive, so their ids stay unique

    def _remember(self, o: Any) -> list[Any] | None:
        at = self.memo.get(id(o))
        if at is not None:
            return [REF, at]
        self.memo[id(o)] = len(self.alive)
        self.alive.append(o)
        return None

    def enc(self, o: Any) -> Any:
        if o is None or isinstance(o, (bool, str, bytes, float)):
            return o
        if isinstance(o, int) and not isinstance(o, enum.Enum):
            return o if _INT64[0] <= o <= _INT64[1] else [BIGINT, str(o)]
        t = type(o)
        if t is tuple:
            return [TUPLE, *map(self.enc, o)]
        if isinstance(o, np.generic):
            return [NPSCALAR, o.dtype.str, o.tobytes()]
        if isinstance(o, (_CALLABLES)) or (isinstance(o, type) and not _allowed_type(o)):
            return [FRESH]
        if isinstance(o, type):
            return [TYPE, _class_path(o)]
        ref = self._remember(o)
        if ref is not None:
            return ref
        return self._enc_mutable(o, t)

    def _enc_mutable(self, o: Any, t: type) -> Any:
        if t is list:
            return [LIST, *map(self.enc, o)]
        if t is dict or t is OrderedDict or t is Counter:
            return [{dict: DICT, OrderedDict: ODICT, Counter: COUNTER}[t], *self._pairs(o)]
        if t is defaultdict:
            name = getattr(o.default_factory, "__name__", "")
            factory = name if _DEFAULT_FACTORIES.get(name) is o.default_factory else None
            return [DEFAULTDICT, factory, *self._pairs(o)]
        if t is set or t is frozenset:
            return [SET if t is set else FROZENSET, *map(self.enc, o)]
        if t is deque:
            return [DEQUE, o.maxlen, *map(self.enc, o)]
        if t is np.ndarray:
            if o.dtype.hasobject:
                return [NDOBJ, list(o.shape), *map(self.enc, o.ravel().tolist())]
            if o.dtype.fields is not None:
                raise StateCodecError(f"structured arrays are not supported ({o.dtype})")
            return [NDARRAY, o.dtype.str, list(o.shape), _raw(o)]
        if t is array.array:
            return [PYARRAY, o.typecode, o.tobytes()]
        if t is random.Random:  # river models' generators: their state is plain numbers
            return [RANDOM, self.enc(o.getstate())]
        if isinstance(o, enum.Enum):
            return [ENUM, _class_path(t), self.enc(o.value)]
        if not t.__module__.startswith(ALLOWED):
            raise StateCodecError(f"cannot checkpoint a {_class_path(t)} (not a paywatch class)")
        return [OBJ, _class_path(t), self.enc(_default_state(o))]

    def _pairs(self, d: dict[Any, Any]) -> list[Any]:
        out: list[Any] = []
        for k, v in d.items():
            out.append(self.enc(k))
            out.append(self.enc(v))
        return out


def _raw(a: np.ndarray) -> memoryview:
    """An array's bytes, viewed: msgpack writes a view as the very ``bin`` a ``tobytes()``
    copy gives, without first copying megabytes of state it is about to copy anyway."""
    return memoryview(cast(Any, np.ascontiguousarray(a).reshape(-1).view(np.uint8)))


def _allowed_type(t: type) -> bool:
    return t.__module__.startswith(ALLOWED)


class _Decoder:
    def __init__(self) -> None:
        self.memo: list[Any] = []

    def dec(self, node: Any, fresh: Any = None) -> Any:
        if not isinstance(node, list):
            return node
        tag = node[0]
        if tag == TUPLE:
            return tuple(self.dec(v, _at(fresh, i)) for i, v in enumerate(node[1:]))
        if tag == REF:
            return self.memo[node[1]]
        if tag == FRESH:
            if fresh is None:
                raise StateCodecError(
                    "the checkpoint holds a function the running configuration does not "
                    "provide (the configuration changed?)"
                )
            return fresh
        if tag == NPSCALAR:
            return np.frombuffer(node[2], dtype=np.dtype(node[1]))[0]
        if tag == TYPE:
            return _load_class(node[1])
        if tag == BIGINT:
            return int(node[1])
        return self._dec_mutable(tag, node, fresh)

    def _keep(self, o: Any) -> Any:
        self.memo.append(o)
        return o

    def _dec_mutable(self, tag: int, node: list[Any], fresh: Any) -> Any:
        if tag == LIST:
            out: list[Any] = self._keep([])
            out.extend(self.dec(v, _at(fresh, i)) for i, v in enumerate(node[1:]))
            return out
        if tag in (DICT, ODICT, COUNTER):
            made = {DICT: dict, ODICT: OrderedDict, COUNTER: Counter}[tag]()
            return self._dict(self._keep(made), node[1:], fresh)
        if tag == DEFAULTDICT:
            factory = None if node[1] is None else _DEFAULT_FACTORIES[node[1]]
            if node[1] is None and isinstance(fresh, defaultdict):
                factory = fresh.default_factory
            return self._dict(self._keep(defaultdict(factory)), node[2:], fresh)
        if tag in (SET, FROZENSET):
            at = len(self.memo)
            self._keep(None)
            items = [self.dec(v) for v in node[1:]]
            self.memo[at] = made = set(items) if tag == SET else frozenset(items)
            return made
        if tag == DEQUE:
            q: deque[Any] = self._keep(deque(maxlen=node[1]))
            q.extend(self.dec(v, _at(fresh, i)) for i, v in enumerate(node[2:]))
            return q
        if tag == NDARRAY:
            flat = np.frombuffer(node[3], dtype=np.dtype(node[1]))
            return self._keep(flat.reshape(node[2]).copy())
        if tag == NDOBJ:
            arr = self._keep(np.empty(node[1], dtype=object))
            arr.ravel()[:] = [self.dec(v) for v in node[2:]] if len(node) > 2 else []
            return arr
        if tag == PYARRAY:
            pa = self._keep(array.array(node[1]))
            pa.frombytes(node[2])
            return pa
        if tag == RANDOM:
            rng = self._keep(random.Random())
            rng.setstate(self.dec(node[1]))
            return rng
        if tag == ENUM:
            cls = _load_class(node[1])
            return self._keep(cls(self.dec(node[2])))
        if tag == OBJ:
            return self._object(node, fresh)
        raise StateCodecError(f"unknown tag {tag} in checkpoint")

    def _dict(self, out: dict[Any, Any], flat: list[Any], fresh: Any) -> dict[Any, Any]:
        same = isinstance(fresh, dict)
        for i in range(0, len(flat), 2):
            key = self.dec(flat[i])
            out[key] = self.dec(flat[i + 1], fresh.get(key) if same else None)
        return out

    def _object(self, node: list[Any], fresh: Any) -> Any:
        cls = _load_class(node[1])
        obj = self._keep(cast(Any, cls).__new__(cls))
        fresh_state = _default_state(fresh) if type(fresh) is cls else None
        state = self.dec(node[2], fresh_state)
        setstate = getattr(cls, "__setstate__", None)
        if setstate is not None:
            setstate(obj, state)
        else:
            _set_state(obj, state)
        return obj


def _set_state(obj: Any, state: Any) -> None:
    """``object``'s default: a dict, or (dict, slots dict) for classes with slots."""
    if state is None:
        return
    if isinstance(state, tuple):
        state, slots = state
        for k, v in (slots or {}).items():
            object.__setattr__(obj, k, v)
    if state:
        obj.__dict__.update(state)


def _at(fresh: Any, key: Any) -> Any:
    if isinstance(fresh, (list, tuple, deque)) and isinstance(key, int) and key < len(fresh):
        return fresh[key]
    return None


def encode(state: Any) -> bytes:
    """``state`` as msgpack bytes (raises :class:`StateCodecError` for what it cannot write)."""
    return msgspec.msgpack.encode(_Encoder().enc(state))


def decode(blob: bytes, fresh: Any = None) -> Any:
    """Read what :func:`encode` wrote; functions come from ``fresh`` (same shape, newly built)."""
    try:
        tree = msgspec.msgpack.decode(blob)
    except msgspec.DecodeError as exc:
        raise StateCodecError(f"checkpoint is not readable: {exc}") from None
    return _Decoder().dec(tree, fresh)
