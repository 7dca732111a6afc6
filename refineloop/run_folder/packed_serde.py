"""The checkpoint serializer of a run folder's SQLite: LangGraph's own, with larger values zlib-packed.

SQLite keeps each checkpoint as one blob (channel values and both version maps) and each step's writes as
blobs too; their channel names, critiques and prompts repeat a lot, so packing halves them at a few tens of
microseconds each. A packed value's type is the inner type with `+zlib` after it; values stored before (or
too small to pack) keep their plain type and read as they always did, so old run folders open unchanged.
Built on first use, so that importing this module does not import LangGraph.
"""

from __future__ import annotations

import functools
import zlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

#: Values shorter than this are stored as they are: packing would save a few bytes, if any.
PACK_FROM = 200
#: zlib's fastest level: on these blobs it packs nearly as tight as the default and several times faster.
LEVEL = 1
SUFFIX = "+zlib"


def packed_serializer() -> JsonPlusSerializer:
    """A new serializer that packs what is worth packing (see the module's docstring)."""
    return _packed_class()()


@functools.cache
def _packed_class() -> type[JsonPlusSerializer]:
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    # A subclass, not a wrapper: LangGraph derives serializers with wider msgpack allowlists from the saver's
    # own by copying it, which keeps the class (a wrapper would lose the allowlist, with a warning).
    class PackedSerializer(JsonPlusSerializer):
        def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
            kind, data = super().dumps_typed(obj)
            if len(data) < PACK_FROM or kind == "null":
                return kind, data
            return kind + SUFFIX, zlib.compress(data, LEVEL)

        def loads_typed(self, data: tuple[str, bytes]) -> Any:
            kind, raw = data
            if kind.endswith(SUFFIX):
                return super().loads_typed((kind.removesuffix(SUFFIX), zlib.decompress(raw)))
            return super().loads_typed(data)

    return PackedSerializer
