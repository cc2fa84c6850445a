"""Config field helpers: ``opt`` declares a field with its help, choices and valid range;
``Range`` is that range in interval notation."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional


def opt(default, help: str, choices=None, range=None, length=None, item=None, aliases=None, const=None, **kw):
    """A config field. ``range``: valid values (``"[0, 1)"``, ``"(0, inf)"`` or a closed
    ``(lo, hi)``), for a list each item; ``length``: a list's length (N or (min, max));
    ``item``: a list's item type (int or float); ``aliases``: other spellings accepted for a
    choice (e.g. ``True: "on"``, so a field that used to be a bool still reads old configs);
    ``const``: the value of the bare flag (``--compile`` alone means ``--compile on``)."""
    meta = {"help": help}
    if aliases is not None:
        meta["aliases"] = dict(aliases)
    if const is not None:
        meta["const"] = const
    if choices is not None:
        meta["choices"] = tuple(choices)
    if range is not None:
        meta["range"] = Range.parse(range)
    if length is not None:
        meta["length"] = (length, length) if isinstance(length, int) else tuple(length)
    if item is not None:
        meta["item"] = item
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


@dataclass(frozen=True)
class Range:
    """An interval of valid numbers; ``None`` bounds are unbounded."""

    lo: Optional[float]
    hi: Optional[float]
    lo_open: bool = False
    hi_open: bool = False

    @classmethod
    def parse(cls, spec) -> "Range":
        if isinstance(spec, Range):
            return spec
        if isinstance(spec, (tuple, list)):
            return cls(spec[0], spec[1])
        m = re.fullmatch(r"\s*([\[(])\s*([^,\s]+)\s*,\s*([^,\s]+)\s*([\])])\s*", str(spec))
        if not m:
            raise ValueError(f"bad range {spec!r}: use interval notation such as '[0, 1)'")

        def bound(t):
            return None if t.lstrip("+-") == "inf" else float(t)

        return cls(bound(m.group(2)), bound(m.group(3)), m.group(1) == "(", m.group(4) == ")")

    def __contains__(self, x) -> bool:
        # NaN and +-inf are never valid values: "inf" in a range spec only means "no bound"
        if isinstance(x, bool) or not isinstance(x, (int, float)) or x != x or x in (float("inf"), float("-inf")):
            return False
        if self.lo is not None and (x < self.lo or (self.lo_open and x == self.lo)):
            return False
        if self.hi is not None and (x > self.hi or (self.hi_open and x == self.hi)):
            return False
        return True

    def __str__(self) -> str:
        def fmt(v, sign):
            return f"{sign}inf" if v is None else f"{v:g}"

        return (f"{'(' if self.lo_open or self.lo is None else '['}{fmt(self.lo, '-')}, "
                f"{fmt(self.hi, '')}{')' if self.hi_open or self.hi is None else ']'}")
