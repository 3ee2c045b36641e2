"""sandserve's Python SDK: write a model handler as ``predict(request) -> Response``.

The types mirror the Rust SDK (``sandserve-sdk``): a :class:`Request` holds named, typed,
row-major :class:`Tensor` inputs and the request's parameters; :class:`Graph` runs one of
the package's named wasi-nn graphs; raising :class:`InvalidInput` answers HTTP 400,
:class:`Unavailable` 503, any other exception 500 (its message goes to the host log only).

Datatypes are KServe V2 names: ``"BOOL"``, ``"UINT8"`` ... ``"INT64"``, ``"FP16"``,
``"BF16"``, ``"FP32"``, ``"FP64"``, ``"BYTES"``. Tensor data is little-endian bytes;
:meth:`Tensor.values` and :meth:`Tensor.from_values` convert to and from Python numbers
with the standard ``array`` module (no numpy in the sandbox).

This module is the only one a handler imports; the WIT bindings behind it are generated
by componentize-py when ``sandserve package`` builds the component.
"""

from __future__ import annotations

import array
import json
import struct
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

__all__ = [
    "DATATYPES",
    "Graph",
    "HandlerError",
    "InvalidInput",
    "NnError",
    "Request",
    "Response",
    "Tensor",
    "Unavailable",
    "log",
]

#: V2 datatype name -> (bytes per element, ``array`` type code or None).
DATATYPES: Dict[str, tuple] = {
    "BOOL": (1, "B"),
    "UINT8": (1, "B"),
    "UINT16": (2, "H"),
    "UINT32": (4, "I"),
    "UINT64": (8, "Q"),
    "INT8": (1, "b"),
    "INT16": (2, "h"),
    "INT32": (4, "i"),
    "INT64": (8, "q"),
    "FP16": (2, None),
    "BF16": (2, None),
    "FP32": (4, "f"),
    "FP64": (8, "d"),
    "BYTES": (0, None),
}


class HandlerError(Exception):
    """The handler failed (HTTP 500); the message goes to the host log, not the caller."""


class InvalidInput(HandlerError):
    """The request was malformed (HTTP 400); the message is shown to the caller."""


class Unavailable(HandlerError):
    """Something the handler needs is temporarily unavailable (HTTP 503)."""


class NnError(HandlerError):
    """A wasi-nn call failed: ``step`` (load, init, compute, convert), ``code``, ``message``."""

    def __init__(self, step: str, code: str, message: str):
        super().__init__(f"wasi-nn {step} failed ({code}): {message}")
        self.step = step
        self.code = code
        self.message = message

    def is_invalid_input(self) -> bool:
        """True when the host rejected the inputs themselves (name, type or shape)."""
        return self.code == "invalid-argument" or self.message.startswith("invalid input: ")


@dataclass
class Tensor:
    """A named, typed, row-major tensor: ``data`` is little-endian element bytes."""

    name: str
    shape: List[int]
    datatype: str
    data: bytes

    def __post_init__(self) -> None:
        if self.datatype not in DATATYPES:
            raise InvalidInput(f"tensor `{self.name}`: unknown datatype {self.datatype!r}")

    def element_count(self) -> int:
        """Product of the dimensions (1 for a scalar)."""
        count = 1
        for d in self.shape:
            count *= d
        return count

    def check_data_length(self) -> None:
        """Raises InvalidInput unless ``data`` holds exactly ``shape``'s elements."""
        size = DATATYPES[self.datatype][0]
        if size and len(self.data) != self.element_count() * size:
            raise InvalidInput(
                f"tensor `{self.name}`: shape {self.shape} of {self.datatype} needs "
                f"{self.element_count() * size} bytes, got {len(self.data)}"
            )

    def expect_datatype(self, datatype: str) -> "Tensor":
        """Raises InvalidInput unless the tensor is of ``datatype``."""
        if self.datatype != datatype:
            raise InvalidInput(f"tensor `{self.name}`: expected {datatype}, got {self.datatype}")
        return self

    def expect_shape(self, shape: Sequence[Optional[int]]) -> "Tensor":
        """Raises InvalidInput unless the shape matches (``None`` matches any size)."""
        ok = len(shape) == len(self.shape) and all(
            want is None or want == got for want, got in zip(shape, self.shape)
        )
        if not ok:
            want = [("-1" if d is None else d) for d in shape]
            raise InvalidInput(f"tensor `{self.name}`: expected shape {want}, got {self.shape}")
        return self

    def values(self) -> "array.array | List[Any]":
        """The elements as an ``array.array`` of the tensor's type (FP16 / BF16 widen to
        float, BOOL gives 0/1, BYTES a list of ``bytes``)."""
        self.check_data_length()
        if self.datatype == "BYTES":
            return self.bytes_elements()
        if self.datatype == "FP16":
            return array.array("f", (v for (v,) in struct.iter_unpack("<e", self.data)))
        if self.datatype == "BF16":
            widened = bytearray()
            for i in range(0, len(self.data), 2):
                widened += b"\x00\x00" + self.data[i : i + 2]
            return array.array("f", bytes(widened))
        values = array.array(DATATYPES[self.datatype][1])
        values.frombytes(self.data)
        if sys.byteorder != "little":
            values.byteswap()
        return values

    def to_f32_lossy(self) -> "array.array":
        """Any numeric tensor as an ``array('f')`` (integers cast, half floats widened)."""
        if self.datatype == "BYTES":
            raise InvalidInput(f"tensor `{self.name}`: expected numbers, got BYTES")
        values = self.values()
        return values if self.datatype in ("FP32", "FP16", "BF16") else array.array("f", values)

    def bytes_elements(self) -> List[bytes]:
        """The elements of a BYTES tensor (each a u32 little-endian length, then bytes)."""
        if self.datatype != "BYTES":
            raise InvalidInput(f"tensor `{self.name}`: expected BYTES, got {self.datatype}")
        items, at, data = [], 0, self.data
        while at < len(data):
            if at + 4 > len(data):
                raise InvalidInput(f"tensor `{self.name}`: truncated BYTES element")
            (n,) = struct.unpack_from("<I", data, at)
            at += 4
            if at + n > len(data):
                raise InvalidInput(f"tensor `{self.name}`: truncated BYTES element")
            items.append(bytes(data[at : at + n]))
            at += n
        return items

    @classmethod
    def from_values(
        cls, name: str, shape: Sequence[int], values: Any, datatype: str = "FP32"
    ) -> "Tensor":
        """A tensor of ``datatype`` from numbers (any iterable, or an ``array.array``)."""
        if datatype not in DATATYPES or datatype in ("BYTES", "FP16", "BF16"):
            raise HandlerError(f"Tensor.from_values: unsupported datatype {datatype!r}")
        code = DATATYPES[datatype][1]
        packed = values if isinstance(values, array.array) and values.typecode == code else None
        if packed is None:
            packed = array.array(code, values)
        if sys.byteorder != "little":
            packed = array.array(code, packed)
            packed.byteswap()
        tensor = cls(name, [int(d) for d in shape], datatype, packed.tobytes())
        try:
            tensor.check_data_length()
        except InvalidInput as e:
            raise HandlerError(str(e)) from None
        return tensor

    @classmethod
    def from_strings(cls, name: str, shape: Sequence[int], items: Sequence[Any]) -> "Tensor":
        """A BYTES tensor from ``str`` (UTF-8) or ``bytes`` items."""
        out = bytearray()
        for item in items:
            raw = item.encode() if isinstance(item, str) else bytes(item)
            out += struct.pack("<I", len(raw)) + raw
        return cls(name, [int(d) for d in shape], "BYTES", bytes(out))


@dataclass
class Request:
    """One inference request: input tensors in signature order, parameters, raw body."""

    inputs: List[Tensor]
    parameters: Optional[str] = None
    raw_body: Optional[bytes] = None

    def input(self, name: str) -> Tensor:
        """The input called ``name``; InvalidInput naming the inputs there are if none."""
        for t in self.inputs:
            if t.name == name:
                return t
        have = ", ".join(f"`{t.name}`" for t in self.inputs) or "none"
        raise InvalidInput(f"missing input `{name}` (inputs: {have})")

    def single_input(self) -> Tensor:
        """The only input; InvalidInput when there are none or several."""
        if len(self.inputs) != 1:
            raise InvalidInput(f"expected exactly one input tensor, got {len(self.inputs)}")
        return self.inputs[0]

    def params(self) -> Dict[str, Any]:
        """The request's parameters (Databricks ``params``, V2 ``parameters``) as a dict."""
        if not self.parameters:
            return {}
        try:
            value = json.loads(self.parameters)
        except ValueError as e:
            raise InvalidInput(f"parameters are not JSON: {e}") from None
        if not isinstance(value, dict):
            raise InvalidInput("parameters must be a JSON object")
        return value


@dataclass
class Response:
    """A successful result: output tensors and optional parameters (a JSON-able dict)."""

    outputs: List[Tensor]
    parameters: Optional[Dict[str, Any]] = field(default=None)


def _nn():
    # The generated bindings exist only inside the component build.
    from wit_world.imports import errors, graph, tensor  # noqa: PLC0415

    return errors, graph, tensor


#: V2 datatype <-> wasi-nn tensor type (the types wasi-nn carries).
_TO_NN = {"FP16": "FP16", "BF16": "BF16", "FP32": "FP32", "FP64": "FP64",
          "UINT8": "U8", "BOOL": "U8", "INT32": "I32", "INT64": "I64"}
_FROM_NN = {"FP16": "FP16", "BF16": "BF16", "FP32": "FP32", "FP64": "FP64",
            "U8": "UINT8", "I32": "INT32", "I64": "INT64"}


def _nn_error(step: str, err: Exception) -> NnError:
    value = getattr(err, "value", None)
    try:
        code = value.code().name.lower().replace("_", "-")
        data = value.data()
    except Exception:  # noqa: BLE001 - not a wasi-nn error resource
        return NnError(step, "unknown", str(err))
    return NnError(step, code, data.removeprefix("Unsupported tensor type: "))


class Graph:
    """A model graph of this package, loaded by the host (``[[graphs]]`` in sandserve.toml)."""

    def __init__(self, inner: Any):
        self._inner = inner

    @classmethod
    def load(cls, name: str) -> "Graph":
        """Looks up the graph the package manifest names ``name``."""
        _, graph, _ = _nn()
        try:
            return cls(graph.load_by_name(name))
        except Exception as e:  # componentize_py_types.Err
            raise _nn_error("load", e) from None

    def run(self, inputs: Sequence[Tensor]) -> List[Tensor]:
        """Runs the graph on named inputs; returns its named outputs."""
        _, _, nn_tensor = _nn()
        try:
            context = self._inner.init_execution_context()
        except Exception as e:
            raise _nn_error("init", e) from None
        named = []
        for t in inputs:
            ty = _TO_NN.get(t.datatype)
            if ty is None:
                raise NnError("convert", "invalid-argument",
                              f"tensor `{t.name}`: wasi-nn cannot carry {t.datatype} elements")
            named.append((t.name, nn_tensor.Tensor(list(t.shape), nn_tensor.TensorType[ty], t.data)))
        try:
            outputs = context.compute(named)
        except Exception as e:
            raise _nn_error("compute", e) from None
        return [
            Tensor(name, list(t.dimensions()), _FROM_NN[t.ty().name], bytes(t.data()))
            for name, t in outputs
        ]

    def run_named(self, inputs: Sequence[Tensor]) -> Dict[str, Tensor]:
        """Like :meth:`run`, keyed by output name."""
        return {t.name: t for t in self.run(inputs)}


def log(level: str, message: str) -> None:
    """Writes to the host's log (tagged with tenant, model, version): ``level`` is one of
    trace, debug, info, warn, error."""
    try:
        from wit_world.imports import logging  # noqa: PLC0415
    except ImportError:  # outside the component (unit tests): standard error
        print(f"[{level}] {message}", file=sys.stderr)
        return
    logging.log(logging.Level[level.upper()], message)
